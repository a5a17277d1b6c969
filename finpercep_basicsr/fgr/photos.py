"""Real HR photos for FGR data: packaged photos (scikit-image, Debian opencv-doc,
plasma-workspace-wallpapers and lomiri-wallpapers-16.04, see ``fgr/deb_photos.py``) or the user's folders.

Interface::

    summary = gather_photos(out_dir, sources=('skimage', 'opencv-doc', 'plasma-wallpapers'),
                            inputs=('DIV2K_train_HR',))
    summary = cut_crops([out_dir], crops_dir, crop_size=256, stride=128, min_size=64)

``gather_photos`` writes every usable photo as an 8-bit RGB PNG into ``out_dir`` plus
``sources.jsonl`` (one JSON object per photo: file, name, source, licence, origin, size, notes; author
where the package names one) and
``licences.json`` (file -> licence). ``cut_crops`` cuts sliding-window HR crops (BasicSR's
extract_subimages scheme: a last window flush with the border when the leftover exceeds
``min_size``) into ``crops_dir`` plus ``crops.jsonl`` (crop -> photo and box). Both return a summary
dict with ``written`` and ``skipped`` ({path: reason}).

Bad photos (``load_photo_checked``): corrupt/unreadable files and RGBA with transparent pixels are
skipped; grayscale is repeated to RGB, opaque RGBA loses its alpha, 16-bit is scaled to 8 bits, each
with a warning naming the file; a record's ``max_width`` (lomiri photos) downscales a wider photo
with area interpolation, noted in its notes; photos smaller than ``min_size`` (gather) or the crop
(cut) are skipped. Skipped photos are listed in the summary; already written files are never removed.
"""
import json
import os
import shutil
import tempfile
import warnings

import cv2
import numpy as np

from finpercep_basicsr.fgr.deb_photos import (OPENCV_DOC_DATA, OPENCV_DOC_LICENCE, OPENCV_DOC_PHOTOS,  # noqa: F401
                                              LOMIRI_MAX_WIDTH, MATE_MAX_WIDTH, PLASMA_MAX_WIDTH,
                                              lomiri_wallpaper_photos, mate_background_photos, opencv_doc_photos,
                                              plasma_wallpaper_photos)
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import BadImageError, decode_image, list_images, write_rgb8


# scikit-image's natural colour photographs; licences from the docstrings of skimage.data
# (microscopy, medical, synthetic, grayscale and RGBA images are left out on purpose)
SKIMAGE_PHOTOS = {
    'astronaut': ('astronaut.png', 'NASA Great Images (Eileen Collins)', 'public domain'),
    'chelsea': ('chelsea.png', 'Stefan van der Walt (Chelsea the cat)', 'CC0'),
    'coffee': ('coffee.png', 'Rachel Michetti, courtesy of Pikolo Espresso Bar', 'CC0'),
    'rocket': ('rocket.jpg', 'SpaceX photos (DSCOVR launch on Falcon 9)', 'public domain'),
    'motorcycle': ('motorcycle_left.png', 'Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014), '
                   'downsampled by 4', 'research benchmark; cite Scharstein et al. 2014'),
    'hubble_deep_field': ('hubble_deep_field.jpg', 'NASA / HubbleSite (Hubble eXtreme Deep Field)', 'public domain'),
}

class PhotoSkipped(UserInputError):
    """A photo that cannot be used; the message names the file and the reason."""


