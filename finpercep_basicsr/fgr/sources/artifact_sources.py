"""Synthetic artifact SR sources: artifacts that SHARPEN or add false detail, not only blur.

Real SR models mostly blur, so FGR data made from them alone teaches a reward model "sharper is better", which an
RLHF generator then hacks with etched, over-sharpened texture. These sources add the missing negatives. Each one
runs a ``base`` SR source, then one artifact family at full resolution::

    - {type: artifact_oversharpen, name: oversharpen_bicubic, strength: [0.25, 1.0], seed: 0}
    - {type: artifact_painterly, name: painterly_esrgan, base: {type: realesrgan_ncnn}, strength: [0.3, 1.0]}

Keys of every type (besides ``type`` and ``name``):

- ``base`` (dict): any ``sr_sources`` entry (default ``{type: bicubic, scale: 4}``); its scale is the scale.
- ``strength`` ([lo, hi]): drawn uniformly per call; 0 = exactly the base output, 1 = clearly hacked-looking on a
  bicubic base (each family maps it to its own parameters, below). Default [0.25, 1.0]. A base with fine detail
  of its own (Real-ESRGAN) looks hacked at lower strengths: about [0.1, 0.6].
- ``seed`` (int, 0): the random draws (strength, radii, noise, ...) come from ``seed`` and a hash of the LR input,
  so different crops get different artifacts and a rebuild is identical.

Families (``type``: what it adds, s = strength; family keys are ``[lo, hi]`` ranges drawn per call, or lists of
modes of which one is drawn per call):

- ``artifact_oversharpen``: unsharp masking, amount 10 s, averaged over 1..``max_radii`` (3) radii drawn
  log-uniformly in ``sigma`` ([1, 4] px).
- ``artifact_ringing``: overshoot around edges, ``modes`` [halo, gibbs]: ``halo`` = high boost 3 s with a wide
  Gaussian of ``halo_sigma`` ([3, 8] px); ``gibbs`` = the hard-edged frequency ring [c/2, c) boosted 3 s, c in
  ``cutoff`` ([0.15, 0.4] of Nyquist), whose sinc ripple rings at every edge.
- ``artifact_noise``: band-pass (difference-of-Gaussians) grain of std 0.08 s and scale ``grain_sigma``
  ([0.5, 1.5] px), weighted towards edges/texture by ``edge_weight`` ([0, 1]: 0 = uniform, 1 = on edges only),
  with a ``chroma`` share ([0, 0.5]) drawn per channel.
- ``artifact_texture``: fine texture synthesised from noise, amplitude 0.1 s on busy regions and that times
  ``flat_weight`` ([0.2, 1]) on flat ones; ``period`` ([3, 8] px); ``modes`` [fibers, maze, checker]: ``fibers``
  = strokes along the local edges (noise through oriented Gabor filters), ``maze`` = crisp worm-like thresholded
  band-pass noise, ``checker`` = the grid of a strided up-sampler (period ``period`` / 2, rounded, >= 2).
- ``artifact_blocking``: ``modes`` [jpeg, dct]: ``jpeg`` = OpenCV JPEG at quality 5 + 95 (1 - s)^2; ``dct`` =
  block-DCT quantisation in YCrCb, block size drawn from ``block`` ([8, 16]), luminance step 0.03 s.
- ``artifact_color``: low-frequency chroma blotches (shift 0.05 s and saturation gain exp(0.6 s) per std of a
  smooth random field of scale ``blotch_sigma`` ([8, 32] px)), then colour fringes near edges (red and blue moved
  apart by s x ``fringe_px`` ([2, 5]) px each way in a random direction, luminance kept).
- ``artifact_painterly``: the etched, painterly look of a hacked GAN, ``styles`` [detail, stylize, kuwahara,
  etch]: ``detail`` = cv2.detailEnhance + a Laplacian boost; ``stylize`` = edge-preserving flattening to poster
  tones + a boost; ``kuwahara`` = oil-paint filter (radius 1 + 5 s) + a boost; ``etch`` = edge-preserving
  flattening + crisp XDoG line pairs with an emboss relief. Filter settings grow with s; the result is mixed in with
  weight min(1, 2 s)^2.

Every family keeps the image aligned with the base (centred filters, reflect borders) and keeps its low
frequencies (the families that could move them restore the base's low-pass band), so the artifact is a local
distortion of the same picture. Outputs are clipped to [0, 1].
"""
import hashlib

