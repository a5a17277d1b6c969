"""Write option files for tests from the YAML fixtures, with overrides; run modules in subprocesses."""
import os
import subprocess
import sys

from finpercep_basicsr.utils.options_io import derive_options

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_options(path, fixture='train_rm_tiny.yml', dataroot=None, **overrides):
    """Copy ``fixtures/<fixture>`` to ``path``; ``dataroot`` replaces every dataset's dataroot.

    Overrides use ``__`` for nesting: ``train__total_iter=4`` sets ``opt['train']['total_iter']``.
    """
    import yaml
    with open(os.path.join(FIXTURES, fixture)) as f:
        opt = yaml.safe_load(f)
    if dataroot is not None:
        for dataset in opt['datasets'].values():
            dataset['dataroot'] = str(dataroot)
    derive_options(opt, str(path), {k.replace('__', '.'): v for k, v in overrides.items()})
    return str(path)


def run_module(args, cwd, timeout=300, env=None):
    """Run ``python -m <args>`` in ``cwd``; returns the CompletedProcess (text output)."""
    full_env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    full_env.update(env or {})
    return subprocess.run([sys.executable, '-m'] + list(args), cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)