def load_photo_checked(path):
    """Read a photo as float32 RGB (H, W, 3) in [0, 1] and say what had to be converted.

    Returns:
        tuple: (image, list of notes such as ``'grayscale: repeated to RGB'``).

    Raises:
        PhotoSkipped: Unreadable/corrupt, or RGBA with transparent pixels (content undefined there).
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise PhotoSkipped(f'{path}: cannot read ({err})') from err
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if raw is None or raw.size == 0:
        raise PhotoSkipped(f'{path}: corrupt or not an image')
    notes = []
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    if channels in (1, 2):
        notes.append('grayscale: repeated to RGB')
        raw = raw if raw.ndim == 2 else raw[..., 0]
        data = cv2.imencode('.png', raw)[1]  # decode_image handles the 1-channel PNG
    elif channels == 4:
        if raw[..., 3].min() < np.iinfo(raw.dtype).max:
            raise PhotoSkipped(f'{path}: RGBA with transparent pixels')
        notes.append('opaque RGBA: alpha dropped')
    if raw.dtype == np.uint16:
        notes.append('16-bit: converted to 8-bit')
    try:
        return decode_image(data, path), notes
    except BadImageError as err:
        raise PhotoSkipped(str(err)) from err


def skimage_photos():
    """Records (dict: path, name, source, licence) of scikit-image's packaged natural photos."""
    from skimage import data
    records = []
    for name, (fname, origin, licence) in SKIMAGE_PHOTOS.items():
        path = os.path.join(data.data_dir, fname)
        if os.path.isfile(path):
            records.append(dict(path=path, name=f'skimage_{name}', source=f'scikit-image data: {origin}',
                                licence=licence))
    return records


def folder_photos(folder, licence='user supplied (see the dataset licence)'):
    """Records of every image under a user folder (DIV2K, LSDIR, ...)."""
    prefix = os.path.basename(os.path.normpath(folder)) or 'input'
    return [dict(path=p, name=f'{prefix}_{os.path.splitext(os.path.relpath(p, folder))[0].replace(os.sep, "_")}',
                 source=f'user folder {os.path.abspath(folder)}', licence=licence)
            for p in list_images(folder, recursive=True)]


def _write_png(path, img):
    """Write 8-bit RGB atomically (a killed run never leaves a half-written PNG under ``path``)."""
    tmp = os.path.join(os.path.dirname(path), f'.{os.path.basename(path)}.tmp.png')
    write_rgb8(tmp, img)
    os.replace(tmp, path)


def _write_jsonl(path, rows):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + '\n')
    os.replace(tmp, path)


def _unique(name, used):
    """``name``, or ``name_2``, ``name_3``... if already taken (same stem from different folders)."""
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f'{name}_{n}'
    used.add(candidate)
    return candidate


def _skip(skipped, path, reason):
    skipped[path] = reason
    warnings.warn(f'skipped {path}: {reason}')


def _fit_width(img, max_width):
    """``img`` downscaled (area interpolation) to ``max_width`` px wide if wider, and a note saying so."""
    h, w = img.shape[:2]
    if not max_width or w <= max_width:
        return img, None
    size = (max_width, max(1, round(h * max_width / w)))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return img, f'downscaled from {w}x{h} to {size[0]}x{size[1]} (area interpolation, max_width {max_width})'


PACKAGED_SOURCES = ('skimage', 'opencv-doc', 'plasma-wallpapers', 'lomiri-wallpapers', 'mate-backgrounds')
DEB_SOURCES = PACKAGED_SOURCES[1:]


