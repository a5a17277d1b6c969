"""The generalisation benchmark: metrics against values worked out by hand, the Laplacian baseline, the CLI."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
import yaml
from scipy.stats import spearmanr

from finpercep_basicsr.archs.finpercep_rm_arch import FinPercepRewardNet
from finpercep_basicsr.metrics.trivial_detectors import laplacian_energy, lq_detector, trivial_detector
from finpercep_basicsr.evaluation.rm_generalization import (build_detectors, evaluate_fgr, evaluate_hacking, family_of,
                                                 fgr_samples, hack_triplets, parse_family_map)
from finpercep_basicsr.evaluation.rm_generalization_report import main
from finpercep_basicsr.utils.errors import UserInputError

TINY = dict(encoder='conv', channels=[8, 8, 16, 16], decoder_width=8, refine_ch=4, mlp_hidden=16)
MASK = np.zeros((4, 4), np.float32)
MASK[:, :2] = 1  # the swapped region: the two left columns (8 of 16 pixels)


def _key(img):
    return np.round(np.asarray(img) * 255).astype(np.uint8).tobytes()


def lookup_detector(table):
    """A stand-in reward model answering the (score, map) the test chose for each image (found by its pixels)."""
    def detect(images):
        return [table[_key(img)] for img in images]
    return detect


def _write_rgb(path, rgb8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR))


def _split_map(inside, outside):
    return np.where(MASK > 0.5, inside, outside).astype(np.float32)


# per sample: sr_model, scores (gt, syn, sr), syn map inside / outside the mask (A1: 4 outside pixels 0.6)
SAMPLES = [
    ('a1', (0.8, 0.6, 0.4), _split_map(0.8, 0.2)),
    ('a2', (0.6, 0.8, 0.2), np.array([[0.4, 0.4, 0.6, 0.6]] * 2 + [[0.4, 0.4, 0.2, 0.2]] * 2, np.float32)),
    ('b', (1.0, 0.6, 0.2), _split_map(0.2, 0.2)),
    ('b', (0.8, 0.4, 0.2), _split_map(0.6, 0.4)),
]


def write_fgr(root, seed=0):
    """Four 4x4 samples of random pixels; returns the stand-in detector's table and the full-reference labels."""
    rng = np.random.default_rng(seed)
    table, labels = {}, []
    pdm = np.zeros((4, 4), np.float32)
    pdm[:, 0], pdm[:, 1] = 0.6, 0.05  # above LABEL_THR 0.1 only in column 0
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, 'meta_info.jsonl'), 'w') as meta:
        for i, (sr_model, scores, syn_map) in enumerate(SAMPLES):
            name = f'{i:04d}'
            imgs = {k: rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for k in ('gt', 'syn', 'sr')}
            for (k, img), s in zip(imgs.items(), scores):
                _write_rgb(os.path.join(root, k, f'{name}.png'), img)
                table[img.tobytes()] = (s, syn_map if k == 'syn' else np.zeros((4, 4), np.float32))
            gt = imgs['gt'] / 255.0
            labels.append({k: -np.abs(imgs[k] / 255.0 - gt).mean() for k in ('gt', 'syn', 'sr')})
            for k, m in (('mask', MASK), ('pdm', pdm)):
                os.makedirs(os.path.join(root, k), exist_ok=True)
                assert cv2.imwrite(os.path.join(root, k, f'{name}.png'), np.round(m * 65535).astype(np.uint16))
            meta.write(json.dumps({'name': name, 'sr_model': sr_model}) + '\n')
    return table, labels


