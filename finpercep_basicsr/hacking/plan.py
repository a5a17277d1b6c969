"""Bench options -> one RLHF option file and one training step per (set-up, seed).

Options (``scripts/bench_hacking.py -opt options/bench/hacking_realesrgan.yml``)::

    name: hacking_realesrgan
    seeds: [0, 1, 2]           # default: 0-7 (DEFAULT_SEEDS)
    common:                    # dotted overrides applied to every run (the shared recipe)
      train.total_iter: 80
    setups:                    # label -> RLHF option file + its own dotted overrides
      global_only: {opt: options/train/RLHF/RealESRGAN/rlhf_realesrgan_x4_global.yml, overrides: {}}
    chosen_on_dev:             # dotted key of `common` -> how its value was chosen (on the dev split)
      train.optim_g.lr: the smallest of 1e-4 / 2e-4 / 5e-4 at which the naive recipe hacked
    evaluation:
      split: dev                                         # dev (values are chosen on it) or test (reported once)
      lq: datasets/test_heldout/lq
      gt: datasets/test_heldout/gt
      judge: options/pretrained/finpercep_rm_judge.yml   # an RM option file (network_reward + path)
      metrics: [psnr, ssim, fsim, gmsd]                  # pyiqa full-reference metrics
      no_reference: piqe                                  # pyiqa no-reference metric that needs no weights
      param_key: params_ema                              # the weights evaluated (BasicSR tests the EMA)
    claims: {hacked: global_only, protected: finpercep_ccl, unstable: finpercep,
             score_only: global_only_lowpass,   # the same recipe without the map: what the map adds
             factors: {ceiling: {with: finpercep_ccl, without: finpercep_ccl_no_ceiling}}}  # one factor switched

A file may start with ``extends: BASE.yml`` (a path from the working folder): it takes BASE's options, its own
``common`` keys update BASE's, and every other key it sets replaces BASE's.

Every run is written to ``<out>/options/<setup>_s<seed>.yml`` (``name`` = ``<bench>_<setup>_s<seed>``,
``manual_seed`` = seed) and trained with ``python -m finpercep_basicsr.train -opt FILE --auto_resume``
from the working folder, so a rerun skips finished runs and resumes a killed one.
"""
import functools
import os
import sys

import yaml

from finpercep_basicsr.utils.steps import Step
from finpercep_basicsr.utils.checkpoint import file_sha256
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.options_io import derive_options, read_header

TOP_KEYS = {'extends', 'name', 'seeds', 'common', 'chosen_on_dev', 'setups', 'evaluation', 'claims'}
SETUP_KEYS = {'opt', 'overrides'}
EVAL_KEYS = {'split', 'lq', 'gt', 'judge', 'metrics', 'no_reference', 'param_key', 'pdm_threshold', 'max_images'}
CLAIM_KEYS = {'hacked', 'protected', 'unstable', 'score_only', 'factors'}
SPLITS = ('dev', 'test')
# seeds when a bench file names none: eight paired seeds give a t interval of about 0.84 standard deviations of the
# per-seed difference on each side (t 2.36 / sqrt 8), where three give 2.5
DEFAULT_SEEDS = list(range(8))
EVAL_DEFAULTS = {'split': 'dev', 'metrics': ['psnr', 'ssim', 'fsim', 'gmsd'], 'no_reference': 'piqe',
                 'param_key': 'params_ema', 'pdm_threshold': 0.5, 'max_images': 0}


def _unknown(keys, allowed, where):
    extra = set(keys) - allowed
    if extra:
        raise UserInputError(f'{where}: unknown key(s) {", ".join(sorted(extra))}; '
                             f'allowed: {", ".join(sorted(allowed))}')