import numpy as np

from finpercep_basicsr.fgr.sources import artifact_ops as ops
from finpercep_basicsr.fgr.sources.registry import SR_SOURCE_TYPES, SRSource, build_sr_source, register_sr_source
from finpercep_basicsr.utils.errors import UserInputError


def _range(name, key, value, lo=0.0):
    """Check a ``[lo, hi]`` option; returns a float pair."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserInputError(f'sr_sources[{name}].{key}: expected [lo, hi], got {value!r}') from None
    if not lo <= a <= b:
        raise UserInputError(f'sr_sources[{name}].{key}: need {lo} <= lo <= hi, got {[a, b]}')
    return a, b


def _choices(name, key, value, allowed):
    """Check a non-empty list of names from ``allowed``; returns a tuple."""
    value = [value] if isinstance(value, str) else list(value or [])
    bad = [v for v in value if v not in allowed]
    if not value or bad:
        raise UserInputError(f'sr_sources[{name}].{key}: choose a non-empty list from {list(allowed)}, got {value}')
    return tuple(value)


class ArtifactSource(SRSource):
    """A base SR source followed by a seeded artifact at full resolution (see the module docstring).

    Args:
        name (str): Provenance name.
        base (dict | None): Option dict of the base SR source (default bicubic x4).
        strength (list[float]): ``[lo, hi]``, drawn per call.
        seed (int): Seed of the per-call draws (combined with a hash of the LR input).
    """

    def __init__(self, name, base=None, strength=(0.25, 1.0), seed=0):
        base = {'type': 'bicubic', 'scale': 4} if base is None else base
        if not isinstance(base, dict) or 'type' not in base:
            raise UserInputError(f'sr_sources[{name}].base must be an SR source option dict with a type, '
                                 f'got {base!r}')
        self.base = build_sr_source(base)
        super().__init__(name, self.base.scale)
        self.strength = _range(name, 'strength', strength)
        try:
            self.seed = int(seed)
        except (TypeError, ValueError):
            raise UserInputError(f'sr_sources[{name}].seed must be an integer, got {seed!r}') from None

    def rng(self, lq):
        """The per-call generator: from the seed and the LR input's bytes (same input + seed = same draws)."""
        digest = hashlib.sha256(repr(lq.shape).encode() + np.ascontiguousarray(lq).tobytes()).digest()
        return np.random.default_rng([self.seed, int.from_bytes(digest[:8], 'little')])

    def artifact(self, sr, strength, rng):
        """Family-specific: float32 RGB (H, W, 3) in [0, 1] -> same shape, aligned with ``sr``."""
        raise NotImplementedError(f'{type(self).__name__} must implement artifact()')

    def upscale(self, lq):
        sr = self.base(lq)
        rng = self.rng(lq)
        strength = rng.uniform(*self.strength)  # drawn even when lo == hi, so the later draws do not depend on it
        return self.artifact(sr, strength, rng) if strength > 0 else sr

    def __repr__(self):
        return f'{type(self).__name__}(name={self.name!r}, base={self.base!r}, strength={self.strength})'


def _log_uniform(rng, lo, hi, size=None):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


@register_sr_source('artifact_oversharpen')
class OversharpenSource(ArtifactSource):
    """Unsharp masking at high amounts on several radii."""

    AMOUNT = 10.0

    def __init__(self, name, base=None, strength=(0.25, 1.0), seed=0, sigma=(1.0, 4.0), max_radii=3):
        super().__init__(name, base, strength, seed)
        self.sigma = _range(name, 'sigma', sigma, lo=0.1)
        self.max_radii = int(max_radii)
        if self.max_radii < 1:
            raise UserInputError(f'sr_sources[{name}].max_radii must be >= 1, got {max_radii}')

    def artifact(self, sr, strength, rng):
        sigmas = _log_uniform(rng, *self.sigma, size=int(rng.integers(1, self.max_radii + 1)))
        return ops.unsharp(sr, self.AMOUNT * strength, sigmas)