def test_laplacian_energy_of_a_known_image():
    img = np.zeros((16, 16, 3), np.float32)
    img[8, 8] = 1.0  # one white pixel: Laplacian -4 there, +1 at its 4 neighbours, so squares 16 and 1
    energy = laplacian_energy(img, window=3)
    assert energy[8, 8] == pytest.approx(20 / 9, rel=1e-5)  # the 3x3 box holds all of it
    assert energy[9, 9] == pytest.approx(18 / 9, rel=1e-5)  # the centre and two neighbours
    assert energy[8, 11] == pytest.approx(0.0) and energy.sum() == pytest.approx(20.0, rel=1e-5)
    (score, emap), = trivial_detector('laplacian', 3)([img])
    assert score == pytest.approx(-20 / 256, rel=1e-5) and np.allclose(emap, energy)
    (bscore, bmap), = trivial_detector('blur', 3)([img])
    assert bscore == pytest.approx(20 / 256, rel=1e-5) and np.allclose(bmap, -energy)
    (cscore, cmap), = trivial_detector('constant')([img])
    assert cscore == 0 and not cmap.any()
    assert not laplacian_energy(np.full((8, 8, 3), 0.3, np.float32)).any()  # flat: no energy
    with pytest.raises(ValueError, match='window'):
        trivial_detector('laplacian', 0)


def test_family_map_exact_names_first_then_full_regex():
    rules = parse_family_map(['blur+noise=classic', r'a\d=A'])
    assert family_of('blur+noise', rules) == 'classic'  # '+' would be a quantifier as a regex
    assert [family_of(n, rules) for n in ('a1', 'a2', 'a12', 'b')] == ['A', 'A', 'a12', 'b']
    with pytest.raises(UserInputError, match='expected NAME=FAMILY'):
        parse_family_map(['nofamily'])
    with pytest.raises(UserInputError, match='invalid regular expression'):
        parse_family_map(['a(=A'])


def test_fgr_metrics_match_hand_computed_values(tmp_path):
    root = str(tmp_path / 'fgr')
    table, labels = write_fgr(root)
    samples = fgr_samples([root], parse_family_map([r'a\d=A']))
    assert [(s['family'], s['sr_model']) for s in samples] == [('A', 'a1'), ('A', 'a2'), ('b', 'b'), ('b', 'b')]
    res = evaluate_fgr(samples, build_detectors(lookup_detector(table), window=3), label_thr=0.1, chunk=3)
    fam, pooled = res['families'], res['pooled']
    assert fam['A']['samples'] == 2 and fam['A']['sr_models'] == ['a1', 'a2'] and pooled['samples'] == 4
    # A: positives 8 @ 0.8, 8 @ 0.4; negatives 12 @ 0.2, 4 @ 0.6 -> (8*16 + 8*12) / 256
    assert fam['A']['metrics']['rm']['map_auc'] == pytest.approx(224 / 256)
    # b: positives 8 @ 0.2, 8 @ 0.6; negatives 8 @ 0.2 (ties count half), 8 @ 0.4 -> (128 + 32) / 256
    assert fam['b']['metrics']['rm']['map_auc'] == pytest.approx(160 / 256)
    assert pooled['metrics']['rm']['map_auc'] == pytest.approx(768 / 1024)
    # label > 0.1 only in column 0: b has positives 4 @ 0.6, 4 @ 0.2 vs 4 @ 0.6, 8 @ 0.4, 12 @ 0.2
    assert fam['b']['metrics']['rm']['map_auc_label'] == pytest.approx((4 * 22 + 4 * 6) / (8 * 24))
    assert fam['A']['metrics']['rm']['triplet'] == 0.5  # a2 has S(syn) > S(gt)
    assert fam['b']['metrics']['rm']['triplet'] == 1.0 and pooled['metrics']['rm']['triplet'] == 0.75
    for group, idx in ((fam['A'], [0, 1]), (fam['b'], [2, 3]), (pooled, [0, 1, 2, 3])):
        scores = [SAMPLES[i][1][j] for j in (2, 1, 0) for i in idx]
        truth = [labels[i][k] for k in ('sr', 'syn', 'gt') for i in idx]
        assert group['metrics']['rm']['srcc'] == pytest.approx(spearmanr(scores, truth)[0])
    for group in list(fam.values()) + [pooled]:
        m = group['metrics']
        assert m['constant'] == {'map_auc': 0.5, 'map_auc_label': 0.5, 'triplet': 0.0, 'srcc': 0.0}
        # the blur map is the Laplacian map negated: its AUC is the complement (ties stay ties)
        assert m['blur']['map_auc'] == pytest.approx(1 - m['laplacian']['map_auc'])
        assert m['blur']['srcc'] == pytest.approx(-m['laplacian']['srcc'])
    assert fgr_samples([root], families=['b'], limit=1)[0]['name'] == '0002'
    with pytest.raises(UserInputError, match='no samples'):
        fgr_samples([str(tmp_path / 'empty')])


