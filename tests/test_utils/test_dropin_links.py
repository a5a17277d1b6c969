"""Drop-in use: link the files into a copy of a real BasicSR tree and run that tree's own train.py."""
import os
import shutil
import subprocess
import sys

import basicsr
import pytest
import torch
from tests.helpers.opt import REPO, write_options

from finpercep_basicsr.utils.dropin_links import drop_in_files, link_into
from finpercep_basicsr.utils.errors import UserInputError


@pytest.fixture
def basicsr_tree(tmp_path):
    """A BasicSR-style codebase: the installed ``basicsr`` package folder copied under ``target/``."""
    target = tmp_path / 'target'
    shutil.copytree(os.path.dirname(basicsr.__file__), target / 'basicsr',
                    ignore=shutil.ignore_patterns('__pycache__', 'finpercep_*'))
    return target


def test_link_is_idempotent_and_covers_every_subpackage(basicsr_tree):
    first = link_into(str(basicsr_tree), log=lambda *_: None)
    assert {action for action, _ in first} == {'linked'}
    assert {os.path.basename(os.path.dirname(dest)) for _, dest in first} == {'archs', 'losses', 'models', 'data'}
    for _, dest in first:
        assert os.path.islink(dest) and os.path.basename(dest).endswith(
            ('_arch.py', '_loss.py', '_model.py', '_dataset.py'))
    assert {action for action, _ in link_into(str(basicsr_tree), log=lambda *_: None)} == {'unchanged'}


def test_refuses_a_folder_that_is_not_basicsr(tmp_path):
    with pytest.raises(UserInputError, match='is not a BasicSR-style tree: missing basicsr/archs/__init__.py'):
        link_into(str(tmp_path), log=lambda *_: None)


def test_refuses_to_overwrite_a_foreign_file(basicsr_tree):
    sub, src = drop_in_files()[0]
    (basicsr_tree / 'basicsr' / sub / os.path.basename(src)).write_text('# somebody else\n')
    with pytest.raises(UserInputError, match='exists and is not this drop-in'):
        link_into(str(basicsr_tree), log=lambda *_: None)
    assert not any(os.path.islink(basicsr_tree / 'basicsr' / s / os.path.basename(p)) for s, p in drop_in_files())


@pytest.mark.slow
def test_target_tree_own_train_py_trains_finpercep_model(basicsr_tree, fgr_folder):
    result = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'link_into_basicsr.py'), str(basicsr_tree)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    opt = write_options(basicsr_tree / 'opt.yml', dataroot=fgr_folder, train__total_iter=2, val=None)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(basicsr_tree), REPO]))
    run = subprocess.run([sys.executable, 'basicsr/train.py', '-opt', opt], cwd=basicsr_tree, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    models = basicsr_tree / 'experiments' / 'test_rm_tiny' / 'models'
    assert set(torch.load(models / 'net_reward_latest.pth', weights_only=True)) == {'params', 'params_ema'}
    # the tree's own train.py (experiments under the tree) built the model the drop-ins registered
    assert 'Model [FinPercepRMModel] is created.' in (run.stdout + run.stderr)