@register_sr_source('artifact_ringing')
class RingingSource(ArtifactSource):
    """Halos (wide high boost) or Gibbs ringing (hard-edged frequency band boost) around edges."""

    HALO_GAIN, GIBBS_GAIN = 3.0, 3.0

    def __init__(self, name, base=None, strength=(0.25, 1.0), seed=0, modes=('halo', 'gibbs'), halo_sigma=(3.0, 8.0),
                 cutoff=(0.15, 0.4)):
        super().__init__(name, base, strength, seed)
        self.modes = _choices(name, 'modes', modes, ('halo', 'gibbs'))
        self.halo_sigma = _range(name, 'halo_sigma', halo_sigma, lo=0.5)
        self.cutoff = _range(name, 'cutoff', cutoff, lo=0.01)
        if self.cutoff[1] > 1:
            raise UserInputError(f'sr_sources[{name}].cutoff is a fraction of Nyquist: need <= 1, got {cutoff}')

    def artifact(self, sr, strength, rng):
        mode = self.modes[rng.integers(len(self.modes))]
        if mode == 'halo':
            return ops.unsharp(sr, self.HALO_GAIN * strength, [rng.uniform(*self.halo_sigma)])
        return ops.hard_band_boost(sr, self.GIBBS_GAIN * strength, rng.uniform(*self.cutoff))


@register_sr_source('artifact_noise')
class NoiseSource(ArtifactSource):
    """Band-pass grain, modulated by the local edges/texture, partly per channel."""

    STD = 0.08

    def __init__(self, name, base=None, strength=(0.25, 1.0), seed=0, grain_sigma=(0.5, 1.5), edge_weight=(0.0, 1.0),
                 chroma=(0.0, 0.5)):
        super().__init__(name, base, strength, seed)
        self.grain_sigma = _range(name, 'grain_sigma', grain_sigma, lo=0.2)
        self.edge_weight = _range(name, 'edge_weight', edge_weight)
        self.chroma = _range(name, 'chroma', chroma)
        if self.edge_weight[1] > 1 or self.chroma[1] > 1:
            raise UserInputError(f'sr_sources[{name}]: edge_weight and chroma must lie in [0, 1]')

    def artifact(self, sr, strength, rng):
        h, w = sr.shape[:2]
        sigma, e, c = (rng.uniform(*r) for r in (self.grain_sigma, self.edge_weight, self.chroma))
        grain = (np.sqrt(1 - c * c) * ops.bandpass_noise((h, w), sigma, rng)[..., None]
                 + c * ops.bandpass_noise((h, w, 3), sigma, rng))
        weight = (1 - e) + e * ops.edge_map(sr)
        return sr + self.STD * strength * weight[..., None] * grain


@register_sr_source('artifact_texture')
class TextureSource(ArtifactSource):
    """Hallucinated fine texture synthesised from noise: fibers, maze or up-sampler grid."""

    AMPLITUDE = 0.1

    def __init__(self, name, base=None, strength=(0.25, 1.0), seed=0, modes=('fibers', 'maze', 'checker'),
                 period=(3.0, 8.0), flat_weight=(0.2, 1.0)):
        super().__init__(name, base, strength, seed)
        self.modes = _choices(name, 'modes', modes, ('fibers', 'maze', 'checker'))
        self.period = _range(name, 'period', period, lo=2.0)
        self.flat_weight = _range(name, 'flat_weight', flat_weight)

    def artifact(self, sr, strength, rng):
        mode = self.modes[rng.integers(len(self.modes))]
        period, flat = rng.uniform(*self.period), rng.uniform(*self.flat_weight)
        if mode == 'fibers':
            layer = ops.fibers(sr, period, rng)
        elif mode == 'maze':
            layer = ops.maze(sr.shape[:2], period, rng)
        else:
            layer = ops.checker(sr.shape[:2], period / 2, rng)
        weight = flat + (1 - flat) * ops.texture_map(sr)
        out = ops.add_luma(sr, self.AMPLITUDE * strength * weight * layer)
        return ops.keep_low_frequencies(out, sr, sigma=4.0)