def _read_bench_file(path):
    """A bench file's options; one with ``extends: BASE`` takes BASE's, its ``common`` updated key by key and every
    other key it sets replacing BASE's (an ablation grid shares its recipe and evaluation with the bench it extends)."""
    if not os.path.isfile(path):
        raise UserInputError(f'bench option file not found: {path}')
    with open(path) as f:
        opt = yaml.safe_load(f) or {}
    _unknown(opt, TOP_KEYS, path)
    base_path = opt.pop('extends', None)
    if base_path is None:
        return opt
    base = _read_bench_file(base_path)
    common = dict(base.get('common') or {}, **(opt.pop('common', None) or {}))
    return dict(base, **opt, common=common)


def load_bench_options(path, seeds=None, setups=None):
    """Read and check a bench option file; ``seeds`` / ``setups`` (lists) narrow it from the command line."""
    opt = _read_bench_file(path)
    for key in ('name', 'setups', 'evaluation'):
        if key not in opt:
            raise UserInputError(f'{path}: missing key {key!r}')
    if not isinstance(opt['setups'], dict) or not opt['setups']:
        raise UserInputError(f'{path}: setups must map a label to {{opt, overrides}}')
    for label, setup in opt['setups'].items():
        if not isinstance(setup, dict) or 'opt' not in setup:
            raise UserInputError(f'{path}: setups.{label} needs opt: an RLHF option file')
        _unknown(setup, SETUP_KEYS, f'{path}: setups.{label}')
    evaluation = dict(EVAL_DEFAULTS, **opt['evaluation'])
    _unknown(evaluation, EVAL_KEYS, f'{path}: evaluation')
    for key in ('lq', 'gt'):
        if key not in evaluation:
            raise UserInputError(f'{path}: evaluation.{key} is required (held-out LQ / GT folders)')
    if evaluation['split'] not in SPLITS:
        raise UserInputError(f'{path}: evaluation.split must be one of {", ".join(SPLITS)}, '
                             f'got {evaluation["split"]!r}')
    opt['evaluation'] = evaluation
    opt['seeds'] = [int(s) for s in (seeds or opt.get('seeds') or DEFAULT_SEEDS)]
    if setups:
        missing = [s for s in setups if s not in opt['setups']]
        if missing:
            raise UserInputError(f'--setups {", ".join(missing)}: not in {path} ({", ".join(opt["setups"])})')
        opt['setups'] = {s: opt['setups'][s] for s in setups}
    opt['claims'] = dict(opt.get('claims') or {})
    _unknown(opt['claims'], CLAIM_KEYS, f'{path}: claims')
    for factor, pair in (opt['claims'].get('factors') or {}).items():
        if not isinstance(pair, dict) or set(pair) != {'with', 'without'}:
            raise UserInputError(f'{path}: claims.factors.{factor} needs {{with: SETUP, without: SETUP}}, got {pair!r}')
    opt.setdefault('common', {})
    opt['chosen_on_dev'] = dict(opt.get('chosen_on_dev') or {})
    for key in opt['chosen_on_dev']:
        if not _sets_key(opt['common'], key):
            raise UserInputError(f'{path}: chosen_on_dev.{key} names no value of common (a dotted key of common, or '
                                 f'a key inside one)')
    return opt


def _sets_key(common, dotted):
    """Whether ``common`` (dotted keys -> values) sets ``dotted``: as a key, or as a key inside a dict value."""
    for key, value in common.items():
        if dotted == key:
            return True
        if dotted.startswith(key + '.') and isinstance(value, dict):
            return _sets_key(value, dotted[len(key) + 1:])
    return False


def run_name(bench, setup, seed):
    return f'{bench}_{setup}_s{seed}'


def write_run_options(opt, out, rewrite=False):
    """Derive every (setup, seed) option file into ``<out>/options``; returns [(setup, seed, path)].

    Existing files are kept (a rerun resumes the same runs) unless ``rewrite``.
    """
    runs = []
    for setup, spec in opt['setups'].items():
        for seed in opt['seeds']:
            path = os.path.join(out, 'options', f'{setup}_s{seed}.yml')
            if rewrite or not os.path.isfile(path):
                overrides = dict(opt['common'], **(spec.get('overrides') or {}))
                overrides.update(name=run_name(opt['name'], setup, seed), manual_seed=seed)
                derive_options(spec['opt'], path, overrides,
                               f'Written by scripts/bench_hacking.py ({opt["name"]}) from {spec["opt"]}: '
                               f'set-up {setup}, seed {seed}.')
            runs.append((setup, seed, path))
    return runs