def write_hacking(root, seed=1):
    """Three 4x4 images: start = GT, hacked = start + 0.4 on the top-left 2x2 block (the added error)."""
    rng = np.random.default_rng(seed)
    start_scores, hacked_scores = (0.9, 0.3, 0.7), (0.1, 0.5, 0.2)
    start_maps = [np.full((4, 4), v, np.float32) for v in (0.1, 0.5, 0.2)]
    region = np.zeros((4, 4), bool)
    region[:2, :2] = True
    hacked_maps = [np.where(region, r, o).astype(np.float32) for r, o in ((1.0, 0.2), (0.5, 0.3), (0.6, 0.6))]
    table = {}
    for i in range(3):
        gt = rng.integers(0, 128, (4, 4, 3), dtype=np.uint8)
        hacked = gt.copy()
        hacked[region] += 102  # 0.4 in [0, 1] units in every channel
        for folder, img in (('start', gt), ('gt', gt), ('hacked', hacked)):
            _write_rgb(os.path.join(root, folder, f'{i}.png'), img)
        table[gt.tobytes()] = (start_scores[i], start_maps[i])
        table[hacked.tobytes()] = (hacked_scores[i], hacked_maps[i])
    return table


def test_hacking_check_matches_hand_computed_values(tmp_path):
    table = write_hacking(str(tmp_path))
    triplets = hack_triplets(*(str(tmp_path / d) for d in ('start', 'hacked', 'gt')))
    res = evaluate_hacking(triplets, build_detectors(lookup_detector(table)), error_thr=0.05)
    assert res['images'] == 3 and res['added_error_fraction'] == pytest.approx(4 / 16)
    rm = res['metrics']['rm']
    assert rm['start_above_hacked'] == pytest.approx(2 / 3)  # images 0 and 2
    # map means: hacked 0.4, 0.35, 0.6 vs start 0.1, 0.5, 0.2 -> 2 + 2 + 3 of 9 pairs
    assert rm['image_auc'] == pytest.approx(7 / 9)
    # hacked pixels 4 @ 1.0, 4 @ 0.5, 4 @ 0.6 vs the rest 12 @ 0.2, 12 @ 0.3, 12 @ 0.6
    assert rm['pixel_auc'] == pytest.approx((4 * 36 + 4 * 24 + 4 * (24 + 6)) / (12 * 36))
    assert res['metrics']['constant'] == {'start_above_hacked': 0.0, 'image_auc': 0.5, 'pixel_auc': 0.5}
    lap, blur = res['metrics']['laplacian'], res['metrics']['blur']
    assert blur['image_auc'] == pytest.approx(1 - lap['image_auc'])  # the blur map is the Laplacian one negated
    assert blur['start_above_hacked'] + lap['start_above_hacked'] == pytest.approx(1)
    trivial = {k: v for k, v in build_detectors(None).items() if k != 'rm'}
    cropped = evaluate_hacking(triplets, trivial, error_thr=0.05, max_size=2)  # rows and columns 1-2 of 4
    assert cropped['added_error_fraction'] == pytest.approx(1 / 4)  # only pixel (1, 1) of the 2x2 block is left
    os.remove(tmp_path / 'gt' / '1.png')
    with pytest.raises(UserInputError, match='same file names'):
        hack_triplets(*(str(tmp_path / d) for d in ('start', 'hacked', 'gt')))


def _reward_opt(tmp_path):
    torch.manual_seed(0)
    net = FinPercepRewardNet(stage=3, **TINY)
    ckpt = tmp_path / 'net_reward.pth'
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, ckpt)
    opt = tmp_path / 'reward.yml'
    opt.write_text(yaml.safe_dump({'network_reward': dict(type='FinPercepRewardNet', stage=3, **TINY),
                                   'path': {'pretrain_network_reward': str(ckpt)}}))
    return str(opt)