@register_sr_source('artifact_blocking')
class BlockingSource(ArtifactSource):
    """Low-quality JPEG or block-DCT quantisation of the SR output."""

    STEP = 0.03

    def __init__(self, name, base=None, strength=(0.25, 1.0), seed=0, modes=('jpeg', 'dct'), block=(8, 16)):
        super().__init__(name, base, strength, seed)
        self.modes = _choices(name, 'modes', modes, ('jpeg', 'dct'))
        self.block = tuple(int(b) for b in (block if isinstance(block, (list, tuple)) else [block]))
        if not self.block or min(self.block) < 2:
            raise UserInputError(f'sr_sources[{name}].block: a list of block sizes >= 2, got {block!r}')

    def artifact(self, sr, strength, rng):
        mode, block = self.modes[rng.integers(len(self.modes))], self.block[rng.integers(len(self.block))]
        if mode == 'jpeg':
            return ops.jpeg(sr, int(np.clip(round(5 + 95 * (1 - strength) ** 2), 1, 100)))
        return ops.block_quantize(sr, block, self.STEP * strength)


@register_sr_source('artifact_color')
class ColorSource(ArtifactSource):
    """Low-frequency hue/chroma blotches plus colour fringes near edges."""

    def __init__(self, name, base=None, strength=(0.25, 1.0), seed=0, blotch_sigma=(8.0, 32.0), fringe_px=(2.0, 5.0)):
        super().__init__(name, base, strength, seed)
        self.blotch_sigma = _range(name, 'blotch_sigma', blotch_sigma, lo=1.0)
        self.fringe_px = _range(name, 'fringe_px', fringe_px)

    def artifact(self, sr, strength, rng):
        out = ops.chroma_blotches(sr, strength, rng.uniform(*self.blotch_sigma), rng)
        shift, angle = strength * rng.uniform(*self.fringe_px), rng.uniform(0, 2 * np.pi)
        return ops.color_fringe(out, shift, angle)


@register_sr_source('artifact_painterly')
class PainterlySource(ArtifactSource):
    """Etched, painterly texture of a hacked GAN: edge-enhancing and stylising filters with outline boosts."""

    STYLES = ('detail', 'stylize', 'kuwahara', 'etch')

    def __init__(self, name, base=None, strength=(0.25, 1.0), seed=0, styles=STYLES):
        super().__init__(name, base, strength, seed)
        self.styles = _choices(name, 'styles', styles, self.STYLES)

    def artifact(self, sr, strength, rng):
        style, s = self.styles[rng.integers(len(self.styles))], strength
        if style == 'detail':
            out = ops.laplacian_boost(ops.detail_enhance(sr, 10 + 40 * s, 0.1 + 0.3 * s), 3 * s, sigma=1.5)
        elif style == 'stylize':
            out = ops.laplacian_boost(ops.stylize(sr, 20 + 40 * s, 0.2 + 0.3 * s, 16 - 8 * s), 3 * s)
        elif style == 'kuwahara':
            out = ops.laplacian_boost(ops.kuwahara(sr, 1 + round(5 * s)), 3 * s)
        else:
            flat = ops.edge_preserving(sr, 20 + 40 * s, 0.2 + 0.3 * s)
            lines = ops.xdog_lines(flat, rng.uniform(0.7, 1.5), 1 + 3 * s)
            out = ops.add_luma(flat, 0.3 * s * lines + 0.05 * s * ops.emboss(lines, rng.uniform(0, 2 * np.pi)))
        # below strength 0.5 the filtered image is only partly mixed in (these filters are strong even at their
        # mildest settings), so the low end stays subtle
        out = sr + min(1.0, 2 * s) ** 2 * (out - sr)
        return ops.keep_low_frequencies(out, sr, sigma=8.0)


def artifact_types():
    """The registered ``sr_sources`` types that are artifact families, in registration order."""
    return [name for name, (cls, _) in SR_SOURCE_TYPES.items() if issubclass(cls, ArtifactSource)]
