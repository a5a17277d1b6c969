"""Trains FinPercep-RM on FGR samples: map regression plus score ranking (SR < syn < GT)."""
from collections import OrderedDict
from copy import deepcopy

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from finpercep_basicsr.models.finpercep_base_model import FinPercepBaseModel


@MODEL_REGISTRY.register()
class FinPercepRMModel(FinPercepBaseModel):
    """Reward-model training through BasicSR.

    Options: ``network_reward``; ``path.pretrain_network_reward`` / ``param_key_reward`` /
    ``strict_load_reward``; ``train.{optim_reward, scheduler, map_opt, rank_opt, ema_decay}``.
    Validation logs ``map_mae`` (lower is better) and ``triplet_acc`` (higher is better).
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.net_reward = self.model_to_device(build_network(deepcopy(opt['network_reward'])))
        self.print_network(self.net_reward)
        load_path = opt['path'].get('pretrain_network_reward')
        if load_path is not None:
            self.load_network(self.net_reward, load_path, opt['path'].get('strict_load_reward', True),
                              opt['path'].get('param_key_reward', 'params'))
        if self.is_train:
            self.init_training_settings()

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_reward.train()
        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:
            self.net_reward_ema = build_network(deepcopy(self.opt['network_reward'])).to(self.device).eval()
            self.net_reward_ema.load_state_dict(self.get_bare_model(self.net_reward).state_dict())
        self.cri_map = build_loss(deepcopy(train_opt['map_opt'])).to(self.device) if train_opt.get('map_opt') else None
        self.cri_rank = build_loss(deepcopy(train_opt['rank_opt'])).to(self.device) if train_opt.get('rank_opt') else None
        if self.cri_map is None and self.cri_rank is None:
            raise ValueError('FinPercepRMModel: set at least one of train.map_opt and train.rank_opt')
        optim_opt = deepcopy(train_opt['optim_reward'])
        params = [p for p in self.net_reward.parameters() if p.requires_grad]
        self.optimizer_reward = self.get_optimizer(optim_opt.pop('type'), params, **optim_opt)
        self.optimizers.append(self.optimizer_reward)
        self.setup_schedulers()

    def feed_data(self, data):
        self.batch = {k: v.to(self.device) for k, v in data.items() if torch.is_tensor(v)}

    def _forward_triplet(self, net):
        b = self.batch
        out = net(torch.cat([b['sr'], b['syn'], b['gt']], dim=0))
        score_sr, score_syn, score_gt = out['score'].chunk(3)
        pdm_sr, pdm_syn, pdm_gt = out['pdm'].chunk(3)
        return {'score_sr': score_sr, 'score_syn': score_syn, 'score_gt': score_gt,
                'pdm_sr': pdm_sr, 'pdm_syn': pdm_syn, 'pdm_gt': pdm_gt}

    def optimize_parameters(self, current_iter):
        self.optimizer_reward.zero_grad()
        out = self._forward_triplet(self.net_reward)
        loss_dict = OrderedDict()
        total = 0
        if self.cri_map is not None:
            # the GT image has no degraded pixel: its label map is all zeros
            l_map = self.cri_map(out['pdm_syn'], self.batch['pdm']) + self.cri_map(
                out['pdm_gt'], torch.zeros_like(out['pdm_gt']))
            loss_dict['l_map'] = l_map
            total = total + l_map
        if self.cri_rank is not None:
            l_rank = self.cri_rank(out['score_sr'], out['score_syn'], out['score_gt'])
            loss_dict['l_rank'] = l_rank
            total = total + l_rank
        total.backward()
        self.optimizer_reward.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema_reward(self.ema_decay)

    @torch.no_grad()
    def model_ema_reward(self, decay):
        net = self.get_bare_model(self.net_reward).state_dict()
        for k, v in self.net_reward_ema.state_dict().items():
            v.copy_(v * decay + net[k].detach() * (1 - decay) if v.is_floating_point() else net[k])

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        net = self.net_reward_ema if getattr(self, 'ema_decay', 0) > 0 else self.net_reward
        net.eval()
        abs_err, pixels, correct, count = 0.0, 0, 0, 0
        with torch.no_grad():
            for data in dataloader:
                self.feed_data(data)
                out = self._forward_triplet(net)
                abs_err += (out['pdm_syn'] - self.batch['pdm']).abs().sum().item()
                pixels += self.batch['pdm'].numel()
                correct += ((out['score_sr'] < out['score_syn']) & (out['score_syn'] < out['score_gt'])).sum().item()
                count += out['score_sr'].numel()
        self.net_reward.train()
        results = {'map_mae': abs_err / pixels, 'triplet_acc': correct / count}
        log = f'Validation {dataset_name}: ' + ', '.join(f'{k} {v:.4f}' for k, v in results.items())
        get_root_logger().info(log)
        if tb_logger:
            for k, v in results.items():
                tb_logger.add_scalar(f'metrics/{dataset_name}/{k}', v, current_iter)
        self.metric_results = results

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        if self.opt['rank'] == 0:
            self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def save(self, epoch, current_iter):
        if getattr(self, 'ema_decay', 0) > 0:
            self.save_network([self.net_reward, self.net_reward_ema], 'net_reward', current_iter,
                              param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_reward, 'net_reward', current_iter)
        self.save_training_state(epoch, current_iter)
