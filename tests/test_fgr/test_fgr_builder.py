"""FGR builder: the folder contract, LMDB, determinism, resume after a stop or a kill, bad photos skipped."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml
from skimage import data

from finpercep_basicsr.data.finpercep_fgr_dataset import FinPercepFGRDataset
from finpercep_basicsr.fgr.builder import build_fgr, load_build_options
from finpercep_basicsr.fgr.shards import build_or_merge
from finpercep_basicsr.fgr.sources import build_sr_source
from finpercep_basicsr.utils.errors import UserInputError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, 'options', 'data', 'fgr_build_tiny.yml')
KEYS = ('gt', 'sr', 'syn', 'mask', 'pdm')
FOLDER_KEYS = KEYS + ('lq',)  # the LQ is stored; the dataset reads the other five


def _write(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, img)
    return path


def _good_photos(folder):
    """Two real photos (astronaut, coffee; shrunk to keep the test fast) and a generated one."""
    astro = cv2.resize(data.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)
    coffee = cv2.resize(data.coffee(), (160, 120), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), (96, 96), interpolation=cv2.INTER_CUBIC)
    _write(os.path.join(folder, 'astronaut.png'), cv2.cvtColor(astro, cv2.COLOR_RGB2BGR))
    _write(os.path.join(folder, 'coffee.jpg'), cv2.cvtColor(coffee, cv2.COLOR_RGB2BGR))
    _write(os.path.join(folder, 'sub', 'generated.png'), smooth)
    return folder


def _opt(tmp_path, photos, name='fgr', **overrides):
    with open(TINY) as f:
        opt = yaml.safe_load(f)
    opt['dataroot'] = str(tmp_path / name)
    opt['photos']['folders'] = [photos]
    opt['contact_sheet'] = {'num': 4, 'tile': 64}
    opt.update(overrides)
    return opt


def _folder_bytes(root):
    """Every data file and the meta file of an FGR folder, as bytes (the run-dependent summary excluded)."""
    out = {}
    for key in FOLDER_KEYS:
        for name in sorted(os.listdir(os.path.join(root, key))):
            with open(os.path.join(root, key, name), 'rb') as f:
                out[f'{key}/{name}'] = f.read()
    with open(os.path.join(root, 'meta_info.jsonl'), 'rb') as f:
        out['meta_info.jsonl'] = f.read()
    return out


def _count_lines(path):
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)


def _lmdb_items(root):
    """Raw values of every LMDB key, plus each LMDB's key count (the dataset's shared reader is used:
    py-lmdb opens an environment once per process)."""
    dataset = FinPercepFGRDataset({'dataroot': root, 'io_backend': {'type': 'lmdb'}})
    client = dataset._client().client
    out = {(key, name): bytes(client.get(name, key)) for key in KEYS for name in dataset.names}
    out.update({(key, '#entries'): client._client[key].stat()['entries'] for key in KEYS})
    return out


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp('built')
    photos = _good_photos(str(tmp_path / 'photos'))
    opt = _opt(tmp_path, photos)
    return opt, build_fgr(opt, progress=False)


def test_build_writes_the_folder_contract(built):
    opt, summary = built
    root = opt['dataroot']
    assert summary['samples'] == summary['built_now'] == 3 * 2 * 2 and not summary['skipped_photos']
    sources = {s['name']: build_sr_source(dict(s)) for s in opt['sr_sources']}
    with open(os.path.join(root, 'meta_info.jsonl')) as f:
        meta = [json.loads(line) for line in f]
    assert [m['index'] for m in meta] == list(range(12))
    assert {m['sr_model'] for m in meta} == {'bicubic', 'lanczos'}
    assert {m['sr_model']: m['sr_provenance']['source'] for m in meta} == {'bicubic': 'ResizeSource',
                                                                          'lanczos': 'ResizeSource'}
    assert {m['mask_kind'] for m in meta} <= set(opt['masks']['kinds'])
    for m in meta:
        assert m['seed'] == opt['seed'] + m['index']
        assert os.path.basename(m['photo']) in ('astronaut.png', 'coffee.jpg', 'generated.png')
        photo = cv2.imread(m['photo'])
        top, left, h, w = m['crop_box']
        assert h == w == 64 and top + h <= photo.shape[0] and left + w <= photo.shape[1]
        gt = cv2.imread(os.path.join(root, 'gt', m['name'] + '.png'))
        np.testing.assert_array_equal(gt, photo[top:top + h, left:left + w])
        mask = cv2.imread(os.path.join(root, 'mask', m['name'] + '.png'), cv2.IMREAD_UNCHANGED)
        pdm = cv2.imread(os.path.join(root, 'pdm', m['name'] + '.png'), cv2.IMREAD_UNCHANGED)
        sr, syn = (cv2.imread(os.path.join(root, k, m['name'] + '.png')) for k in ('sr', 'syn'))
        assert mask.dtype == np.uint8 and mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
        assert pdm.dtype == np.uint16 and pdm.shape == (64, 64) and pdm.max() > 0
        assert np.all(pdm[mask == 0] == 0)
        np.testing.assert_array_equal(syn, np.where(mask[..., None] == 255, sr, gt))
        # the stored LQ is the SR source's input: the source run on it gives the stored SR image
        lq = cv2.imread(os.path.join(root, 'lq', m['name'] + '.png'))[..., ::-1].astype(np.float32) / 255
        assert lq.shape == (16, 16, 3)
        source = sources[m['sr_model']]
        made = np.round(np.clip(np.asarray(source(lq)), 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(made, sr[..., ::-1])
        assert m['mask_area'] == pytest.approx((mask == 255).mean(), abs=1e-6)
    sheet = cv2.imread(summary['contact_sheet'])
    assert sheet is not None and sheet.shape[1] == 3 * 64


def test_lmdb_matches_the_folder(built):
    opt, _ = built
    disk = FinPercepFGRDataset({'dataroot': opt['dataroot'], 'phase': 'val'})
    lmdb_set = FinPercepFGRDataset({'dataroot': opt['dataroot'], 'phase': 'val', 'io_backend': {'type': 'lmdb'}})
    assert len(disk) == len(lmdb_set) == 12
    for i in range(len(disk)):
        a, b = disk[i], lmdb_set[i]
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in KEYS)
    files = _folder_bytes(opt['dataroot'])
    for (key, name), value in _lmdb_items(opt['dataroot']).items():
        assert name == '#entries' and value == 12 or value == files[f'{key}/{name}.png']


def test_rerun_is_a_no_op_and_a_changed_plan_is_refused(built, tmp_path):
    opt, _ = built
    before = _folder_bytes(opt['dataroot'])
    again = build_fgr(opt, progress=False)
    assert again['built_now'] == 0 and not again['lmdb_rebuilt'] and again['samples'] == 12
    with pytest.raises(UserInputError, match='other options or photos'):
        build_fgr(dict(opt, seed=7), progress=False)
    assert _folder_bytes(opt['dataroot']) == before


def test_a_rerun_adds_the_lq_to_a_set_built_without_it(built, tmp_path):
    opt, _ = built
    old = tmp_path / 'old'
    shutil.copytree(opt['dataroot'], old)
    shutil.rmtree(old / 'lq')
    shutil.rmtree(old / 'lmdb' / 'lq.lmdb')
    again = build_fgr(dict(opt, dataroot=str(old)), progress=False)
    assert again['built_now'] == 0 and again['lmdb_rebuilt']
    assert _folder_bytes(str(old)) == _folder_bytes(opt['dataroot'])
    assert os.path.isdir(old / 'lmdb' / 'lq.lmdb')


def test_stopped_build_resumes_to_the_same_dataset(built, tmp_path):
    opt, _ = built
    resumed = dict(opt, dataroot=str(tmp_path / 'resumed'))
    first = build_fgr(dict(resumed, max_samples=5), progress=False)
    assert first['samples'] == 6  # whole crops: 3 of them
    # what a kill can leave behind: a torn meta line and a half-written temp file
    with open(os.path.join(resumed['dataroot'], 'meta_info.jsonl'), 'a') as f:
        f.write('{"name": "00002_generated_c00_bic')
    _write(os.path.join(resumed['dataroot'], 'syn', '00002_generated_c00_bicubic_m00.tmp.png'),
           np.zeros((4, 4), np.uint8))
    second = build_fgr(resumed, progress=False)
    assert second['built_now'] == 6 and second['samples'] == 12
    assert _folder_bytes(resumed['dataroot']) == _folder_bytes(opt['dataroot'])
    assert _lmdb_items(resumed['dataroot']) == _lmdb_items(opt['dataroot'])


def test_bad_photos_are_skipped_and_named(tmp_path):
    photos = str(tmp_path / 'photos')
    astro = cv2.cvtColor(cv2.resize(data.astronaut(), (96, 96), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    _write(os.path.join(photos, 'a_good.png'), astro)
    with open(os.path.join(photos, 'b_corrupt.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n this is not an image')
    _write(os.path.join(photos, 'c_gray.png'), cv2.cvtColor(astro, cv2.COLOR_BGR2GRAY))
    transparent = cv2.cvtColor(astro, cv2.COLOR_BGR2BGRA)
    transparent[:10, :10, 3] = 0
    _write(os.path.join(photos, 'd_transparent.png'), transparent)
    _write(os.path.join(photos, 'e_opaque_rgba.png'), cv2.cvtColor(astro, cv2.COLOR_BGR2BGRA))
    _write(os.path.join(photos, 'f_deep16.png'), astro.astype(np.uint16) * 257)
    _write(os.path.join(photos, 'g_small.png'), astro[:40, :50])
    opt = _opt(tmp_path, photos, masks_per_sr=1)
    opt['photos']['crops_per_photo'] = 1
    with pytest.warns(UserWarning) as record:
        summary = build_fgr(opt, progress=False)
    messages = '\n'.join(str(w.message) for w in record)
    skipped = {os.path.basename(k): v for k, v in summary['skipped_photos'].items()}
    assert set(skipped) == {'b_corrupt.png', 'd_transparent.png', 'g_small.png'}
    assert 'corrupt' in skipped['b_corrupt.png'] and 'transparent' in skipped['d_transparent.png']
    assert '40x50 is smaller than the crop size 64' in skipped['g_small.png']
    notes = {os.path.basename(k): ' '.join(v) for k, v in summary['photo_notes'].items()}
    assert set(notes) == {'c_gray.png', 'e_opaque_rgba.png', 'f_deep16.png'}
    assert 'grayscale' in notes['c_gray.png'] and '16-bit' in notes['f_deep16.png']
    for name in list(skipped) + list(notes):
        assert os.path.join(photos, name) in messages
    # the good photo and the convertible ones gave their samples; 16-bit became the same 8-bit crop
    with open(os.path.join(opt['dataroot'], 'meta_info.jsonl')) as f:
        meta = [json.loads(line) for line in f]
    assert sorted({os.path.basename(m['photo']) for m in meta}) == ['a_good.png', 'c_gray.png', 'e_opaque_rgba.png',
                                                                    'f_deep16.png']
    by_photo = {os.path.basename(m['photo']): m['name'] for m in meta
                if m['sr_model'] == 'bicubic' and 'gray' not in m['photo']}
    gts = [cv2.imread(os.path.join(opt['dataroot'], 'gt', by_photo[p] + '.png')) for p in sorted(by_photo)]
    boxes = {os.path.basename(m['photo']): m['crop_box'] for m in meta}
    for photo, gt in zip(sorted(by_photo), gts):
        top, left, h, w = boxes[photo]
        np.testing.assert_array_equal(gt, astro[top:top + h, left:left + w])


def _build(path, shard=None, merge=False, **overrides):
    """What ``scripts/build_fgr.py`` runs, in this process; returns the summary it prints."""
    return build_or_merge(load_build_options(path, **overrides), shard, merge, progress=False)


def test_bad_option_files_are_named(tmp_path):
    with pytest.raises(UserInputError, match='missing.yml'):
        _build(str(tmp_path / 'missing.yml'))
    bad = tmp_path / 'bad.yml'
    bad.write_text(yaml.safe_dump(_opt(tmp_path, str(tmp_path / 'no_photos'))))
    with pytest.raises(UserInputError, match='no_photos'):
        _build(str(bad))
    bad.write_text(yaml.safe_dump(dict(_opt(tmp_path, str(tmp_path / 'no_photos')), sr_sources=[])))
    with pytest.raises(UserInputError, match='option sr_sources is required'):
        _build(str(bad))


def test_train_and_val_splits_share_no_photo(tmp_path):
    opt = _opt(tmp_path, _good_photos(str(tmp_path / 'photos')), masks_per_sr=1)
    opt['dataroot'] = str(tmp_path / 'FGR' / '{split}')
    opt['photos'].update(crops_per_photo=1, heldout=['coffee.*'])
    path = tmp_path / 'build.yml'
    path.write_text(yaml.safe_dump(opt))
    photos = {}
    for split in ('train', 'val'):
        _build(str(path), split='val' if split == 'val' else None)
        with open(tmp_path / 'FGR' / split / 'meta_info.jsonl') as f:
            photos[split] = {os.path.basename(json.loads(line)['photo']) for line in f}
    assert photos == {'train': {'astronaut.png', 'generated.png'}, 'val': {'coffee.jpg'}}
    opt['photos']['heldout'] = ['nothing-matches*']
    path.write_text(yaml.safe_dump(opt))
    with pytest.raises(UserInputError, match='split val: no photo left'):
        _build(str(path), split='val')
    opt['split'] = 'test'
    with pytest.raises(UserInputError, match="split: 'test' is not one of train, val"):
        build_fgr(opt, progress=False)


@pytest.mark.slow
def test_killed_build_with_workers_resumes_to_the_same_dataset(built, tmp_path):
    """SIGKILL a 2-worker build of the script mid-way, resume it in-process: same bytes as the reference
    (which was built in-process without workers)."""
    opt, _ = built
    killed = dict(opt, dataroot=str(tmp_path / 'killed'), num_workers=2)
    reference = {'dataroot': opt['dataroot'], 'samples': 12}
    opt_file = tmp_path / 'killed.yml'
    opt_file.write_text(yaml.safe_dump(killed))
    cmd = [sys.executable, os.path.join(ROOT, 'scripts', 'build_fgr.py'), '-opt', str(opt_file), '--no_progress']
    log = tmp_path / 'killed.log'
    with open(log, 'w') as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    meta = os.path.join(killed['dataroot'], 'meta_info.jsonl')
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and _count_lines(meta) < 3:
        time.sleep(0.02)
    assert proc.poll() is None, f'build ended before it could be killed: {log.read_text()[-2000:]}'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _count_lines(meta)
    assert 3 <= done < reference['samples'] and not os.path.isdir(os.path.join(killed['dataroot'], 'lmdb'))
    resumed = build_fgr(dict(killed, num_workers=0), progress=False)
    assert resumed['built_now'] == reference['samples'] - done
    got, want = _folder_bytes(killed['dataroot']), _folder_bytes(reference['dataroot'])
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    assert _lmdb_items(killed['dataroot']) == _lmdb_items(reference['dataroot'])


def _write_opt(path, opt):
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def test_sharded_build_merges_to_the_unsharded_result(built, tmp_path):
    """Shards 1/2 and 2/2 (crop tasks t % 2 == 0 and == 1) built apart and merged: the reference's bytes."""
    opt, _ = built
    sharded = _write_opt(tmp_path / 'sharded.yml', dict(opt, dataroot=str(tmp_path / 'sharded')))
    rates = []
    for k in (1, 2):
        summary = _build(sharded, shard=f'{k}/2')
        assert summary['shard'] == f'{k}/2' and summary['samples'] == 6 and summary['samples_per_minute'] > 0
        assert summary['dataroot'] == str(tmp_path / 'sharded' / 'shards' / f'{k}-of-2')
        rates.append(summary['samples_per_minute'])
    with open(tmp_path / 'sharded' / 'shards' / '1-of-2' / 'meta_info.jsonl') as f:
        crops = {(json.loads(line)['index'] // 2) for line in f}
    assert crops == {0, 2, 4}  # 2 samples per crop; shard 1 holds the even tasks
    # a rerun of a finished shard builds nothing
    assert build_fgr(dict(opt, dataroot=str(tmp_path / 'sharded')), progress=False,
                     shard=load_shard('1/2'))['built_now'] == 0
    merged = _build(sharded, merge=True)
    assert merged['samples'] == 12 and merged['merged_shards'] == 2 and merged['lmdb_rebuilt']
    # the rerun kept each shard's measured rate
    assert [s['samples_per_minute'] for s in merged['shards']] == rates and merged['samples_per_minute'] > 0
    got, want = _folder_bytes(str(tmp_path / 'sharded')), _folder_bytes(opt['dataroot'])
    assert sorted(got) == sorted(want) and [k for k in want if got[k] != want[k]] == []
    assert _lmdb_items(str(tmp_path / 'sharded')) == _lmdb_items(opt['dataroot'])
    # merging again is a no-op on the data
    _build(sharded, merge=True)
    assert _folder_bytes(str(tmp_path / 'sharded')) == want


def load_shard(spec):
    from finpercep_basicsr.fgr.shards import parse_shard
    return parse_shard(spec)


def test_bad_shard_specs_and_merges_are_named(built, tmp_path):
    opt, _ = built
    path = _write_opt(tmp_path / 'b.yml', dict(opt, dataroot=str(tmp_path / 'b')))
    for spec in ('3/2', '0/2', 'a/b', '2', '-1/2'):
        with pytest.raises(UserInputError, match=re.escape(f'--shard {spec!r}: need K/N')):
            _build(path, shard=spec)
    with pytest.raises(UserInputError, match='exclude each other'):
        _build(path, shard='1/2', merge=True)
    with pytest.raises(UserInputError, match='no shard folders'):
        _build(path, merge=True)
    _build(path, shard='1/2')
    missing = str(tmp_path / 'b' / 'shards' / '2-of-2')
    with pytest.raises(UserInputError, match=re.escape(f'shard 2/2 is missing: {missing}')):
        _build(path, merge=True)
    _build(path, shard='2/2')
    # another option file (other seed = other plan) over the same shards: refused, the folder named
    other = _write_opt(tmp_path / 'other.yml', dict(opt, dataroot=str(tmp_path / 'b'), seed=7))
    with pytest.raises(UserInputError) as err:
        _build(other, merge=True)
    assert str(tmp_path / 'b' / 'shards' / '1-of-2') in str(err.value) and 'other options or photos' in str(err.value)
    # an unfinished shard (a sample lost) is refused too
    meta = tmp_path / 'b' / 'shards' / '2-of-2' / 'meta_info.jsonl'
    meta.write_text(''.join(meta.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(UserInputError, match=re.escape(f'{missing} is unfinished (1 samples missing')):
        _build(path, merge=True)
    # shards of two different counts
    os.makedirs(tmp_path / 'b' / 'shards' / '1-of-3')
    with pytest.raises(UserInputError, match=re.escape('several counts [2, 3]')):
        _build(path, merge=True)
    assert not os.path.exists(tmp_path / 'b' / 'meta_info.jsonl')


def test_scales_and_degradation_mix_reach_the_samples(tmp_path):
    """photos.scales and degradation.mix: drawn per crop, recorded in meta, the GT is the resized photo's crop."""
    from finpercep_basicsr.fgr.crop_photos import resize_photo
    from finpercep_basicsr.fgr.photos import load_photo_checked
    photos = _good_photos(str(tmp_path / 'photos'))
    opt = _opt(tmp_path, photos, masks_per_sr=1, sr_sources=[{'type': 'bicubic', 'name': 'bicubic', 'scale': 4}])
    opt['photos'].update(crops_per_photo=6, scales=[1.0, 0.5])
    opt['degradation'] = {'scale': 4, 'mix': {'mild': {'weight': 1, 'opt': {'mode': 'bicubic',
                                                                            'jpeg_range': [85, 95]}},
                                              'heavy': {'weight': 1, 'opt': {}}}}
    summary = build_fgr(opt, progress=False)
    assert summary['samples'] == 3 * 6 and not summary['skipped_photos']
    with open(os.path.join(opt['dataroot'], 'meta_info.jsonl')) as f:
        meta = [json.loads(line) for line in f]
    assert {m['degradation'] for m in meta} == {'mild', 'heavy'}
    # at 0.5 only the 128 px astronaut still holds a 64 px crop; the others always get 1.0
    assert {m['crop_scale'] for m in meta if 'astronaut' in m['photo']} == {1.0, 0.5}
    assert {m['crop_scale'] for m in meta if 'astronaut' not in m['photo']} == {1.0}
    for m in meta:
        photo = resize_photo(load_photo_checked(m['photo'])[0], m['crop_scale'])
        top, left, h, w = m['crop_box']
        gt = cv2.imread(os.path.join(opt['dataroot'], 'gt', m['name'] + '.png'))[..., ::-1]
        np.testing.assert_array_equal(gt, np.round(photo[top:top + h, left:left + w] * 255).astype(np.uint8))
    again = build_fgr(dict(opt, dataroot=str(tmp_path / 'again')), progress=False)
    assert again['samples'] == 18
    assert _folder_bytes(str(tmp_path / 'again')) == _folder_bytes(opt['dataroot'])
    with pytest.raises(UserInputError, match='photos.scales'):
        build_fgr(dict(opt, dataroot=str(tmp_path / 'bad'), photos=dict(opt['photos'], scales=[0])), progress=False)


def test_a_swap_base_replaces_the_gt_around_the_swapped_regions(tmp_path):
    """swap_base: the regions go into the base source's output of the same LQ, which is labelled against GT too."""
    from finpercep_basicsr.fgr.builder import CropWorker
    from finpercep_basicsr.fgr.crop_photos import list_photos, select_split
    photos = _good_photos(str(tmp_path / 'photos'))
    base = {'type': 'bicubic', 'name': 'bicubic_base', 'scale': 4}
    opt = _opt(tmp_path, photos, masks_per_sr=2, lmdb={'enabled': False}, contact_sheet={'num': 0},
               labels={'alpha': 1.0, 'normalize': {'type': 'fixed', 'scale': 0.2}},
               sr_sources=[{'type': 'lanczos', 'name': 'lanczos', 'scale': 4, 'swap_base': base},
                           {'type': 'bicubic', 'name': 'bicubic', 'scale': 4}])
    build_fgr(opt, progress=False)
    with open(os.path.join(opt['dataroot'], 'meta_info.jsonl')) as f:
        meta = [json.loads(line) for line in f]
    assert {m['sr_model']: m.get('swap_base') for m in meta} == {'lanczos': 'bicubic_base', 'bicubic': None}
    worker = CropWorker(opt, select_split(list_photos(opt['photos']['folders']), opt))
    plan = worker.plan

    def read(key, name):
        return cv2.imread(os.path.join(opt['dataroot'], key, name + '.png'), cv2.IMREAD_UNCHANGED)

    checked = 0
    for p, c in plan.tasks():
        hr, lq = worker.degraded_crop((p, c))[:2]
        bicubic = np.round(build_sr_source(base)(lq) * 255).astype(np.uint8)[..., ::-1]
        for s, k in ((0, 0), (0, 1), (1, 0)):
            name = plan.sample_name(p, c, s, k)
            outside = read('mask', name) == 0
            around = bicubic if s == 0 else read('gt', name)
            np.testing.assert_array_equal(read('syn', name)[outside], around[outside])
            # the base's error against GT is labelled; the GT around a plain swap is not
            assert (read('pdm', name)[outside].mean() > 0) == (s == 0)
            checked += 1
    assert checked == 3 * len(list(plan.tasks()))


def test_a_training_build_refuses_the_held_out_families():
    from finpercep_basicsr.fgr.builder import check_heldout_families
    span = {'type': 'ncnn', 'name': 'span_cr', 'model': 'span-clearreality-x4'}
    nested = {'type': 'artifact_oversharpen', 'name': 'sharp_cugan', 'base': {'type': 'ncnn',
                                                                              'model': 'realcugan-se-x2'}}
    for source, model in ((span, 'span-clearreality-x4'), (nested, 'realcugan-se-x2')):
        with pytest.raises(UserInputError, match=f'{model} is of a held-out family .span, realcugan: evaluation'):
            check_heldout_families({'sr_sources': [{'type': 'bicubic'}, source]})
        check_heldout_families({'sr_sources': [source], 'split': 'val'})  # an evaluation set may
        check_heldout_families({'sr_sources': [source], 'allow_heldout_families': True})
    check_heldout_families({'sr_sources': [{'type': 'ncnn', 'model': 'realesrgan-x4plus'}]})


def test_no_shipped_option_file_trains_on_a_held_out_family():
    """SPAN and Real-CUGAN stay evaluation-only: no option file builds training data from them or lifts the guard."""
    import glob

    import yaml
    from tests.helpers.opt import REPO

    from finpercep_basicsr.fgr.sources.ncnn_models import EVALUATION_ONLY_FAMILIES, PACKAGED_MODELS
    held_out = [name for name, spec in PACKAGED_MODELS.items() if spec.family in EVALUATION_ONLY_FAMILIES]
    assert len(held_out) == 6
    for path in glob.glob(f'{REPO}/options/**/*.yml', recursive=True):
        text = open(path).read()
        assert 'allow_heldout_families' not in text, path
        opt = yaml.safe_load(text) or {}
        # a build file's split can be changed on the command line: an evaluation set of them must state split: val
        if 'sr_sources' in opt and opt.get('split') != 'val':
            assert not any(name in text for name in held_out), path
