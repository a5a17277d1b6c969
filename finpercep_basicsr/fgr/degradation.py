"""HR -> LR with BasicSR's Real-ESRGAN second-order degradation (or a clean bicubic one), seeded, on the CPU.

Interface (what the FGR builder calls)::

    lq = degrade(hr, opt, seed)   # hr: float32 RGB (H, W, 3) in [0, 1], H and W divisible by opt['scale']
                                  # lq: float32 RGB (H/scale, W/scale, 3) in [0, 1], 8-bit quantised
    mix = DegradationMix(opt)     # named, weighted presets (``mix``); one drawn per crop
    name, preset = mix.choose(seed)

``mode: bicubic`` is the mild end: BasicSR's MATLAB-style bicubic ``imresize`` (the DIV2K/bicubic SR
benchmarks' LR) and, with probability ``jpeg_prob``, one JPEG at a quality drawn from ``jpeg_range``;
every other key is unused there. ``mode: realesrgan`` (default) is the heavy end described next.

The steps and the option keys are Real-ESRGAN's (``RealESRGANDataset`` kernels + ``RealESRGANModel.
feed_data``): USM-sharpened HR -> blur (kernel1) -> random resize -> Gaussian/Poisson noise -> JPEG ->
[second blur (kernel2)] -> random resize -> noise -> final sinc + JPEG (in random order) at LR size
-> rounding to 8 bits. The kernels, noise and JPEG are BasicSR's own functions
(``basicsr.data.degradations``, ``basicsr.utils.img_process_util.filter2D``/``USMSharp``,
``basicsr.utils.DiffJPEG``). Every key is optional; defaults are Real-ESRGAN x4plus's training
options (``DEFAULTS``). Unknown keys raise ``UserInputError`` (typos would otherwise be ignored).

Determinism: BasicSR's samplers draw from the global ``random``/``numpy``/``torch`` generators, which
take no generator argument. ``degrade`` seeds all three from ``seed`` inside a scope and restores the
caller's states afterwards, so the result depends only on (hr, opt, seed), and the caller's random
streams are untouched. Not thread-safe (the builder uses processes).
"""
import math
import random
from contextlib import contextmanager

import numpy as np
import torch
from torch.nn import functional as F

from finpercep_basicsr.utils.errors import UserInputError

_KERNELS = ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']
MODES = ('realesrgan', 'bicubic')
DEFAULTS = {
    'scale': 4,
    'mode': 'realesrgan',  # realesrgan: the second-order pipeline; bicubic: clean bicubic downscale + JPEG
    'jpeg_prob': 1.0,  # bicubic mode: chance of the one JPEG step (quality from jpeg_range)
    'gt_usm': True,  # Real-ESRGAN degrades the USM-sharpened GT
    'kernel_range': [7, 21],  # odd blur kernel sizes drawn from this range
    'blur_kernel_size': 21,  # every kernel is zero-padded to this size
    # first degradation
    'kernel_list': list(_KERNELS),
    'kernel_prob': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    'sinc_prob': 0.1,
    'blur_sigma': [0.2, 3],
    'betag_range': [0.5, 4],
    'betap_range': [1, 2],
    'resize_prob': [0.2, 0.7, 0.1],  # up, down, keep
    'resize_range': [0.15, 1.5],
    'gaussian_noise_prob': 0.5,
    'noise_range': [1, 30],
    'poisson_scale_range': [0.05, 3],
    'gray_noise_prob': 0.4,
    'jpeg_range': [30, 95],
    # second degradation
    'second_blur_prob': 0.8,
    'kernel_list2': list(_KERNELS),
    'kernel_prob2': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    'sinc_prob2': 0.1,
    'blur_sigma2': [0.2, 1.5],
    'betag_range2': [0.5, 4],
    'betap_range2': [1, 2],
    'resize_prob2': [0.3, 0.4, 0.3],
    'resize_range2': [0.3, 1.2],
    'gaussian_noise_prob2': 0.5,
    'noise_range2': [1, 25],
    'poisson_scale_range2': [0.05, 2.5],
    'gray_noise_prob2': 0.4,
    'jpeg_range2': [30, 95],
    'final_sinc_prob': 0.8,
}
_RESIZE_MODES = ['area', 'bilinear', 'bicubic']


