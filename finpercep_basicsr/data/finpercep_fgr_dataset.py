"""FGR (fine-grained reward) samples: GT, SR, region-swapped image, swap mask and label map."""
import json
import os
import random

import numpy as np
import torch
from basicsr.utils import FileClient
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.image_io import decode_image, decode_map

IMAGE_KEYS = ('gt', 'sr', 'syn', 'lq')
MAP_KEYS = ('mask', 'pdm')
ALL_KEYS = ('gt', 'sr', 'syn') + MAP_KEYS
# py-lmdb refuses to open one environment twice in a process (e.g. a train and a val set on the same
# LMDB), so readers are shared per process; the pid keeps a forked worker off its parent's handles
_LMDB_CLIENTS = {}


@DATASET_REGISTRY.register()
class FinPercepFGRDataset(data.Dataset):
    """Reads an FGR set: ``{gt,sr,syn}/<name>.png`` (RGB), ``{mask,pdm}/<name>.png`` (maps), or their LMDBs.

    Option keys:
        dataroot (str | list[str]): The FGR folder (``meta_info.jsonl`` lists the samples; else ``gt/``
            does). For the lmdb backend either the FGR folder (its ``lmdb/`` subfolder is read) or a
            folder holding ``gt.lmdb`` ... ``pdm.lmdb`` directly (as ``scripts/build_fgr.py`` writes
            them). A list reads several FGR sets as one (e.g. SR-model samples and hacked samples).
        dataroot_repeat (list[int] | None): With a list of roots: how often each root's samples are
            listed per epoch (e.g. ``[1, 3]`` to weight a small hacked set up); default once each.
        io_backend (dict): ``{type: disk}`` (default) or ``{type: lmdb}``, read through BasicSR's
            FileClient.
        gt_size (int | None): Random crop size during training; None keeps full images.
        use_hflip (bool), use_rot (bool): Augmentations, applied identically to every image and map.
        pdm_scale (float | None): Re-express every label map on this one distance scale, so that its values
            compare across samples (how severe, not only where). The builder's percentile normalisation
            (``labels.normalize``) divides each sample's distance by its own ``label_scale`` (in
            ``meta_info.jsonl``), which maps every swap's worst pixels to 1, however faint; this gives
            ``min(1, pdm * label_scale / pdm_scale)``. Exact below the sample's own clip point (its top 1 % of
            pixels, stored as 1, become ``label_scale / pdm_scale`` where that is less than 1).
        use_lq (bool): Also read each sample's LQ input (``lq/<name>.png``, 1 / scale of the sample's size), for an
            LQ-conditioned reward model; training crops then start on the LQ's pixel grid.

    Returns per item: ``gt``, ``sr``, ``syn`` (3, H, W) and ``mask``, ``pdm`` (1, H, W), float32 in
    [0, 1] (with ``use_lq`` also ``lq`` (3, H / scale, W / scale)), plus ``name``, ``gt_path`` and ``aug`` (the crop
    and flips drawn, ``top,left,hflip,rot``; ``none`` outside training): a training step's feature cache keys a sample
    by its ``gt_path`` and ``aug``.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.root = opt['dataroot']
        self.parts = None
        self.pdm_scale = opt.get('pdm_scale')
        self.keys = ALL_KEYS + (('lq',) if opt.get('use_lq') else ())
        if self.pdm_scale is not None and not (isinstance(self.pdm_scale, (int, float)) and self.pdm_scale > 0):
            raise UserInputError(f'FGR dataset: pdm_scale must be a positive number, got {self.pdm_scale!r}')
        if isinstance(self.root, (list, tuple)):
            self._init_parts(opt)
            return
        if not os.path.isdir(self.root):
            raise UserInputError(f'FGR dataroot is not a folder: {self.root}')
        self.io_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        self.backend = self.io_opt.pop('type', 'disk')
        # the FileClient opens LMDB environments, so each DataLoader worker makes its own on first use
        self.file_client = None
        if self.backend == 'disk':
            self.names = self._sample_names(self.root)
            self._check_disk_files()
        elif self.backend == 'lmdb':
            self.db_root = self.root if os.path.isdir(os.path.join(self.root, 'gt.lmdb')) else os.path.join(
                self.root, 'lmdb')
            self.names = self._sample_names(self.db_root) if self._has_meta(self.db_root) else self._sample_names(
                self.root)
            self._check_lmdb_keys()
        else:
            raise UserInputError(f'FGR dataset io_backend.type must be disk or lmdb, got {self.backend!r}')

    def _init_parts(self, opt):
        roots = list(self.root)
        repeat = opt.get('dataroot_repeat') or [1] * len(roots)
        if not roots or len(repeat) != len(roots) or any(not isinstance(r, int) or r < 1 for r in repeat):
            raise UserInputError(f'FGR dataset: dataroot_repeat {repeat} must give a positive integer per dataroot '
                                 f'({len(roots)} roots)')
        part_opt = {k: v for k, v in opt.items() if k != 'dataroot_repeat'}
        self.parts = [FinPercepFGRDataset(dict(part_opt, dataroot=root)) for root in roots]
        self.index = [(i, j) for i, part in enumerate(self.parts) for _ in range(repeat[i]) for j in range(len(part))]
        self.names = [self.parts[i].names[j] for i, j in self.index]

    @staticmethod
    def _has_meta(folder):
        return os.path.isfile(os.path.join(folder, 'meta_info.jsonl'))

    def _sample_names(self, folder):
        meta = os.path.join(folder, 'meta_info.jsonl')
        if os.path.isfile(meta):
            with open(meta) as f:
                entries = [json.loads(line) for line in f if line.strip()]
            names = [e['name'] for e in entries]
            if self.pdm_scale is not None:
                self.label_scales = {e['name']: e.get('label_scale') for e in entries}
                lacking = [n for n, v in self.label_scales.items() if v is None]
                if lacking:
                    raise UserInputError(f'FGR dataset: pdm_scale needs label_scale in {meta}; sample {lacking[0]} '
                                         'has none')
        elif os.path.isdir(os.path.join(folder, 'gt')):
            names = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(folder, 'gt')))
        else:
            names = []
        if self.pdm_scale is not None and names and not os.path.isfile(meta):
            raise UserInputError(f'FGR dataset: pdm_scale needs the samples\' label_scale from {meta}, which is '
                                 'missing')
        if not names:
            raise UserInputError(f'FGR dataroot {folder} holds no samples (no meta_info.jsonl and no gt/ images)')
        return names

    def _check_disk_files(self):
        """Every listed sample must have its files (five, and the LQ with ``use_lq``); one listing per folder keeps this
        cheap."""
        for key in self.keys:
            folder = os.path.join(self.root, key)
            present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
            missing = [n for n in self.names if f'{n}.png' not in present]
            if missing:
                hint = ' (a set built before the LQ was stored: rerun its build command to add it)' \
                    if key == 'lq' else ''
                raise UserInputError(f'FGR set {self.root}: {len(missing)} sample(s) lack {key}/<name>.png, '
                                     f'e.g. {os.path.join(folder, missing[0] + ".png")}{hint}')

    def _check_lmdb_keys(self):
        """Every listed sample must be in every LMDB with one shape, at least ``gt_size`` (from meta_info.txt)."""
        size = self.opt.get('gt_size')
        shapes = {}
        for key in self.keys:
            info = os.path.join(self.db_root, f'{key}.lmdb', 'meta_info.txt')
            if not os.path.isfile(info):
                raise UserInputError(f'FGR LMDB {os.path.join(self.db_root, key + ".lmdb")} is missing or has no '
                                     'meta_info.txt (build it with scripts/build_fgr.py)')
            with open(info) as f:
                entries = dict(line.split(' ')[:2] for line in f if line.strip())
            for name in self.names:
                shape = entries.get(f'{name}.png')
                if shape is None:
                    raise UserInputError(f'FGR LMDB {info}: sample {name} is missing')
                if key == 'lq':  # 1 / scale of the sample's size, checked when read
                    continue
                hw = tuple(int(v) for v in shape.strip('()').split(',')[:2])
                if shapes.setdefault(name, hw) != hw:
                    raise UserInputError(f'FGR sample {name} in {self.db_root}: {key} is {hw}, gt is {shapes[name]}')
                if size and (hw[0] < size or hw[1] < size):
                    raise UserInputError(f'FGR sample {name} in {self.db_root} ({hw[0]}x{hw[1]}) is smaller than '
                                         f'gt_size {size}')

    def _client(self):
        if self.file_client is None:
            if self.backend == 'lmdb':
                paths = [os.path.realpath(os.path.join(self.db_root, f'{k}.lmdb')) for k in self.keys]
                # the data files' inodes: an LMDB rebuilt in place (build_fgr swaps folders) is a new reader
                inodes = tuple(os.stat(os.path.join(p, 'data.mdb')).st_ino for p in paths)
                cache_key = (os.getpid(), tuple(paths), inodes, repr(sorted(self.io_opt.items())))
                if cache_key not in _LMDB_CLIENTS:
                    _LMDB_CLIENTS[cache_key] = FileClient('lmdb', db_paths=paths, client_keys=list(self.keys),
                                                          **self.io_opt)
                self.file_client = _LMDB_CLIENTS[cache_key]
            else:
                self.file_client = FileClient('disk', **self.io_opt)
        return self.file_client

    def _path(self, key, name):
        if self.backend == 'lmdb':
            return os.path.join(self.db_root, f'{key}.lmdb', name)
        return os.path.join(self.root, key, f'{name}.png')

    def _read(self, key, name):
        path = self._path(key, name)
        try:
            content = self._client().get(name if self.backend == 'lmdb' else path, key)
        except OSError as err:
            raise UserInputError(f'FGR sample {name}: cannot read {path}: {err}') from err
        if content is None:
            raise UserInputError(f'FGR sample {name}: {path} is not in the LMDB')
        return decode_image(content, path) if key in IMAGE_KEYS else decode_map(content, path)[..., None]

    def __getitem__(self, index):
        if self.parts is not None:
            part, item = self.index[index]
            return self.parts[part][item]
        name = self.names[index]
        arrays = {key: self._read(key, name) for key in self.keys}
        if self.pdm_scale is not None:
            arrays['pdm'] = np.minimum(arrays['pdm'] * (self.label_scales[name] / self.pdm_scale), 1.0)
        lq = arrays.pop('lq', None)
        sizes = {a.shape[:2] for a in arrays.values()}
        if len(sizes) != 1:
            raise UserInputError(f'FGR sample {name} in {self.root}: images and maps differ in size {sizes}')
        scale = self._lq_scale(name, next(iter(sizes)), lq) if lq is not None else 1
        aug = 'none'
        if self.opt.get('phase') == 'train':
            arrays, lq, aug = self._augment(arrays, name, lq, scale)
        if lq is not None:
            arrays['lq'] = lq
        out = {k: torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))) for k, v in arrays.items()}
        out.update(name=name, gt_path=self._path('gt', name), aug=aug)
        return out

    def _lq_scale(self, name, hw, lq):
        """The integer factor between the sample's size ``hw`` and its LQ's."""
        scale = hw[0] // max(lq.shape[0], 1)
        if scale < 1 or (lq.shape[0] * scale, lq.shape[1] * scale) != tuple(hw):
            raise UserInputError(f'FGR sample {name} in {self.root}: lq is {lq.shape[:2]}, not the sample\'s size '
                                 f'{tuple(hw)} over an integer scale')
        return scale

    def _augment(self, arrays, name, lq=None, scale=1):
        """Random crop, flip and transpose, the same for every image and map (and the LQ, whose crop is the same
        region: with an LQ the crop starts on its pixel grid); returns the arrays, the LQ and a key of what was drawn
        (``top,left,hflip,rot``: the same key, the same pixels)."""
        size = self.opt.get('gt_size')
        h, w = next(iter(arrays.values())).shape[:2]
        top = left = 0
        if size:
            if h < size or w < size:
                raise UserInputError(f'FGR sample {name} ({h}x{w}) is smaller than gt_size {size}')
            if size % scale:
                raise UserInputError(f'gt_size {size} is not a multiple of the LQ scale {scale} (sample {name})')
            top, left = scale * random.randint(0, (h - size) // scale), scale * random.randint(0, (w - size) // scale)
            arrays = {k: v[top:top + size, left:left + size] for k, v in arrays.items()}
            if lq is not None:
                lq = lq[top // scale:(top + size) // scale, left // scale:(left + size) // scale]
        hflip = self.opt.get('use_hflip', True) and random.random() < 0.5
        rot = self.opt.get('use_rot', True) and random.random() < 0.5
        if lq is not None:
            arrays['lq'] = lq
        if hflip:
            arrays = {k: v[:, ::-1] for k, v in arrays.items()}
        if rot:
            arrays = {k: v.transpose(1, 0, 2) for k, v in arrays.items()}
        lq = arrays.pop('lq', None)
        return arrays, lq, f'{top},{left},{int(hflip)},{int(rot)}'

    def __len__(self):
        return len(self.names)
