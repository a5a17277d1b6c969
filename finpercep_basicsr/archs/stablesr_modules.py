"""StableSR's own modules, rebuilt with the parameter names of its released checkpoint.

The names follow StableSR's LDM code so that its ``structcond_stage_model.*``, ``*.spade.*`` and
``decoder.fusion_layer_*`` tensors load by a prefix table (``stablesr_convert.py``):

- ``TimeAwareEncoder`` (StableSR's ``EncoderUNetModelWT``): ``time_embed.{0,2}``,
  ``input_blocks.<k>.<j>`` (conv, ``ResBlock``, ``AttentionBlock``, ``Downsample.op``),
  ``middle_block.{0,1,2}``, ``fea_tran.<i>``. It maps the LQ latent and a timestep to one feature
  map per UNet resolution, keyed by width.
- ``SPADE``: ``param_free_norm`` (GroupNorm), ``mlp_shared.0``, ``mlp_gamma``, ``mlp_beta``:
  ``norm(h) * (1 + gamma(c)) + beta(c)`` with c the encoder feature at h's resolution.
- ``CFWFusion`` (StableSR's ``Fuse_sft_block_RRDB``): ``encode_enc_1`` (ResBlock 2C -> C),
  ``encode_enc_2`` (BasicSR RRDBs), ``encode_enc_3``; ``dec + w * fuse(enc, dec)``.
"""
import torch
import torch.nn.functional as F
from basicsr.archs.rrdbnet_arch import RRDB
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn
from torch.utils.checkpoint import checkpoint


def group_norm(channels, groups):
    """GroupNorm with at most ``groups`` groups (LDM uses 32; tiny test models have fewer channels)."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class ResBlock(nn.Module):
    """LDM ResBlock with a timestep embedding (``in_layers``, ``emb_layers``, ``out_layers``)."""

    def __init__(self, channels, emb_dim, out_channels, groups=32):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(channels, groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, 1, 1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(group_norm(out_channels, groups), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, 1, 1))
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """LDM self-attention (``norm``, ``qkv`` and ``proj_out`` 1x1 conv1d, legacy per-head qkv order)."""

    def __init__(self, channels, num_heads=1, num_head_channels=-1, groups=32):
        super().__init__()
        self.num_heads = num_heads if num_head_channels == -1 else channels // num_head_channels
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x, emb=None):
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        ch = c // self.num_heads
        # released weights order the qkv channels head by head: [q_h, k_h, v_h] for each head h
        q, k, v = qkv.reshape(b * self.num_heads, 3 * ch, -1).split(ch, dim=1)
        attn = torch.softmax(torch.einsum('bct,bcs->bts', q, k) / ch ** 0.5, dim=-1)
        h = torch.einsum('bts,bcs->bct', attn, v).reshape(b, c, -1)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, 2, 1)

    def forward(self, x, emb=None):
        return self.op(x)


class EmbedSequential(nn.ModuleList):
    """LDM's ``TimestepEmbedSequential``: passes the embedding to the blocks that take one."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, AttentionBlock, Downsample)) else layer(x)
        return x


class TimeAwareEncoder(nn.Module):
    """StableSR's time-aware LQ encoder: (LQ latent, t) -> {width: (B, out_channels, h, w)}.

    Args:
        in_channels (int): Latent channels (4). model_channels (int): Base width (StableSR 256).
        channel_mult (list[int]): Width multipliers, one level per UNet resolution.
        num_res_blocks (int): ResBlocks per level. attention_levels (list[int]): Levels with attention.
        out_channels (int): Channels of every output feature (the SPADE condition).
        num_heads (int), num_head_channels (int): Attention heads (-1: use num_heads).
        norm_groups (int): GroupNorm groups (32 in LDM).
    """

    def __init__(self, in_channels=4, model_channels=256, channel_mult=(1, 1, 2, 2), num_res_blocks=2,
                 attention_levels=(0, 1, 2), out_channels=256, num_heads=4, num_head_channels=-1, norm_groups=32):
        super().__init__()
        self.model_channels = model_channels
        emb = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.input_blocks = nn.ModuleList([EmbedSequential([nn.Conv2d(in_channels, model_channels, 3, 1, 1)])])
        ch, level_channels = model_channels, []
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb, mult * model_channels, norm_groups)]
                ch = mult * model_channels
                if level in attention_levels:
                    layers.append(AttentionBlock(ch, num_heads, num_head_channels, norm_groups))
                self.input_blocks.append(EmbedSequential(layers))
            level_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(EmbedSequential([Downsample(ch)]))
        self.middle_block = EmbedSequential([ResBlock(ch, emb, ch, norm_groups),
                                             AttentionBlock(ch, num_heads, num_head_channels, norm_groups),
                                             ResBlock(ch, emb, ch, norm_groups)])
        self.fea_tran = nn.ModuleList(ResBlock(c, emb, out_channels, norm_groups) for c in level_channels)
        self.gradient_checkpointing = False  # rlhf.gradient_checkpointing: recompute each block in the backward

    def _run(self, block, h, emb):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, z, t):
        """``z`` (B, C, h, w), ``t`` (B,) long -> dict width -> (B, out_channels, h / 2^l, w / 2^l)."""
        emb = self.time_embed(get_timestep_embedding(t, self.model_channels, flip_sin_to_cos=True,
                                                     downscale_freq_shift=0).to(z.dtype))
        levels, h = [], z
        for block in self.input_blocks:
            last = h
            h = self._run(block, h, emb)
            if h.size(-1) != last.size(-1):  # a downsample: the level before it is complete
                levels.append(last)
        levels.append(self._run(self.middle_block, h, emb))
        return {f.size(-1): self._run(tran, f, emb) for f, tran in zip(levels, self.fea_tran)}


class SPADE(nn.Module):
    """Spatially-adaptive modulation of a UNet feature by the encoder feature at its resolution."""

    def __init__(self, channels, cond_channels, hidden=128, norm_groups=32):
        super().__init__()
        self.param_free_norm = group_norm(channels, norm_groups)
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, 1, 1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, 1, 1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, 1, 1)

    def forward(self, h, cond):
        cond = F.interpolate(cond, size=h.shape[-2:], mode='nearest')
        actv = self.mlp_shared(cond)
        return self.param_free_norm(h) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class VAEResBlock(nn.Module):
    """ResBlock of StableSR's CFW (no timestep): ``norm1, conv1, norm2, conv2`` and ``conv_out`` skip."""

    def __init__(self, channels, out_channels, groups=32):
        super().__init__()
        self.norm1, self.conv1 = group_norm(channels, groups), nn.Conv2d(channels, out_channels, 3, 1, 1)
        self.norm2, self.conv2 = group_norm(out_channels, groups), nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.conv_out = nn.Conv2d(channels, out_channels, 1) if channels != out_channels else None

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return h + (x if self.conv_out is None else self.conv_out(x))


class CFWFusion(nn.Module):
    """Controllable feature wrapping: ``dec + w * fuse(enc, dec)``, w in [0, 1] (0 = plain decoder)."""

    def __init__(self, channels, num_block=2, num_grow_ch=32, groups=32):
        super().__init__()
        self.encode_enc_1 = VAEResBlock(2 * channels, channels, groups)
        self.encode_enc_2 = nn.Sequential(*[RRDB(channels, num_grow_ch) for _ in range(num_block)])
        self.encode_enc_3 = VAEResBlock(channels, channels, groups)

    def forward(self, enc, dec, w):
        return dec + w * self.encode_enc_3(self.encode_enc_2(self.encode_enc_1(torch.cat([enc, dec], 1))))