def degradation_options(opt):
    """``DEFAULTS`` updated with ``opt``; checks key names and list lengths.

    Raises:
        UserInputError: Unknown key or inconsistent kernel lists; the message names the key.
    """
    opt = dict(opt or {})
    unknown = sorted(set(opt) - set(DEFAULTS))
    if unknown:
        raise UserInputError(f'degradation: unknown option(s) {unknown}; known: {sorted(DEFAULTS)}')
    full = {**DEFAULTS, **opt}
    if full['mode'] not in MODES:
        raise UserInputError(f'degradation.mode: {full["mode"]!r} is not one of {", ".join(MODES)}')
    if not 0 <= float(full['jpeg_prob']) <= 1:
        raise UserInputError(f'degradation.jpeg_prob: need a probability in [0, 1], got {full["jpeg_prob"]}')
    for suffix in ('', '2'):
        names, probs = full['kernel_list' + suffix], full['kernel_prob' + suffix]
        if len(names) != len(probs) or set(names) - set(_KERNELS):
            raise UserInputError(f'degradation.kernel_list{suffix} / kernel_prob{suffix}: need equal lengths and '
                                 f'names from {_KERNELS}, got {names} / {probs}')
        for key in ('blur_sigma', 'betag_range', 'betap_range'):
            # BasicSR's kernel samplers assert a non-empty [lo, hi) interval
            lo, hi = full[key + suffix]
            if not lo < hi:
                raise UserInputError(f'degradation.{key}{suffix}: need lo < hi, got {[lo, hi]}')
        lo, hi = full['jpeg_range' + suffix]
        if not 1 <= lo <= hi < 100:
            # quality 100 gives DiffJPEG a zero quantisation factor: NaN output
            raise UserInputError(f'degradation.jpeg_range{suffix}: need 1 <= lo <= hi < 100, got {[lo, hi]}')
        if len(full['resize_prob' + suffix]) != 3:
            raise UserInputError(f'degradation.resize_prob{suffix}: need [up, down, keep] probabilities')
    lo, hi = full['kernel_range']
    if lo % 2 == 0 or hi % 2 == 0 or lo > hi or hi > full['blur_kernel_size']:
        raise UserInputError(f'degradation.kernel_range: odd [lo, hi] with hi <= blur_kernel_size, got {[lo, hi]}')
    if int(full['scale']) < 1:
        raise UserInputError(f'degradation.scale must be >= 1, got {full["scale"]}')
    return full