def test_cli_end_to_end_on_a_tiny_checkpoint(tmp_path, capsys, one_thread):
    write_fgr(str(tmp_path / 'fgr'))
    write_hacking(str(tmp_path / 'hack'))
    out = tmp_path / 'res' / 'gen.json'
    argv = ['--reward-opt', _reward_opt(tmp_path), '--fgr', str(tmp_path / 'fgr'), '--family-map', r'a\d=A',
            '--window', '3', '--out', str(out), '--threads', '1']
    argv += ['--hack-start', str(tmp_path / 'hack' / 'start'), '--hack-out', str(tmp_path / 'hack' / 'hacked'),
             '--hack-gt', str(tmp_path / 'hack' / 'gt')]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert 'RM beats the best trivial detector on every family, map_auc:' in printed
    assert 'Hacking check (3 images; 25.0 % of pixels' in printed
    result = json.load(open(out))
    assert result['reward']['stage'] == 3 and result['detectors'] == ['rm', 'constant', 'laplacian', 'blur']
    assert set(result['fgr']['families']) == {'A', 'b'} and result['fgr']['pooled']['samples'] == 4
    family = result['fgr']['families']['A']
    assert set(family['metrics']['rm']) == {'map_auc', 'map_auc_label', 'triplet', 'srcc'}
    assert family['rm_beats_trivial']['map_auc'] == (family['metrics']['rm']['map_auc']
                                                     > family['best_trivial']['map_auc']['value'])
    assert result['fgr']['rm_beats_trivial_on_every_family']['triplet'] == all(
        g['rm_beats_trivial']['triplet'] for g in result['fgr']['families'].values())
    assert set(result['hacking']['metrics']['rm']) == {'start_above_hacked', 'image_auc', 'pixel_auc'}
    assert result['hacking']['metrics']['constant']['pixel_auc'] == 0.5


def test_cli_bad_input_exits_2(tmp_path, capsys):
    write_fgr(str(tmp_path / 'fgr'))
    fgr = ['--fgr', str(tmp_path / 'fgr'), '--out', str(tmp_path / 'o.json')]
    assert main(['--reward-opt', str(tmp_path / 'nope.yml')] + fgr) == 2
    assert 'option file not found' in capsys.readouterr().err
    opt = _reward_opt(tmp_path)
    other = tmp_path / 'other.yml'
    other.write_text(open(opt).read().replace('stage: 3', 'stage: 2'))
    assert main(['--reward-opt', str(other)] + fgr) == 2
    assert 'does not match FinPercepRewardNet(stage=2)' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(['--reward-opt', opt, '--hack-start', str(tmp_path), '--out', 'x.json'])
    assert exc.value.code == 2
    assert not os.path.exists(tmp_path / 'o.json')


def test_lq_floors_find_the_region_the_lq_does_not_support():
    lq = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    up = np.clip(cv2.resize(lq, (32, 32), interpolation=cv2.INTER_CUBIC), 0, 1)
    img = up.copy()
    img[:, 16:] = np.clip(img[:, 16:] + 0.3, 0, 1)  # the right half moved away from its LQ
    (score, residual), = lq_detector('lq_residual', 3)([img], [lq])
    assert residual[:, :14].max() < 1e-5 and residual[:, 18:].min() > 0.05
    assert score == pytest.approx(-residual.mean())
    (agree_score, agreement), = lq_detector('lq_agreement', 3)([img], [up])  # an LQ already at size works alike
    assert np.allclose(agreement, -residual, atol=1e-6) and agree_score == pytest.approx(-score)
    assert lq_detector('lq_residual').needs_lq
    with pytest.raises(ValueError, match='unknown LQ detector'):
        lq_detector('laplacian')


