"""scripts/bench_rlhf.py prints full and partial fine-tuning side by side for both generators (no timing asserts)."""
import pytest
import yaml
from tests.helpers.opt import load_script
from tests.helpers.rlhf import TINY_RM

# the default generators' layouts at a tiny width: the partial patterns select the same layers
TINY_ARCHS = {
    'RRDBNet-x4plus': ({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2,
                        'num_grow_ch': 8, 'scale': 4}, ['conv_up*', 'conv_hr.*', 'conv_last.*']),
    'SRVGG-animevideov3': ({'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8,
                            'num_conv': 16, 'upscale': 4, 'act_type': 'prelu'}, [r're:body\.(2[89]|3[0-4])\..*']),
}
TINY_REWARD = {'type': 'FinPercepRewardLoss', 'pretrain_path': None, 'network_opt': TINY_RM}


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


def test_bench_prints_full_and_partial_for_both_generators(capsys, monkeypatch, one_thread):
    bench = load_script('bench_rlhf')
    monkeypatch.setattr(bench, 'ARCHS', TINY_ARCHS)
    monkeypatch.setattr(bench, 'DEFAULT_REWARD', TINY_REWARD)
    assert bench.main(['--gt-size', '32', '--repeats', '1', '--threads', '1']) == 0
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


def test_bench_from_an_option_file_uses_its_trainable_and_reports_bad_patterns(tmp_path, capsys, one_thread):
    opt = tmp_path / 'rlhf.yml'
    network_g = TINY_ARCHS['RRDBNet-x4plus'][0]
    opt.write_text(yaml.safe_dump({'network_g': network_g, 'train': {'reward_opt': TINY_REWARD},
                                   'rlhf': {'trainable': ['conv_last.*']}}))
    bench = load_script('bench_rlhf')
    assert bench.main(['-opt', str(opt), '--gt-size', '32', '--repeats', '1', '--threads', '1']) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert [(r[0], r[1]) for r in rows] == [('RRDBNet', 'full'), ('RRDBNet', 'partial')]
    assert rows[1][2] == f'{8 * 3 * 9 + 3}/{rows[0][2].split("/")[1]}'
    _check_rows(rows)
    assert bench.main(['-opt', str(opt), '--trainable', 'conv_lst.*', '--repeats', '1']) == 2
    assert "rlhf.trainable: 'conv_lst.*' matches no parameter of RRDBNet" in capsys.readouterr().err
