"""Base class of every FinPercep model: CPU-safe DDP, atomic checkpoints, clear load errors, progress."""
import os
import random

import numpy as np
import torch
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from torch.nn.parallel import DataParallel, DistributedDataParallel
from tqdm import tqdm

from finpercep_basicsr.utils.checkpoint import (  # noqa: F401  (the error types are part of this module's API)
    CheckpointMismatchError, atomic_torch_save, describe_state_dict_mismatch, load_state_dict_into)
from finpercep_basicsr.utils.checkpoint_retention import check_keep_checkpoints, prune_checkpoints


def _rng_state():
    """Python, NumPy and torch RNG states as tensors and lists (loadable with weights_only=True)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        'torch': torch.get_rng_state(),
        'numpy': {'name': np_name, 'keys': torch.from_numpy(np_keys.astype(np.int64)), 'pos': int(np_pos),
                  'has_gauss': int(np_has_gauss), 'gauss': float(np_gauss)},
        'python': {'version': py_version, 'internal': list(py_internal), 'gauss': py_gauss},
    }


def _set_rng_state(state):
    torch.set_rng_state(state['torch'])
    s = state['numpy']
    np.random.set_state((s['name'], s['keys'].numpy().astype(np.uint32), s['pos'], s['has_gauss'], s['gauss']))
    p = state['python']
    random.setstate((p['version'], tuple(p['internal']), p['gauss']))


class FinPercepBaseModel(BaseModel):
    """BasicSR ``BaseModel`` made safe for CPU runs and crashes.

    - ``model_to_device`` wraps in DDP without CUDA device ids on CPU (gloo).
    - Networks and training states are written atomically (a crash keeps the previous file).
    - Training states carry the RNG states and ``extra_training_state()`` of subclasses (e.g. the
      curriculum), restored by ``resume_training``.
    - ``load_network`` names the file and the mismatched keys instead of a bare torch error.
    - A tqdm bar follows the iterations (BasicSR's loop calls ``update_learning_rate`` each one).
    - ``logger.keep_checkpoints: N`` keeps only the newest N numbered checkpoints and states.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self._progress = None
        self.keep_checkpoints = check_keep_checkpoints(opt)

    # ---- device -------------------------------------------------------------------------------
    def model_to_device(self, net):
        net = net.to(self.device)
        if self.opt['dist']:
            find_unused = self.opt.get('find_unused_parameters', False)
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    # ---- progress -----------------------------------------------------------------------------
    def update_learning_rate(self, current_iter, warmup_iter=-1):
        super().update_learning_rate(current_iter, warmup_iter)
        if self.opt.get('rank', 0) != 0 or not self.is_train:
            return
        total = int(self.opt['train']['total_iter'])
        if self._progress is None:
            self._progress = tqdm(total=total, initial=current_iter - 1, desc=self.opt['name'], unit='it',
                                  dynamic_ncols=True, mininterval=1.0)
        self._progress.update(current_iter - self._progress.n)
        if current_iter >= total:
            self._progress.close()

    # ---- EMA ----------------------------------------------------------------------------------
    def ema_decay_at(self, current_iter):
        """``train.ema_decay`` at ``current_iter``, warmed up unless ``train.ema_warmup: false``.

        Warm-up uses ``min(ema_decay, (1 + iter) / (10 + iter))``: with a fixed 0.999 the EMA of a
        300-iteration run is still 74 % its initial weights (0.999 ** 300), and validation and the
        saved ``params_ema`` would show little of the training. From about iteration 9000 on the
        decay is the fixed one, as in BasicSR. A function of the iteration, so a resume agrees.
        """
        decay = float(self.opt['train'].get('ema_decay', 0))
        if self.opt['train'].get('ema_warmup', True):
            decay = min(decay, (1 + current_iter) / (10 + current_iter))
        return decay

    @staticmethod
    @torch.no_grad()
    def ema_update(ema_net, net, decay):
        """``ema = decay * ema + (1 - decay) * net`` on floating tensors; other buffers are copied."""
        source = net.state_dict()
        for k, v in ema_net.state_dict().items():
            v.copy_(v * decay + source[k].detach() * (1 - decay) if v.is_floating_point() else source[k])

    # ---- saving -------------------------------------------------------------------------------
    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        """Save one or several networks into ``models/<net_label>_<iter|latest>.pth`` atomically."""
        label = 'latest' if current_iter == -1 else current_iter
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'{len(nets)} networks but {len(keys)} param keys for {net_label}')
        save_dict = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            save_dict[key] = {k.removeprefix('module.'): v.detach().cpu() for k, v in state.items()}
        atomic_torch_save(save_dict, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))

    def extra_training_state(self):
        """Subclasses add resumable state here (e.g. the curriculum); plain tensors/containers only."""
        return {}

    def load_extra_training_state(self, state):
        """Inverse of ``extra_training_state``."""

    @master_only
    def save_training_state(self, epoch, current_iter):
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'rng': _rng_state(),
            'extra': self.extra_training_state(),
        }
        atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))
        for path in prune_checkpoints(self.opt['path']['models'], self.opt['path']['training_states'],
                                      self.keep_checkpoints):
            get_root_logger().info(f'logger.keep_checkpoints: deleted {path}')

    def resume_training(self, resume_state):
        for what, have in (('optimizers', self.optimizers), ('schedulers', self.schedulers)):
            if len(resume_state[what]) != len(have):
                raise CheckpointMismatchError(
                    f'resume state {self.opt["path"].get("resume_state")} has {len(resume_state[what])} {what}, '
                    f'this model has {len(have)}: it was saved by a different model or option file')
        super().resume_training(resume_state)
        if 'rng' in resume_state and self.opt.get('world_size', 1) == 1:
            _set_rng_state(resume_state['rng'])
        self.load_extra_training_state(resume_state.get('extra', {}))

    # ---- loading ------------------------------------------------------------------------------
    def load_network(self, net, load_path, strict=True, param_key='params'):
        """Load ``param_key`` of ``load_path`` into ``net``; errors name the file and the keys.

        Raises:
            FileNotFoundError: No such file.
            CheckpointMismatchError: The parameter key is absent, or (with ``strict``) keys or shapes
                differ; the message lists them. Without ``strict`` only matching tensors load
                (stage k -> k+1 growth).
        """
        bare = self.get_bare_model(net)
        key = load_state_dict_into(bare, load_path, param_key, strict, what='network checkpoint')
        get_root_logger().info(f'Loading {bare.__class__.__name__} from {load_path} [{key}]')
