"""Trains FinPercep-RM on FGR samples: map regression, score ranking (SR < syn < GT) and score alignment."""
import fnmatch
from collections import OrderedDict
from copy import deepcopy

import numpy as np
import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import METRIC_REGISTRY, MODEL_REGISTRY

from finpercep_basicsr.metrics import METRICS
from finpercep_basicsr.models.feature_cache import FeatureCache
from finpercep_basicsr.models.finpercep_base_model import FinPercepBaseModel
from finpercep_basicsr.utils.errors import UserInputError

# validation metrics when the option file names none: key -> {type, better}
DEFAULT_METRICS = {
    'srcc': 'FinPercepSRCC', 'plcc': 'FinPercepPLCC', 'triplet_acc': 'FinPercepTripletAcc',
    'map_mae': 'FinPercepMapMAE', 'map_auc': 'FinPercepMapAUC', 'nss': 'FinPercepNSS', 'cc': 'FinPercepCC',
    'kld': 'FinPercepKLD'}


def _map_panel(image, label, pred):
    """(3,H,W) image, (1,H,W) label and prediction -> one (3, H, 3W) image|label|prediction strip."""
    return torch.cat([image, label.expand_as(image), pred.expand_as(image)], dim=2).clamp(0, 1).cpu()


@MODEL_REGISTRY.register()
class FinPercepRMModel(FinPercepBaseModel):
    """Reward-model training through BasicSR, one curriculum stage per option file.

    Options:
        network_reward: ``FinPercepRewardNet`` options (``stage`` sets the curriculum stage).
        path.pretrain_network_reward / param_key_reward / strict_load_reward: start from the previous
            stage's checkpoint with ``strict_load_reward: false`` (new decoder parts stay initialised).
        train.optim_reward, train.scheduler, train.ema_decay, train.ema_warmup (``ema_decay_at``).
        train.freeze_encoder (bool): Keep the encoder fixed (weights and BatchNorm statistics).
        train.encoder_trainable (list[str]): With ``freeze_encoder``: fnmatch patterns of encoder
            parameters that still train (e.g. the last, low-resolution blocks); the backward pass then
            stops there, several times cheaper on a CPU than through the whole encoder.
        train.encoder_lr_mult (float): Encoder learning rate = ``lr * encoder_lr_mult`` (default 1).
        train.lr_mult (dict | None): ``{fnmatch pattern of parameter names: multiplier}`` for parameters outside the
            encoder, e.g. ``{'decoder.lq_*': 10}`` for branches new to a grown network, which start at zero and
            would otherwise move at the fine-tuning rate of the rest; the first matching pattern wins.
        train.feature_cache (dict | None): ``{max_gb: 4}`` keeps what a step recomputes identically for a sample
            seen again with the same crop and flips (the frozen encoder steps and, unless ``texture_stats: false``,
            the texture statistics; ``models/feature_cache.py``) on the model's device; the losses and gradients are
            the same as without it. Needs ``freeze_encoder`` (or the texture branch) to have anything to keep.
        train.autocast (str | None): ``bf16`` runs the training forward under bfloat16 autocast (the losses
            in float32); validation stays in float32.
        train.lq_dropout (float): An LQ-conditioned network (``network_reward.lq_condition``, datasets with
            ``use_lq``) scores a training batch without its LQ with this probability (default 0.3), so one
            network serves with and without the LQ; validation always gives it.
        train.map_opt: map loss on (syn, label) and (GT, zero map) (``FinPercepMapLoss``; not at stage 0).
        train.rank_opt: ``FinPercepRankLoss`` on (S_SR, S_syn, S_GT).
        train.align_opt: ``FinPercepAlignLoss`` on S_GT.
        val.metrics: ``{key: {type: FinPercep..., better: higher|lower}}`` (default: all of them);
            the best value of each is tracked and saved as ``models/net_reward_best_<key>.pth``.
        val.num_tb_images (int): Validation samples shown in TensorBoard as image|label|PDM (default 4).

    Validation score labels are full-reference: ``-mean|I - I_GT|`` for I in {SR, syn, GT}, so SRCC
    and PLCC measure whether the no-reference score orders images by their real distortion.
    Map metrics compare the PDM of the syn image with its label map and swap mask.
    """

    def __init__(self, opt):
        super().__init__(opt)
        net = build_network(deepcopy(opt['network_reward']))
        self.lq_condition = getattr(net, 'lq_condition', False)  # the EMA copy is built from the same options
        train_opt = opt.get('train') or {}
        if self.is_train and train_opt.get('freeze_encoder', False):
            # before any DDP wrapping, so DDP never expects gradients of the frozen encoder weights
            net.freeze_encoder(True, train_opt.get('encoder_trainable') or ())
        self.net_reward = self.model_to_device(net)
        self.print_network(self.net_reward)
        load_path = opt['path'].get('pretrain_network_reward')
        if load_path is not None:
            self.load_network(self.net_reward, load_path, opt['path'].get('strict_load_reward', True),
                              opt['path'].get('param_key_reward', 'params'))
        if opt.get('val') is not None and not opt['val'].get('metrics'):
            opt['val']['metrics'] = {k: {'type': t, 'better': METRICS[t][1]} for k, t in DEFAULT_METRICS.items()}
        if self.is_train:
            self.init_training_settings()

    # ---- training -----------------------------------------------------------------------------
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_reward.train()
        bare = self.get_bare_model(self.net_reward)
        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:
            self.net_reward_ema = build_network(deepcopy(self.opt['network_reward'])).to(self.device).eval()
            self.net_reward_ema.load_state_dict(bare.state_dict())
            for p in self.net_reward_ema.parameters():
                p.requires_grad_(False)
        self.cri_map = self._build_loss('map_opt')
        self.cri_rank = self._build_loss('rank_opt')
        self.cri_align = self._build_loss('align_opt')
        if self.cri_map is not None and not bare.has_map:
            raise UserInputError(f'{self.opt["name"]}: network_reward.stage 0 has no map; remove train.map_opt')
        if not (self.cri_map or self.cri_rank or self.cri_align):
            raise UserInputError('FinPercepRMModel: set at least one of train.map_opt, rank_opt and align_opt')
        optim_opt = deepcopy(train_opt['optim_reward'])
        optim_type, lr = optim_opt.pop('type'), optim_opt.pop('lr')
        encoder = [p for n, p in bare.named_parameters() if n.startswith('encoder.') and p.requires_grad]
        rest = [(n, p) for n, p in bare.named_parameters() if not n.startswith('encoder.') and p.requires_grad]
        groups = self._lr_groups(rest, lr, train_opt.get('lr_mult') or {})
        if encoder:
            groups.append({'params': encoder, 'lr': lr * train_opt.get('encoder_lr_mult', 1.0)})
        self.optimizer_reward = self.get_optimizer(optim_type, groups, lr, **optim_opt)
        self.optimizers.append(self.optimizer_reward)
        self.setup_schedulers()
        self.feature_cache = self._build_feature_cache(train_opt.get('feature_cache'), bare)
        self.autocast = train_opt.get('autocast')
        if self.autocast not in (None, 'bf16'):
            raise UserInputError(f'train.autocast: {self.autocast!r}; use bf16 or leave it out (float32)')
        self.lq_dropout = train_opt.get('lq_dropout', 0.3)
        if not (isinstance(self.lq_dropout, (int, float)) and 0 <= self.lq_dropout <= 1):
            raise UserInputError(f'train.lq_dropout must be in [0, 1], got {self.lq_dropout!r}')

    @staticmethod
    def _lr_groups(named, lr, lr_mult):
        """Optimizer groups of ``named`` parameters: one per ``lr_mult`` pattern that matches any, then the rest."""
        if not isinstance(lr_mult, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in lr_mult.values()):
            raise UserInputError(f'train.lr_mult must map parameter-name patterns to positive numbers, got {lr_mult!r}')
        groups, left = [], list(named)
        for pattern, mult in lr_mult.items():
            hit = [p for n, p in left if fnmatch.fnmatchcase(n, pattern)]
            if not hit:
                raise UserInputError(f'train.lr_mult: {pattern!r} matches no trainable parameter outside the encoder')
            left = [(n, p) for n, p in left if not fnmatch.fnmatchcase(n, pattern)]
            groups.append({'params': hit, 'lr': lr * mult})
        return [{'params': [p for _, p in left], 'lr': lr}] + groups

    def _build_feature_cache(self, cache_opt, bare):
        if not cache_opt:
            return None
        if not isinstance(cache_opt, dict) or set(cache_opt) - {'max_gb', 'texture_stats'}:
            raise UserInputError(f'train.feature_cache: expected {{max_gb: GB, texture_stats: bool}}, '
                                 f'got {cache_opt!r}')
        self.cache_texture_stats = bool(cache_opt.get('texture_stats', True))
        has_stats = self.cache_texture_stats and bare.decoder is not None and bare.decoder.stats is not None
        if bare.frozen_steps() == 0 and not has_stats:
            raise UserInputError('train.feature_cache: nothing to keep: no frozen encoder step (set '
                                 'train.freeze_encoder, with an efficientnet-lite or conv encoder) and no texture '
                                 'branch')
        return FeatureCache(float(cache_opt.get('max_gb', 4)) * 2 ** 30)

    def _build_loss(self, key):
        loss_opt = self.opt['train'].get(key)
        return build_loss(deepcopy(loss_opt)).to(self.device) if loss_opt else None

    def feed_data(self, data):
        self.batch = {k: v.to(self.device) for k, v in data.items() if torch.is_tensor(v)}
        self.sample_keys = [f'{path}|{aug}' for path, aug in zip(data.get('gt_path', ()), data.get('aug', ()))]

    def _forward_triplet(self, net, cached=False, drop_lq=False):
        """One forward over SR, syn and GT stacked (one BatchNorm batch); returns scores and maps per kind. With
        ``cached``, the frozen features come from the feature cache. An LQ-conditioned network gets the batch's LQ
        for all three (they share their input), unless ``drop_lq``."""
        b = self.batch
        images = torch.cat([b['sr'], b['syn'], b['gt']], dim=0)
        kwargs = {}
        if self.lq_condition:
            if 'lq' not in b:
                raise UserInputError('network_reward.lq_condition needs each sample\'s LQ: set use_lq: true in the '
                                     'FinPercepFGRDataset options')
            if not drop_lq:
                kwargs['lq'] = b['lq'].repeat(3, 1, 1, 1)
        if cached:
            keys = [f'{kind}|{key}' for kind in ('sr', 'syn', 'gt') for key in self.sample_keys]
            bare = self.get_bare_model(net)
            kwargs['frozen'] = self.feature_cache.batch(
                keys, images, lambda x: bare.frozen_features(x, texture_stats=self.cache_texture_stats))
        out = net(images, **kwargs)
        result = {}
        for key in ('score', 'pdm'):
            result[f'{key}_sr'], result[f'{key}_syn'], result[f'{key}_gt'] = out[key].float().chunk(3)
        return result

    def optimize_parameters(self, current_iter):
        self.optimizer_reward.zero_grad()
        cached = self.feature_cache is not None
        if cached and len(self.sample_keys) != self.batch['gt'].size(0):
            raise UserInputError('train.feature_cache needs each sample\'s gt_path and aug from the training dataset '
                                 '(FinPercepFGRDataset gives them)')
        # drawn from the seeded torch stream, so a resumed run drops the same batches
        drop_lq = self.lq_condition and bool(torch.rand(()) < self.lq_dropout)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast == 'bf16'):
            out = self._forward_triplet(self.net_reward, cached, drop_lq)
        b = self.batch
        loss_dict = OrderedDict()
        if self.cri_map is not None:
            # the GT image has no degraded pixel: its label map (and swap mask) is all zeros
            zeros = torch.zeros_like(out['pdm_gt'])
            loss_dict['l_map'] = self.cri_map(out['pdm_syn'], b['pdm'], b['mask']) + self.cri_map(
                out['pdm_gt'], zeros, zeros)
        if self.cri_rank is not None:
            loss_dict['l_rank'] = self.cri_rank(out['score_sr'], out['score_syn'], out['score_gt'])
        if self.cri_align is not None:
            loss_dict['l_align'] = self.cri_align(out['score_gt'], gt=b['gt'])
        sum(loss_dict.values()).backward()
        self.optimizer_reward.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.feature_cache is not None:
            self.log_dict['feature_cache_hit_rate'] = self.feature_cache.hit_rate()
        if self.ema_decay > 0:
            self.ema_update(self.net_reward_ema, self.get_bare_model(self.net_reward), self.ema_decay_at(current_iter))

    # ---- validation ---------------------------------------------------------------------------
    def _collect(self, dataloader, net, num_images):
        """Run ``net`` over the loader; returns the metric data dict and up to ``num_images`` panels."""
        scores = {'sr': [], 'syn': [], 'gt': []}
        labels = {'sr': [], 'syn': [], 'gt': []}
        maps = {'pdm': [], 'pdm_gt': [], 'mask': []}
        panels = []
        for data in dataloader:
            self.feed_data(data)
            out = self._forward_triplet(net)
            b = self.batch
            for kind in scores:
                scores[kind].append(out[f'score_{kind}'].float().cpu())
                labels[kind].append(-(b[kind] - b['gt']).abs().mean(dim=(1, 2, 3)).float().cpu())
            for i in range(b['gt'].size(0)):
                maps['pdm'].append(out['pdm_syn'][i, 0].float().cpu().numpy())
                maps['pdm_gt'].append(b['pdm'][i, 0].float().cpu().numpy())
                maps['mask'].append(b['mask'][i, 0].float().cpu().numpy())
                if len(panels) < num_images:
                    panels.append((data['name'][i], _map_panel(b['syn'][i], b['pdm'][i], out['pdm_syn'][i])))
        scores = {k: torch.cat(v).numpy() for k, v in scores.items()}
        labels = {k: torch.cat(v).numpy() for k, v in labels.items()}
        data = {f'score_{k}': v for k, v in scores.items()}
        data['score'] = np.concatenate([scores['sr'], scores['syn'], scores['gt']])
        data['label'] = np.concatenate([labels['sr'], labels['syn'], labels['gt']])
        data.update(maps)
        return data, panels

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        val_opt = self.opt['val']
        ema = getattr(self, 'ema_decay', 0) > 0
        net = self.net_reward_ema if ema else self.get_bare_model(self.net_reward)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            data, panels = self._collect(dataloader, net, val_opt.get('num_tb_images', 4))
        net.train(was_training)
        self.metric_results = {}
        for key, metric_opt in val_opt['metrics'].items():
            metric_opt = deepcopy(metric_opt)
            metric_opt.pop('better', None)
            self.metric_results[key] = float(METRIC_REGISTRY.get(metric_opt.pop('type'))(**data, **metric_opt))
        self._initialize_best_metric_results(dataset_name)
        logger = get_root_logger()
        lines = [f'Validation {dataset_name}: iter {current_iter}']
        for key, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, key, value, current_iter)
            best = self.best_metric_results[dataset_name][key]
            lines.append(f'\t # {key}: {value:.4f}\tBest: {best["val"]:.4f} @ {best["iter"]} iter')
            if self.is_train and best['iter'] == current_iter:
                self._save_best(key)
            if tb_logger:
                tb_logger.add_scalar(f'metrics/{dataset_name}/{key}', value, current_iter)
        logger.info('\n'.join(lines))
        if tb_logger:
            for name, panel in panels:
                tb_logger.add_image(f'pdm/{dataset_name}/{name}', panel, current_iter)

    def _save_best(self, metric_key):
        # save_network names the file <label>_<iter>; passing the metric key as "iter" gives
        # models/net_reward_best_<key>.pth, overwritten (atomically) whenever the metric improves
        if getattr(self, 'ema_decay', 0) > 0:
            self.save_network([self.net_reward, self.net_reward_ema], 'net_reward_best', metric_key,
                              param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_reward, 'net_reward_best', metric_key)

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        if self.opt['rank'] == 0:
            self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    # ---- checkpoints --------------------------------------------------------------------------
    def extra_training_state(self):
        return {'best_metric_results': deepcopy(getattr(self, 'best_metric_results', {}))}

    def load_extra_training_state(self, state):
        if state.get('best_metric_results'):
            self.best_metric_results = state['best_metric_results']

    def save(self, epoch, current_iter):
        if getattr(self, 'ema_decay', 0) > 0:
            self.save_network([self.net_reward, self.net_reward_ema], 'net_reward', current_iter,
                              param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_reward, 'net_reward', current_iter)
        self.save_training_state(epoch, current_iter)
