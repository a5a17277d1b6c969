"""The hacked-sample builder: RLHF runs -> checkpoints -> FGR samples, resumable, bad options named."""
import json
import os

import cv2
import numpy as np
import pytest
import yaml
from tests.helpers.rlhf import make_generator_checkpoint, make_paired_folder, make_reward_checkpoint, tiny_network_g, \
    write_rlhf_options

from finpercep_basicsr.fgr.hacked import build_hacked_fgr, build_hacked_fgr_from_file
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import write_rgb8


def _photos(folder, num=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(num):
        img = cv2.resize(rng.random((size // 8, size // 8, 3)).astype(np.float32), (size, size),
                         interpolation=cv2.INTER_CUBIC).clip(0, 1)
        write_rgb8(os.path.join(folder, f'photo{i}.png'), img)
    return str(folder)


def _options(tmp_path, checkpoints=(1, 2), size=32, **run_extra):
    data = make_paired_folder(tmp_path / 'pairs', num=2, size=size)
    reward = make_reward_checkpoint(tmp_path / 'rm.pth', responsive=True)
    start = make_generator_checkpoint(tmp_path / 'g0.pth', tiny_network_g())
    rlhf = write_rlhf_options(tmp_path / 'rlhf.yml', data, reward, path__pretrain_network_g=start,
                              path__param_key_g='params', val=None, logger__print_freq=1,
                              datasets__train__gt_size=size,
                              logger__keep_checkpoints=1)  # the recipe must keep every checkpoint anyway
    return {
        'workdir': str(tmp_path / 'work'),
        'runs': [{'name': 'hack', 'opt': rlhf, 'checkpoints': list(checkpoints), **run_extra}],
        'fgr': {'dataroot': str(tmp_path / 'fgr' / '{split}'), 'seed': 0, 'num_workers': 0,
                'photos': {'folders': [_photos(tmp_path / 'photos')], 'crop_size': 32, 'crops_per_photo': 1},
                'degradation': {'scale': 4, 'gt_usm': False, 'second_blur_prob': 0, 'sinc_prob': 0,
                                'final_sinc_prob': 0},
                'masks': {'kinds': {'rect': {'weight': 1, 'max_count': 2}}},
                'labels': {'alpha': 1.0, 'normalize': {'type': 'fixed', 'scale': 0.2}},
                'lmdb': {'enabled': False}, 'contact_sheet': {'num': 0}},
    }


@pytest.mark.slow
def test_hacking_runs_become_fgr_samples_and_a_rerun_is_a_no_op(tmp_path):
    opt = _options(tmp_path, include_start=True)
    os.makedirs(opt['workdir'])
    summary = build_hacked_fgr(opt, progress=False)
    root = tmp_path / 'fgr' / 'train'
    with open(root / 'meta_info.jsonl') as f:
        meta = [json.loads(line) for line in f]
    assert sorted({m['sr_model'] for m in meta}) == ['hack_i1', 'hack_i2', 'hack_start']
    assert summary['samples'] == 2 * 3
    # the run's option file is kept beside the data, with the checkpoints' schedule
    with open(tmp_path / 'fgr' / 'runs' / 'hack.yml') as f:
        run_opt = yaml.safe_load(f)
    assert run_opt['name'] == 'hack' and run_opt['train']['total_iter'] == 2
    assert run_opt['logger']['save_checkpoint_freq'] == 1
    assert run_opt['logger']['keep_checkpoints'] is None
    models = tmp_path / 'work' / 'experiments' / 'hack' / 'models'
    # the generator moved between the checkpoints: the samples come from different generators
    i1 = cv2.imread(str(root / 'sr' / next(m['name'] for m in meta if m['sr_model'] == 'hack_i1')) + '.png')
    i0 = cv2.imread(str(root / 'sr' / next(m['name'] for m in meta if m['sr_model'] == 'hack_start')) + '.png')
    assert i1.shape == i0.shape == (32, 32, 3)
    stamp = os.path.getmtime(models / 'net_g_2.pth')
    again = build_hacked_fgr(opt, progress=False)
    assert again['built_now'] == 0 and os.path.getmtime(models / 'net_g_2.pth') == stamp


@pytest.mark.slow
def test_swap_into_start_puts_the_hacks_into_the_starting_generators_output(tmp_path):
    opt = _options(tmp_path, include_start=True, swap_into='start')
    os.makedirs(opt['workdir'])
    build_hacked_fgr(opt, progress=False)
    root = tmp_path / 'fgr' / 'train'
    with open(root / 'meta_info.jsonl') as f:
        meta = [json.loads(line) for line in f]
    assert {m['sr_model']: m.get('swap_base') for m in meta} == {'hack_start': None, 'hack_i1': 'hack_start',
                                                                 'hack_i2': 'hack_start'}

    def read(key, name):
        return cv2.imread(str(root / key / name) + '.png', cv2.IMREAD_UNCHANGED)

    for m in meta:
        if m['sr_model'] == 'hack_start':
            continue
        start = next(s for s in meta if s['sr_model'] == 'hack_start' and s['photo'] == m['photo'])
        outside = read('mask', m['name']) == 0
        # around the hacked regions: the start generator's SR of the same crop, not the GT
        np.testing.assert_array_equal(read('syn', m['name'])[outside], read('sr', start['name'])[outside])
        assert (read('syn', m['name'])[outside] != read('gt', m['name'])[outside]).any()


def test_bad_runs_are_named(tmp_path):
    opt = _options(tmp_path)
    with pytest.raises(UserInputError, match=r'runs\[0\]: unknown keys'):
        build_hacked_fgr(dict(opt, runs=[dict(opt['runs'][0], checkpiont=[3])]), progress=False)
    with pytest.raises(UserInputError, match=r'runs\[0\].checkpoints'):
        build_hacked_fgr(dict(opt, runs=[dict(opt['runs'][0], checkpoints=[0])]), progress=False)
    with pytest.raises(UserInputError, match=r'runs\[0\].swap_into must be one of'):
        build_hacked_fgr(dict(opt, runs=[dict(opt['runs'][0], swap_into='GT')]), progress=False)
    with pytest.raises(UserInputError, match='option file not found'):
        build_hacked_fgr(dict(opt, runs=[dict(opt['runs'][0], opt=str(tmp_path / 'nope.yml'))]), progress=False)


def test_bad_option_files_are_named(tmp_path):
    path = tmp_path / 'bad.yml'
    path.write_text('runs: []\n')
    with pytest.raises(UserInputError, match='at least one hacking run'):
        build_hacked_fgr_from_file(str(path))
    path.write_text('- a list\n')
    with pytest.raises(UserInputError, match='expected a mapping of options'):
        build_hacked_fgr_from_file(str(path), split='val')


def _tree_bytes(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith('.png') or name == 'meta_info.jsonl':
                with open(os.path.join(folder, name), 'rb') as f:
                    out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return out


CLASSICAL_REWARDS = {  # reward options, GT crop size: NIQE needs two 96 px blocks per image
    'niqe': ({'type': 'FinPercepGlobalIQALoss', 'metric': 'niqe'}, 192),
    'piqe': ({'type': 'FinPercepGlobalIQALoss', 'metric': 'piqe'}, 32),
}


@pytest.mark.slow
@pytest.mark.parametrize('reward', ['rm', 'niqe', 'piqe'])
def test_a_hack_source_is_seeded_the_same_options_give_the_same_generators_and_samples(tmp_path, reward):
    import torch
    extra = {}
    if reward in CLASSICAL_REWARDS:
        reward_opt, size = CLASSICAL_REWARDS[reward]
        extra = {'size': size, 'overrides': {'train.reward_opt': reward_opt}}
    results = []
    for copy in ('a', 'b'):
        opt = _options(tmp_path / copy, **extra)
        os.makedirs(opt['workdir'])
        build_hacked_fgr(opt, progress=False)
        weights = torch.load(tmp_path / copy / 'work' / 'experiments' / 'hack' / 'models' / 'net_g_2.pth')['params']
        files = _tree_bytes(tmp_path / copy / 'fgr' / 'train')
        # the meta lines name the photos' and checkpoints' paths, which differ by the copy's folder
        files['meta_info.jsonl'] = files['meta_info.jsonl'].replace(str(tmp_path / copy).encode(), b'')
        results.append((weights, files))
    (wa, fa), (wb, fb) = results
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert fa.keys() == fb.keys() and fa == fb and any(k.startswith('sr') for k in fa)


def test_the_shipped_hack_recipes_are_seeded_and_leave_the_hacking_checks_run_out():
    """fgr_hacked_v3.yml, fgr_hacked_niqe.yml and fgr_hacked_piqe.yml: every run has its own seed, and none is the
    hacking check's held-out pair (Real-ESRGAN x4plus against the shipped RM's score alone, the grid's global_only)."""
    from finpercep_basicsr.utils.option_check import load_option_file
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runs = [run for name in ('fgr_hacked_v3.yml', 'fgr_hacked_niqe.yml', 'fgr_hacked_piqe.yml')
            for run in load_option_file(os.path.join(root, 'options', 'data', 'pretrained', name))['runs']]
    seeds = [run['overrides']['manual_seed'] for run in runs]
    assert len(set(seeds)) == len(seeds) == len(runs) == 7
    for run in runs:
        with open(os.path.join(root, run['opt'])) as f:
            base = yaml.safe_load(f)
        reward = run['overrides'].get('train.reward_opt', base['train']['reward_opt'])
        generator = base['network_g']['type']
        score_alone = reward.get('lambda_map', 1.0) == 0 or reward['type'] == 'FinPercepGlobalIQALoss'
        shipped = reward.get('pretrain_path') == 'weights/finpercep_rm.pth'
        assert not (generator == 'RRDBNet' and score_alone and shipped), run['name']


def test_the_swap_into_start_recipe_is_fgr_hacked_v3_with_only_the_swap_base_changed():
    """fgr_hacked_v3_start.yml reuses v3's runs and crops: the stage3_v3_hacks / _hacks_start ablation is paired."""
    from finpercep_basicsr.utils.option_check import load_option_file
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'options',
                        'data', 'pretrained')
    v3, start = (load_option_file(os.path.join(root, f'fgr_hacked_{n}.yml')) for n in ('v3', 'v3_start'))
    assert [r.pop('swap_into') for r in start['runs']] == ['start'] * len(v3['runs'])
    assert start['runs'] == v3['runs']
    for key in ('name', 'dataroot'):
        assert start['fgr'].pop(key) != v3['fgr'].pop(key)
    assert start['fgr'] == v3['fgr']
