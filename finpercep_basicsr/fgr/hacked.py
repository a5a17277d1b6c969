"""FGR samples from a generator's own reward hacks (co-evolution as a data recipe, beyond the paper).

A reward model trained on SR-model outputs only learns what SR models get wrong, and those mostly
blur. The textures an RLHF generator invents to please a reward (etching, painterly strokes,
over-sharpened noise) are missing from such data, so the next reward is hacked the same way. This
recipe closes the loop: fine-tune a generator with the project's own RLHF entry against a
global-only reward and against earlier reward-model stages, keep its weights at several
checkpoints, and let the FGR builder turn each checkpoint into an SR source (region swaps and the
FGR label formula against GT). RM_{k+1}, trained on the result, has seen the hacks of RM_k.

Options (``scripts/build_hacked_fgr.py -opt options/data/fgr_hacked_default.yml``)::

    name: fgr_hacked
    workdir: .                 # where the RLHF runs execute (their relative paths resolve here)
    runs:
      - name: hack_global_rm0  # experiment name (experiments/<name>/ under workdir)
        opt: options/train/RLHF/RealESRGAN/rlhf_realesrgan_x4_global.yml
        overrides: {train.optim_g.lr: !!float 1e-4}   # dotted keys, as the demo's derived files
        checkpoints: [40, 80, 120]                     # iterations whose weights become SR sources
        param_key: params      # params (raw, the hack) or params_ema (smoothed)
        include_start: false   # also add the run's starting generator as a source
        swap_into: gt          # gt, or start: the checkpoints' regions go into the starting generator's output,
                               # so the hack is all that tells them apart (fgr.labels)
    fgr:                       # FGR build options (fgr_build_default.yml's keys)
      base: options/data/fgr_build_default.yml         # optional: start from this file
      dataroot: datasets/FGR_hacked/{split}
      sr_sources: []           # extra sources; the checkpoints' sources are appended

Each run is derived into ``<fgr dataroot>/runs/<name>.yml`` with ``name``, ``train.total_iter =
max(checkpoints)`` and ``logger.save_checkpoint_freq = gcd(checkpoints)`` set, and trained with
``python -m finpercep_basicsr.train -opt <file> --auto_resume`` (seeded by the run's
``manual_seed``). A run whose checkpoints all exist is skipped; a killed run continues from its last
training state; the FGR build resumes sample by sample. So the command is resumable end to end.
"""
import math
import os
import subprocess
import sys
from copy import deepcopy

import yaml

from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.options_io import deep_merge, derive_options

RUN_KEYS = {'name', 'opt', 'overrides', 'checkpoints', 'param_key', 'include_start', 'swap_into'}
SWAP_INTO = ('gt', 'start')


def read_yaml(path, what):
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise UserInputError(f'cannot read {what} {path}: {err}') from err


def check_run(run, index):
    """Validate one ``runs[index]`` entry; returns it with defaults filled in."""
    where = f'runs[{index}]'
    if not isinstance(run, dict):
        raise UserInputError(f'{where} must be a mapping, got {run!r}')
    unknown = set(run) - RUN_KEYS
    if unknown:
        raise UserInputError(f'{where}: unknown keys {sorted(unknown)}; allowed: {sorted(RUN_KEYS)}')
    for key in ('name', 'opt', 'checkpoints'):
        if not run.get(key):
            raise UserInputError(f'{where}.{key} is required')
    checkpoints = run['checkpoints']
    if not isinstance(checkpoints, list) or not all(isinstance(c, int) and c > 0 for c in checkpoints):
        raise UserInputError(f'{where}.checkpoints must be a list of positive iterations, got {checkpoints!r}')
    if not os.path.isfile(run['opt']):
        raise UserInputError(f'{where}.opt: option file not found: {run["opt"]}')
    if run.get('swap_into', 'gt') not in SWAP_INTO:
        raise UserInputError(f'{where}.swap_into must be one of {SWAP_INTO}, got {run["swap_into"]!r}')
    return {'overrides': {}, 'param_key': 'params', 'include_start': False, 'swap_into': 'gt', **run,
            'checkpoints': sorted(set(checkpoints))}


def checkpoint_path(workdir, name, iteration):
    """Where BasicSR saves a run's generator at ``iteration``."""
    return os.path.join(workdir, 'experiments', name, 'models', f'net_g_{iteration}.pth')


def derive_run(run, runs_dir):
    """Write the run's option file; returns (path, options)."""
    overrides = dict(run['overrides'])
    overrides['name'] = run['name']
    overrides.setdefault('train.total_iter', max(run['checkpoints']))
    overrides.setdefault('logger.save_checkpoint_freq', math.gcd(*run['checkpoints']))
    overrides['logger.keep_checkpoints'] = None  # the FGR samples are made from every numbered checkpoint
    path = os.path.join(runs_dir, f'{run["name"]}.yml')
    opt = derive_options(run['opt'], path, overrides,
                         f'Written by scripts/build_hacked_fgr.py from {run["opt"]}: a generator hacking its reward.')
    if opt['train']['total_iter'] < max(run['checkpoints']):
        raise UserInputError(f'run {run["name"]}: train.total_iter {opt["train"]["total_iter"]} is before the last '
                             f'checkpoint {max(run["checkpoints"])}')
    return path, opt


