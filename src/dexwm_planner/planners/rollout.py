"""Batched world-model rollout of N action sequences from one shared context: only per-sample work per sample.

What one replan shares between all samples, computed ONCE by :meth:`CachedRollout.prepare` from the context
cache (``model.encode_context`` of the C context frames, batch 1):

* every block's cross-attention keys/values of the context frames (read by all N samples, never copied; the
  window slides exactly as :meth:`ContextCache.append` does; frames masked out are dropped up front, which is
  exact because masked keys get zero weight);
* the embedded newest context frame (the first step's input tokens, and the first LayerNorm over it);
* per step: the time-gap embedding (dt is the same for every sample), the query rotation by the target time
  and the key rotation of the frame that joins the window.

What is truly per sample (:meth:`CachedRollout.run`): the action embedding and AdaLN-Zero modulation (they
come from the sample's action, and ``x * (1 + scale) + shift`` makes every block's input sample-specific),
hence the blocks themselves, and the keys/values of each sample's predicted frames, which the later steps of
the same sample attend to. Cross-attention reads the shared and the per-sample segments separately and merges
them exactly (:func:`dexwm_planner.planners.attention.two_segment_attention`), so the context keys/values are
never copied per sample. The result equals ``predictor.rollout_from_cache(cache.expand(N), ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dexwm_model.predictor.cdit import _MOD_CHUNKS, CDiTPredictor, ContextCache
from dexwm_model.predictor.layers import merge_heads, modulate, rotate_half_dims, split_heads, time_features
from dexwm_planner.planners.attention import backend_for, two_segment_attention


@dataclass
class RolloutPlan:
    """Everything a replan's rollouts share (see module doc)."""

    k_shared: list[Tensor]  # per block (1, H, Fv * P, dh): keys of the valid context frames, oldest first
    v_shared: list[Tensor]
    shared_start: list[int]  # per step: first valid context frame still in the window
    own_range: list[tuple[int, int]]  # per step: predicted frames [a, b) still in the window
    x0: Tensor  # (1, P, W) embedded newest context frame
    last: Tensor  # (1, P, d) newest context frame's tokens
    dt_emb: list[Tensor]  # per step (1, cond_dim)
    q_angles: list[Tensor]  # per step (1, n_pairs) float64
    k_angles: list[Tensor]  # per step (1, 1, n_pairs) float64: rotation of the frame predicted at that step
    steps: int
    tokens: int
    backend: str


