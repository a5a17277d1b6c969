"""evaluation/rlhf_step_bench.py: one RLHF step timed part by part for BasicSR nets, and per algorithm with its
reward share and peak memory for diffusion policies (tables printed; no timing asserts)."""
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from tests.helpers.opt import REPO
from tests.helpers.rlhf import TINY_RM

from finpercep_basicsr.evaluation.rlhf_step_bench import (MEMORY_NOTES, run_diffusion_memory,
                                                          run_diffusion_policies, run_partial_tuning)
from finpercep_basicsr.evaluation.timing import MMAP_ENV, median, timed
from finpercep_basicsr.utils.errors import UserInputError

# the default generators' layouts at a tiny width: the partial patterns select the same layers
TINY_ARCHS = {
    'RRDBNet-x4plus': ({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2,
                        'num_grow_ch': 8, 'scale': 4}, ['conv_up*', 'conv_hr.*', 'conv_last.*']),
    'SRVGG-animevideov3': ({'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8,
                            'num_conv': 16, 'upscale': 4, 'act_type': 'prelu'}, [r're:body\.(2[89]|3[0-4])\..*']),
}
TINY_REWARD = {'type': 'FinPercepRewardLoss', 'random_init': True, 'network_opt': TINY_RM}


def _rows(out):
    return [line.split() for line in out.splitlines() if line.split()[1:2] in (['full'], ['partial'])]


def _check_rows(rows):
    for row in rows:
        assert len(row) == 12
        trained, total = row[2].split('/')
        assert 0 < int(trained) <= int(total)
        parts, step, share = [float(v) for v in row[3:9]], float(row[9]), float(row[10])
        assert all(v >= 0 for v in parts) and step == pytest.approx(sum(parts), abs=0.35)
        assert 0 < share < 100
    full = {r[0]: float(r[9]) for r in rows if r[1] == 'full'}
    for row in rows:
        assert float(row[11]) == pytest.approx(full[row[0]] / float(row[9]), rel=0.02, abs=0.01)


PEAK_OF_64_MIB = """
import torch
from finpercep_basicsr.evaluation.timing import PeakMemory
with PeakMemory(torch.device('cpu')) as mem:
    x = torch.ones(64, 2 ** 20 // 4)  # 64 MiB, touched
    del x
print(mem.peak, mem.total)
"""


def test_timing_helpers_measure_a_block():
    assert median([3, 1, 2]) == 2 and median([4, 1, 3, 2]) == 3
    out, seconds = timed(lambda: 7)
    assert out == 7 and seconds >= 0
    # in a fresh process with the benches' malloc setting (rerun_with_tensor_sized_rss): in this one, memory an
    # earlier test freed may still be resident and serve the tensor without the RSS growing
    env = dict(os.environ, **{MMAP_ENV: '131072'})
    result = subprocess.run([sys.executable, '-c', PEAK_OF_64_MIB], env=env, capture_output=True, text=True,
                            timeout=120, check=True)
    peak, total = (float(v) for v in result.stdout.split())
    assert 60 < peak < 80 and total > peak + 50  # the total adds what was resident before (torch itself)


def test_partial_tuning_prints_full_and_partial_for_both_generators(capsys, one_thread):
    run_partial_tuning(gt_size=32, repeats=1, threads=1, archs=TINY_ARCHS, default_reward=TINY_REWARD)
    out = capsys.readouterr().out
    assert 'random weights' in out and 'median of 1 interleaved repeats' in out
    rows = _rows(out)
    assert [(r[0], r[1]) for r in rows] == [('RRDBNet-x4plus', 'full'), ('RRDBNet-x4plus', 'partial'),
                                            ('SRVGG-animevideov3', 'full'), ('SRVGG-animevideov3', 'partial')]
    _check_rows(rows)
    trained = {(r[0], r[1]): r[2] for r in rows}
    assert trained[('RRDBNet-x4plus', 'partial')] != trained[('RRDBNet-x4plus', 'full')]
    # the partial SRVGG trains its last four convolutions (3x3, 8 -> 8 and 8 -> 48) and three PReLUs
    assert trained[('SRVGG-animevideov3', 'partial')].split('/')[0] == str(3 * (8 * 8 * 9 + 8 + 8) + 8 * 48 * 9 + 48)
    assert "partial RRDBNet-x4plus: rlhf.trainable ['conv_up*', 'conv_hr.*', 'conv_last.*']" in out


