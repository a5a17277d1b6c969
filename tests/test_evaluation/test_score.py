"""The scoring tool on real photos: CSV/JSON, openable overlays, seamless tiling, bad files, wrong checkpoints."""
import csv
import json
import os

import cv2
import numpy as np
import pytest
import torch
import yaml
from skimage import data as skdata

import finpercep_basicsr  # noqa: F401
from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
from finpercep_basicsr.evaluation.score import main as score_main
from finpercep_basicsr.evaluation.score import ramp, score_images, tiles_of

TINY = dict(encoder='conv', channels=[8, 8, 16, 16], decoder_width=8, refine_ch=4, mlp_hidden=16)


def _checkpoint(tmp_path, stage):
    torch.manual_seed(0)
    net = FinPercepRewardNet(stage=stage, **TINY)
    path = tmp_path / f'net_reward_stage{stage}.pth'
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    yml = tmp_path / f'net_stage{stage}.yml'
    yml.write_text(yaml.safe_dump({'network_reward': dict(type='FinPercepRewardNet', stage=stage, **TINY)}))
    return str(path), str(yml)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    cv2.imwrite(str(folder / 'chelsea.png'), cv2.cvtColor(skdata.chelsea(), cv2.COLOR_RGB2BGR))  # 300 x 451
    cv2.imwrite(str(folder / 'coffee.jpg'), cv2.cvtColor(skdata.coffee()[:200, :260], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / 'camera.png'), skdata.camera()[::4, ::4])  # grayscale
    (folder / 'broken.png').write_bytes(b'not an image at all')
    return folder


def test_scores_real_photos_with_tiles_and_skips_a_bad_file(tmp_path, photos, capsys):
    ckpt, yml = _checkpoint(tmp_path, 3)
    out = tmp_path / 'out'
    code = score_main(['--ckpt', ckpt, '--network-yml', yml, str(photos), '--out', str(out), '--device', 'cpu',
                       '--tile', '128', '--tile-overlap', '32', '--batch-size', '3', '--quiet'])
    assert code == 0
    assert f'skipping {photos / "broken.png"}: cannot decode image' in capsys.readouterr().err
    rows = list(csv.DictReader(open(out / 'scores.csv')))
    assert [r['name'] for r in rows] == ['camera', 'chelsea', 'coffee']
    summary = json.load(open(out / 'scores.json'))
    assert summary['stage'] == 3 and summary['skipped'][0]['file'] == str(photos / 'broken.png')
    by_name = {r['name']: r for r in summary['results']}
    # 300 x 451 with 128 px tiles every 96 px: rows 0, 96, 172; columns 0, 96, 192, 288, 323
    assert by_name['chelsea']['tiles'] == 3 * 5 and by_name['camera']['tiles'] == 1
    for row in rows:
        assert np.isfinite(float(row['score']))
        img = cv2.imread(str(out / 'overlays' / f'{row["name"]}.png'))
        h, w = int(row['height']), int(row['width'])
        assert img is not None and img.shape == (h, 2 * w, 3)
        pdm = cv2.imread(str(out / 'maps' / f'{row["name"]}.png'), cv2.IMREAD_UNCHANGED)
        assert pdm.dtype == np.uint16 and pdm.shape == (h, w)


def test_tiled_maps_blend_without_seams():
    # a "network" whose map is the red channel: any tiling must give back the red channel exactly
    class RedChannel(torch.nn.Module):
        def forward(self, x):
            return {'score': x.mean(dim=(1, 2, 3)), 'pdm': x[:, :1]}

    img = skdata.astronaut()[:300, :410].astype(np.float32) / 255
    (score, pdm, n_tiles), = score_images(RedChannel(), [img], tile=128, overlap=40, batch_size=4)
    assert n_tiles == 3 * 5  # rows 0, 88, 172; columns 0, 88, 176, 264, 282
    np.testing.assert_allclose(pdm, img[..., 0], atol=1e-5)
    boxes = tiles_of(300, 410, 128, 40)
    weighted = sum(img[t:t + th, left:left + tw].mean() * th * tw for t, left, th, tw in boxes)
    expected = weighted / (len(boxes) * 128 ** 2)
    assert score == pytest.approx(float(expected), rel=1e-5)  # pixel-weighted mean of the tile scores
    # weights ramp linearly inside the image and stay 1 at its borders
    assert ramp(128, 0, 300, 40)[0] == 1 and ramp(128, 0, 300, 40)[-1] == pytest.approx(0.5 / 40)
    assert all(t + th <= 300 and left + tw <= 410 for t, left, th, tw in tiles_of(300, 410, 128, 40))


