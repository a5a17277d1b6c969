"""The demo's steps: every one is the command a user would type, on option files written into OUT.

Layout of OUT (the repository's option templates use the same relative paths, so the generated
files differ from them only in sizes and iteration counts)::

    options/                     every option file the steps use (edit and rerun a step)
    datasets/photos/             real photos (scikit-image, Debian opencv-doc)
    datasets/rlhf/{train_hr,val_hr}/   photo split: training photos / held-out photos
    datasets/test/{gt,lq}/       held-out HR crops and their Real-ESRGAN-degraded LR
    datasets/FGR/{train,val}/    FGR sets built from the training / held-out photos
    weights/RealESRGAN_x4plus.pth  converted from the packaged ncnn model
    experiments/, tb_logger/     BasicSR runs (reward-model stages, three RLHF runs)
    eval/                        evaluation tables and SR images
    report.html, report.md       the report
"""
import json
import os
import sys


from finpercep_basicsr.utils.steps import Step
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.options_io import derive_options

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RM_STAGES = (0, 1, 2, 3)
RLHF_RUNS = {  # run label -> option template
    'global_only': 'rlhf_realesrgan_x4_global.yml',
    'finpercep': 'rlhf_realesrgan_x4_finpercep.yml',
    'finpercep_ccl': 'rlhf_realesrgan_x4_finpercep_ccl.yml',
}
PRESETS = {
    # rm: 'shipped' = RLHF against the shipped FinPercep-RM, judged by the shipped judge (demo/shipped.py);
    #     'train' = build FGR data and train the reward model's four stages first (this module)
    # tiny: the CI test of the default chain (seconds per step)
    'tiny': dict(rm='shipped', sources=['skimage'], heldout=2, rlhf_iters=2, rlhf_patch=32, rlhf_batch=1,
                 eval_size=64, max_photos=8),
    # quick: `make demo`, under 20 minutes on 2 CPU cores: the bench's six RLHF set-ups, one seed
    'quick': dict(rm='shipped', sources=['skimage', 'opencv-doc'], heldout=6, rlhf_iters=80, rlhf_patch=64,
                  rlhf_batch=2, eval_size=192, max_photos=0),
    # full: rebuild the FGR data and retrain the reward model, then three RLHF runs
    'full': dict(rm='train', sources=['skimage', 'opencv-doc'], heldout=8, fgr_crop=192, crops_per_photo=4,
                 masks_per_sr=2, sr='real', rm_iters=1500, rm_batch=8, rlhf_iters=600, rlhf_patch=128, rlhf_batch=2,
                 rlhf_lr=2e-5, eval_size=384, max_photos=0),
    # tiny_train: the CI test of the --full chain
    'tiny_train': dict(rm='train', sources=['skimage'], heldout=2, fgr_crop=64, crops_per_photo=1, masks_per_sr=1,
                       sr='classical', rm_iters=3, rm_batch=2, rlhf_iters=4, rlhf_patch=64, rlhf_batch=1,
                       rlhf_lr=1e-4, eval_size=96, max_photos=8),
}
SR_SOURCES = {
    'classical': [{'type': 'bicubic', 'name': 'bicubic', 'scale': 4},
                  {'type': 'lanczos', 'name': 'lanczos', 'scale': 4}],
    'real': [{'type': 'realesrgan_ncnn', 'name': 'realesrgan_x4plus', 'scale': 4},
             {'type': 'realsr_ncnn', 'name': 'realsr_df2k', 'scale': 4},
             {'type': 'bicubic', 'name': 'bicubic', 'scale': 4}],
}


def _python(*args):
    return [sys.executable] + [str(a) for a in args]


def _script(name):
    return os.path.join(REPO, 'scripts', name)


def _template(*parts):
    return os.path.join(REPO, 'options', *parts)


