"""RAM's tag-query decoder (``tagging_head.*``): a BERT encoder stack run in RAM's ``tagging`` mode.

RAM (recognize-anything ``ram/models/ram.py``, Query2Label style) builds ``tagging_head`` as a
``BertModel`` from ``q2l_config.json`` (hidden 768, 4 heads, 2 layers, FFN 3072, cross-attention
width 512, LayerNorm eps 1e-12, exact GELU) and deletes its embeddings and self-attention: each
layer is cross-attention from the tag queries to the image tokens, then the feed-forward block.
Only those modules are rebuilt, with BERT's parameter names:
``encoder.layer.{i}.crossattention.self.{query, key, value}``,
``encoder.layer.{i}.crossattention.output.{dense, LayerNorm}``,
``encoder.layer.{i}.intermediate.dense``, ``encoder.layer.{i}.output.{dense, LayerNorm}``.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class _CrossAttention(nn.Module):
    """BERT cross-attention (``crossattention``): ``self`` projections and ``output`` residual."""

    def __init__(self, hidden, heads, context_dim, eps):
        super().__init__()
        self.heads = heads
        self.self = nn.Module()
        self.self.query = nn.Linear(hidden, hidden)
        self.self.key = nn.Linear(context_dim, hidden)
        self.self.value = nn.Linear(context_dim, hidden)
        self.output = nn.Module()
        self.output.dense = nn.Linear(hidden, hidden)
        self.output.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def _split(self, x):
        return x.view(x.size(0), x.size(1), self.heads, -1).transpose(1, 2)

    def forward(self, x, context):
        """x (B, Q, D), context (B, N, E) -> (B, Q, D)."""
        q = self._split(self.self.query(x))
        k, v = self._split(self.self.key(context)), self._split(self.self.value(context))
        attn = (q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(x.shape)
        return self.output.LayerNorm(self.output.dense(out) + x)


class _Layer(nn.Module):
    def __init__(self, hidden, heads, context_dim, ffn, eps):
        super().__init__()
        self.crossattention = _CrossAttention(hidden, heads, context_dim, eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden, ffn)
        self.output = nn.Module()
        self.output.dense = nn.Linear(ffn, hidden)
        self.output.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, context):
        x = self.crossattention(x, context)
        return self.output.LayerNorm(self.output.dense(F.gelu(self.intermediate.dense(x))) + x)


class RAMTaggingHead(nn.Module):
    """Tag queries attending to the image tokens (see the module docstring for the key layout).

    Args:
        hidden (int): Query width (768). heads (int): Attention heads (4). layers (int): Depth (2).
        context_dim (int): Image-token width after ``image_proj`` (512). ffn (int): FFN width (3072).
        eps (float): LayerNorm epsilon (BERT's 1e-12).
    """

    def __init__(self, hidden=768, heads=4, layers=2, context_dim=512, ffn=3072, eps=1e-12):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(hidden, heads, context_dim, ffn, eps) for _ in range(layers))

    def forward(self, queries, context):
        """Tag queries (B, T, D) and image tokens (B, N, E) -> tag features (B, T, D)."""
        for layer in self.encoder.layer:
            queries = layer(queries, context)
        return queries


def merge_lora(weight, lora_a, lora_b, scaling):
    """``weight`` plus loralib's low-rank update, for ``lora.Linear`` and ``lora.MergedLinear``.

    SeeSR's DAPE fine-tunes RAM with loralib adapters (rank 8, ``lora_alpha`` 1): ``lora.Linear`` on
    the tagging head's ``query``/``key``, and ``lora.MergedLinear(enable_lora=[True, False, True])``
    on the Swin ``attn.qkv`` (q and v of the fused q/k/v). ``MergedLinear`` stores ``lora_A``
    (r * g, in) and ``lora_B`` (out / 3 * g, r) for its g enabled groups, group i's update being
    ``B_i @ A_i``; disabled groups get none. The enabled groups are not stored in the file: an
    update of the weight's full height is a ``lora.Linear``, two thirds of it is SeeSR's q/v pattern.

    Args:
        weight (Tensor): (out, in). lora_a (Tensor): (r * g, in). lora_b (Tensor): (out * g / n, r).
        scaling (float): ``lora_alpha / r`` (loralib's scaling).

    Returns:
        Tensor: (out, in) merged weight (what loralib's ``eval()`` computes).

    Raises:
        ValueError: The update fits neither pattern.
    """
    r = lora_b.size(1)
    groups = lora_a.size(0) // r
    a, b = lora_a.float().chunk(groups), lora_b.float().chunk(groups)
    delta = torch.cat([b[i] @ a[i] for i in range(groups)]) * scaling
    if delta.shape == weight.shape:
        return weight + delta.to(weight)
    if groups == 2 and delta.size(0) * 3 == weight.size(0) * 2 and delta.size(1) == weight.size(1):
        q, v = delta.chunk(2)
        return weight + torch.cat([q, torch.zeros_like(q), v]).to(weight)
    raise ValueError(f'LoRA update {tuple(delta.shape)} does not fit a weight {tuple(weight.shape)}')
