"""The reward network's staged FPN decoder: each curriculum stage adds finer levels to the map.

Stage table (CCL's growing reward model):

====== ============================= =========================
stage  decoder levels used            PDM resolution (before upsampling)
====== ============================= =========================
0      none (global-only reward)      no map
1      strides 32, 16                 1/16
2      strides 32, 16, 8, 4           1/4
3      stage 2 + full-res refinement  1/1 (image-guided)
====== ============================= =========================

Growth keeps the function: parameter names do not depend on the stage, so a stage-k checkpoint
loads into stage k+1 (missing keys are only the new parts), and every new part starts as an
identity / zero contribution (zero-initialised lateral, residual and refinement convs): stage 2 -> 3
starts with exactly the stage-2 map, stage 1 -> 2 with the stage-1 features resampled to 1/4 (the
map head then runs on a finer grid, so the map is close to, not equal to, the stage-1 map); the
new parts then learn the finer detail.

With ``texture`` on, fixed high-pass statistics of the image (``rm_texture``) are added to the
finest decoder feature before the map head (zero-initialised branch) and given to the stage-3
refinement, so the map sees pixel-level texture as the trivial sharpness and blur detectors do.

With ``texture_disc`` > 0, a learned full-resolution branch (``rm_texture.TextureDiscriminator``) adds its
correction to the stage-3 logits (zero-initialised, so a stage-3 checkpoint without it loads and scores the same).

With ``lq_condition`` on, the statistics of the image against its LQ input (``rm_texture.LQSupportStats``) are
added the same way, through their own zero-initialised branches, when an LQ is given; without one the decoder is
the no-reference decoder, parameter for parameter.
"""
import torch
import torch.nn.functional as F
from torch import nn

from finpercep_basicsr.archs.rm_texture import (LQSupportStats, TextureBranch, TextureDiscriminator, TextureStats,
                                                zero_conv)

MAX_STAGE = 3
_LEVELS = {1: (2, 3), 2: (0, 1, 2, 3), 3: (0, 1, 2, 3)}


class _Residual(nn.Module):
    """``x + conv(act(conv(x)))`` with the last conv zero-initialised (starts as the identity)."""

    def __init__(self, ch):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True), zero_conv(ch, ch, 3))

    def forward(self, x):
        return x + self.body(x)


