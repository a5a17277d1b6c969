"""The registry of FGR SR sources: the ``SRSource`` interface, ``register_sr_source`` and ``build_sr_source``.

A source turns an LR image into an SR image of the same scene; the FGR builder swaps regions of it into the
GT. Every source type is a subclass of ``SRSource`` registered under the ``type`` name its option dicts use::

    @register_sr_source('my_model')
    class MyModelSource(SRSource):
        def __init__(self, name, path, scale=4): ...
        def upscale(self, lq): ...   # float32 RGB (h, w, 3) in [0, 1] -> (h*scale, w*scale, 3)

One class may be registered under several names with fixed keyword arguments (``realesrgan_ncnn`` is ``ncnn``
with ``model`` fixed). The built-in types live in ``sr_sources.py`` (real SR models) and ``artifact_sources.py``
(synthetic artifact families); ``import finpercep_basicsr.fgr.sources`` registers them all.
"""
import inspect
from copy import deepcopy

import numpy as np

from finpercep_basicsr.utils.errors import UserInputError

SR_SOURCE_TYPES = {}
"""``type`` name -> (SRSource subclass, fixed keyword arguments), in registration order."""


def register_sr_source(name, **fixed):
    """Class decorator: register an ``SRSource`` subclass as ``sr_sources`` type ``name``.

    Args:
        name (str): The ``type`` of its option dicts; registering a name twice is an error.
        **fixed: Keyword arguments this type always passes (an option dict may not set them).
    """
    def register(cls):
        if name in SR_SOURCE_TYPES:
            raise ValueError(f'SR source type {name!r} is already registered by {SR_SOURCE_TYPES[name][0].__name__}')
        SR_SOURCE_TYPES[name] = (cls, fixed)
        return cls
    return register


class SRSource:
    """Base SR source: checks the input, calls ``upscale``, checks and clips the output.

    Args:
        name (str): Provenance name written into ``meta_info``.
        scale (int): Upscaling factor.
    """

    def __init__(self, name, scale):
        self.name, self.scale = str(name), int(scale)
        if self.scale < 1:
            raise UserInputError(f'sr_sources[{self.name}].scale must be >= 1, got {scale}')

    def upscale(self, lq):
        """Model-specific: float32 RGB (h, w, 3) in [0, 1] -> float32 (h*scale, w*scale, 3)."""
        raise NotImplementedError(f'{type(self).__name__} must implement upscale()')

    def __call__(self, lq):
        """float32 RGB (h, w, 3) in [0, 1] -> float32 RGB (h*scale, w*scale, 3) in [0, 1]."""
        lq = np.asarray(lq)
        if lq.ndim != 3 or lq.shape[2] != 3:
            raise ValueError(f'SR source {self.name}: expected an RGB (H, W, 3) array, got shape {lq.shape}')
        lq = np.ascontiguousarray(lq, dtype=np.float32)
        sr = np.asarray(self.upscale(lq), np.float32)
        want = (lq.shape[0] * self.scale, lq.shape[1] * self.scale, 3)
        if sr.shape != want:
            raise RuntimeError(f'SR source {self.name}: output {sr.shape}, expected {want}')
        return np.clip(sr, 0.0, 1.0)

    @property
    def provenance(self):
        """JSON-ready description of what made the SR images (subclasses add their model and files)."""
        return {'source': type(self).__name__, 'name': self.name, 'scale': self.scale}

    def __repr__(self):
        return f'{type(self).__name__}(name={self.name!r}, scale={self.scale})'


def build_sr_source(opt):
    """Build an SR source from its option dict (types and keys: ``sr_sources.py``, ``artifact_sources.py``).

    Args:
        opt (dict): ``{'type': ..., 'name': ..., ...}``; not modified.

    Returns:
        SRSource: callable float32 RGB (h, w, 3) [0, 1] -> (h*scale, w*scale, 3) [0, 1].

    Raises:
        UserInputError: Unknown type, bad option or a missing/unreadable model file.
    """
    opt = deepcopy(opt)
    kind = opt.pop('type', None)
    name = opt.pop('name', kind)
    if kind not in SR_SOURCE_TYPES:
        raise UserInputError(f'sr_sources: unknown type {kind!r}; choose from {", ".join(SR_SOURCE_TYPES)}')
    cls, fixed = SR_SOURCE_TYPES[kind]
    if set(fixed) & set(opt):  # e.g. model: with realesrgan_ncnn would be silently overridden
        raise UserInputError(f'sr_sources[{name}] ({kind}): {", ".join(sorted(set(fixed) & set(opt)))} is fixed '
                             f'by this type')
    kwargs = {**opt, **fixed}
    try:  # bind first so a wrong option key is reported as such, not as a failure inside the model
        inspect.signature(cls).bind(name, **kwargs)
    except TypeError as err:
        raise UserInputError(f'sr_sources[{name}] ({kind}): {err}') from err
    return cls(name, **kwargs)