@contextmanager
def seeded_global_rngs(seed):
    """Seed ``random``, ``numpy`` and ``torch`` (CPU) from ``seed``; restore their states on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _blur_kernel(opt, suffix):
    """One Real-ESRGAN blur kernel (sinc or mixed Gaussian/plateau), padded to blur_kernel_size."""
    from basicsr.data.degradations import circular_lowpass_kernel, random_mixed_kernels
    lo, hi = opt['kernel_range']
    size = random.choice(list(range(lo, hi + 1, 2)))
    if np.random.uniform() < opt['sinc_prob' + suffix]:
        # small kernels get the higher cutoff band, as in Real-ESRGAN, to avoid ringing-only kernels
        omega_c = np.random.uniform(np.pi / 3, np.pi) if size < 13 else np.random.uniform(np.pi / 5, np.pi)
        kernel = circular_lowpass_kernel(omega_c, size, pad_to=False)
    else:
        sigma = opt['blur_sigma' + suffix]
        kernel = random_mixed_kernels(opt['kernel_list' + suffix], opt['kernel_prob' + suffix], size, sigma, sigma,
                                      [-math.pi, math.pi], opt['betag_range' + suffix], opt['betap_range' + suffix],
                                      noise_range=None)
    pad = (opt['blur_kernel_size'] - size) // 2
    return torch.FloatTensor(np.pad(kernel, ((pad, pad), (pad, pad))))


def _final_sinc_kernel(opt):
    from basicsr.data.degradations import circular_lowpass_kernel
    full = opt['blur_kernel_size']
    if np.random.uniform() < opt['final_sinc_prob']:
        lo, hi = opt['kernel_range']
        size = random.choice(list(range(lo, hi + 1, 2)))
        return torch.FloatTensor(circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), size, pad_to=full))
    pulse = torch.zeros(full, full)
    pulse[full // 2, full // 2] = 1  # identity filter
    return pulse


def _filter(img, kernel):
    """BasicSR ``filter2D``; tiny images are first edge-padded, since its reflect padding needs > k/2 px."""
    from basicsr.utils.img_process_util import filter2D
    half = kernel.shape[-1] // 2
    h, w = img.shape[-2:]
    if min(h, w) > half:
        return filter2D(img, kernel[None])
    padded = F.pad(img, (half, half, half, half), mode='replicate')
    return filter2D(padded, kernel[None])[..., half:half + h, half:half + w]


def _random_resize(img, opt, suffix, size=None):
    """Random up/down/keep resize of the current size, or of ``size`` (h, w) when given (second order)."""
    updown = random.choices(['up', 'down', 'keep'], opt['resize_prob' + suffix])[0]
    if updown == 'up':
        factor = np.random.uniform(1, opt['resize_range' + suffix][1])
    elif updown == 'down':
        factor = np.random.uniform(opt['resize_range' + suffix][0], 1)
    else:
        factor = 1
    mode = random.choice(_RESIZE_MODES)
    base = img.shape[-2:] if size is None else size
    # floor, as F.interpolate(scale_factor=...) and Real-ESRGAN's int(...) do
    return F.interpolate(img, size=(max(1, int(base[0] * factor)), max(1, int(base[1] * factor))), mode=mode)


def _random_noise(img, opt, suffix):
    from basicsr.data.degradations import random_add_gaussian_noise_pt, random_add_poisson_noise_pt
    gray_prob = opt['gray_noise_prob' + suffix]
    if np.random.uniform() < opt['gaussian_noise_prob' + suffix]:
        return random_add_gaussian_noise_pt(img, sigma_range=opt['noise_range' + suffix], clip=True, rounds=False,
                                            gray_prob=gray_prob)
    return random_add_poisson_noise_pt(img, scale_range=opt['poisson_scale_range' + suffix], gray_prob=gray_prob,
                                       clip=True, rounds=False)


def _jpeg(img, jpeger, quality_range):
    quality = img.new_zeros(img.size(0)).uniform_(*quality_range)
    return jpeger(torch.clamp(img, 0, 1), quality=quality)


@torch.no_grad()
def degrade(hr, opt=None, seed=0):
    """Degrade one HR image: Real-ESRGAN second order, or ``mode: bicubic`` (clean downscale + JPEG).

    Args:
        hr (np.ndarray): float32 RGB (H, W, 3) in [0, 1]; H and W divisible by ``opt['scale']``.
        opt (dict | None): Degradation keys (see ``DEFAULTS``); not modified.
        seed (int): The result depends only on (hr, opt, seed).

    Returns:
        np.ndarray: float32 RGB (H // scale, W // scale, 3) in [0, 1], on the 8-bit grid.

    Raises:
        UserInputError: Bad option, or H/W not divisible by the scale.
    """
    from basicsr.utils import DiffJPEG
    opt = degradation_options(opt)
    scale = int(opt['scale'])
    hr = np.asarray(hr, np.float32)
    if hr.ndim != 3 or hr.shape[2] != 3:
        raise ValueError(f'degrade: expected an RGB (H, W, 3) array, got shape {hr.shape}')
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise UserInputError(f'degrade: HR size {h}x{w} is not divisible by degradation.scale={scale}')
    lq_size = (h // scale, w // scale)
    img = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1)))[None]
    jpeger = DiffJPEG(differentiable=False)
    if opt['mode'] == 'bicubic':
        out = _bicubic(img, opt, jpeger, seed)
    else:
        out = _second_order(img, opt, jpeger, seed, lq_size)
    out = torch.clamp((out * 255.0).round(), 0, 255) / 255.0
    return out[0].numpy().transpose(1, 2, 0).astype(np.float32)


def _bicubic(img, opt, jpeger, seed):
    """MATLAB bicubic downscale (antialiased, BasicSR's ``imresize``), then JPEG with probability ``jpeg_prob``."""
    from basicsr.utils.matlab_functions import imresize
    out = imresize(img[0], 1 / int(opt['scale']))[None]
    with seeded_global_rngs(int(seed)):
        if np.random.uniform() < float(opt['jpeg_prob']):
            out = _jpeg(out, jpeger, opt['jpeg_range'])
    return torch.clamp(out, 0, 1)


def _second_order(img, opt, jpeger, seed, lq_size):
    """Real-ESRGAN's second-order pipeline; (1, 3, H, W) -> (1, 3, h, w), not yet rounded."""
    from basicsr.utils.img_process_util import USMSharp
    with seeded_global_rngs(int(seed)):
        # kernels first, in the dataset's order, then the model's per-batch draws (Real-ESRGAN's order)
        kernel1, kernel2, sinc_kernel = _blur_kernel(opt, ''), _blur_kernel(opt, '2'), _final_sinc_kernel(opt)
        if opt['gt_usm']:
            img = USMSharp()(img)
        # first order
        out = _filter(img, kernel1)
        out = _random_resize(out, opt, '')
        out = _random_noise(out, opt, '')
        out = _jpeg(out, jpeger, opt['jpeg_range'])
        # second order
        if np.random.uniform() < opt['second_blur_prob']:
            out = _filter(out, kernel2)
        out = _random_resize(out, opt, '2', size=lq_size)
        out = _random_noise(out, opt, '2')
        # final: resize back to the LR size + sinc, and JPEG, in random order (Real-ESRGAN)
        if np.random.uniform() < 0.5:
            out = F.interpolate(out, size=lq_size, mode=random.choice(_RESIZE_MODES))
            out = _filter(out, sinc_kernel)
            out = _jpeg(out, jpeger, opt['jpeg_range2'])
        else:
            out = _jpeg(out, jpeger, opt['jpeg_range2'])
            out = F.interpolate(out, size=lq_size, mode=random.choice(_RESIZE_MODES))
            out = _filter(out, sinc_kernel)
    return out


# a fixed tag keeps the preset draw independent of the crop box drawn from the same crop seed
_PRESET_STREAM = 0x6D6978


class DegradationMix:
    """Named degradation presets with weights; each crop draws one from its seed.

    Option forms (the ``degradation`` key of a build)::

        degradation: {scale: 4}                 # a plain dict = one preset named 'default' (no draw)
        degradation:
          scale: 4                              # keys next to ``mix`` are shared by every preset
          mix:
            mild:   {weight: 1, opt: {mode: bicubic, jpeg_range: [80, 95]}}
            heavy:  {weight: 2, opt: {}}        # Real-ESRGAN second order

    Args:
        opt (dict | None): The ``degradation`` options.

    Raises:
        UserInputError: Bad preset layout, weight or key; presets with different scales.
    """

    def __init__(self, opt=None):
        opt = dict(opt or {})
        mix = opt.pop('mix', None)
        self.mixed = mix is not None
        if not self.mixed:
            self.presets = {'default': opt}
            self.weights = {'default': 1.0}
        else:
            if not isinstance(mix, dict) or not mix:
                raise UserInputError('degradation.mix: need a mapping name -> {weight, opt}, got '
                                     f'{mix!r}')
            self.presets, self.weights = {}, {}
            for name, preset in mix.items():
                preset = {'opt': {}} if preset is None else preset
                if not isinstance(preset, dict) or set(preset) - {'weight', 'opt'}:
                    raise UserInputError(f'degradation.mix.{name}: need {{weight, opt}}, got {preset!r}')
                weight = preset.get('weight', 1)
                if not isinstance(weight, (int, float)) or weight < 0:
                    raise UserInputError(f'degradation.mix.{name}.weight: need a number >= 0, got {weight!r}')
                self.presets[str(name)] = {**opt, **(preset.get('opt') or {})}
                self.weights[str(name)] = float(weight)
            if sum(self.weights.values()) <= 0:
                raise UserInputError(f'degradation.mix: the weights sum to 0 ({self.weights})')
        scales = {}
        for name, preset in self.presets.items():
            try:
                scales[name] = int(degradation_options(preset)['scale'])
            except UserInputError as err:
                raise UserInputError(f'degradation preset {name}: {err}') from err
        if len(set(scales.values())) > 1:
            raise UserInputError(f'degradation.mix: every preset needs the same scale (the SR sources share one), '
                                 f'got {scales}')
        self.scale = next(iter(scales.values()))
        # sorted, so the draw does not depend on the order the presets are written in
        self.names = sorted(self.presets)

    def choose(self, seed):
        """The preset for one crop: (name, degrade options), a pure function of ``seed``."""
        if len(self.names) == 1:
            return self.names[0], dict(self.presets[self.names[0]])
        p = np.array([self.weights[n] for n in self.names])
        rng = np.random.default_rng([int(seed), _PRESET_STREAM])
        name = self.names[int(rng.choice(len(self.names), p=p / p.sum()))]
        return name, dict(self.presets[name])