def gather_photos(out_dir, sources=('skimage', 'opencv-doc'), inputs=(), min_size=0, workdir=None, opencv_deb=None,
                  plasma_deb=None, plasma_max_width=PLASMA_MAX_WIDTH, lomiri_deb=None,
                  lomiri_max_width=LOMIRI_MAX_WIDTH, mate_deb=None, mate_max_width=MATE_MAX_WIDTH):
    """Collect photos into ``out_dir`` as 8-bit RGB PNGs with their provenance and licences.

    Args:
        out_dir (str): Output folder (created).
        sources (iterable[str]): Packaged sets: ``'skimage'``, ``'opencv-doc'``, ``'plasma-wallpapers'``,
            ``'lomiri-wallpapers'``, ``'mate-backgrounds'``.
        inputs (iterable[str]): User folders, read recursively.
        min_size (int): Photos whose shorter side is below this are skipped.
        workdir (str | None): Cache for the Debian packages (``<workdir>/<package>``: the .deb and its
            unpacked tree, reused by later runs); None = a temporary folder, removed afterwards.
        opencv_deb (str | None): An existing ``opencv-doc_*.deb`` instead of ``apt-get download``.
        plasma_deb (str | None): An existing ``plasma-workspace-wallpapers_*.deb``.
        plasma_max_width (int): Per wallpaper, the largest image at most this wide (0 = the largest).
        lomiri_deb (str | None): An existing ``lomiri-wallpapers-16.04_*.deb``.
        lomiri_max_width (int): Lomiri photos wider than this are downscaled to it (0 = keep the size).
        mate_deb (str | None): An existing ``mate-backgrounds_*.deb``.
        mate_max_width (int): MATE photos wider than this are downscaled to it (0 = keep the size).

    Returns:
        dict: ``written`` (list of files), ``skipped`` ({path: reason}), ``notes`` ({path: [notes]}).
    """
    unknown = set(sources) - set(PACKAGED_SOURCES)
    if unknown:
        raise UserInputError(f'unknown photo source(s) {sorted(unknown)}; choose from {", ".join(PACKAGED_SOURCES)}')
    os.makedirs(out_dir, exist_ok=True)
    tmp_root = None
    records = []
    try:
        if workdir is None and set(DEB_SOURCES) & set(sources):
            workdir = tmp_root = tempfile.mkdtemp(prefix='debian-photos-')
        if 'skimage' in sources:
            records += skimage_photos()
        if 'opencv-doc' in sources:
            records += opencv_doc_photos(os.path.join(workdir, 'opencv-doc'), opencv_deb)
        if 'plasma-wallpapers' in sources:
            records += plasma_wallpaper_photos(os.path.join(workdir, 'plasma-workspace-wallpapers'), plasma_deb,
                                               plasma_max_width)
        if 'lomiri-wallpapers' in sources:
            records += lomiri_wallpaper_photos(os.path.join(workdir, 'lomiri-wallpapers-16.04'), lomiri_deb,
                                               lomiri_max_width)
        if 'mate-backgrounds' in sources:
            records += mate_background_photos(os.path.join(workdir, 'mate-backgrounds'), mate_deb, mate_max_width)
        for folder in inputs:
            records += folder_photos(folder)
        rows, skipped, notes, used = [], {}, {}, set()
        for rec in records:
            try:
                img, photo_notes = load_photo_checked(rec['path'])
            except PhotoSkipped as err:
                _skip(skipped, rec['path'], str(err).split(': ', 1)[-1])
                continue
            img, resized = _fit_width(img, rec.get('max_width'))
            h, w = img.shape[:2]
            if min(h, w) < min_size:
                _skip(skipped, rec['path'], f'{h}x{w} is smaller than min_size {min_size}')
                continue
            if photo_notes:
                notes[rec['path']] = photo_notes
                warnings.warn(f'{rec["path"]}: {"; ".join(photo_notes)}')
            if resized:  # asked for by the source, so noted without a warning
                photo_notes.append(resized)
                notes[rec['path']] = photo_notes
            fname = _unique(rec['name'], used) + '.png'
            _write_png(os.path.join(out_dir, fname), img)
            rows.append(dict(file=fname, name=rec['name'], source=rec['source'], licence=rec['licence'],
                             origin=os.path.abspath(rec['path']), height=h, width=w, notes=photo_notes,
                             **({'author': rec['author']} if rec.get('author') else {})))
    finally:
        if tmp_root:
            shutil.rmtree(tmp_root, ignore_errors=True)
    _write_jsonl(os.path.join(out_dir, 'sources.jsonl'), rows)
    with open(os.path.join(out_dir, 'licences.json'), 'w') as f:
        json.dump({r['file']: r['licence'] for r in rows}, f, indent=1, sort_keys=True)
    return dict(out_dir=out_dir, written=[r['file'] for r in rows], skipped=skipped, notes=notes)