class CachedRollout:
    def __init__(self, predictor: CDiTPredictor) -> None:
        self.predictor = predictor

    # ---------------------------------------------------------------------------------------- per replan
    def prepare(self, cache: ContextCache, last_tokens: Tensor, dts: Tensor | list[float] | float,
                steps: int) -> RolloutPlan:
        """Shared state of a replan: ``cache`` from ``encode_context`` (batch 1, nothing appended),
        ``last_tokens (1, P, d)`` the newest context frame, ``dts`` seconds between consecutive frames (scalar or
        ``(steps,)``)."""
        p = self.predictor
        if not isinstance(cache, ContextCache) or cache.model is not p:
            raise ValueError("prepare: cache must be a ContextCache encoded by this predictor")
        if cache.batch != 1 or cache.k_shared.shape[1] != 1 or cache.num_own:
            raise ValueError(f"prepare: expected a freshly encoded batch-1 context cache, found batch {cache.batch} "
                             f"with {cache.num_own} appended frames")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"prepare: steps must be a positive integer, found {steps!r}")
        p._check_tokens(last_tokens, "last_tokens", allowed_batch=(1,))
        dev = last_tokens.device
        dts = torch.as_tensor(dts, dtype=torch.float64, device=dev)
        if dts.dim() == 0:
            dts = dts.expand(steps)
        if tuple(dts.shape) != (steps,) or not bool((dts > 0).all()):
            raise ValueError(f"prepare: dts must be a positive scalar or ({steps},) positive values, found "
                             f"{dts.tolist()}")
        fs, cap, ntok = cache.num_shared, cache.capacity, p.num_tokens
        valid = [True] * fs if cache.m_shared is None else [bool(x) for x in cache.m_shared[0].tolist()]
        keep = [j for j in range(fs) if valid[j]]
        # the window of each step, exactly as ContextCache.append slides it (oldest shared frame first)
        shared_start, own_range = [], []
        s_first, o_first = 0, 0
        for s in range(steps):
            pos = next((i for i, j in enumerate(keep) if j >= s_first), len(keep))
            shared_start.append(pos)
            own_range.append((o_first, s))
            if (fs - s_first) + (s + 1 - o_first) > cap:  # the frame predicted at step s joins: slide
                if s_first < fs:
                    s_first += 1
                else:
                    o_first += 1
        idx = torch.as_tensor(keep, dtype=torch.long, device=cache.k_shared.device)
        k_sh, v_sh = [], []
        for i in range(len(p.blocks)):
            k, v = cache.k_shared[i], cache.v_shared[i]  # (1, H, Fs, P, dh)
            if len(keep) != fs:
                k, v = k.index_select(2, idx), v.index_select(2, idx)
            b, h, f, _, dh = k.shape
            k_sh.append(k.reshape(1, h, f * ntok, dh))
            v_sh.append(v.reshape(1, h, f * ntok, dh))
        rope = p._freqs(p._rope_freqs, dev)
        last_rel = cache.last_time_rel[:1].to(torch.float64)  # (1,)
        targets = last_rel + torch.cumsum(dts, 0)  # (steps,) relative target times
        dt_freqs = p._freqs(p._dt_freqs, dev)
        act_dtype = last_tokens.dtype
        dt_emb = [p.dt_embed(time_features(dts[s:s + 1], dt_freqs).to(act_dtype)) for s in range(steps)]
        q_angles = [targets[s:s + 1, None] * rope for s in range(steps)]
        k_angles = [targets[s:s + 1, None, None] * rope for s in range(steps)]
        q_probe = torch.empty(1, p.cfg.heads, 1, p.cfg.head_dim, device=dev, dtype=_compute_dtype(k_sh[0]))
        return RolloutPlan(k_shared=k_sh, v_shared=v_sh, shared_start=shared_start, own_range=own_range,
                           x0=p._embed_tokens(last_tokens), last=last_tokens, dt_emb=dt_emb, q_angles=q_angles,
                           k_angles=k_angles, steps=steps, tokens=ntok, backend=backend_for(q_probe))

    # ---------------------------------------------------------------------------------------- per sample
    def run(self, plan: RolloutPlan, actions: Tensor, on_step: Callable[[int, Tensor], None] | None = None
            ) -> list[Tensor]:
        """Predict ``steps`` frames for each of the ``N`` action sequences ``(N, steps, 132)``.

        Returns the predicted tokens per step (``(N, P, d)`` each); with ``on_step(step, tokens)`` they are
        handed over as they come and not kept (bounded memory)."""
        p = self.predictor
        if actions.dim() != 3 or actions.shape[1] != plan.steps or actions.shape[2] != p.action_dim:
            raise ValueError(f"run: actions must be (N, {plan.steps}, {p.action_dim}), found {tuple(actions.shape)}")
        n, ntok = actions.shape[0], plan.tokens
        heads = p.cfg.heads
        n_own = max((b for _, b in plan.own_range), default=0)
        own_k: list[Tensor | None] = [None] * len(p.blocks)
        own_v: list[Tensor | None] = [None] * len(p.blocks)
        x_in, last = plan.x0, plan.last
        outputs: list[Tensor] = []
        for s in range(plan.steps):
            cond = F.silu(p.action_embed(actions[:, s]) + plan.dt_emb[s])
            x = x_in
            tok0 = plan.shared_start[s] * ntok
            oa, ob = plan.own_range[s]
            for i, block in enumerate(p.blocks):
                m = block.modulation(cond).unsqueeze(1).chunk(_MOD_CHUNKS, dim=-1)
                x = x + m[2] * block.self_attn(modulate(block.norm1(x), m[0], m[1]))
                q = split_heads(block.q(modulate(block.norm2(x), m[3], m[4])), heads)
                q = rotate_half_dims(q, plan.q_angles[s][:, None, None, :])
                ks, vs = plan.k_shared[i][:, :, tok0:], plan.v_shared[i][:, :, tok0:]
                ko = vo = None
                if ob > oa:
                    ko, vo = own_k[i][:, :, oa * ntok:ob * ntok], own_v[i][:, :, oa * ntok:ob * ntok]
                att = two_segment_attention(q, ks, vs, ko, vo, plan.backend)
                x = x + m[5] * block.cross_proj(merge_heads(att))
                x = x + m[8] * block.mlp(modulate(block.norm3(x), m[6], m[7]))
            pred = p._output(x, cond, last)
            if s + 1 < plan.steps:  # the new frame joins the window: its keys/values, once per sample
                x_in = p._embed_tokens(pred)
                ctx = p.ctx_norm(x_in)[:, None]  # (N, 1, P, W)
                for i, block in enumerate(p.blocks):
                    k, v = block.context_kv(ctx, plan.k_angles[s])  # (N, H, 1, P, dh)
                    if own_k[i] is None:
                        shape = (n, heads, n_own * ntok, k.shape[-1])
                        own_k[i] = torch.empty(shape, dtype=k.dtype, device=k.device)
                        own_v[i] = torch.empty(shape, dtype=v.dtype, device=v.device)
                    own_k[i][:, :, s * ntok:(s + 1) * ntok] = k[:, :, 0]
                    own_v[i][:, :, s * ntok:(s + 1) * ntok] = v[:, :, 0]
            last = pred
            if on_step is None:
                outputs.append(pred)
            else:
                on_step(s, pred)
        return outputs


def _compute_dtype(t: Tensor) -> torch.dtype:
    """The dtype attention runs in: the autocast dtype when autocast is on for ``t``'s device."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype
