"""FGR (fine-grained reward) samples: GT, SR, region-swapped image, swap mask and label map."""
import json
import os
import random

import numpy as np
import torch
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import decode_image, decode_map

IMAGE_KEYS = ('gt', 'sr', 'syn')
MAP_KEYS = ('mask', 'pdm')


@DATASET_REGISTRY.register()
class FinPercepFGRDataset(data.Dataset):
    """Reads an FGR folder: ``{gt,sr,syn}/<name>.png`` (RGB), ``{mask,pdm}/<name>.png`` (maps).

    Option keys:
        dataroot (str): The FGR folder (``meta_info.jsonl`` lists the samples; else ``gt/`` does).
        gt_size (int | None): Random crop size during training; None keeps full images.
        use_hflip (bool), use_rot (bool): Augmentations, applied identically to every image and map.

    Returns per item: ``gt``, ``sr``, ``syn`` (3, H, W) and ``mask``, ``pdm`` (1, H, W), float32 in
    [0, 1], plus ``name`` and ``gt_path``.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.root = opt['dataroot']
        if not os.path.isdir(self.root):
            raise UserInputError(f'FGR dataroot is not a folder: {self.root}')
        self.names = self._sample_names()
        if not self.names:
            raise UserInputError(f'FGR dataroot {self.root} holds no samples')

    def _sample_names(self):
        meta = os.path.join(self.root, 'meta_info.jsonl')
        if os.path.isfile(meta):
            with open(meta) as f:
                return [json.loads(line)['name'] for line in f if line.strip()]
        return sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(self.root, 'gt')))

    def _read(self, key, name):
        path = os.path.join(self.root, key, f'{name}.png')
        try:
            with open(path, 'rb') as f:
                content = f.read()
        except OSError as err:
            raise UserInputError(f'FGR sample {name}: cannot read {path}: {err}') from err
        return decode_image(content, path) if key in IMAGE_KEYS else decode_map(content, path)[..., None]

    def __getitem__(self, index):
        name = self.names[index]
        arrays = {key: self._read(key, name) for key in IMAGE_KEYS + MAP_KEYS}
        sizes = {a.shape[:2] for a in arrays.values()}
        if len(sizes) != 1:
            raise UserInputError(f'FGR sample {name} in {self.root}: images and maps differ in size {sizes}')
        if self.opt.get('phase') == 'train':
            arrays = self._augment(arrays, name)
        out = {k: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))) for k, v in arrays.items()}
        out.update(name=name, gt_path=os.path.join(self.root, 'gt', f'{name}.png'))
        return out

    def _augment(self, arrays, name):
        size = self.opt.get('gt_size')
        h, w = next(iter(arrays.values())).shape[:2]
        if size:
            if h < size or w < size:
                raise UserInputError(f'FGR sample {name} ({h}x{w}) is smaller than gt_size {size}')
            top, left = random.randint(0, h - size), random.randint(0, w - size)
            arrays = {k: v[top:top + size, left:left + size] for k, v in arrays.items()}
        hflip = self.opt.get('use_hflip', True) and random.random() < 0.5
        rot = self.opt.get('use_rot', True) and random.random() < 0.5
        if hflip:
            arrays = {k: v[:, ::-1] for k, v in arrays.items()}
        if rot:
            arrays = {k: v.transpose(1, 0, 2) for k, v in arrays.items()}
        return arrays

    def __len__(self):
        return len(self.names)
