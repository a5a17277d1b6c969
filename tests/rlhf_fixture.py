"""Tiny RLHF inputs for tests: paired LQ/GT folders, reward checkpoints, option files."""
import os

import cv2
import numpy as np
import torch
from opt_fixture import write_options

from finpercep_basicsr.utils.image_io import write_rgb8

TINY_RM = {'type': 'FinPercepRewardNet', 'encoder': 'conv', 'channels': [8, 8, 16, 16], 'stage': 3,
           'decoder_width': 8, 'refine_ch': 4, 'mlp_hidden': 16}


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


def make_reward_checkpoint(path, seed=0, network_opt=None):
    """Save a randomly initialised tiny FinPercepRewardNet as ``{'params', 'params_ema'}``."""
    from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
    opt = dict(network_opt or TINY_RM)
    opt.pop('type')
    torch.manual_seed(seed)
    state = FinPercepRewardNet(**opt).state_dict()
    torch.save({'params': state, 'params_ema': state}, path)
    return str(path)


def write_rlhf_options(path, data_root, reward_ckpt, **overrides):
    """``fixtures/train_rlhf_tiny.yml`` pointed at ``data_root`` and ``reward_ckpt``, plus overrides."""
    gt, lq = os.path.join(str(data_root), 'gt'), os.path.join(str(data_root), 'lq')
    roots = {f'datasets__{phase}__dataroot_{k}': v for phase in ('train', 'val') for k, v in (('gt', gt), ('lq', lq))}
    return write_options(path, fixture='train_rlhf_tiny.yml', train__reward_opt__pretrain_path=str(reward_ckpt),
                         **{**roots, **overrides})