def split_photos(out, preset):
    """Split the photos (sorted) into training and held-out, and cut the held-out test pairs.

    Held-out photos are spread over the sorted list (every k-th). Test pairs: the centre crop of
    each held-out photo (``eval_size``, a multiple of 4) and its LR by the Real-ESRGAN degradation.
    """
    from finpercep_basicsr.utils.image_io import list_images
    from finpercep_basicsr.fgr.test_pairs import cut_test_pairs

    photos = sorted(list_images(os.path.join(out, 'datasets', 'photos'), recursive=True))
    if preset['max_photos']:
        photos = photos[:preset['max_photos']]
    if len(photos) < preset['heldout'] + 2:
        raise RuntimeError(f'only {len(photos)} photos in {out}/datasets/photos; the demo needs '
                           f'{preset["heldout"] + 2}')
    if preset['rm'] == 'shipped':  # photos the shipped reward model never saw in training
        heldout = [p for p in photos if os.path.basename(p) in shipped_rm_heldout()][:preset['heldout']]
        if len(heldout) < preset['heldout']:
            raise RuntimeError(f'only {len(heldout)} of the shipped reward model\'s held-out photos are in '
                               f'{out}/datasets/photos; the demo needs {preset["heldout"]}')
    else:
        step = len(photos) // preset['heldout']
        heldout = photos[step // 2::step][:preset['heldout']]
    split = {'train': [p for p in photos if p not in heldout], 'heldout': heldout}
    for part, folder in (('train', 'train_hr'), ('heldout', 'val_hr')):
        dest = os.path.join(out, 'datasets', 'rlhf', folder)
        os.makedirs(dest, exist_ok=True)
        for path in split[part]:
            link = os.path.join(dest, os.path.basename(path))
            if not os.path.lexists(link):
                os.symlink(os.path.relpath(path, dest), link)
    cut_test_pairs(heldout, os.path.join(out, 'datasets', 'test'), preset['eval_size'], shrink_to_fit=True)
    with open(os.path.join(out, 'datasets', 'split.json'), 'w') as f:
        json.dump({k: [os.path.basename(p) for p in v] for k, v in split.items()}, f, indent=1)


def shipped_rm_heldout():
    """The photos held out of the shipped reward model's training (its evaluation set's list)."""
    import yaml
    with open(_template('data', 'pretrained', 'fgr_rm_eval.yml')) as f:
        return set(yaml.safe_load(f)['photos']['heldout'])


def check_shipped_split(out):
    """An existing split must hold out only photos the shipped RM never saw (earlier demos split otherwise)."""
    seen = sorted(f'{n}.png' for n in heldout_names(out) if f'{n}.png' not in shipped_rm_heldout())
    if seen:
        raise UserInputError(f'{out}/datasets/split.json holds out {", ".join(seen)}, which the shipped reward model '
                             f'was trained on; use a new --out folder')


def write_options(out, preset_name, rewrite=False):
    """Write the demo's option files into OUT/options; returns {label: path relative to OUT}.

    Existing files are kept (the user may have edited them) unless ``rewrite``.
    """
    p = PRESETS[preset_name]
    files = {}

    def derive(label, template, overrides):
        files[label] = os.path.join('options', f'{label}.yml')
        path = os.path.join(out, files[label])
        if rewrite or not os.path.isfile(path):
            source = os.path.relpath(template, REPO) if isinstance(template, str) else 'the settings below'
            derive_options(template, path, overrides,
                           f'Written by scripts/demo.py (--{preset_name}) from {source}; run from the demo folder.')

    fgr_common = {'photos.crop_size': p['fgr_crop'], 'photos.crops_per_photo': p['crops_per_photo'],
                  'masks_per_sr': p['masks_per_sr'], 'sr_sources': SR_SOURCES[p['sr']], 'num_workers': 0,
                  'lmdb': {'enabled': False}}
    derive('fgr_train', _template('data', 'fgr_build_tiny.yml'), dict(
        fgr_common, name='fgr_train', dataroot='datasets/FGR/train', **{'photos.folders': ['datasets/rlhf/train_hr']}))
    derive('fgr_val', _template('data', 'fgr_build_tiny.yml'), dict(
        fgr_common, name='fgr_val', seed=1000, dataroot='datasets/FGR/val',
        **{'photos.folders': ['datasets/rlhf/val_hr']}))
    iters = p['rm_iters']
    for k in RM_STAGES:
        derive(f'rm_stage{k}', _template('train', 'FinPercepRM', f'stage{k}.yml'), {
            'datasets.train.gt_size': p['fgr_crop'], 'datasets.train.batch_size_per_gpu': p['rm_batch'],
            'datasets.train.num_worker_per_gpu': 0, 'datasets.val.num_worker_per_gpu': 0,
            'train.total_iter': iters, 'train.scheduler': {'type': 'MultiStepLR', 'milestones': [iters], 'gamma': 0.5},
            'val.val_freq': iters, 'logger.print_freq': max(1, iters // 10),
            'logger.save_checkpoint_freq': max(1, iters // 2), 'logger.keep_checkpoints': 1})
    n = p['rlhf_iters']
    for label, template in RLHF_RUNS.items():
        overrides = {
            'datasets.train.gt_size': p['rlhf_patch'], 'datasets.train.batch_size_per_gpu': p['rlhf_batch'],
            'datasets.val.gt_size': p['rlhf_patch'], 'train.total_iter': n, 'train.optim_g.lr': p['rlhf_lr'],
            'val.val_freq': max(1, n // 4),
            'logger.print_freq': max(1, n // 20), 'logger.save_checkpoint_freq': max(1, n // 4),
            'logger.keep_checkpoints': 1}  # the demo reads *_latest.pth; a full RRDBNet save is ~260 MB
        if label == 'finpercep_ccl':  # the four RM stages take equal shares of the run
            for i in range(len(RM_STAGES)):
                overrides[f'train.ccl.stages.{i}.start_iter'] = i * n // len(RM_STAGES)
                if i:
                    overrides[f'train.ccl.stages.{i}.ramp_iters'] = max(1, n // 16)
        derive(f'rlhf_{label}', _template('train', 'RLHF', 'RealESRGAN', template), overrides)
    last = RM_STAGES[-1]
    derive('reward_eval', {
        'network_opt': _rm_network(out, files[f'rm_stage{last}']),
        'pretrain_path': f'experiments/FinPercepRM_stage{last}/models/net_reward_latest.pth',
        'param_key': 'params_ema'}, {})
    return files


def _rm_network(out, rm_option_file):
    import yaml
    with open(os.path.join(out, rm_option_file)) as f:
        network = yaml.safe_load(f)['network_reward']
    return dict(network, pretrained=False)  # the checkpoint holds the trained encoder


def experiment_name(out, option_file):
    import yaml
    with open(os.path.join(out, option_file)) as f:
        return yaml.safe_load(f)['name']


def build_steps(out, preset_name, files):
    """The demo's command steps after the photos are split (see ``split_photos``)."""
    p = PRESETS[preset_name]
    train = ['-m', 'finpercep_basicsr.train', '-opt']
    steps = [
        Step('fgr_train', _python(_script('build_fgr.py'), '-opt', files['fgr_train']),
             ['datasets/FGR/train/build_summary.json'],
             'FGR set from the training photos (real SR models, region swaps)'),
        Step('fgr_val', _python(_script('build_fgr.py'), '-opt', files['fgr_val']),
             ['datasets/FGR/val/build_summary.json'], 'FGR set from the held-out photos (reward-model validation)'),
        Step('convert', _python(_script('convert_ncnn_to_basicsr.py'), '--out', 'weights/RealESRGAN_x4plus.pth'),
             ['weights/RealESRGAN_x4plus.pth'], 'packaged ncnn Real-ESRGAN x4plus -> BasicSR RRDBNet checkpoint'),
    ]
    for k in RM_STAGES:
        name = experiment_name(out, files[f'rm_stage{k}'])
        steps.append(Step(f'rm_stage{k}', _python(*train, files[f'rm_stage{k}'], '--auto_resume'),
                          [f'experiments/{name}/models/net_reward_latest.pth'],
                          f'reward model stage {k} ({p["rm_iters"]} iterations)'))
    for label in RLHF_RUNS:
        name = experiment_name(out, files[f'rlhf_{label}'])
        steps.append(Step(f'rlhf_{label}', _python(*train, files[f'rlhf_{label}'], '--auto_resume'),
                          [f'experiments/{name}/models/net_g_latest.pth'],
                          f'RLHF of Real-ESRGAN x4plus, {label} ({p["rlhf_iters"]} iterations)'))
    runs = ['--run', f'realesrgan_x4plus={files["rlhf_global_only"]}']
    for label in RLHF_RUNS:
        runs += ['--run', f'{label}=experiments/{experiment_name(out, files[f"rlhf_{label}"])}']
    steps.append(Step('evaluate', _python(_script('evaluate_sr.py'), '--lq', 'datasets/test/lq', '--gt',
                                          'datasets/test/gt', *runs, '--reward-opt', files['reward_eval'],
                                          '--save-images', '--out', 'eval'),
                      ['eval/results.json'],
                      'full-reference metrics, RM score and PDM artifact rate on held-out photos'))
    return steps


def photo_step(preset_name):
    sources = [a for s in PRESETS[preset_name]['sources'] for a in ('--source', s)]
    return Step('photos', _python(_script('get_photos.py'), '--out', 'datasets/photos', *sources),
                ['datasets/photos/sources.jsonl'], 'real photos from scikit-image and Debian opencv-doc')


def write_commands(out, steps):
    """OUT/commands.sh: every step's command, to rerun or edit one by hand."""
    with open(os.path.join(out, 'commands.sh'), 'w') as f:
        f.write('#!/usr/bin/env bash\n'
                '# The demo\'s steps, run from this folder (scripts/demo.py skips finished ones).\n')
        f.write('set -e\ncd "$(dirname "$0")"\n')
        for step in steps:
            f.write(f'\n# {step.name}: {step.what}\n{" ".join(step.cmd)}\n')


def heldout_names(out):
    with open(os.path.join(out, 'datasets', 'split.json')) as f:
        return [os.path.splitext(n)[0] for n in json.load(f)['heldout']]