INPUTS_KEY = 'bench_inputs'
CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.ckpt', '.safetensors')


@functools.lru_cache(maxsize=None)
def _sha256_of_version(path, size, mtime_ns):  # size and mtime only key the cache: a rewritten file is hashed again
    return file_sha256(path)


def checkpoint_sha256(path):
    """sha256 of a checkpoint, hashed once per process while its size and mtime stay the same: every run of a
    bench names the same files, the generator's 64 MB among them."""
    stat = os.stat(path)
    return _sha256_of_version(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def checkpoint_fingerprint(opt):
    """{path: sha256} of every existing checkpoint file an option tree names (any nested string value)."""
    found = {}

    def walk(value):
        if isinstance(value, dict):
            for k, v in value.items():
                if k != INPUTS_KEY:
                    walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            path = value.split(':', 1)[1] if value.startswith('checkpoint:') else value
            if path.endswith(CHECKPOINT_SUFFIXES) and os.path.isfile(path):
                found[path] = checkpoint_sha256(path)

    walk(opt)
    return dict(sorted(found.items()))


def stamp_checkpoints(runs):
    """Record in each run's option file (``bench_inputs``) the sha256 of every checkpoint it names.

    The key is copied with the options into the experiment folder, so ``check_experiments_match``
    refuses a finished run whose generator or reward checkpoint has since changed under the same
    path (a new shipped reward model, a reconverted generator): it would otherwise be skipped as done.

    Returns:
        dict: {path: sha256} over all runs.
    """
    union = {}
    for _, _, path in runs:
        with open(path) as f:
            opt = yaml.safe_load(f)
        inputs = checkpoint_fingerprint(opt)
        union.update(inputs)
        if opt.get(INPUTS_KEY) != inputs:
            derive_options(opt, path, {INPUTS_KEY: inputs}, read_header(path))
    return union


def experiment_dir(option_file):
    with open(option_file) as f:
        return os.path.join('experiments', yaml.safe_load(f)['name'])


def check_experiments_match(runs):
    """Refuse to reuse an experiment folder trained from other options (same name, another recipe).

    A finished run is skipped and a partial one resumed, so a folder left by an earlier bench with the
    same name but other settings would silently stand in for the new run.
    """
    for _, _, path in runs:
        folder = experiment_dir(path)
        copied = os.path.join(folder, os.path.basename(path))
        if not os.path.isfile(copied):
            continue
        with open(copied) as f:
            old = yaml.safe_load(f)
        with open(path) as f:
            new = yaml.safe_load(f)
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if INPUTS_KEY in changed:
                was, now = old.get(INPUTS_KEY) or {}, new.get(INPUTS_KEY) or {}
                files = sorted(p for p in set(was) | set(now) if was.get(p) != now.get(p))
                changed[changed.index(INPUTS_KEY)] = (f'{INPUTS_KEY}: checkpoints changed or not recorded: '
                                                      f'{", ".join(files)}')
            raise UserInputError(f'{folder} was trained from other options than {path} (differs in: '
                                 f'{", ".join(changed)}); delete it, or give the bench another name')


def training_steps(runs, threads=1):
    """One ``Step`` per run; done when ``experiments/<name>/models/net_g_latest.pth`` exists."""
    steps = []
    for setup, seed, path in runs:
        cmd = [sys.executable, '-m', 'finpercep_basicsr.train', '-opt', path, '--auto_resume']
        steps.append(Step(f'{setup}_s{seed}', cmd, [os.path.join(experiment_dir(path), 'models', 'net_g_latest.pth')],
                          f'RLHF set-up {setup}, seed {seed}', env={'OMP_NUM_THREADS': str(threads)}))
    return steps
