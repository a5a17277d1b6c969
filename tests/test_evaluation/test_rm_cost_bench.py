"""evaluation/rm_cost_bench.py runs end to end on small images and prints one row per model and size (no timing
asserts)."""
import pytest
import yaml

from finpercep_basicsr.evaluation.rm_cost_bench import run_rm_cost_bench
from finpercep_basicsr.utils.errors import UserInputError

TINY = dict(type='FinPercepRewardNet', encoder='conv', channels=[8, 8, 16, 16], stage=3, decoder_width=8, refine_ch=4,
            mlp_hidden=16)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_bench_prints_ratios_to_the_reward_model_and_to_nima_and_musiq(tmp_path, capsys, one_thread):
    opt = tmp_path / 'tiny_rm.yml'
    opt.write_text(yaml.safe_dump({'network_reward': TINY}))
    results = run_rm_cost_bench(str(opt), sizes=[64], repeats=1, threads=1, models=['nima', 'musiq', 'topiq'])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines]
    rows = [r for r in rows if len(r) > 5 and all(_is_number(v) for v in r[-5:])]
    names = [' '.join(r[:-5]) for r in rows]
    assert names == ['FinPercep-RM tiny_rm', 'FinPercep-RM stage3 (map)', 'FinPercep-RM stage0 (global)',
                     'pyiqa NIMA (inception_resnet_v2)', 'pyiqa MUSIQ', 'pyiqa TOPIQ-NR (res50)']
    assert list(results[64]) == names
    assert rows[0][-3] == rows[0][-1] == '1.00'  # ratios are relative to the --reward-opt network
    assert all(r[-5] == '64' and float(r[-4]) > 0 and float(r[-2]) > 0 for r in rows)
    # the cost table: the reference's forward+backward time over NIMA's and MUSIQ's, from the same run
    head = lines.index('FinPercep-RM tiny_rm forward+backward cost, same run:')
    assert lines[head + 1].split() == ['size', 's/img', 'x', 'NIMA', 'x', 'MUSIQ']
    size, seconds, x_nima, x_musiq = lines[head + 2].split()
    assert size == '64' and float(seconds) > 0
    by_name = dict(zip(names, rows))
    for ratio, name in ((x_nima, 'pyiqa NIMA (inception_resnet_v2)'), (x_musiq, 'pyiqa MUSIQ')):
        assert float(ratio) == pytest.approx(1 / float(by_name[name][-1]), rel=0.02, abs=2e-4)


def test_bench_rejects_an_unknown_model_and_reward_options_without_a_network(tmp_path):
    with pytest.raises(UserInputError, match='unknown model nosuch'):
        run_rm_cost_bench(models=['nosuch'])
    opt = tmp_path / 'empty.yml'
    opt.write_text('name: nothing\n')
    with pytest.raises(UserInputError, match='no network_reward.type'):
        run_rm_cost_bench(str(opt), models=['musiq'])
