"""scripts/bench_rm.py runs end to end on small images and prints one row per model and size (no timing asserts)."""
import pytest
from opt_fixture import load_script


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_bench_prints_ratios_to_the_reward_model(capsys, one_thread):
    assert load_script('bench_rm').main(['--sizes', '64', '--repeats', '1', '--threads', '1', '--models', 'musiq', 'topiq']) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    rows = [r for r in rows if len(r) > 5 and all(_is_number(v) for v in r[-5:])]
    names = [' '.join(r[:-5]) for r in rows]
    assert names == ['FinPercep-RM stage3 (map)', 'FinPercep-RM stage0 (global)', 'pyiqa MUSIQ',
                     'pyiqa TOPIQ-NR (res50)']
    assert rows[0][-3] == rows[0][-1] == '1.00'  # ratios are relative to the default reward model
    assert all(r[-5] == '64' and float(r[-4]) > 0 and float(r[-2]) > 0 for r in rows)


def test_bench_rejects_an_unknown_model():
    with pytest.raises(SystemExit, match='unknown model'):
        load_script('bench_rm').main(['--models', 'nosuch'])
