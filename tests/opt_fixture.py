"""Write option files for tests from the YAML fixtures, with dotted-key overrides."""
import os
import subprocess
import sys

import yaml

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_options(path, fixture='train_rm_tiny.yml', dataroot=None, **overrides):
    """Copy ``fixtures/<fixture>`` to ``path``; ``dataroot`` replaces every dataset's dataroot.

    Overrides use ``__`` for nesting: ``train__total_iter=4`` sets ``opt['train']['total_iter']``.
    """
    with open(os.path.join(FIXTURES, fixture)) as f:
        opt = yaml.safe_load(f)
    if dataroot is not None:
        for dataset in opt['datasets'].values():
            dataset['dataroot'] = str(dataroot)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split('__')
        node = opt
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def run_module(args, cwd, timeout=300, env=None):
    """Run ``python -m <args>`` in ``cwd``; returns the CompletedProcess (text output)."""
    full_env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    full_env.update(env or {})
    return subprocess.run([sys.executable, '-m'] + list(args), cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