def train_run(run, option_file, workdir, progress=True):
    """Train one hacking run (resumable) unless all of its checkpoints exist."""
    wanted = [checkpoint_path(workdir, run['name'], it) for it in run['checkpoints']]
    if all(os.path.isfile(p) for p in wanted):
        return False
    cmd = [sys.executable, '-m', 'finpercep_basicsr.train', '-opt', os.path.abspath(option_file), '--auto_resume']
    result = subprocess.run(cmd, cwd=workdir, stdout=None if progress else subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f'hacking run {run["name"]} failed (exit {result.returncode}): {" ".join(cmd)}')
    missing = [p for p in wanted if not os.path.isfile(p)]
    if missing:
        raise UserInputError(f'run {run["name"]} finished without the checkpoints {missing}: make checkpoints '
                             'multiples of logger.save_checkpoint_freq')
    return True


def run_sources(run, opt, workdir):
    """The SR sources of a finished run: one ``basicsr`` source per checkpoint (and the start), each with the start
    as its ``swap_base`` when ``swap_into: start``."""
    network = deepcopy(opt['network_g'])
    scale = int(opt.get('scale', network.get('scale', network.get('upscale', 4))))
    start = None
    if run['include_start'] or run['swap_into'] == 'start':
        path = opt['path'].get('pretrain_network_g')
        if not path:
            raise UserInputError(f'run {run["name"]}: include_start and swap_into: start need '
                                 f'path.pretrain_network_g in {run["opt"]}')
        start = {'type': 'basicsr', 'name': f'{run["name"]}_start', 'network': network, 'scale': scale,
                 'path': os.path.join(workdir, path), 'param_key': opt['path'].get('param_key_g', 'params')}
    sources = [deepcopy(start)] if run['include_start'] else []
    for it in run['checkpoints']:
        source = {'type': 'basicsr', 'name': f'{run["name"]}_i{it}', 'network': network, 'scale': scale,
                  'path': checkpoint_path(workdir, run['name'], it), 'param_key': run['param_key']}
        if run['swap_into'] == 'start':
            source['swap_base'] = deepcopy(start)
        sources.append(source)
    return sources


def fgr_options(opt, sources):
    """The FGR build options: ``fgr`` (over ``fgr.base``) with the runs' sources appended."""
    fgr = deepcopy(opt.get('fgr') or {})
    base = fgr.pop('base', None)
    if base:
        fgr = deep_merge(read_yaml(base, 'fgr.base options'), fgr)
    fgr['sr_sources'] = list(fgr.get('sr_sources') or []) + sources
    for key in ('dataroot', 'photos'):
        if not fgr.get(key):
            raise UserInputError(f'fgr.{key} is required')
    return fgr


def build_hacked_fgr(opt, progress=True):
    """Train the hacking runs, then build the FGR set from their checkpoints; returns the build summary."""
    from finpercep_basicsr.fgr.builder import build_fgr
    if not opt.get('runs'):
        raise UserInputError('runs: give at least one hacking run')
    runs = [check_run(r, i) for i, r in enumerate(opt['runs'])]
    names = [r['name'] for r in runs]
    if len(set(names)) != len(names):
        raise UserInputError(f'runs: names must be distinct, got {names}')
    workdir = os.path.abspath(opt.get('workdir', '.'))
    # the FGR options are checked before any run trains; the runs' option files go beside the split folders
    fgr_root = str(fgr_options(opt, [])['dataroot'])
    runs_dir = os.path.join(os.path.abspath(os.path.dirname(fgr_root.replace('{split}', 'x'))), 'runs')
    sources = []
    for run in runs:
        path, run_opt = derive_run(run, runs_dir)
        train_run(run, path, workdir, progress)
        sources += run_sources(run, run_opt, workdir)
    return build_fgr(fgr_options(opt, sources), progress=progress)


def build_hacked_fgr_from_file(path, split=None, dataroot=None, progress=True):
    """``build_hacked_fgr`` of the option file ``path``, with ``fgr.split`` / ``fgr.dataroot`` overridden when
    given (``scripts/build_hacked_fgr.py``)."""
    from finpercep_basicsr.utils.option_check import load_option_file
    opt = load_option_file(path)
    opt.setdefault('fgr', {}).update({k: v for k, v in (('split', split), ('dataroot', dataroot)) if v is not None})
    return build_hacked_fgr(opt, progress=progress)
