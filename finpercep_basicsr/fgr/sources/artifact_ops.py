"""Image operations behind the synthetic artifact SR sources (``fgr.artifact_sources``).

Every function takes and returns float32 RGB (H, W, 3) images in [0, 1] (outputs may leave [0, 1]; the SR
source clips) and is pure: randomness comes only from the ``rng`` argument. None of them moves the image:
filters are centred and borders reflect, so an artifact stays aligned with the base SR image and GT.
"""
import cv2
import numpy as np

_BORDER = cv2.BORDER_REFLECT_101


def gauss(img, sigma):
    """Gaussian low-pass with a centred kernel (reflect border); ``sigma`` in px."""
    return cv2.GaussianBlur(img, (0, 0), float(sigma), borderType=_BORDER)


def luma(img):
    """Rec. 601 luminance (H, W) of an RGB image."""
    return img @ np.array([0.299, 0.587, 0.114], np.float32)


def add_luma(img, detail):
    """Add a (H, W) detail layer to all three channels (changes luminance, keeps hue)."""
    return img + detail[..., None]


def normalized(x, eps=1e-6):
    """``x`` scaled to unit standard deviation (zero mean)."""
    x = x - x.mean()
    return x / (x.std() + eps)


def unit_map(x, percentile=95.0, blur=1.0):
    """A non-negative map (H, W) scaled so its ``percentile`` is 1, clipped to [0, 1] and slightly blurred."""
    x = x / (float(np.percentile(x, percentile)) + 1e-6)
    return gauss(np.clip(x, 0, 1).astype(np.float32), blur)


def edge_map(img):
    """Gradient magnitude of the luminance as a [0, 1] map (H, W): where edges and texture are."""
    y = luma(img)
    gx, gy = cv2.Sobel(y, cv2.CV_32F, 1, 0, borderType=_BORDER), cv2.Sobel(y, cv2.CV_32F, 0, 1, borderType=_BORDER)
    return unit_map(np.sqrt(gx * gx + gy * gy))


def texture_map(img, radius=3.0):
    """Local standard deviation of the luminance as a [0, 1] map (H, W): busy vs flat regions."""
    y = luma(img)
    var = gauss(y * y, radius) - gauss(y, radius) ** 2
    return unit_map(np.sqrt(np.maximum(var, 0)), blur=radius)


def keep_low_frequencies(out, ref, sigma=6.0):
    """Replace the low-pass band of ``out`` by that of ``ref``: the artifact cannot change the picture itself."""
    return out - gauss(out, sigma) + gauss(ref, sigma)


def to_u8(img):
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def from_u8(img):
    return img.astype(np.float32) / 255.0


# ---------------------------------------------------------------- sharpening and ringing
def unsharp(img, amount, sigmas):
    """Multi-radius unsharp masking: ``img + amount * mean_k (img - G_k img)``."""
    detail = sum(img - gauss(img, s) for s in sigmas) / len(sigmas)
    return img + amount * detail


def hard_band_boost(img, gain, cutoff, pad=16):
    """Gibbs ringing: add ``gain`` x the frequencies in the ring [cutoff/2, cutoff) of Nyquist, hard-edged.

    The hard edges of the ring in frequency make a ripple (a difference of two jinc functions) in space, so every edge
    gets oscillating overshoots. The image is reflect-padded first so the FFT's periodic wrap adds no seams.
    """
    padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, _BORDER)
    h, w = padded.shape[:2]
    fy, fx = np.fft.fftfreq(h)[:, None] * 2, np.fft.rfftfreq(w)[None, :] * 2  # 1 = Nyquist
    radius = np.sqrt(fy * fy + fx * fx)
    band = ((radius >= cutoff / 2) & (radius < cutoff)).astype(np.float32)
    spec = np.fft.rfft2(padded, axes=(0, 1)) * band[..., None]
    ripple = np.fft.irfft2(spec, s=(h, w), axes=(0, 1)).astype(np.float32)
    return img + gain * ripple[pad:pad + img.shape[0], pad:pad + img.shape[1]]


# ---------------------------------------------------------------- noise and hallucinated texture
def bandpass_noise(shape, sigma, rng):
    """Zero-mean, unit-std difference-of-Gaussians noise (H, W[, C]) peaked near period ~ 4 * sigma px."""
    white = rng.standard_normal(shape).astype(np.float32)
    return normalized(gauss(white, sigma) - gauss(white, 2 * sigma))


