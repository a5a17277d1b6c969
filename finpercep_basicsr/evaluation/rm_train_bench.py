"""Samples per second of a reward-model training step, uncached vs from the feature cache, in one interleaved run.

The model is the one an RM option file trains (default: the shipped recipe's last stage,
``options/train/FinPercepRM/stage3.yml``, with its frozen early encoder and its trainable stride-32 blocks), built
without its checkpoints (the weights do not change the compute) and fed random FGR-shaped batches of ``size`` px.
Each repeat times every set-up once in turn, so a busy machine slows them alike, and the medians are compared:

- ``uncached``: the step as it always ran;
- ``cached``: ``train.feature_cache``, every sample already in the cache (the steady state from the second pass
  over a sample with the same crop and flips); ``cached, levels only``: the same with ``texture_stats: false``;
- with ``--bf16``, the same two under ``train.autocast: bf16``.
"""
import os
from copy import deepcopy

import torch

from finpercep_basicsr.evaluation.timing import median, timed
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.option_check import load_option_file

DEFAULT_OPT = 'options/train/FinPercepRM/stage3.yml'


def _model(opt, train):
    from finpercep_basicsr.models.finpercep_rm_model import FinPercepRMModel
    opt = deepcopy(opt)
    opt['path'] = {'pretrain_network_reward': None, 'models': os.devnull, 'training_states': os.devnull}
    # the set-up decides the cache and the precision; align_opt's base is a checkpoint
    opt['train'] = {k: v for k, v in opt['train'].items() if k not in ('align_opt', 'feature_cache', 'autocast')}
    opt['train'].update(train)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=torch.cuda.device_count(), val=None)
    torch.manual_seed(0)
    return FinPercepRMModel(opt)


def _batch(batch_size, size):
    g = torch.Generator().manual_seed(0)
    images = {k: torch.rand(batch_size, 3, size, size, generator=g) for k in ('gt', 'sr', 'syn')}
    maps = {k: torch.rand(batch_size, 1, size, size, generator=g) for k in ('pdm', 'mask')}
    return dict(images, **maps, gt_path=[f'sample{i}' for i in range(batch_size)], aug=['0,0,0,0'] * batch_size)


def run_rm_train_bench(opt_path=DEFAULT_OPT, size=256, batch_size=8, repeats=5, threads=2, bf16=False):
    """Time the set-ups (see the module docstring); prints a table and returns {set-up: samples/s}."""
    torch.set_num_threads(threads)
    if not os.path.isfile(opt_path):
        raise UserInputError(f'RM option file not found: {opt_path}')
    opt = load_option_file(opt_path)
    if not (opt.get('train') or {}).get('freeze_encoder'):
        raise UserInputError(f'{opt_path}: train.freeze_encoder is off, so the cache keeps only the texture statistics')
    setups = {'uncached': {}, 'cached': {'feature_cache': {'max_gb': 8}},
              'cached, levels only': {'feature_cache': {'max_gb': 8, 'texture_stats': False}}}
    if bf16:
        setups.update({f'{k} bf16': dict(v, autocast='bf16') for k, v in list(setups.items())})
    models = {name: _model(opt, train) for name, train in setups.items()}
    batch = _batch(batch_size, size)
    for model in models.values():  # warm-up; fills the caches
        model.feed_data(batch)
        model.optimize_parameters(1)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            model.feed_data(batch)
            times[name].append(timed(lambda: model.optimize_parameters(2), model.device)[1])
    rates = {name: batch_size / median(t) for name, t in times.items()}
    device = next(iter(models.values())).device
    print(f'RM training step, {opt_path}: batch {batch_size} x (SR, syn, GT) at {size} px, {device}, '
          f'{threads} thread(s), median of {repeats}')
    print('| set-up | samples/s | vs uncached |\n|---|---|---|')
    for name, rate in rates.items():
        print(f'| {name} | {rate:.2f} | {rate / rates["uncached"]:.2f}x |')
    return rates
