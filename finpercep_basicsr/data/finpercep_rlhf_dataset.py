"""LQ/GT pairs for RLHF made on the fly from a folder of HR photos (first-order real-world degradation)."""
import os

import cv2
import numpy as np
import torch
from basicsr.data.transforms import augment
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import IMAGE_EXTENSIONS, BadImageError, list_images, read_image



def degrade(gt, scale, rng, opt):
    """Blur (Gaussian, random sigma) -> downscale (random interpolation) -> Gaussian noise -> JPEG.

    Args:
        gt (np.ndarray): float32 RGB (H, W, 3) in [0, 1]; H and W multiples of ``scale``.
        scale (int): Downscaling factor.
        rng (np.random.Generator): Source of every random choice (seeded by the caller).
        opt (dict): ``blur_sigma`` [lo, hi], ``noise_sigma`` [lo, hi] (0-255 units),
            ``jpeg_quality`` [lo, hi]; a missing key disables that step.

    Returns:
        np.ndarray: float32 RGB (H/scale, W/scale, 3) in [0, 1].
    """
    img = gt
    if opt.get('blur_sigma'):
        sigma = rng.uniform(*opt['blur_sigma'])
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    h, w = img.shape[:2]
    interp = [cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC][rng.integers(3)]
    img = cv2.resize(img, (w // scale, h // scale), interpolation=interp)
    if opt.get('noise_sigma'):
        img = img + rng.normal(0, rng.uniform(*opt['noise_sigma']) / 255.0, img.shape).astype(np.float32)
    img = np.clip(img, 0, 1)
    if opt.get('jpeg_quality'):
        quality = int(rng.integers(opt['jpeg_quality'][0], opt['jpeg_quality'][1] + 1))
        ok, buf = cv2.imencode('.jpg', (img[..., ::-1] * 255).round().astype(np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(img, dtype=np.float32)


@DATASET_REGISTRY.register()
class FinPercepRLHFDataset(data.Dataset):
    """HR photos -> random ``gt_size`` crops and their degraded LQ, for reward fine-tuning.

    Options: ``dataroot_gt`` (folder of photos), ``scale``, ``gt_size``, ``use_hflip``, ``use_rot``,
    ``degradation`` (see ``degrade``), ``seed``, ``phase``. Training draws crops and degradations
    from the global NumPy RNG (seeded by BasicSR, saved and restored on resume); validation uses
    one fixed crop (centre) and degradation per image (``seed`` + index), the same on every run.

    Items: ``lq`` (3, gt_size/scale, gt_size/scale), ``gt`` (3, gt_size, gt_size) float32 in [0, 1],
    ``gt_path``, ``lq_path`` (the photo).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        root = opt['dataroot_gt']
        if not os.path.isdir(root):
            raise UserInputError(f'datasets.{opt.get("phase", "?")}.dataroot_gt: {root} is not a folder')
        self.paths = list_images(root)
        if not self.paths:
            raise UserInputError(f'{root}: no images ({", ".join(IMAGE_EXTENSIONS)})')
        self.scale, self.gt_size = int(opt['scale']), int(opt.get('gt_size', 128))
        if self.gt_size % self.scale:
            raise UserInputError(f'gt_size {self.gt_size} must be a multiple of scale {self.scale}')
        self.deg_opt = opt.get('degradation') or {'blur_sigma': [0.2, 2.0], 'noise_sigma': [0, 8],
                                                  'jpeg_quality': [60, 95]}
        self.train = opt.get('phase', 'train') == 'train'
        self.seed = int(opt.get('seed', 0))

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        try:
            img = read_image(path)
        except BadImageError as err:
            raise UserInputError(str(err)) from err
        h, w = img.shape[:2]
        size = self.gt_size
        if h < size or w < size:
            raise UserInputError(f'{path}: {w}x{h} is smaller than gt_size {size}')
        rng = np.random.default_rng(np.random.randint(2 ** 31) if self.train else self.seed + index)
        if self.train:
            top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        else:
            top, left = (h - size) // 2, (w - size) // 2
        gt = np.ascontiguousarray(img[top:top + size, left:left + size])
        if self.train:
            gt = augment(gt, self.opt.get('use_hflip', True), self.opt.get('use_rot', True))
        lq = degrade(gt, self.scale, rng, self.deg_opt)
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # noqa: E731
        return {'lq': to_t(lq), 'gt': to_t(gt), 'gt_path': path, 'lq_path': path}