def test_lq_floors_run_beside_and_stay_out_of_best_trivial(tmp_path, capsys, one_thread):
    root = tmp_path / 'fgr'
    write_fgr(str(root))
    trivial = {k: v for k, v in build_detectors(None, window=3, lq_floors=True).items() if k != 'rm'}
    samples = fgr_samples([str(root)])
    with pytest.raises(UserInputError, match='lq/0000.png missing.*rerun its build'):
        evaluate_fgr(samples, trivial)
    for i in range(len(SAMPLES)):  # each sample's LQ: its GT's 2x2 block means
        gt = cv2.imread(str(root / 'gt' / f'{i:04d}.png'))
        _write_rgb(str(root / 'lq' / f'{i:04d}.png'), cv2.resize(gt, (2, 2), interpolation=cv2.INTER_AREA)[..., ::-1])
    metrics = evaluate_fgr(samples, trivial)['pooled']['metrics']
    assert metrics['lq_agreement']['map_auc'] == pytest.approx(1 - metrics['lq_residual']['map_auc'])
    write_hacking(str(tmp_path / 'hack'))
    out = tmp_path / 'gen.json'
    hack = ['--hack-start', str(tmp_path / 'hack' / 'start'), '--hack-out', str(tmp_path / 'hack' / 'hacked'),
            '--hack-gt', str(tmp_path / 'hack' / 'gt')]
    argv = ['--reward-opt', _reward_opt(tmp_path), '--fgr', str(root), '--window', '3', '--out', str(out),
            '--threads', '1', '--lq-floors'] + hack
    with pytest.raises(SystemExit):
        main(argv)
    assert '--hack-lq' in capsys.readouterr().err
    assert main(argv + ['--hack-lq', str(tmp_path / 'hack' / 'gt')]) == 0
    printed = capsys.readouterr().out
    assert 'lq_residual' in printed.splitlines()[5] and 'lq_agreement' in printed.splitlines()[5]
    result = json.load(open(out))
    assert result['detectors'][-2:] == ['lq_residual', 'lq_agreement'] and result['hacking']['lq'].endswith('gt')
    bests = [g['best_trivial'][m] for g in result['fgr']['families'].values() for m in g['best_trivial']]
    assert all(b is None or b['detector'] in ('constant', 'laplacian', 'blur') for b in bests)


def test_an_lq_conditioned_reward_model_is_scored_with_its_lq_or_as_asked_without(tmp_path, capsys, one_thread):
    root = tmp_path / 'fgr'
    write_fgr(str(root))
    for i in range(len(SAMPLES)):
        gt = cv2.imread(str(root / 'gt' / f'{i:04d}.png'))
        _write_rgb(str(root / 'lq' / f'{i:04d}.png'), cv2.resize(gt, (2, 2), interpolation=cv2.INTER_AREA)[..., ::-1])
    write_hacking(str(tmp_path / 'hack'))
    torch.manual_seed(0)
    net = FinPercepRewardNet(stage=3, lq_condition=True, **TINY)
    with torch.no_grad():
        for p in net.decoder.lq_refine[-1].parameters():
            p.normal_(0, 0.5)
    torch.save({'params': net.state_dict()}, tmp_path / 'lq.pth')
    opt = tmp_path / 'lq.yml'
    opt.write_text(yaml.safe_dump({'network_reward': dict(type='FinPercepRewardNet', stage=3, lq_condition=True,
                                                          **TINY), 'path': {'pretrain_network_reward': 'lq.pth'}}))
    hack = ['--hack-start', str(tmp_path / 'hack' / 'start'), '--hack-out', str(tmp_path / 'hack' / 'hacked'),
            '--hack-gt', str(tmp_path / 'hack' / 'gt')]
    base = ['--reward-opt', str(opt), '--ckpt', str(tmp_path / 'lq.pth'), '--fgr', str(root), '--threads', '1']
    assert main(base + hack + ['--out', str(tmp_path / 'a.json')]) == 2
    assert '--hack-lq' in capsys.readouterr().err
    assert main(base + hack + ['--hack-lq', str(tmp_path / 'hack' / 'gt'), '--out', str(tmp_path / 'b.json')]) == 0
    assert main(base + hack + ['--rm-without-lq', '--out', str(tmp_path / 'c.json')]) == 0
    with_lq, without = (json.load(open(tmp_path / f)) for f in ('b.json', 'c.json'))
    assert with_lq['reward']['given_lq'] and not without['reward']['given_lq']
    pooled = [r['fgr']['pooled']['metrics']['rm'] for r in (with_lq, without)]
    assert pooled[0] != pooled[1]
