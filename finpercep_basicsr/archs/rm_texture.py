"""The reward network's texture branch: fixed high-pass statistics of the image at full resolution.

An ImageNet encoder normalises away much of the pixel-level texture that separates a real detail
from an invented one (over-sharpening, halos, etched or painterly strokes, fine noise), and a map
decoder that only sees its features learns "sharper is better". The texture branch hands the
decoder what the trivial detectors see, so the learned map can use it in either direction:

- ``TextureStats``: the log local energy of the luminance Laplacian and of its gradient magnitude,
  averaged over a few window sizes, and their difference (how much of the high-frequency energy is
  second-order, i.e. ringing and etching rather than edges). Fixed filters, no parameters, cheap.
- ``TextureBranch``: two convolutions that fold those statistics into a decoder feature map; the
  last one is zero-initialised, so adding the branch to a trained decoder starts as the identity.
- ``TextureDiscriminator``: a small learned full-resolution branch (dilated convolutions, a 33 px field) over the
  image and those statistics, with the decoder's content features beside them: it can judge a pixel's texture
  against its neighbourhood and its content (etching in a sky, blotches in a bokeh), which a 1/4-resolution decoder
  and the 7 px refinement cannot. Zero-initialised output: added to a trained network it starts as the identity.
- ``LQSupportStats``: for an LQ-conditioned map, how the image departs from its (upsampled) LQ input: the
  log energy of the residual and the differences of the two log energies above. Detail the LQ does not
  support raises them; an output that only hugs its LQ lowers them.
"""
import torch
import torch.nn.functional as F
from torch import nn

_LUMA = (0.299, 0.587, 0.114)
# log-energy floor: an 8-bit quantisation step squared, so flat regions do not give -inf
_EPS = (1.0 / 255.0) ** 2


def zero_conv(in_ch, out_ch, kernel):
    """A 'same'-padded convolution whose weights and bias start at zero: a new branch starts silent."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, 1, kernel // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _box_mean(x, w):
    """Mean over a w x w window, edges replicated; separable (2w rather than w^2 reads per pixel)."""
    r = w // 2
    x = F.avg_pool2d(F.pad(x, (r, r, 0, 0), mode='replicate'), (1, w), stride=1)
    return F.avg_pool2d(F.pad(x, (0, 0, r, r), mode='replicate'), (w, 1), stride=1)


class TextureStats(nn.Module):
    """Fixed high-pass statistics of an RGB image.

    Args:
        windows (list[int]): Odd box sizes (pixels) over which energies are averaged.

    Input: (B, 3, H, W) RGB in [0, 1]. Output: (B, 3 * len(windows), H, W), roughly zero-mean,
    unit-scale log energies (the constants centre natural photos).
    """

    def __init__(self, windows=(3, 9)):
        super().__init__()
        self.windows = [int(w) for w in windows]
        if not self.windows or any(w < 1 or w % 2 == 0 for w in self.windows):
            raise ValueError(f'texture_windows must be odd positive sizes, got {list(windows)}')
        lap = torch.tensor([[0., 1., 0.], [1., -4., 1.], [0., 1., 0.]])
        sobel = torch.tensor([[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]]) / 4
        self.register_buffer('luma', torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('kernels', torch.stack([lap, sobel, sobel.t()]).unsqueeze(1), persistent=False)
        self.channels = 3 * len(self.windows)

    def luminance(self, x):
        return (x * self.luma).sum(dim=1, keepdim=True)

    def log_energies(self, x):
        """Per window, (B, 2, H, W): the log local energies of the luminance Laplacian and gradient magnitude."""
        resp = F.conv2d(F.pad(self.luminance(x), (1, 1, 1, 1), mode='replicate'), self.kernels)
        energies = torch.cat([resp[:, :1].square(), resp[:, 1:].square().sum(dim=1, keepdim=True)], dim=1)
        return [torch.log((_box_mean(energies, w) if w > 1 else energies) + _EPS) for w in self.windows]

    def forward(self, x):
        out = []
        for log_e in self.log_energies(x):
            # centred on typical photo values (about -9 for both); the difference is scale-free
            out += [(log_e[:, :1] + 9.0) / 3.0, (log_e[:, 1:] + 9.0) / 3.0, log_e[:, :1] - log_e[:, 1:]]
        return torch.cat(out, dim=1)


class LQSupportStats(TextureStats):
    """Fixed statistics of an image against its LQ input upsampled to the same size.

    Per window: log energy of the luminance residual (image - LQ), and the image's log Laplacian and gradient
    energies minus the LQ's (> 0: detail added over the LQ, invented or sharpened; < 0: detail lost).

    Input: image and upsampled LQ, (B, 3, H, W) each. Output: (B, 3 * len(windows), H, W).
    """

    def forward(self, x, lq_up):
        residual = self.luminance(x - lq_up).square()
        out = []
        for w, log_x, log_lq in zip(self.windows, self.log_energies(x), self.log_energies(lq_up)):
            log_r = torch.log((_box_mean(residual, w) if w > 1 else residual) + _EPS)
            out += [(log_r + 9.0) / 3.0, (log_x - log_lq) / 3.0]
        return torch.cat(out, dim=1)


class TextureBranch(nn.Module):
    """Pools the texture statistics to a decoder feature's grid and adds them to it (zero-initialised).

    Both the mean and the maximum over each cell are used: a few etched pixels in a cell matter.

    Args:
        stats_ch (int): Channels of ``TextureStats``.
        width (int): Channels of the decoder feature.
        hidden (int): Width of the branch.
    """

    def __init__(self, stats_ch, width, hidden=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2 * stats_ch, hidden, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                                  zero_conv(hidden, width, 1))

    def forward(self, feat, stats):
        """feat (B, width, h, w); stats (B, stats_ch, H, W) -> feat + branch (B, width, h, w)."""
        size = feat.shape[-2:]
        pooled = torch.cat([F.adaptive_avg_pool2d(stats, size), F.adaptive_max_pool2d(stats, size)], dim=1)
        return feat + self.body(pooled)


class TextureDiscriminator(nn.Module):
    """Full-resolution logit correction from the image's own texture in a 33 px neighbourhood (see the module doc).

    Args:
        width (int): Channels of the stride-4 decoder feature (the content context).
        ch (int): Width of the branch (it runs on every pixel: keep it small).
        stats_ch (int): Channels of the texture statistics given beside the image (0 = none).
        dilations (list[int]): One residual 3x3 convolution per entry after the stem; the field is
            ``5 + 2 * sum(dilations)`` pixels.
    """

    def __init__(self, width, ch, stats_ch=0, dilations=(2, 4, 8)):
        super().__init__()
        self.stem = nn.Conv2d(3 + stats_ch, ch, 3, 1, 1)
        self.context = nn.Conv2d(width, ch, 1)
        self.body = nn.ModuleList(nn.Conv2d(ch, ch, 3, 1, d, dilation=d) for d in dilations)
        self.out = zero_conv(ch, 1, 3)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, image, feat, stats=None):
        """image (B,3,H,W) in [0,1]; feat (B,width,H/4,W/4); stats (B,C,H,W) or None -> logits (B,1,H,W)."""
        x = image * 2 - 1 if stats is None else torch.cat([image * 2 - 1, stats], dim=1)
        context = F.interpolate(self.context(feat), size=image.shape[-2:], mode='bilinear', align_corners=False)
        h = self.act(self.stem(x) + context)
        for conv in self.body:
            h = h + self.act(conv(h))
        return self.out(h)
