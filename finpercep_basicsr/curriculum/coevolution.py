"""Co-evolution (beyond the paper): refresh the active reward network on the generator's own outputs.

A reward model trained once on FGR data sees a distribution of artifacts that drifts away as the
generator learns to please it. Every ``every`` iterations, the active stage's reward network takes
one optimiser step on the current SR batch (detached) against labels computed from GT:

- map: ``L1(M(SR), label)`` with the FGR label formula of ``finpercep_basicsr.fgr.labels``
  (``Normalize(alpha * D_pixel + (1 - alpha) * D_feat)`` over the whole image; by default pixel-only
  with a fixed scale, so labels compare across iterations) plus ``L1(M(GT), 0)`` (GT has no
  degraded pixel);
- rank: ``relu(margin - (S(GT) - S(SR)))`` (GT must score above the generator's output).

Options (``train.ccl.coevolve``)::

    coevolve:
      every: 50          # 0 or absent: off
      start_iter: 0
      optim: {type: Adam, lr: !!float 1e-5}
      map_weight: 1.0
      rank_weight: 1.0
      rank_margin: 0.1
      labels:            # the FGR ``labels`` options (alpha, features, normalize)
        alpha: 1.0       # 1 = pixel-only (no feature network); < 1 adds D_feat (EfficientNet-Lite0)
        normalize: {type: fixed, scale: 0.1}   # |SR - GT| of 0.1 counts as fully degraded

Under DDP every rank runs the step and the gradients are averaged, so the copies stay identical.
"""
from copy import deepcopy

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from basicsr.utils import get_root_logger

from finpercep_basicsr.utils.options_io import deep_merge
from finpercep_basicsr.fgr.labels import LabelMaker, normalize_distance
from finpercep_basicsr.utils.errors import UserInputError

DEFAULT_LABELS = {'alpha': 1.0, 'normalize': {'type': 'fixed', 'scale': 0.1}}


def make_labels(maker, sr, gt):
    """PDM labels of whole generated images against GT with the FGR formula.

    Args:
        maker (LabelMaker): The FGR label maker (alpha, feature distance, normalisation).
        sr, gt (Tensor): (B, 3, H, W) in [0, 1].

    Returns:
        Tensor: (B, 1, H, W) labels in [0, 1] on ``sr``'s device.
    """
    maps = []
    for s, g in zip(sr.detach().cpu().numpy(), gt.detach().cpu().numpy()):
        s, g = np.ascontiguousarray(s.transpose(1, 2, 0)), np.ascontiguousarray(g.transpose(1, 2, 0))
        dist = maker.distances([s], g)[0]
        label, _ = normalize_distance(dist, np.ones(dist.shape, np.float32), maker.norm_opt)
        maps.append(torch.from_numpy(label))
    return torch.stack(maps).unsqueeze(1).to(sr.device)


class RewardCoEvolution:
    """Online reward-network refresh; inactive when ``opt`` is None or ``every`` is 0.

    Args:
        opt (dict | None): ``train.ccl.coevolve`` (see the module docstring).
        device (torch.device): Device of the reward networks.
    """

    def __init__(self, opt, device):
        opt = dict(opt or {})
        self.every = int(opt.get('every', 0))
        self.start_iter = int(opt.get('start_iter', 0))
        self.optim_opt = deepcopy(opt.get('optim', {'type': 'Adam', 'lr': 1e-5}))
        if self.optim_opt.get('type') not in ('Adam', 'AdamW', 'SGD'):
            raise UserInputError(f'train.ccl.coevolve.optim.type must be Adam, AdamW or SGD, got '
                                 f'{self.optim_opt.get("type")!r}')
        self.map_weight = float(opt.get('map_weight', 1.0))
        self.rank_weight = float(opt.get('rank_weight', 1.0))
        self.rank_margin = float(opt.get('rank_margin', 0.1))
        self.label_maker = LabelMaker(deep_merge(DEFAULT_LABELS, opt.get('labels'))) if self.every > 0 else None
        self.device = device
        self.optimizers = {}  # network key -> optimizer
        self._pending = {}  # network key -> optimizer state waiting for its optimizer

    @property
    def enabled(self):
        return self.every > 0

    def _optimizer(self, key, net):
        if key not in self.optimizers:
            opt = deepcopy(self.optim_opt)
            optim_cls = getattr(torch.optim, opt.pop('type'))
            self.optimizers[key] = optim_cls(net.parameters(), **opt)
            if key in self._pending:
                self.optimizers[key].load_state_dict(self._pending.pop(key))
        return self.optimizers[key]

    def maybe_update(self, current_iter, curriculum, sr, gt):
        """One refresh step of the active reward network when due; returns scalars for the log."""
        if not self.enabled or gt is None or current_iter < self.start_iter or current_iter % self.every:
            return {}
        index = curriculum.stage_index(current_iter)
        module, key = curriculum.active_module(current_iter), curriculum.keys[index]
        net = getattr(module, 'net', None)
        if net is None or not isinstance(net, torch.nn.Module) or hasattr(net, 'metric_mode'):
            get_root_logger().warning('co-evolution needs a FinPercep reward network; this stage has none')
            return {}
        optimizer = self._optimizer(key, net)
        for p in net.parameters():
            p.requires_grad_(True)
        try:
            # an LQ-conditioned network is refreshed in its no-reference mode: its LQ branches keep their weights
            out = net(torch.cat([sr.clamp(0, 1), gt], dim=0))
            score_sr, score_gt = out['score'].chunk(2)
            pdm_sr, pdm_gt = out['pdm'].chunk(2)
            label = make_labels(self.label_maker, sr.clamp(0, 1), gt)
            l_map = F.l1_loss(pdm_sr, label) + F.l1_loss(pdm_gt, torch.zeros_like(pdm_gt))
            l_rank = F.relu(self.rank_margin - (score_gt - score_sr)).mean()
            loss = self.map_weight * l_map + self.rank_weight * l_rank
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if dist.is_available() and dist.is_initialized():
                world = dist.get_world_size()
                for p in net.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad.div_(world)
            if torch.isfinite(loss) and all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters()):
                optimizer.step()
        finally:
            for p in net.parameters():
                p.requires_grad_(False)
                p.grad = None
            net.eval()
        curriculum.mark_refreshed(module)
        return {'l_rm_map': l_map.detach(), 'l_rm_rank': l_rank.detach()}

    def state_dict(self):
        # deep copies: the live moments keep changing in place after a snapshot
        states = {key: deepcopy(opt.state_dict()) for key, opt in self.optimizers.items()}
        states.update({k: v for k, v in self._pending.items() if k not in states})
        return {'optimizers': states}

    def load_state_dict(self, state):
        for key, optim_state in (state or {}).get('optimizers', {}).items():
            if key in self.optimizers:
                self.optimizers[key].load_state_dict(optim_state)
            else:
                self._pending[key] = optim_state
