"""FinPercepFGRDataset: disk and LMDB backends agree, augmentation keeps every image and map aligned."""
import json
import os
import random
import shutil

import cv2
import numpy as np
import pytest
import torch
from tests.helpers.fgr import make_fgr_folder

from finpercep_basicsr.data.finpercep_fgr_dataset import FinPercepFGRDataset
from finpercep_basicsr.fgr import store
from finpercep_basicsr.utils.errors import UserInputError

KEYS = ('gt', 'sr', 'syn', 'mask', 'pdm')


@pytest.fixture
def fgr_with_lmdb(tmp_path):
    root = make_fgr_folder(str(tmp_path / 'fgr'), num=5, size=40, seed=3)
    names = [f'{i:04d}' for i in range(5)]
    assert store.build_lmdb(root, names)
    return root


def _items(dataset, seed):
    out = []
    for i in range(len(dataset)):
        random.seed(seed * 100 + i)
        out.append(dataset[i])
    return out


def test_disk_and_lmdb_backends_return_identical_samples(fgr_with_lmdb):
    for phase in ('train', 'val'):
        opt = {'dataroot': fgr_with_lmdb, 'phase': phase, 'gt_size': 32, 'use_hflip': True, 'use_rot': True}
        disk = FinPercepFGRDataset(dict(opt, io_backend={'type': 'disk'}))
        lmdb = FinPercepFGRDataset(dict(opt, io_backend={'type': 'lmdb'}))
        lmdb_direct = FinPercepFGRDataset(dict(opt, dataroot=os.path.join(fgr_with_lmdb, 'lmdb'),
                                               io_backend={'type': 'lmdb'}))
        assert len(disk) == len(lmdb) == len(lmdb_direct) == 5
        for a, b, c in zip(_items(disk, 1), _items(lmdb, 1), _items(lmdb_direct, 1)):
            assert a['name'] == b['name'] == c['name']
            for key in KEYS:
                assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key
            assert a['gt'].shape == (3, 32, 32) if phase == 'train' else (3, 40, 40)
            assert a['mask'].shape[0] == a['pdm'].shape[0] == 1
            assert all(a[k].dtype == torch.float32 and 0 <= a[k].min() and a[k].max() <= 1 for k in KEYS)


def test_crops_flips_and_rotations_are_identical_for_every_key(fgr_with_lmdb):
    dataset = FinPercepFGRDataset({'dataroot': fgr_with_lmdb, 'phase': 'train', 'gt_size': 24,
                                   'io_backend': {'type': 'lmdb'}})
    seen = set()
    for seed in range(12):
        item = _items(dataset, seed)[0]
        m = item['mask']
        # the swap only holds pixel by pixel when all five arrays got the same crop and orientation
        recomposed = m * item['sr'] + (1 - m) * item['gt']
        assert torch.allclose(recomposed, item['syn'], atol=1.5 / 255)
        assert torch.all(item['pdm'][m == 0] == 0)
        seen.add(item['gt'].numpy().tobytes())
    assert len(seen) > 6  # crops and orientations really vary


def test_missing_mismatched_and_too_small_samples_are_named(fgr_with_lmdb, tmp_path):
    with pytest.raises(UserInputError, match='lmdb'):
        FinPercepFGRDataset({'dataroot': fgr_with_lmdb, 'io_backend': {'type': 'redis'}})
    with pytest.raises(UserInputError, match='smaller than gt_size 64'):
        FinPercepFGRDataset({'dataroot': fgr_with_lmdb, 'gt_size': 64, 'io_backend': {'type': 'lmdb'}})
    with pytest.raises(UserInputError, match='smaller than gt_size 64'):
        FinPercepFGRDataset({'dataroot': fgr_with_lmdb, 'gt_size': 64, 'phase': 'train'})[0]

    broken = shutil.copytree(fgr_with_lmdb, str(tmp_path / 'broken'))
    os.remove(os.path.join(broken, 'pdm', '0002.png'))
    with pytest.raises(UserInputError, match=r'pdm/0002\.png'):
        FinPercepFGRDataset({'dataroot': broken})
    cv2.imwrite(os.path.join(broken, 'pdm', '0002.png'), np.zeros((20, 40), np.uint16))
    with pytest.raises(UserInputError, match='0002.*differ in size'):
        FinPercepFGRDataset({'dataroot': broken})[2]

    meta = os.path.join(broken, 'lmdb', 'meta_info.jsonl')
    shutil.copyfile(meta, meta + '.bak')
    with open(meta, 'a') as f:
        f.write('{"name": "0099"}\n')
    with pytest.raises(UserInputError, match='sample 0099 is missing'):
        FinPercepFGRDataset({'dataroot': broken, 'io_backend': {'type': 'lmdb'}})
    os.replace(meta + '.bak', meta)
    shutil.rmtree(os.path.join(broken, 'lmdb', 'syn.lmdb'))
    with pytest.raises(UserInputError, match='syn.lmdb is missing'):
        FinPercepFGRDataset({'dataroot': broken, 'io_backend': {'type': 'lmdb'}})


