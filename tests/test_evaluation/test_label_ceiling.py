"""The label formula's ceiling on a hacking check: the label made with the GT, scored like a map."""
import os

import cv2
import numpy as np
from skimage import data

from finpercep_basicsr.evaluation.label_ceiling import label_ceiling, label_variants
from finpercep_basicsr.evaluation.rm_generalization import hack_triplets
from finpercep_basicsr.utils.image_io import write_rgb8

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _hack_folders(tmp_path, num=2, size=64):
    """GT crops of a real photo; start = a blurred copy; hacked = start with a checkerboard etched into one square."""
    photo = data.astronaut().astype(np.float32) / 255
    rng = np.random.default_rng(0)
    checker = (np.indices((size, size)).sum(axis=0) % 2 * 0.3 - 0.15).astype(np.float32)[..., None]
    for i in range(num):
        top, left = rng.integers(0, 512 - size, 2)
        gt = photo[top:top + size, left:left + size]
        start = cv2.GaussianBlur(gt, (0, 0), 1.0)
        hacked = start.copy()
        hacked[16:40, 16:40] = np.clip(start[16:40, 16:40] + checker[16:40, 16:40], 0, 1)
        for folder, img in (('gt', gt), ('start', start), ('hacked', hacked)):
            os.makedirs(tmp_path / folder, exist_ok=True)
            write_rgb8(str(tmp_path / folder / f'{i}.png'), img)
    return hack_triplets(str(tmp_path / 'start'), str(tmp_path / 'hacked'), str(tmp_path / 'gt'))


def test_the_pixel_label_marks_an_etched_square_and_the_floors_are_beside_it(tmp_path, one_thread):
    triplets = _hack_folders(tmp_path)
    result = label_ceiling(triplets, {'alpha': 1.0, 'normalize': {'type': 'percentile', 'percentile': 99}})
    assert result['images'] == 2 and 0.05 < result['added_error_fraction'] < 0.2
    assert list(result['pixel_auc']) == ['label'] and result['pixel_auc']['label'] > 0.95
    assert set(result['floors']) == {'constant', 'laplacian', 'blur'} and result['floors']['constant'] == 0.5
    mixed = label_ceiling(triplets, {'alpha': 0.5})
    assert list(mixed['pixel_auc']) == ['label', 'pixel term', 'feature term']
    assert mixed['pixel_auc']['pixel term'] == result['pixel_auc']['label']
    assert mixed['floors'] == result['floors']


def test_label_variants():
    assert label_variants({'alpha': 0.5, 'normalize': {'type': 'max'}}) == {
        'label': {'alpha': 0.5, 'normalize': {'type': 'max'}},
        'pixel term': {'alpha': 1.0, 'normalize': {'type': 'max'}},
        'feature term': {'alpha': 0.0, 'normalize': {'type': 'max'}}}
    assert list(label_variants({'alpha': 0.0})) == ['label']