def test_partial_tuning_from_an_option_file_uses_its_trainable_and_reports_bad_patterns(tmp_path, capsys,
                                                                                          one_thread):
    opt = tmp_path / 'rlhf.yml'
    network_g = TINY_ARCHS['RRDBNet-x4plus'][0]
    # a trained reward's checkpoint is named: timing builds it with random weights instead
    reward = dict(TINY_REWARD, pretrain_path=str(tmp_path / 'absent.pth'), random_init=False)
    opt.write_text(yaml.safe_dump({'network_g': network_g, 'train': {'reward_opt': reward},
                                   'rlhf': {'trainable': ['conv_last.*']}}))
    run_partial_tuning(str(opt), gt_size=32, repeats=1, threads=1)
    rows = _rows(capsys.readouterr().out)
    assert [(r[0], r[1]) for r in rows] == [('RRDBNet', 'full'), ('RRDBNet', 'partial')]
    assert rows[1][2] == f'{8 * 3 * 9 + 3}/{rows[0][2].split("/")[1]}'
    _check_rows(rows)
    with pytest.raises(UserInputError, match="rlhf.trainable: 'conv_lst.*' matches no parameter of RRDBNet"):
        run_partial_tuning(str(opt), ['conv_lst.*'], repeats=1)
    opt.write_text(yaml.safe_dump({'train': {'reward_opt': reward}}))
    with pytest.raises(UserInputError, match='no network_g.type'):
        run_partial_tuning(str(opt), repeats=1)


def test_diffusion_policies_print_time_share_and_memory_per_policy(capsys, one_thread):
    run_diffusion_policies(size=16, repeats=1, algorithm='grpo', steps=2)
    out = capsys.readouterr().out
    assert 'one grpo step, SR 16x16, batch 1, device cpu, 1 thread(s), tiny random weights' in out
    rows = re.findall(r'^(\w+) +step +([\d.]+) ms +reward share +([\d.]+) % +peak mem \+ *([\d.-]+) MiB$', out, re.M)
    assert [r[0] for r in rows] == ['OSEDiff', 'SeeSR']
    assert all(float(ms) > 0 and 0 < float(share) < 100 for _, ms, share, _ in rows)


@pytest.mark.parametrize('model,algorithm,tiles', [('osediff', 'grpo', ('16', 'off')), ('seesr', 'refl', ('16', 'off')),
                                                     ('stablesr', 'grpo', ('off',))])  # StableSR's CFW: no tiling
def test_diffusion_memory_prints_one_row_per_precision_checkpointing_and_tiling(model, algorithm, tiles, capsys,
                                                                                one_thread):
    run_diffusion_memory('tiny', size=32, precisions=['no'], tiling='both', algorithm=algorithm, reference='both',
                         model=model)
    out = capsys.readouterr().out
    assert 'memory = CPU peak RSS (growth in the step: VmHWM - RSS before; total: VmHWM), MiB' in out
    assert MEMORY_NOTES[model] in out
    rows = re.findall(r'^\| (\w+) \| (shared|copy) \| no \| (on|off) \| (16|off) \| +([\d.-]+) \| +([\d.]+) \| '
                      r'+([\d.]+) \|$', out, re.M)
    assert sorted((m, r, c, t) for m, r, c, t, *_ in rows) == sorted(
        (model, r, c, t) for r in ('shared', 'copy') for c in ('on', 'off') for t in tiles)
    # the total is the process's resident memory: at least the step's growth, and the weights
    assert all(float(s) > 0 and float(total) > max(float(peak), 100) for *_, peak, total, s in rows)


def test_diffusion_memory_rejects_fp16_on_cpu_and_unknown_models():
    with pytest.raises(UserInputError, match="model 'ldm': choose among"):
        run_diffusion_memory('tiny', model='ldm')
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match='fp16 needs a CUDA GPU'):
            run_diffusion_memory('tiny', precisions=['fp16'])


def test_bench_rlhf_command_line_rejects_trainable_without_options():
    # argparse's own check: exit 2 and a usage line, before the package is imported
    result = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'bench_rlhf.py'), '--trainable', 'x'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and '--trainable needs -opt' in result.stderr