def fibers(img, period, rng, orientations=8):
    """Hair/grass-like strokes: noise through elongated Gabor filters, oriented along the local edges.

    Returns a (H, W) layer in about [-1, 1].
    """
    y = luma(img)
    # the structure tensor gives the edge direction and the strokes follow it; in flat regions the weak
    # gradients still set a slowly varying direction
    gx, gy = cv2.Sobel(y, cv2.CV_32F, 1, 0), cv2.Sobel(y, cv2.CV_32F, 0, 1)
    jxx, jyy, jxy = gauss(gx * gx, 2), gauss(gy * gy, 2), gauss(gx * gy, 2)
    theta = 0.5 * np.arctan2(2 * jxy, jxx - jyy)  # gradient direction; Gabor theta = normal of the stripes
    white = rng.standard_normal(y.shape).astype(np.float32)
    ksize = int(4 * period) | 1
    angles = np.arange(orientations) * np.pi / orientations
    responses = np.stack([cv2.filter2D(white, -1, cv2.getGaborKernel((ksize, ksize), 0.8 * period, a, period, 0.35),
                                       borderType=_BORDER) for a in angles])
    diff = np.abs(((theta[None] - angles[:, None, None]) + np.pi / 2) % np.pi - np.pi / 2)
    pick = np.argmin(diff, axis=0)
    layer = np.take_along_axis(responses, pick[None], axis=0)[0]
    return np.tanh(1.5 * normalized(layer))


def maze(shape, period, rng):
    """Worm/maze texture: band-pass noise through a steep sigmoid (crisp, GAN-like fake detail), (H, W)."""
    return np.tanh(3.0 * bandpass_noise(shape, period / 4.0, rng))


def checker(shape, period, rng):
    """Periodic grid/checkerboard of a strided up-sampler (period 2-4 px), random phase, (H, W) in [-1, 1]."""
    p = max(2, round(period))
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    py, px = rng.integers(0, p, size=2)
    return (np.cos(2 * np.pi * (yy + py) / p) * np.cos(2 * np.pi * (xx + px) / p)).astype(np.float32)


# ---------------------------------------------------------------- blocking
def jpeg(img, quality):
    """Baseline JPEG round trip (OpenCV, 4:2:0) at ``quality`` 1-100."""
    bgr = cv2.cvtColor(to_u8(img), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError('JPEG encoding failed')
    return from_u8(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))


def _dct_matrix(n):
    k, i = np.mgrid[0:n, 0:n].astype(np.float64)
    m = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def block_quantize(img, block, step):
    """Quantise each ``block`` x ``block`` DCT block of Y/Cr/Cb; ``step`` in [0, 1] intensity units (Y).

    Higher frequencies get coarser steps (as a JPEG table does), chroma twice as coarse as luminance.
    """
    h, w = img.shape[:2]
    ph, pw = -h % block, -w % block
    ycc = cv2.cvtColor(cv2.copyMakeBorder(img, 0, ph, 0, pw, _BORDER), cv2.COLOR_RGB2YCrCb)
    hh, ww = ycc.shape[:2]
    d = _dct_matrix(block)
    u, v = np.mgrid[0:block, 0:block]
    table = (1.0 + (u + v) * (8.0 / block)).astype(np.float32) * block  # orthonormal DCT: DC = block * mean
    table[0, 0] = block / 2  # block means (the picture itself) twice as fine as the finest AC step
    blocks = ycc.reshape(hh // block, block, ww // block, block, 3).transpose(0, 2, 4, 1, 3)
    coef = d @ blocks @ d.T
    steps = step * table * np.array([1.0, 2.0, 2.0], np.float32)[:, None, None]
    coef = np.round(coef / steps) * steps
    blocks = (d.T @ coef @ d).transpose(0, 3, 1, 4, 2).reshape(hh, ww, 3)
    return cv2.cvtColor(np.ascontiguousarray(blocks), cv2.COLOR_YCrCb2RGB)[:h, :w]


# ---------------------------------------------------------------- colour
def chroma_blotches(img, amount, sigma, rng):
    """Low-frequency chroma shift and saturation-gain fields (hue/chroma blotches); luminance is kept."""
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)
    fields = [normalized(gauss(rng.standard_normal(img.shape[:2]).astype(np.float32), sigma)) for _ in range(3)]
    gain = np.exp(amount * 0.6 * fields[2])
    for c, field in ((1, fields[0]), (2, fields[1])):
        ycc[..., c] = 0.5 + (ycc[..., c] - 0.5) * gain + amount * 0.05 * field
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def color_fringe(img, shift_px, angle):
    """Red and blue shifted by +/- ``shift_px`` along ``angle`` (sub-pixel) near edges only: colour fringes.

    The luminance of the input is put back afterwards, so the fringes are pure colour and nothing moves.
    """
    dx, dy = shift_px * np.cos(angle), shift_px * np.sin(angle)
    out = img.copy()
    for c, sign in ((0, 1.0), (2, -1.0)):
        m = np.float32([[1, 0, sign * dx], [0, 1, sign * dy]])
        out[..., c] = cv2.warpAffine(img[..., c], m, img.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=_BORDER)
    weight = np.clip(2.0 * gauss(edge_map(img), 2.0), 0, 1)[..., None]
    out = img + weight * (out - img)
    return add_luma(out, luma(img) - luma(out))


