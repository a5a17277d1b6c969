"""Every script in scripts/ is a thin entry point: at most 100 lines, and ``--help`` works; bad input is one line
on stderr and exit code 2."""
import glob
import os
import subprocess
import sys

from tests.helpers.opt import REPO

SCRIPTS = sorted(glob.glob(os.path.join(REPO, 'scripts', '*.py')))
MAX_LINES = 100


def _run_all(commands, cwd, timeout=240):
    """Run the commands side by side (most only parse their arguments); returns (exit code, stdout, stderr) each."""
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in commands]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append((proc.returncode, out, err))
    return results


def test_every_script_is_at_most_100_lines():
    assert SCRIPTS
    sizes = {os.path.basename(p): sum(1 for _ in open(p)) for p in SCRIPTS}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_every_script_prints_its_help(tmp_path):
    results = _run_all([[sys.executable, path, '--help'] for path in SCRIPTS], cwd=tmp_path)
    failed = {os.path.basename(p): err[-500:] for p, (code, out, err) in zip(SCRIPTS, results)
              if code != 0 or 'usage:' not in out}
    assert failed == {}


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    commands = {  # the demo runs bench_hacking.py; link_into_basicsr.py is the README's drop-in step
        'bench_hacking.py': ['-opt', str(tmp_path / 'missing.yml'), '--out', str(tmp_path / 'o')],
        'link_into_basicsr.py': [str(tmp_path)],
    }
    results = _run_all([[sys.executable, os.path.join(REPO, 'scripts', name)] + args
                        for name, args in commands.items()], cwd=tmp_path)
    for name, (code, out, err) in zip(commands, results):
        lines = [line for line in err.splitlines() if line.startswith('error: ')]
        assert code == 2 and len(lines) == 1 and 'Traceback' not in err, (name, err[-2000:])

