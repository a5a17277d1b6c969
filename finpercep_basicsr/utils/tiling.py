"""Run an upscaler tile by tile with overlapping context, for images too large to process at once."""
import numpy as np


def tiled_upscale(fn, lq, scale, tile=0, tile_pad=10, channels_last=True):
    """Upscale ``lq`` with ``fn`` tile by tile, each tile read with ``tile_pad`` px of context.

    Works on NumPy arrays (H, W, C) and on tensors (..., C, H, W); the context around each tile is
    cropped from its output, which hides seams when it covers the network's receptive field.

    Args:
        fn (callable): Maps a tile of ``lq``'s layout to the same layout ``scale`` times larger.
        lq (np.ndarray | Tensor): The image.
        scale (int): Upscaling factor of ``fn``.
        tile (int): Tile side in LR px; 0 = the whole image in one call.
        tile_pad (int): Context on each side of a tile, in LR px.
        channels_last (bool): True for (H, W, C) arrays, False for (..., C, H, W) tensors.

    Returns:
        The upscaled image, same type and layout as ``lq``.
    """
    h, w = (lq.shape[0], lq.shape[1]) if channels_last else lq.shape[-2:]
    if tile <= 0 or (h <= tile and w <= tile):
        return fn(lq)

    def window(top, bottom, left, right):
        rows, cols = slice(top, bottom), slice(left, right)
        return (rows, cols) if channels_last else (..., rows, cols)

    out = None
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0 = max(top - tile_pad, 0), max(left - tile_pad, 0)
            part = lq[window(t0, min(bottom + tile_pad, h), l0, min(right + tile_pad, w))]
            part = fn(np.ascontiguousarray(part) if isinstance(part, np.ndarray) else part)
            if out is None:
                size = (h * scale, w * scale)
                shape = size + part.shape[2:] if channels_last else part.shape[:-2] + size
                out = np.zeros(shape, part.dtype) if isinstance(part, np.ndarray) else part.new_zeros(shape)
            ot, ol = (top - t0) * scale, (left - l0) * scale
            out[window(top * scale, bottom * scale, left * scale, right * scale)] = \
                part[window(ot, ot + (bottom - top) * scale, ol, ol + (right - left) * scale)]
    return out