class FullResRefine(nn.Module):
    """Stage 3: corrects the upsampled 1/4 logits with image detail at full resolution.

    Args:
        width (int): Channels of the stride-4 decoder feature.
        ch (int): Channels of the full-resolution branch (kept small: it runs on every pixel).
        stats_ch (int): Channels of the texture statistics given beside the image (0 = none).
    """

    def __init__(self, width, ch, stats_ch=0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))
        self.proj = nn.Conv2d(width, ch, 1)
        self.body = nn.Sequential(nn.Conv2d(2 * ch + 1 + stats_ch, ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                                  zero_conv(ch, 1, 3))

    def forward(self, image, feat, logits, stats=None):
        """image (B,3,H,W) in [0,1]; feat (B,width,H/4,W/4); logits (B,1,H,W); stats (B,C,H,W) or None."""
        size = image.shape[-2:]
        guide = F.interpolate(self.proj(feat), size=size, mode='bilinear', align_corners=False)
        parts = [self.stem(image * 2 - 1), guide, logits] + ([stats] if stats is not None else [])
        # the first conv over the concatenated parts, as a sum of convs over each part (the same
        # linear map): a full-resolution concatenation is a costly copy, forward and backward
        first, act, last = self.body
        weights = first.weight.split([p.size(1) for p in parts], dim=1)
        hidden = first.bias.view(1, -1, 1, 1) + sum(F.conv2d(p, w, padding=1) for p, w in zip(parts, weights))
        return logits + last(act(hidden))


class StagedFPNDecoder(nn.Module):
    """Top-down FPN over the encoder levels of ``stage``, ending in a 1-channel logit map.

    Args:
        in_channels (list[int]): Channels of the four encoder levels (strides 4, 8, 16, 32).
        stage (int): 1..3 (see the module docstring).
        width (int): FPN width.
        refine_ch (int): Width of the stage-3 full-resolution branch.
        texture (bool): Add the texture branch (``rm_texture``) to the finest feature and the refinement.
        texture_windows (list[int]): Window sizes of the texture statistics.
        lq_condition (bool): Add the LQ-support branches (used when ``forward`` gets ``lq_up``).
        texture_disc (int): Width of the stage-3 texture discriminator (0: none).
    """

    def __init__(self, in_channels, stage, width=64, refine_ch=16, texture=False, texture_windows=(3, 9),
                 lq_condition=False, texture_disc=0):
        super().__init__()
        if stage not in _LEVELS:
            raise ValueError(f'decoder stage must be 1..{MAX_STAGE}, got {stage}')
        self.stage = stage
        self.levels = _LEVELS[stage]
        top = self.levels[-1]
        self.lateral = nn.ModuleDict()
        self.fuse = nn.ModuleDict()
        for i in self.levels:
            conv = nn.Conv2d(in_channels[i], width, 1) if i == top else zero_conv(in_channels[i], width, 1)
            # pretrained encoders give features of very different scales per level; normalising them
            # keeps the map logits moderate, so the sigmoid does not saturate (and stop learning)
            self.lateral[str(i)] = nn.Sequential(nn.GroupNorm(1, in_channels[i]), conv)
            if i != top:
                self.fuse[str(i)] = _Residual(width)
        self.head = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Conv2d(width, 1, 3, 1, 1))
        self.stats = TextureStats(texture_windows) if texture else None
        self.texture = TextureBranch(self.stats.channels, width) if texture else None
        stats_ch = self.stats.channels if texture else 0
        self.refine = FullResRefine(width, refine_ch, stats_ch) if stage >= 3 else None
        self.texture_disc = TextureDiscriminator(width, texture_disc, stats_ch) if stage >= 3 and texture_disc else None
        self.lq_stats = LQSupportStats(texture_windows) if lq_condition else None
        self.lq_texture = TextureBranch(self.lq_stats.channels, width) if lq_condition else None
        # the LQ's full-resolution correction of the logits: the statistics and the logits in, zero-initialised out
        self.lq_refine = nn.Sequential(
            nn.Conv2d(self.lq_stats.channels + 1, refine_ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            zero_conv(refine_ch, 1, 3)) if lq_condition and stage >= 3 else None
        # how strongly the mean map lowers the global score (FinPercepRewardNet): starts at 0 so a
        # grown network scores like its previous stage; the rank loss learns it
        self.map_gain = nn.Parameter(torch.zeros(1))

    def forward(self, feats, image, stats=None, lq_up=None):
        """feats: encoder levels (finest first); image (B,3,H,W); stats: ``self.stats(image)`` when already
        computed (a training step's cache); lq_up: the LQ input upsampled to the image's size, or None (no-reference).
        Returns logits (B,1,H,W)."""
        top = self.levels[-1]
        x = self.lateral[str(top)](feats[top])
        for i in reversed(self.levels[:-1]):
            x = F.interpolate(x, size=feats[i].shape[-2:], mode='bilinear', align_corners=False)
            x = self.fuse[str(i)](x + self.lateral[str(i)](feats[i]))
        if stats is None and self.stats is not None:
            stats = self.stats(image)
        if stats is not None:
            x = self.texture(x, stats)
        lq_stats = self.lq_stats(image, lq_up) if lq_up is not None else None
        if lq_stats is not None:
            x = self.lq_texture(x, lq_stats)
        logits = F.interpolate(self.head(x), size=image.shape[-2:], mode='bilinear', align_corners=False)
        if self.refine is not None:
            logits = self.refine(image, x, logits, stats)
        if self.texture_disc is not None:
            logits = logits + self.texture_disc(image, x, stats)
        if lq_stats is not None and self.lq_refine is not None:
            logits = logits + self.lq_refine(torch.cat([lq_stats, logits], dim=1))
        return logits
