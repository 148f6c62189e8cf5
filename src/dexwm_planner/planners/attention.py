"""Cross-attention over two key segments without joining them: the shared context and per-sample frames.

During a rollout every sample's predicted frame attends to the same context frames (keys/values stored once,
batch 1) and to its own earlier predictions (per sample). Concatenating the two per sample -- what the
generic :meth:`ContextCache.block_kv` does -- copies the shared keys and values into an N-row tensor in every
block of every step (for N = 512 samples, 8 frames of 448 tokens at width 1024 that is 15 GB per block).
Instead, each segment is attended separately by a fused kernel that also returns the log-sum-exp of its
scores, and the two partial results are merged exactly::

    out = w * out_shared + (1 - w) * out_own,   w = sigmoid(lse_shared - lse_own)

(softmax over the union = the two partial softmaxes weighted by their share of the total mass). The shared
segment is read with all N query sets folded into one long query sequence, so it is never copied.

Kernels with a log-sum-exp output are PyTorch's own fused attention operators (flash / memory-efficient on
CUDA, flash on CPU). Each is checked once per (device, dtype) against the explicit formula on a small
problem; if one is unavailable or disagrees, an explicit (chunked, exact) implementation is used instead.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_BACKEND_OK: dict[tuple[str, torch.dtype, str], bool] = {}
_EXPLICIT_CHUNK_ELEMENTS = 1 << 26  # scores materialised at once by the explicit fallback (~256 MB in fp32)


def _explicit(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(dh)) v and its log-sum-exp, in chunks of queries (exact; memory-bounded)."""
    b, h, length, dh = q.shape
    scale = 1.0 / math.sqrt(dh)
    work = torch.promote_types(q.dtype, torch.float32)
    step = max(1, _EXPLICIT_CHUNK_ELEMENTS // max(1, b * h * k.shape[2]))
    outs, lses = [], []
    kt, vw = k.to(work).transpose(-1, -2), v.to(work)
    for i in range(0, length, step):
        s = (q[:, :, i:i + step].to(work) @ kt) * scale
        lse = torch.logsumexp(s, dim=-1)
        outs.append((torch.exp(s - lse[..., None]) @ vw).to(q.dtype))
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _fused(q: Tensor, k: Tensor, v: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    length = q.shape[2]
    if backend == "cpu_flash":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    elif backend == "cuda_flash":
        res = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)
        out, lse = res[0], res[1]
    elif backend == "cuda_efficient":
        res = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True)
        out, lse = res[0], res[1]
    else:
        raise ValueError(f"unknown attention backend {backend!r}")
    return out, lse[..., :length]


def _candidates(q: Tensor) -> list[str]:
    if q.device.type == "cpu":
        return ["cpu_flash"]
    if q.device.type == "cuda":
        dh = q.shape[-1]
        names = []
        if q.dtype in (torch.float16, torch.bfloat16) and dh % 8 == 0 and dh <= 256:
            names.append("cuda_flash")
        names.append("cuda_efficient")
        return names
    return []


def _probe(backend: str, device: torch.device, dtype: torch.dtype, dh: int) -> bool:
    """Does ``backend`` run here and agree with the explicit formula (values and log-sum-exp)?"""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, n, dh, generator=g).to(device=device, dtype=dtype) for n in (37, 53, 53))
    try:
        out, lse = _fused(q, k, v, backend)
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return False
    ref_out, ref_lse = _explicit(q.double(), k.double(), v.double())
    tol = 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2
    return (tuple(out.shape) == tuple(q.shape) and tuple(lse.shape) == tuple(q.shape[:3])
            and bool(torch.allclose(out.double(), ref_out, atol=tol, rtol=tol))
            and bool(torch.allclose(lse.double(), ref_lse, atol=tol, rtol=tol)))


def backend_for(q: Tensor) -> str:
    """The fused kernel used for tensors like ``q`` (checked once per device / dtype), or ``"explicit"``."""
    for name in _candidates(q):
        key = (str(q.device), q.dtype, name)
        if key not in _BACKEND_OK:
            _BACKEND_OK[key] = _probe(name, q.device, q.dtype, q.shape[-1])
        if _BACKEND_OK[key]:
            return name
    return "explicit"


def attention_lse(q: Tensor, k: Tensor, v: Tensor, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """Attention of ``q (B, H, L, dh)`` over ``k, v (B, H, S, dh)``: output ``(B, H, L, dh)`` and the log-sum-exp
    of the scaled scores ``(B, H, L)`` (float32 or wider)."""
    name = backend_for(q) if backend is None else backend
    if name == "explicit":
        return _explicit(q, k, v)
    out, lse = _fused(q, k, v, name)
    return out, lse.to(torch.promote_types(lse.dtype, torch.float32))


def shared_attention(q: Tensor, k: Tensor, v: Tensor, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """``q (N, H, L, dh)`` against keys/values ``(1, H, S, dh)`` shared by all N: the N query sets are folded
    into one sequence (keys read once, never copied). Returns ``(N, H, L, dh)`` and ``(N, H, L)``."""
    n, h, length, dh = q.shape
    if k.shape[0] != 1 or v.shape[0] != 1:
        raise ValueError(f"shared_attention: keys/values must have batch 1, found {tuple(k.shape)}")
    qf = q.transpose(0, 1).reshape(1, h, n * length, dh)
    out, lse = attention_lse(qf, k.to(q.dtype), v.to(q.dtype), backend)
    return out.reshape(h, n, length, dh).transpose(0, 1), lse.reshape(h, n, length).transpose(0, 1)


def merge(out_a: Tensor, lse_a: Tensor, out_b: Tensor, lse_b: Tensor) -> Tensor:
    """Exact softmax attention over the union of two key sets from the two partial results."""
    w = torch.sigmoid(lse_a - lse_b).unsqueeze(-1)
    a, b = out_a.to(w.dtype), out_b.to(w.dtype)
    return torch.addcmul(b, w, a - b).to(out_a.dtype)


def two_segment_attention(q: Tensor, k_shared: Tensor | None, v_shared: Tensor | None,
                          k_own: Tensor | None, v_own: Tensor | None, backend: str | None = None) -> Tensor:
    """Attention of per-sample queries ``(N, H, L, dh)`` over shared keys ``(1, H, S1, dh)`` and per-sample keys
    ``(N, H, S2, dh)`` (either segment may be absent), equal to attention over their concatenation."""
    has_shared = k_shared is not None and k_shared.shape[2] > 0
    has_own = k_own is not None and k_own.shape[2] > 0
    if not (has_shared or has_own):
        raise ValueError("two_segment_attention: no keys to attend to")
    if has_shared and not has_own:
        return torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1).reshape(1, q.shape[1], -1, q.shape[3]), k_shared.to(q.dtype), v_shared.to(q.dtype)
        ).reshape(q.shape[1], q.shape[0], q.shape[2], q.shape[3]).transpose(0, 1)
    if has_own and not has_shared:
        return torch.nn.functional.scaled_dot_product_attention(q, k_own.to(q.dtype), v_own.to(q.dtype))
    out_s, lse_s = shared_attention(q, k_shared, v_shared, backend)
    out_o, lse_o = attention_lse(q, k_own.to(q.dtype), v_own.to(q.dtype), backend)
    return merge(out_s, lse_s, out_o, lse_o)
