"""Building blocks shared by the predictor and the hand head: attention, MLP, AdaLN modulation, time features.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`. Tensors use the layout
``(batch, heads, length, head_dim)`` inside attention and ``(batch, length, width)`` outside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """AdaLN: ``x * (1 + scale) + shift`` with per-sample ``shift``/``scale`` of shape ``(B, 1, D)``."""
    return x * (1 + scale) + shift


def angular_frequencies(n: int, min_period: float, max_period: float) -> tuple[float, ...]:
    """``2 pi / period`` for ``n`` periods spaced geometrically from ``max_period`` down to ``min_period``."""
    if n == 1:
        return (2.0 * math.pi / max_period,)
    return tuple(2.0 * math.pi / (max_period * (min_period / max_period) ** (i / (n - 1))) for i in range(n))


def time_features(t: Tensor, angular_freqs: Tensor) -> Tensor:
    """``[sin(w t), cos(w t)]`` for times ``t`` (any shape) -> ``t.shape + (2 * len(w),)``."""
    ang = t.unsqueeze(-1) * angular_freqs.to(t.dtype)
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


def rotate_half_dims(x: Tensor, angles: Tensor) -> Tensor:
    """Rotary encoding: rotate the pairs ``(x[..., j], x[..., n + j])`` for ``j < n`` by ``angles[..., j]``.

    ``n = angles.shape[-1]``; dims ``2n:`` pass through unchanged. ``angles`` broadcasts against ``x[..., :n]``.
    Computed in at least float32 and returned in ``x.dtype``.
    """
    n = angles.shape[-1]
    if n == 0:
        return x
    work = torch.promote_types(x.dtype, torch.float32)
    xw = x.to(work)
    cos = torch.cos(angles).to(work)
    sin = torch.sin(angles).to(work)
    x1, x2, rest = xw[..., :n], xw[..., n : 2 * n], xw[..., 2 * n :]
    r1, r2 = x1 * cos - x2 * sin, x1 * sin + x2 * cos  # may broadcast x to the angles' batch
    out = torch.cat([r1, r2, rest.expand(*r1.shape[:-1], rest.shape[-1])], dim=-1)
    return out.to(x.dtype)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """Scaled dot-product attention with keys/values that may be shared by every query batch element.

    q: (B, H, L, dh); k, v: (Bk, H, S, dh) with Bk == B or Bk == 1; mask: None or boolean (Bk, 1, 1, S),
    True = attend. When Bk == 1 < B the B query sets are folded into one long query sequence, so the shared
    keys and values are read once and never copied per sample (exact: queries do not interact).
    """
    k = k.to(q.dtype)
    v = v.to(q.dtype)
    b, h, length, dh = q.shape
    if k.shape[0] == 1 and b > 1:
        qf = q.transpose(0, 1).reshape(1, h, b * length, dh)
        out = F.scaled_dot_product_attention(qf, k, v, attn_mask=mask)
        return out.reshape(h, b, length, dh).transpose(0, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, L, H*dh) -> (B, H, L, dh)."""
    b, length, width = x.shape
    return x.view(b, length, heads, width // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, dh) -> (B, L, H*dh)."""
    b, h, length, dh = x.shape
    return x.transpose(1, 2).reshape(b, length, h * dh)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, length, width = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(merge_heads(out))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class EncoderBlock(nn.Module):
    """Plain pre-norm transformer block (self-attention + MLP), used by the hand head."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, int(round(width * mlp_ratio)))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_linear_(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every ``nn.Linear`` below ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