def crop_starts(length, crop_size, stride, min_size):
    """Window starts along one axis: every ``stride``, plus a border-flush window when > min_size is left."""
    starts = list(range(0, length - crop_size + 1, stride))
    if starts and length - (starts[-1] + crop_size) > min_size:
        starts.append(length - crop_size)
    return starts


def cut_crops(inputs, out_dir, crop_size=256, stride=128, min_size=0):
    """Cut sliding-window HR crops of every photo under ``inputs`` (files or folders).

    Args:
        inputs (str | list[str]): Photo files and/or folders (recursive).
        out_dir (str): Output folder for ``<stem>_s###.png`` crops and ``crops.jsonl``.
        crop_size (int): Crop side in px.
        stride (int): Step between windows.
        min_size (int): Leftover at the right/bottom border that still earns a border-flush crop.

    Returns:
        dict: ``written`` (crop files), ``skipped`` ({photo: reason}), ``notes`` ({photo: [notes]}).
    """
    if crop_size < 1 or stride < 1:
        raise UserInputError(f'crop_size and stride must be >= 1, got {crop_size}, {stride}')
    paths = []
    for item in [inputs] if isinstance(inputs, str) else inputs:
        paths += list_images(item, recursive=True) if os.path.isdir(item) else [item]
    os.makedirs(out_dir, exist_ok=True)
    rows, skipped, notes, used = [], {}, {}, set()
    for path in paths:
        try:
            img, photo_notes = load_photo_checked(path)
        except PhotoSkipped as err:
            _skip(skipped, path, str(err).split(': ', 1)[-1])
            continue
        h, w = img.shape[:2]
        if h < crop_size or w < crop_size:
            _skip(skipped, path, f'{h}x{w} is smaller than the crop size {crop_size}')
            continue
        if photo_notes:
            notes[path] = photo_notes
            warnings.warn(f'{path}: {"; ".join(photo_notes)}')
        stem = _unique(os.path.splitext(os.path.basename(path))[0], used)
        index = 0
        for top in crop_starts(h, crop_size, stride, min_size):
            for left in crop_starts(w, crop_size, stride, min_size):
                fname = f'{stem}_s{index:03d}.png'
                _write_png(os.path.join(out_dir, fname), img[top:top + crop_size, left:left + crop_size])
                rows.append(dict(file=fname, photo=os.path.abspath(path), box=[top, left, crop_size, crop_size]))
                index += 1
    _write_jsonl(os.path.join(out_dir, 'crops.jsonl'), rows)
    return dict(out_dir=out_dir, written=[r['file'] for r in rows], skipped=skipped, notes=notes)


def get_photos(out_dir, sources=('skimage', 'opencv-doc'), inputs=(), crops=None, crop_size=256, stride=128,
               min_crop_size=0, **gather_options):
    """``gather_photos`` into ``out_dir`` and, with ``crops``, ``cut_crops`` of them (``scripts/get_photos.py``).

    Every bad photo warns, not only the first of its kind.

    Args:
        out_dir (str): Folder of the full photos.
        sources (iterable[str]): Packaged sets, as ``gather_photos``; ``'none'`` is dropped (only ``inputs``).
        inputs (iterable[str]): User folders.
        crops (str | None): Folder for HR crops (None: no crops).
        crop_size, stride (int): As ``cut_crops``. min_crop_size (int): ``cut_crops``'s ``min_size``.
        **gather_options: The other arguments of ``gather_photos``.

    Returns:
        dict: ``photos`` and, with ``crops``, ``crops``: their summaries with ``written`` as a count.

    Raises:
        UserInputError: No usable photo.
    """
    sources = [s for s in sources if s != 'none']
    with warnings.catch_warnings():
        warnings.simplefilter('always')
        summary = {'photos': gather_photos(out_dir, sources, inputs, **gather_options)}
        if not summary['photos']['written']:
            raise UserInputError(f'no usable photo from sources {sources} and inputs {list(inputs)}')
        if crops:
            summary['crops'] = cut_crops(out_dir, crops, crop_size, stride, min_crop_size)
    for part in summary.values():
        part['written'] = len(part['written'])
    return summary
