"""fgr/test_pairs.py (scripts/make_test_pairs.py): paired held-out test sets, reproducible from the options."""
import json

import numpy as np
import pytest

from finpercep_basicsr.fgr.degradation import degrade
from finpercep_basicsr.fgr.test_pairs import cut_test_pairs, named_photos
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import read_image, write_rgb8


def _photo(path, h, w, seed):
    rng = np.random.default_rng(seed)
    write_rgb8(str(path), rng.random((h, w, 3)).astype(np.float32))
    return str(path)


def test_pairs_are_crops_of_their_photo_with_the_seeded_degradation(tmp_path):
    photos = [_photo(tmp_path / 'a.png', 90, 120, 0), _photo(tmp_path / 'b.png', 70, 64, 1)]
    rows = cut_test_pairs(photos, str(tmp_path / 'out'), size=32, crops_per_photo=3, seed=1000)
    assert [r['name'] for r in rows] == ['a_0.png', 'a_1.png', 'a_2.png', 'b_0.png', 'b_1.png', 'b_2.png']
    assert [r['degradation_seed'] for r in rows] == list(range(1000, 1006))
    for row in rows:
        top, left, h, w = row['box']
        photo = read_image(str(tmp_path / row['photo']))
        gt = read_image(str(tmp_path / 'out' / 'gt' / row['name']))
        np.testing.assert_array_equal(gt, photo[top:top + h, left:left + w])
        lq = read_image(str(tmp_path / 'out' / 'lq' / row['name']))
        assert lq.shape == (8, 8, 3)
        np.testing.assert_allclose(lq, degrade(gt, {'scale': 4}, seed=row['degradation_seed']), atol=1 / 255 + 1e-6)
    assert len({tuple(r['box']) for r in rows[:3]}) == 3  # three different crops of one photo
    listed = [json.loads(line) for line in open(tmp_path / 'out' / 'pairs.jsonl')]
    assert listed == rows
    again = cut_test_pairs(photos, str(tmp_path / 'again'), size=32, crops_per_photo=3, seed=1000)
    assert again == rows
    np.testing.assert_array_equal(read_image(str(tmp_path / 'again' / 'lq' / 'b_2.png')),
                                  read_image(str(tmp_path / 'out' / 'lq' / 'b_2.png')))


def test_one_crop_is_the_centre_and_small_photos_are_named(tmp_path):
    photo = _photo(tmp_path / 'c.png', 50, 70, 2)
    (row,) = cut_test_pairs([photo], str(tmp_path / 'out'), size=40)
    assert row['name'] == 'c.png' and row['box'] == [5, 15, 40, 40]
    with pytest.raises(UserInputError, match='c.png: 70x50 is smaller than the 64 px test crop'):
        cut_test_pairs([photo], str(tmp_path / 'small'), size=64)
    (shrunk,) = cut_test_pairs([photo], str(tmp_path / 'shrunk'), size=64, shrink_to_fit=True)
    assert shrunk['box'] == [1, 11, 48, 48]  # min(64, 50) rounded down to the scale


def test_photos_are_found_by_name_and_unknown_names_rejected(tmp_path):
    _photo(tmp_path / 'a.png', 64, 64, 0)
    (tmp_path / 'sub').mkdir()
    _photo(tmp_path / 'sub' / 'b.png', 64, 64, 1)  # found in subfolders too
    assert named_photos(str(tmp_path), ['b.png']) == [str(tmp_path / 'sub' / 'b.png')]
    assert named_photos(str(tmp_path)) == [str(tmp_path / 'a.png'), str(tmp_path / 'sub' / 'b.png')]
    out = tmp_path / 'test'
    cut_test_pairs(named_photos(str(tmp_path), ['b.png']), str(out), size=32)
    assert sorted(p.name for p in (out / 'gt').iterdir()) == ['b.png']
    with pytest.raises(UserInputError, match='not in .*: nope.png'):
        named_photos(str(tmp_path), ['nope.png'])