# ---------------------------------------------------------------- painterly / etched
def kuwahara(img, radius):
    """Kuwahara (oil-paint) filter: per pixel the mean of the least-varied of 4 quadrant windows (box filters)."""
    k = radius + 1
    y = luma(img)
    means, variances = [], []
    for ax, ay in ((0, 0), (radius, 0), (0, radius), (radius, radius)):
        def box(x, ax=ax, ay=ay):
            return cv2.blur(x, (k, k), anchor=(ax, ay), borderType=_BORDER)
        means.append(box(img))
        variances.append(box(y * y) - box(y) ** 2)
    pick = np.argmin(np.stack(variances), axis=0)
    return np.take_along_axis(np.stack(means), pick[None, ..., None], axis=0)[0]


def emboss(layer, angle):
    """Directional relief of a fine (H, W) layer along ``angle``, scaled so its 99th percentile is about 1.

    Meant for fine line layers: a relief is a derivative, and a derivative of the whole image would move it.
    """
    gx = cv2.Sobel(layer, cv2.CV_32F, 1, 0, borderType=_BORDER)
    gy = cv2.Sobel(layer, cv2.CV_32F, 0, 1, borderType=_BORDER)
    relief = float(np.cos(angle)) * gx + float(np.sin(angle)) * gy
    return relief / (float(np.percentile(np.abs(relief), 99)) + 1e-6)


def xdog_lines(img, sigma, sharpness):
    """Etched lines (H, W) in [-1, 1]: a fine band-pass of the luminance through a steep tanh (as in XDoG).

    Every edge and every weak gradient becomes a crisp dark/bright line pair, the more the higher ``sharpness``.
    """
    y = luma(img)
    band = gauss(y, sigma) - gauss(y, 1.6 * sigma)
    return np.tanh(sharpness * band / (band.std() + 1e-6))


def laplacian_boost(img, amount, sigma=0.8):
    """Strong fine-scale sharpening: ``img - amount * LoG(img)`` (crisp outlines on every edge)."""
    return img + amount * (img - gauss(img, sigma))


def _opencv_8bit(fn, img, **kwargs):
    """Run an 8-bit BGR OpenCV photo filter on a float RGB image."""
    out = fn(cv2.cvtColor(to_u8(img), cv2.COLOR_RGB2BGR), **kwargs)
    return from_u8(cv2.cvtColor(out, cv2.COLOR_BGR2RGB))


def detail_enhance(img, sigma_s, sigma_r):
    """OpenCV's edge-aware detail enhancement."""
    return _opencv_8bit(cv2.detailEnhance, img, sigma_s=float(sigma_s), sigma_r=float(sigma_r))


def stylize(img, sigma_s, sigma_r, levels):
    """Cartoon stylisation: edge-preserving flattening (normalised convolution), then ``levels`` flat tones per
    channel (poster colours with false contours).

    Written from centred pieces: ``cv2.stylization`` moves the image by ~2 px, and its dark outlines move the
    apparent edges towards the bright side, as any dark-only line does.
    """
    flat = _opencv_8bit(cv2.edgePreservingFilter, img, flags=cv2.NORMCONV_FILTER, sigma_s=float(sigma_s),
                        sigma_r=float(sigma_r))
    return np.round(flat * levels) / levels


def edge_preserving(img, sigma_s, sigma_r):
    """OpenCV's recursive edge-preserving smoothing."""
    return _opencv_8bit(cv2.edgePreservingFilter, img, flags=cv2.RECURS_FILTER, sigma_s=float(sigma_s),
                        sigma_r=float(sigma_r))
