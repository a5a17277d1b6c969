"""The package's layer contract (.importlinter) holds, catches an upward import, and no module imports the package."""
import os
import shutil
import subprocess
import sys

import grimp

from tests.helpers.opt import REPO

PACKAGE = 'finpercep_basicsr'
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), 'lint-imports')


def lint_imports(root):
    """Run import-linter with ``root``'s .importlinter on the package found first on sys.path at ``root``."""
    env = dict(os.environ, PYTHONPATH=root)
    return subprocess.run([LINT_IMPORTS, '--no-logo', '--no-cache'], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def test_no_module_imports_the_package_init():
    # registration goes through the subpackage a module needs (as the drop-in files do), never the package's __init__
    assert grimp.build_graph(PACKAGE).find_modules_that_directly_import(PACKAGE) == set()


def test_layer_contract_holds_and_breaks_on_an_upward_import(tmp_path):
    shutil.copytree(os.path.join(REPO, PACKAGE), tmp_path / PACKAGE, ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(os.path.join(REPO, '.importlinter'), tmp_path)
    kept = lint_imports(str(tmp_path))
    assert kept.returncode == 0, kept.stdout + kept.stderr

    utils_module = tmp_path / PACKAGE / 'utils' / 'errors.py'
    with open(utils_module, 'a') as f:  # inside a function: the contract reads every import, not only top-level ones
        f.write('\n\ndef _upward():\n    from finpercep_basicsr.hacking import plan  # noqa: F401\n')
    broken = lint_imports(str(tmp_path))
    assert broken.returncode != 0
    assert 'finpercep_basicsr.utils.errors -> finpercep_basicsr.hacking.plan' in broken.stdout
