"""The photos of a build and how crops are cut from them: the split, the photo policy, crop scales.

``photos.heldout`` chooses the validation photos (``split: val``); ``photos.scales`` lists resize
factors, one drawn per crop by the builder, of which only those at which the photo still holds a
whole crop are used.
"""
import fnmatch
import os

import cv2
import numpy as np

from finpercep_basicsr.fgr.photos import PhotoSkipped, load_photo_checked
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import IMAGE_EXTENSIONS, list_images


def list_photos(folders):
    """Image files under the given folders (recursive), sorted, as absolute paths."""
    if isinstance(folders, str):
        folders = [folders]
    photos = sorted(os.path.abspath(p) for folder in folders or []
                    for p in list_images(os.path.expanduser(folder), recursive=True))
    if not photos:
        raise UserInputError(f'photos.folders: no images ({", ".join(IMAGE_EXTENSIONS)}) in {folders}')
    return photos


SPLITS = ('train', 'val')


def select_split(photos, opt):
    """The photos of ``opt['split']``: ``val`` = those matching ``photos.heldout``, ``train`` = the rest.

    ``photos.heldout`` is a list of file-name patterns (fnmatch, e.g. ``skimage_coffee.png`` or
    ``opencv_*``); without it ``train`` takes every photo. A split that keeps no photo is an error.
    """
    split = opt.get('split', 'train')
    if split not in SPLITS:
        raise UserInputError(f'split: {split!r} is not one of {", ".join(SPLITS)}')
    patterns = opt['photos'].get('heldout') or []
    if isinstance(patterns, str):
        patterns = [patterns]
    held = [p for p in photos if any(fnmatch.fnmatch(os.path.basename(p), pat) for pat in patterns)]
    chosen = held if split == 'val' else [p for p in photos if p not in held]
    if not chosen:
        raise UserInputError(f'split {split}: no photo left (photos.heldout = {patterns} over {len(photos)} photos '
                             f'in {opt["photos"].get("folders")})')
    return chosen


def crop_scales(photos_opt):
    """``photos.scales``: positive resize factors a crop's photo is drawn from (default ``[1.0]``)."""
    scales = photos_opt.get('scales', [1.0])
    scales = [scales] if isinstance(scales, (int, float)) else scales
    if not scales or not all(isinstance(s, (int, float)) and s > 0 for s in scales):
        raise UserInputError(f'photos.scales: need a non-empty list of positive factors, got {scales!r}')
    return [float(s) for s in scales]


def scaled_size(shape, scale):
    """(H, W) of a photo of ``shape`` resized by ``scale``."""
    return max(1, int(round(shape[0] * scale))), max(1, int(round(shape[1] * scale)))


def resize_photo(photo, scale):
    """The photo resized by ``scale`` (area filter down, bicubic up; 1 = the photo itself)."""
    if scale == 1:
        return photo
    h, w = scaled_size(photo.shape, scale)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.clip(cv2.resize(photo, (w, h), interpolation=interp), 0, 1)


def load_photo(path, crop_size, scales=(1.0,)):
    """Read a photo with the photo policy of ``fgr.photos`` (corrupt and transparent skipped; grayscale,
    opaque RGBA and 16-bit converted with a note) and skip it when it is smaller than the crop at every scale.

    Returns:
        tuple: (float32 RGB (H, W, 3) in [0, 1], list of notes).

    Raises:
        PhotoSkipped: The message names the file and the reason.
    """
    photo, notes = load_photo_checked(path)
    if not fitting_scales(photo.shape, crop_size, scales):
        h, w = photo.shape[:2]
        where = '' if list(scales) == [1.0] else f' at every scale in {list(scales)}'
        raise PhotoSkipped(f'{path}: {h}x{w} is smaller than the crop size {crop_size}{where}')
    return photo, notes


def fitting_scales(shape, crop_size, scales):
    """The scales at which a photo of ``shape`` still holds a whole crop."""
    return [s for s in scales if min(scaled_size(shape, s)) >= crop_size]
