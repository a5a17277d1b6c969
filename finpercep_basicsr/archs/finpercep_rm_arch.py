"""FinPercep-RM: a reward network giving a global quality score and a Perceptual Degradation Map."""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


def _conv_block(in_ch, out_ch, stride):
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))


@ARCH_REGISTRY.register()
class FinPercepRewardNet(nn.Module):
    """Encoder -> FPN decoder -> sigmoid map M; score S = MLP(pool(f_N * interpolate(M))).

    Args:
        num_in_ch (int): Input channels (RGB = 3).
        channels (list[int]): Width of each encoder level; level i has stride 2**(i+1).
        mlp_hidden (int): Hidden width of the score MLP.

    Input: (B, 3, H, W) RGB in [0, 1], any H and W. Output: ``{'score': (B,), 'pdm': (B, 1, H, W)}``
    with the map in [0, 1] (1 = strongly degraded) and the score higher for better quality.
    """

    def __init__(self, num_in_ch=3, channels=(16, 32, 64), mlp_hidden=64):
        super().__init__()
        self.num_in_ch = num_in_ch
        self.stride = 2 ** len(channels)
        widths = [num_in_ch] + list(channels)
        self.encoder = nn.ModuleList(_conv_block(widths[i], widths[i + 1], 2) for i in range(len(channels)))
        fpn_ch = channels[0]
        self.lateral = nn.ModuleList(nn.Conv2d(c, fpn_ch, 1) for c in channels)
        self.map_head = nn.Sequential(nn.Conv2d(fpn_ch, fpn_ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                                      nn.Conv2d(fpn_ch, 1, 3, 1, 1))
        self.score_head = nn.Sequential(nn.Linear(channels[-1], mlp_hidden), nn.LeakyReLU(0.2, inplace=True),
                                        nn.Linear(mlp_hidden, 1))

    def check_input(self, x):
        """Raise ValueError for a wrong shape or non-finite pixels (the reward would be meaningless)."""
        if x.dim() != 4 or x.size(1) != self.num_in_ch:
            raise ValueError(f'FinPercepRewardNet expects (B, {self.num_in_ch}, H, W), got {tuple(x.shape)}')
        if not torch.isfinite(x).all():
            raise ValueError('FinPercepRewardNet input contains NaN or Inf pixels')

    def forward(self, x):
        self.check_input(x)
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.stride, (-w) % self.stride
        x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect' if min(h, w) > max(pad_h, pad_w) else 'replicate')
        feats = []
        for block in self.encoder:
            x = block(x)
            feats.append(x)
        top = self.lateral[-1](feats[-1])
        for lateral, feat in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            top = lateral(feat) + F.interpolate(top, size=feat.shape[-2:], mode='bilinear', align_corners=False)
        logits = F.interpolate(self.map_head(top), scale_factor=2, mode='bilinear', align_corners=False)
        pdm = torch.sigmoid(logits)
        weight = F.interpolate(pdm, size=feats[-1].shape[-2:], mode='bilinear', align_corners=False)
        pooled = (feats[-1] * weight).mean(dim=(2, 3))
        return {'score': self.score_head(pooled).squeeze(1), 'pdm': pdm[..., :h, :w]}
