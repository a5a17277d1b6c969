"""options/bench/hacking_ablation.yml: each factor pair differs in that factor alone, on shared seeds, reported on
the test split."""
import os

import pytest
import yaml
from tests.helpers.opt import REPO

from finpercep_basicsr.hacking import plan

GRID = 'options/bench/hacking_ablation.yml'
# what may differ between the two set-ups of a factor, by the factor's name
FACTOR_KEYS = {'ceiling': ('reference_margin',), 'lq_band_anchor': ('train.pixel_opt', 'train.ref_opt'),
               'colour_detach': ('detach_lowpass',), 'map_term': ('lambda_map',), 'ccl': ('train.ccl',),
               'coevolution': ('coevolve',)}


def _flat(tree, prefix=''):
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f'{prefix}{key}.').items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _flat(sub, f'{prefix}{i}.').items()}
    return {prefix[:-1]: tree}


@pytest.fixture(scope='module')
def grid(tmp_path_factory):
    cwd = os.getcwd()
    os.chdir(REPO)  # bench files name their paths from the working folder
    try:
        opt = plan.load_bench_options(GRID)
        runs = plan.write_run_options(dict(opt, seeds=[0]), str(tmp_path_factory.mktemp('grid')))
    finally:
        os.chdir(cwd)
    options = {}
    for setup, _, path in runs:
        with open(path) as f:
            written = yaml.safe_load(f)
        options[setup] = {k: v for k, v in _flat(written).items() if k not in ('name', 'manual_seed')}
    return opt, options


def test_the_grid_extends_the_bench_with_shared_seeds(grid):
    opt, options = grid
    assert len(opt['seeds']) >= 8 and set(options) == set(opt['setups'])
    with open(f'{REPO}/options/bench/hacking_realesrgan.yml') as f:
        base = yaml.safe_load(f)
    assert opt['common'] == base['common'] and opt['chosen_on_dev'] == base['chosen_on_dev']
    # values were chosen on the base's crops (dev); the grid reports on the test split, which nothing else reads
    assert base['evaluation']['split'] == 'dev' and opt['evaluation']['split'] == 'test'
    assert opt['evaluation']['lq'] != base['evaluation']['lq'] and 'test_split' in opt['evaluation']['lq']


def test_no_option_file_but_the_grids_evaluation_reads_the_test_split():
    import glob
    readers = [path for path in glob.glob(f'{REPO}/options/**/*.yml', recursive=True)
               if 'test_split' in open(path).read() or 'photos_test' in open(path).read()]
    assert [os.path.relpath(p, REPO) for p in readers] == [GRID]
    with open(f'{REPO}/{GRID}') as f:
        text = f.read()
    assert text.count('datasets/test_split') == 2  # evaluation.lq and .gt, nothing a training reads


def test_each_factor_pair_differs_in_that_factor_alone(grid):
    opt, options = grid
    factors = opt['claims']['factors']
    assert {name.split('_without')[0].split('_on_the')[0] for name in factors} == set(FACTOR_KEYS)
    for name, pair in factors.items():
        keys = next(v for k, v in FACTOR_KEYS.items() if name.startswith(k))
        a, b = options[pair['with']], options[pair['without']]
        differing = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
        assert differing, name
        assert all(any(key in path for key in keys) for path in differing), (name, sorted(differing))
