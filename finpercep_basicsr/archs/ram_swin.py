"""The Swin Transformer image encoder of RAM (``visual_encoder.*`` of the released checkpoints).

RAM (recognize-anything, ``ram/models/swin_transformer.py``) uses Microsoft's original Swin code,
whose parameter names differ from timm's: the patch merging of stage ``i`` is
``layers.{i}.downsample`` at the end of the stage (timm puts it at the start of the next one, with a
different channel order of the 2x2 concatenation), and the encoder returns the average-pooled token
in front of the token sequence. Rebuilding the few modules here keeps the released names and the
released arithmetic, so checkpoints load without remapping or weight permutation.

Key layout (Swin-L at 384: ``embed_dim`` 192, ``depths`` (2, 2, 18, 2), ``num_heads``
(6, 12, 24, 48), ``window_size`` 12):
``patch_embed.proj``, ``patch_embed.norm``,
``layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table, norm2,
mlp.fc1, mlp.fc2}``, ``layers.{i}.downsample.{norm, reduction}`` (i < 3), ``norm``.
The index/mask buffers are derived, not stored (the released loader drops them too).
"""
import torch
from torch import nn


def window_partition(x, ws):
    """(B, H, W, C) -> (B * H/ws * W/ws, ws * ws, C) windows."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows, ws, h, w):
    """Inverse of ``window_partition``: (B * nW, ws * ws, C) -> (B, H, W, C)."""
    b = windows.size(0) // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


class WindowAttention(nn.Module):
    """Window self-attention with a learned relative position bias.

    Args:
        dim (int): Channels. ws (int): Window size. num_heads (int): Heads.
    """

    def __init__(self, dim, ws, num_heads):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij')).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
        self.register_buffer('relative_position_index', rel[..., 0] * (2 * ws - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        """x (B*nW, N, C), mask (nW, N, N) of 0/-100 or None -> (B*nW, N, C)."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1)[None]
        if mask is not None:
            nw = mask.size(0)
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None].to(attn.dtype)  # fp32 buffer
            attn = attn.view(bw, self.num_heads, n, n)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """(Shifted) window attention + MLP block on a fixed (H, W) token grid."""

    def __init__(self, dim, resolution, num_heads, ws, shift):
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= ws:  # a single window covers the grid: no shift (as in Swin)
            ws, shift = min(resolution), 0
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, ws, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()  # Swin's Mlp: fc1 -> GELU -> fc2, named so the keys match
        self.mlp.fc1, self.mlp.act, self.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.register_buffer('attn_mask', self._shift_mask() if shift else None, persistent=False)

    def _shift_mask(self):
        """(nW, ws*ws, ws*ws) mask keeping the cyclically shifted regions from attending to each other."""
        h, w = self.resolution
        region = torch.zeros(1, h, w, 1)
        cuts = (slice(0, -self.ws), slice(-self.ws, -self.shift), slice(-self.shift, None))
        for i, (hs, wsl) in enumerate((a, b) for a in cuts for b in cuts):
            region[:, hs, wsl, :] = i
        ids = window_partition(region, self.ws).squeeze(-1)
        diff = ids[:, None, :] - ids[:, :, None]
        return diff.ne(0).float() * -100.0

    def forward(self, x):
        """x (B, H*W, C) -> (B, H*W, C)."""
        (h, w), (b, _, c) = self.resolution, x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = window_reverse(self.attn(window_partition(y, self.ws), self.attn_mask), self.ws, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 token merging: (B, H*W, C) -> (B, H/2*W/2, 2C), concatenation order of the original Swin."""

    def __init__(self, resolution, dim):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        (h, w), (b, _, c) = self.resolution, x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """``depth`` blocks with alternating shifts, then the stage's patch merging (if any)."""

    def __init__(self, dim, resolution, depth, num_heads, ws, downsample):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, ws, 0 if j % 2 == 0 else ws // 2) for j in range(depth))
        self.downsample = PatchMerging(resolution, dim) if downsample else None

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class RAMSwinEncoder(nn.Module):
    """RAM's Swin image encoder (see the module docstring for the key layout).

    Args:
        image_size (int): Input size (square; RAM's release: 384).
        embed_dim (int): Channels of the first stage. depths, num_heads (list[int]): Per stage.
        window_size (int): Attention window.
        patch_size (int): Patch embedding stride.
    """

    def __init__(self, image_size=384, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48),
                 window_size=12, patch_size=4):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.patch_embed.norm = nn.LayerNorm(embed_dim)
        grid = image_size // patch_size
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            res = (grid // 2 ** i, grid // 2 ** i)
            self.layers.append(SwinStage(embed_dim * 2 ** i, res, depth, heads, window_size, i < len(depths) - 1))
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)

    def forward(self, x):
        """Images (B, 3, S, S), normalised -> tokens (B, 1 + (S/32)^2, C): pooled token, then the grid."""
        x = self.patch_embed.norm(self.patch_embed.proj(x).flatten(2).transpose(1, 2))
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return torch.cat([x.mean(1, keepdim=True), x], 1)