def test_stage_zero_checkpoint_scores_without_maps(tmp_path, photos, capsys):
    ckpt, yml = _checkpoint(tmp_path, 0)
    out = tmp_path / 'out0'
    assert score_main(['--ckpt', ckpt, '--network-yml', yml, str(photos / 'chelsea.png'), '--out', str(out),
                       '--quiet']) == 0
    assert 'global scores only' in capsys.readouterr().out
    assert json.load(open(out / 'scores.json'))['has_map'] is False
    assert not os.listdir(out / 'overlays')


def test_checkpoint_of_another_stage_lists_the_mismatched_keys(tmp_path, photos, capsys):
    ckpt2, _ = _checkpoint(tmp_path, 2)
    _, yml3 = _checkpoint(tmp_path, 3)
    code = score_main(['--ckpt', ckpt2, '--network-yml', yml3, str(photos), '--out', str(tmp_path / 'o'), '--quiet'])
    err = capsys.readouterr().err
    assert code == 2
    assert f'{ckpt2} [params_ema] does not match FinPercepRewardNet(stage=3)' in err
    assert 'missing keys: decoder.refine.' in err


def test_missing_network_options_and_inputs_are_clear(tmp_path, capsys):
    ckpt, _ = _checkpoint(tmp_path, 1)
    assert score_main(['--ckpt', ckpt, 'x.png', '--out', str(tmp_path / 'o')]) == 2
    assert 'no network options' in capsys.readouterr().err
    _, yml = _checkpoint(tmp_path, 1)
    assert score_main(['--ckpt', ckpt, '--network-yml', yml, str(tmp_path / 'nope'), '--out', str(tmp_path / 'o')]) == 2
    assert f'no such image or folder: {tmp_path / "nope"}' in capsys.readouterr().err


def test_an_lq_conditioned_model_scores_with_lq_images_and_without(tmp_path, photos, capsys):
    torch.manual_seed(0)
    net = FinPercepRewardNet(stage=3, lq_condition=True, **TINY)
    with torch.no_grad():  # LQ branches trained away from their zero start
        for p in net.decoder.lq_refine[-1].parameters():
            p.normal_(0, 0.5)
    ckpt = tmp_path / 'lq.pth'
    torch.save({'params': net.state_dict()}, ckpt)
    yml = tmp_path / 'lq.yml'
    yml.write_text(yaml.safe_dump({'network_reward': dict(type='FinPercepRewardNet', stage=3, lq_condition=True,
                                                          **TINY)}))
    lq = tmp_path / 'lq'
    lq.mkdir()
    for name in ('chelsea.png', 'coffee.jpg'):  # camera.png has no LQ
        img = cv2.imread(str(photos / name))
        cv2.imwrite(str(lq / name), cv2.resize(img, (img.shape[1] // 4, img.shape[0] // 4),
                                               interpolation=cv2.INTER_AREA))
    args = ['--ckpt', str(ckpt), '--network-yml', str(yml), str(photos / 'chelsea.png'), str(photos / 'coffee.jpg'),
            str(photos / 'camera.png'), '--device', 'cpu', '--tile', '128', '--tile-overlap', '32', '--quiet']
    assert score_main(args + ['--out', str(tmp_path / 'with'), '--lq', str(lq)]) == 0
    assert f'no LQ image {lq / "camera.png"}' in capsys.readouterr().err
    assert score_main(args + ['--out', str(tmp_path / 'without')]) == 0
    with_lq = {r['name']: r for r in json.load(open(tmp_path / 'with' / 'scores.json'))['results']}
    without = {r['name']: r for r in json.load(open(tmp_path / 'without' / 'scores.json'))['results']}
    assert set(with_lq) == {'chelsea', 'coffee'} and set(without) == {'chelsea', 'coffee', 'camera'}
    for name in with_lq:
        a = cv2.imread(str(tmp_path / 'with' / 'maps' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / 'without' / 'maps' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
        assert a.shape == b.shape and not np.array_equal(a, b)
    plain, plain_yml = _checkpoint(tmp_path, 3)
    assert score_main(['--ckpt', plain, '--network-yml', plain_yml, str(photos), '--out', str(tmp_path / 'x'),
                       '--lq', str(lq), '--quiet']) == 2
    assert 'not LQ-conditioned' in capsys.readouterr().err
