"""Image reading that accepts what users really have: grayscale, RGBA, 16-bit, and says which file is bad."""
import os

import cv2
import numpy as np

from finpercep_basicsr.utils.errors import UserInputError

# what OpenCV decodes, any case
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm')


def is_image_file(name):
    """Whether a file name has one of ``IMAGE_EXTENSIONS``."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder, recursive=False):
    """Image files (``IMAGE_EXTENSIONS``) in ``folder``, sorted; with ``recursive`` in its subfolders too.

    Raises:
        UserInputError: ``folder`` is not a folder.
    """
    if not os.path.isdir(folder):
        raise UserInputError(f'image folder not found: {folder}')
    if recursive:
        found = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if is_image_file(n)]
    else:
        found = [os.path.join(folder, n) for n in os.listdir(folder) if is_image_file(n)]
    return sorted(found)


class BadImageError(UserInputError):
    """An image file that cannot be decoded; the message names the file."""


def decode_image(data, name):
    """Decode encoded image bytes to float32 RGB (H, W, 3) in [0, 1].

    Grayscale is repeated to three channels, alpha is dropped (composited on nothing: RGB kept),
    8- and 16-bit depths are scaled by their own maximum.

    Args:
        data (bytes | np.ndarray): Encoded file content (PNG, JPEG, ...).
        name (str): The file's path or key, for the error message.

    Raises:
        BadImageError: Undecodable or empty content.
    """
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None or img.size == 0:
        raise BadImageError(f'cannot decode image {name} (corrupt, empty or not an image)')
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(img.dtype)
    if scale is None:
        raise BadImageError(f'{name}: unsupported pixel type {img.dtype}')
    img = img.astype(np.float32) / scale
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise BadImageError(f'{name}: unsupported channel count {img.shape[2]}')
    return img


def read_image(path):
    """Read an image file as float32 RGB (H, W, 3) in [0, 1]; see ``decode_image``."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise BadImageError(f'cannot read image {path}: {err}') from err
    return decode_image(data, path)


def decode_map(data, name):
    """Decode a single-channel map (8- or 16-bit PNG) to float32 (H, W) in [0, 1]."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise BadImageError(f'cannot decode map {name}')
    if img.ndim == 3:
        img = img[..., 0]
    return img.astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0)


def write_map16(path, values):
    """Write a map in [0, 1] losslessly as a 16-bit PNG."""
    arr = np.clip(np.asarray(values, np.float32), 0, 1)
    if not cv2.imwrite(path, np.round(arr * 65535.0).astype(np.uint16)):
        raise OSError(f'cannot write {path}')


def write_rgb8(path, img):
    """Write float RGB (H, W, 3) in [0, 1] as an 8-bit image (format from the extension)."""
    arr = np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8)
    if not cv2.imwrite(path, cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)):
        raise OSError(f'cannot write {path}')