def test_lmdb_reads_in_dataloader_workers(fgr_with_lmdb):
    dataset = FinPercepFGRDataset({'dataroot': fgr_with_lmdb, 'io_backend': {'type': 'lmdb'}})
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=1)
    batch = next(iter(loader))
    assert batch['syn'].shape == (5, 3, 40, 40) and list(batch['name']) == [f'{i:04d}' for i in range(5)]


def test_several_dataroots_read_as_one_with_repeats(tmp_path):
    a = make_fgr_folder(str(tmp_path / 'a'), num=3, size=32, seed=0)
    b = make_fgr_folder(str(tmp_path / 'b'), num=2, size=32, seed=1)
    both = FinPercepFGRDataset({'dataroot': [a, b], 'dataroot_repeat': [1, 2], 'phase': 'val'})
    assert len(both) == 3 + 2 * 2
    single_b = FinPercepFGRDataset({'dataroot': b, 'phase': 'val'})
    torch.testing.assert_close(both[3]['syn'], single_b[0]['syn'])
    torch.testing.assert_close(both[5]['syn'], single_b[0]['syn'])  # b listed twice
    assert both[3]['gt_path'].startswith(b)
    with pytest.raises(UserInputError, match='dataroot_repeat'):
        FinPercepFGRDataset({'dataroot': [a, b], 'dataroot_repeat': [1], 'phase': 'val'})
    with pytest.raises(UserInputError, match='not a folder'):
        FinPercepFGRDataset({'dataroot': [a, str(tmp_path / 'missing')], 'phase': 'val'})


def test_pdm_scale_puts_every_label_on_one_severity_scale(tmp_path):
    root = make_fgr_folder(str(tmp_path / 'fgr'), num=3, size=32, seed=2)
    plain = FinPercepFGRDataset({'dataroot': root, 'phase': 'val'})
    scale = 0.05
    scaled = FinPercepFGRDataset({'dataroot': root, 'phase': 'val', 'pdm_scale': scale})
    with open(os.path.join(root, 'meta_info.jsonl')) as f:
        label_scales = [json.loads(line)['label_scale'] for line in f]
    peaks = []
    for i, ls in enumerate(label_scales):
        expected = torch.clamp(plain[i]['pdm'] * (ls / scale), max=1.0)
        torch.testing.assert_close(scaled[i]['pdm'], expected)
        torch.testing.assert_close(scaled[i]['syn'], plain[i]['syn'])  # only the label changes
        peaks.append(float(scaled[i]['pdm'].max()))
    # per sample each label peaks at 1; on one scale the peaks follow each swap's own worst distance
    assert all(float(plain[i]['pdm'].max()) == pytest.approx(1.0, abs=1e-4) for i in range(3))
    assert peaks == pytest.approx([min(1.0, ls / scale) for ls in label_scales], abs=1e-4)
    with pytest.raises(UserInputError, match='pdm_scale must be a positive number'):
        FinPercepFGRDataset({'dataroot': root, 'pdm_scale': 0})
    lines = open(os.path.join(root, 'meta_info.jsonl')).read().replace('"label_scale"', '"other"')
    open(os.path.join(root, 'meta_info.jsonl'), 'w').write(lines)
    with pytest.raises(UserInputError, match='pdm_scale needs label_scale in .*meta_info.jsonl'):
        FinPercepFGRDataset({'dataroot': root, 'pdm_scale': scale})
