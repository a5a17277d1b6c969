"""Tiny RLHF inputs for tests: paired LQ/GT folders, reward checkpoints, option files, a stochastic policy."""
import os
from copy import deepcopy

import cv2
import numpy as np
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from tests.helpers.opt import FIXTURES, write_options

from finpercep_basicsr.archs.generator_policy import GeneratorPolicy, Trajectory
from finpercep_basicsr.archs.latent_diffusion import gaussian_log_prob
from finpercep_basicsr.utils.image_io import write_rgb8

TINY_RM = {'type': 'FinPercepRewardNet', 'encoder': 'conv', 'channels': [8, 8, 16, 16], 'stage': 3,
           'decoder_width': 8, 'refine_ch': 4, 'mlp_hidden': 16}


def tiny_network_g():
    """The ``network_g`` options of ``fixtures/train_rlhf_tiny.yml`` (a tiny RRDBNet x4)."""
    import yaml
    with open(os.path.join(FIXTURES, 'train_rlhf_tiny.yml')) as f:
        return yaml.safe_load(f)['network_g']


def make_paired_folder(root, num=2, size=32, scale=4, seed=0, identical=True):
    """Write ``num`` GT images (``size`` px) and their bicubic x``scale`` LQ into ``root/{gt,lq}``.

    With ``identical`` every sample is the same image under another name, so a batch does not
    depend on the order the sampler draws samples in (BasicSR restarts an epoch on resume).
    """
    rng = np.random.default_rng(seed)
    for sub in ('gt', 'lq'):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    gt = None
    for i in range(num):
        if gt is None or not identical:
            gt = cv2.resize(rng.random((size // 4, size // 4, 3)).astype(np.float32), (size, size),
                            interpolation=cv2.INTER_CUBIC).clip(0, 1)
        lq = cv2.resize(gt, (size // scale, size // scale), interpolation=cv2.INTER_AREA)
        write_rgb8(os.path.join(root, 'gt', f'{i:04d}.png'), gt)
        write_rgb8(os.path.join(root, 'lq', f'{i:04d}.png'), lq)
    return str(root)


def make_reward_checkpoint(path, seed=0, network_opt=None, responsive=False):
    """Save a randomly initialised tiny FinPercepRewardNet as ``{'params', 'params_ema'}``.

    With ``responsive`` the convolutions and linear layers get He initialisation (LeakyReLU 0.2):
    PyTorch's default init shrinks the signal at every layer, so a default tiny reward network
    scores every image nearly the same (gradient ~1e-7 per pixel) and cannot show a reward rising.
    """
    from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
    opt = dict(network_opt or TINY_RM)
    opt.pop('type')
    torch.manual_seed(seed)
    net = FinPercepRewardNet(**opt)
    if responsive:
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(module.weight, a=0.2)
    state = net.state_dict()
    torch.save({'params': state, 'params_ema': state}, path)
    return str(path)


def write_rlhf_options(path, data_root, reward_ckpt, **overrides):
    """``fixtures/train_rlhf_tiny.yml`` pointed at ``data_root`` and ``reward_ckpt``, plus overrides."""
    gt, lq = os.path.join(str(data_root), 'gt'), os.path.join(str(data_root), 'lq')
    roots = {f'datasets__{phase}__dataroot_{k}': v for phase in ('train', 'val') for k, v in (('gt', gt), ('lq', lq))}
    return write_options(path, fixture='train_rlhf_tiny.yml', train__reward_opt__pretrain_path=str(reward_ckpt),
                         **{**roots, **overrides})


def build_rlhf_model(tmp_path, data_root, reward_ckpt, dist=False, **overrides):
    """A ``FinPercepRLHFModel`` built in this process from the tiny option file (no train loop).

    ``dist=True`` wraps the generator in DDP (the caller initialises a one-process group).
    """
    path = write_rlhf_options(os.path.join(str(tmp_path), 'inproc.yml'), data_root, reward_ckpt, **overrides)
    return model_from_option_file(path, tmp_path, dist=dist)


def model_from_option_file(path, tmp_path, dist=False):
    """``FinPercepRLHFModel`` of an option file, with its models and states under ``tmp_path``."""
    import yaml

    from finpercep_basicsr.models.finpercep_rlhf_model import FinPercepRLHFModel
    with open(path) as f:
        opt = yaml.safe_load(f)
    opt.update(dist=dist, rank=0, world_size=1, is_train=True, auto_resume=False)
    opt['path'].update(models=os.path.join(str(tmp_path), 'models'),
                       training_states=os.path.join(str(tmp_path), 'states'))
    os.makedirs(opt['path']['models'], exist_ok=True)
    return FinPercepRLHFModel(opt)


def random_batch(seed=0, batch=2, lq_size=8, scale=4):
    """A fixed random LQ/GT batch: ``lq`` (B, 3, h, w), ``gt`` (B, 3, scale*h, scale*w)."""
    g = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(batch, 3, lq_size, lq_size, generator=g),
            'gt': torch.rand(batch, 3, lq_size * scale, lq_size * scale, generator=g)}


def make_generator_checkpoint(path, network_opt, seed=0, out_bias=0.5):
    """Save a random BasicSR generator whose output lies inside [0, 1], as ``{'params', 'params_ema'}``.

    A randomly initialised tiny RRDBNet outputs values around -0.1 that the policy's clamp to
    [0, 1] cuts everywhere, so no reward gradient would reach it; a pretrained SR model outputs
    images. Shifting the last convolution's bias by ``out_bias`` gives such a start.
    """
    from copy import deepcopy

    from basicsr.archs import build_network
    torch.manual_seed(seed)
    net = build_network(deepcopy(network_opt))
    state = net.state_dict()
    state['conv_last.bias'] = state['conv_last.bias'] + out_bias
    torch.save({'params': state, 'params_ema': state}, path)
    return str(path)


@ARCH_REGISTRY.register()
class TinyGaussianPolicy(GeneratorPolicy):
    """A BasicSR net as a one-transition Gaussian policy: SR = clamp(net(LQ) + sigma * noise).

    As small as the tiny RRDBNet, so dpo and grpo run through ``FinPercepRLHFModel`` without a
    diffusion model. ``network_g: {type: TinyGaussianPolicy, net: <BasicSR arch options>, sigma}``;
    the checkpoint (``weights_module``) is the bare net's. The deterministic sample is the mean.
    """
    stochastic = True

    def __init__(self, net, sigma=0.05):
        from basicsr.archs import build_network
        super().__init__()
        self.net, self.sigma, self.scale = build_network(deepcopy(net)), float(sigma), int(net['scale'])

    def sample(self, lq, grad_steps=1):
        with torch.set_grad_enabled(grad_steps > 0 and torch.is_grad_enabled()):
            return self.net(lq).clamp(0, 1)

    @torch.no_grad()
    def sample_trajectory(self, lq):
        mean = self.net(lq)
        action = mean + self.sigma * torch.randn_like(mean)
        return Trajectory(sr=action.clamp(0, 1), states=[mean], actions=[action], timesteps=[0],
                          log_probs=gaussian_log_prob(action, mean, self.sigma)[:, None], cond={'lq': lq})

    def log_prob(self, trajectory):
        mean = self.net(trajectory.cond['lq'])
        return gaussian_log_prob(trajectory.actions[0], mean, self.sigma)[:, None]

    def weights_module(self):
        return self.net


def tiny_gaussian_network_g(sigma=0.05):
    """``network_g`` options of a ``TinyGaussianPolicy`` around the fixture's tiny RRDBNet."""
    return {'type': 'TinyGaussianPolicy', 'net': tiny_network_g(), 'sigma': sigma}
