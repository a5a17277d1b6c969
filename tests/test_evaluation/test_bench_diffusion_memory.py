"""scripts/bench_diffusion_memory.py prints one table row per precision x checkpointing x tiling (smoke test)."""
import os
import re
import subprocess
import sys

import pytest
from tests.helpers.opt import REPO

pytestmark = pytest.mark.slow


def test_bench_diffusion_memory_prints_the_table_with_a_named_measure(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'bench_diffusion_memory.py'),
                             '--preset', 'tiny', '--size', '32', '--precision', 'no', '--tiling', 'both'],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'memory = CPU peak RSS growth (VmHWM - RSS before), MiB' in result.stdout
    rows = re.findall(r'^\| no \| (on|off) \| (16|off) \| +([\d.-]+) \| +([\d.]+) \|$', result.stdout, re.M)
    assert sorted((c, t) for c, t, _, _ in rows) == [('off', '16'), ('off', 'off'), ('on', '16'), ('on', 'off')]
    assert all(float(s) > 0 for _, _, _, s in rows)
    import torch
    if torch.cuda.is_available():
        return
    bad = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'bench_diffusion_memory.py'),
                          '--precision', 'fp16'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and 'fp16 needs a CUDA GPU' in bad.stderr
