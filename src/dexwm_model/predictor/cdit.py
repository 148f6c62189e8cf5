"""The DexWM predictor: a deterministic Conditional-Diffusion-Transformer-style next-latent regressor.

Given up to ``max_context`` (8) context frames of encoder tokens ``(B, C, P, d)`` with their (irregular)
timestamps, and the 132-d keypoint action from the newest context frame to the target time ``dt`` seconds
later, it regresses the target frame's tokens ``(B, P, d)``.

Each block (AdaLN-Zero, conditioned on an embedding of the action plus the time gap ``dt``):

* self-attention among the predicted frame's tokens,
* cross-attention from the predicted frame's tokens to all context frames' tokens,
* an MLP (ratio 2),

each sub-layer with its own shift / scale / gate; gates (and the whole modulation) start at zero, so every
block is the identity at initialisation. The predicted frame's tokens start as a copy of the newest context
frame's tokens (plus the learned spatial position embedding); with ``residual_output`` the head predicts the
change from that frame, so an untrained predictor returns the newest frame exactly.

Time. Context frames carry their time *relative to the target* into the cross-attention through a rotary
encoding of time: keys are rotated by their frame's time, queries by the target time, so every attention
score depends only on ``t_target - t_frame`` (irregular spacing inside the 4 s window is fine). Because the
rotation is applied per side, a context frame's keys and values depend on nothing but that frame's tokens and
time -- never on the action or on ``dt`` -- which is what makes :class:`ContextCache` possible: encode the
context once per replan, share it (broadcast, no copy) between all sampled action sequences, and during a
rollout compute keys/values only for each newly predicted frame.

Fast planning API::

    cache = model.encode_context(context, times, mask)      # per-block K/V of the context, once
    cache = cache.expand(n_samples)                          # broadcast view, no copy
    nxt = model.predict(cache, context[:, -1], actions, dt)  # (N, P, d)
    cache = cache.append(nxt, times[:, -1] + dt)             # sliding window of max_context frames
    traj = model.rollout(context, times, actions_seq, dts)   # (B, T, P, d)

Shared context keys/values are stored once (batch 1); the per-sample frames appended during a rollout are
stored per sample. When a call needs both, the two are joined per block for the attention call only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dexwm_model.actions.space import ACTION_DIM
from dexwm_model.predictor.config import PredictorConfig, load_predictor_config
from dexwm_model.predictor.layers import (
    Mlp,
    SelfAttention,
    angular_frequencies,
    attend,
    init_linear_,
    merge_heads,
    modulate,
    rotate_half_dims,
    split_heads,
    time_features,
)

_MOD_CHUNKS = 9  # (shift, scale, gate) x (self-attention, cross-attention, MLP)


class CDiTBlock(nn.Module):
    def __init__(self, cfg: PredictorConfig):
        super().__init__()
        width, eps = cfg.width, cfg.layer_norm_eps
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=eps)
        self.self_attn = SelfAttention(width, cfg.heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=eps)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.cross_proj = nn.Linear(width, width)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=eps)
        self.mlp = Mlp(width, int(round(width * cfg.mlp_ratio)))
        self.modulation = nn.Linear(cfg.cond_dim, _MOD_CHUNKS * width)

    def context_kv(self, ctx: Tensor, angles: Tensor) -> tuple[Tensor, Tensor]:
        """Keys (rotated by frame time) and values of normalised context tokens.

        ctx: (B, F, P, D); angles: (B, F, n_pairs). Returns k, v: (B, H, F, P, dh).
        """
        b, f, p, width = ctx.shape
        kv = self.kv(ctx).view(b, f, p, 2, self.heads, width // self.heads).permute(3, 0, 4, 1, 2, 5)
        k = rotate_half_dims(kv[0], angles[:, None, :, None, :])
        return k, kv[1]

    def forward(self, x: Tensor, cond: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, q_angles: Tensor) -> Tensor:
        """x: (B, P, D) predicted-frame tokens; cond: (B, cond_dim) after SiLU; k, v: (B or 1, H, S, dh)
        context keys/values; mask: None or (B or 1, 1, 1, S) boolean; q_angles: (B, n_pairs)."""
        m = self.modulation(cond).unsqueeze(1).chunk(_MOD_CHUNKS, dim=-1)
        x = x + m[2] * self.self_attn(modulate(self.norm1(x), m[0], m[1]))
        q = split_heads(self.q(modulate(self.norm2(x), m[3], m[4])), self.heads)
        q = rotate_half_dims(q, q_angles[:, None, None, :])
        x = x + m[5] * self.cross_proj(merge_heads(attend(q, k, v, mask)))
        return x + m[8] * self.mlp(modulate(self.norm3(x), m[6], m[7]))


@dataclass(frozen=True, eq=False)
class ContextCache:
    """Per-block cross-attention keys/values of the context frames (see :meth:`CDiTPredictor.encode_context`).

    Immutable: :meth:`expand` and :meth:`append` return new caches, so one encoded context can seed many
    rollouts (e.g. every CEM iteration of one replan).

    Frames are held in two segments, oldest first: ``shared`` (from ``encode_context``; stored with the batch
    it was encoded with, typically 1) and ``own`` (appended predictions, one per sample). Times are seconds
    relative to ``ref_time`` (the newest encoded frame's absolute time), kept in float64.
    """

    model: CDiTPredictor = dataclasses.field(repr=False, compare=False)
    k_shared: Tensor  # (depth, Bs, H, Fs, P, dh), keys already rotated by frame time
    v_shared: Tensor  # (depth, Bs, H, Fs, P, dh)
    t_shared: Tensor  # (Bs, Fs) float64
    m_shared: Tensor | None  # (Bs, Fs) bool, True = valid frame; None = all valid
    k_own: Tensor | None  # (depth, batch, H, Fo, P, dh)
    v_own: Tensor | None
    t_own: Tensor | None  # (batch, Fo) float64
    ref_time: Tensor  # (Bs,) float64 absolute time of relative time 0
    batch: int  # logical batch size (>= Bs when the shared segment is broadcast)

    # -- structure -------------------------------------------------------------------------------------------
    @property
    def num_shared(self) -> int:
        return self.k_shared.shape[3]

    @property
    def num_own(self) -> int:
        return 0 if self.k_own is None else self.k_own.shape[3]

    @property
    def num_frames(self) -> int:
        return self.num_shared + self.num_own

    @property
    def capacity(self) -> int:
        return self.model.cfg.max_context

    @property
    def last_time_rel(self) -> Tensor:
        """(batch,) float64: time of the newest frame, relative to ``ref_time``."""
        if self.t_own is not None:
            return self.t_own[:, -1]
        return self.t_shared[:, -1].expand(self.batch)

    def frame_times(self) -> Tensor:
        """(batch, num_frames) float64 absolute times of the frames in the window, oldest first."""
        shared = self.t_shared.expand(self.batch, -1)
        rel = shared if self.t_own is None else torch.cat([shared, self.t_own], dim=1)
        return rel + self.ref_time.expand(self.batch)[:, None]

    def frame_valid(self) -> Tensor:
        """(batch, num_frames) bool."""
        dev = self.t_shared.device
        shared = (
            torch.ones(self.t_shared.shape, dtype=torch.bool, device=dev) if self.m_shared is None else self.m_shared
        ).expand(self.batch, -1)
        if self.t_own is None:
            return shared
        return torch.cat([shared, torch.ones(self.t_own.shape, dtype=torch.bool, device=dev)], dim=1)

    # -- transformations ---------------------------------------------------------------------------------------
    def expand(self, n: int) -> ContextCache:
        """Broadcast a batch-1 cache to ``n`` samples without copying anything."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"ContextCache.expand: n must be a positive integer, found {n!r}")
        if n == self.batch:
            return self
        if self.batch != 1:
            raise ValueError(
                f"ContextCache.expand: only a cache of batch 1 can be expanded, this one has batch {self.batch}"
            )
        k_own, v_own, t_own = self.k_own, self.v_own, self.t_own
        if k_own is not None:
            k_own = k_own.expand(-1, n, -1, -1, -1, -1)
            v_own = v_own.expand(-1, n, -1, -1, -1, -1)
            t_own = t_own.expand(n, -1)
        return dataclasses.replace(self, k_own=k_own, v_own=v_own, t_own=t_own, batch=n)

    def append(self, frame_tokens: Tensor, time: Tensor | float) -> ContextCache:
        """Add one frame (``(batch or 1, P, d)`` tokens at absolute ``time``: scalar or ``(batch,)``).

        Only the new frame's keys/values are computed. When the window is full the oldest frame is dropped.
        """
        t = torch.as_tensor(time, dtype=torch.float64, device=self.ref_time.device)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, self.batch)):
            raise ValueError(
                f"ContextCache.append: time must be a scalar or have shape ({self.batch},), found {tuple(t.shape)}"
            )
        rel = (t - self.ref_time).expand(self.batch)
        if not torch.compiler.is_compiling() and bool((rel <= self.last_time_rel).any()):
            raise ValueError("ContextCache.append: the new frame's time must be later than the newest frame's time")
        return self.append_relative(frame_tokens, rel)

    def append_relative(self, frame_tokens: Tensor, rel_time: Tensor) -> ContextCache:
        """:meth:`append` with the time given relative to ``ref_time`` (``(batch,)`` float64)."""
        model = self.model
        model._check_tokens(frame_tokens, "frame_tokens", allowed_batch=(1, self.batch))
        rel = rel_time.to(torch.float64).expand(self.batch)
        # a batch-1 frame is embedded and projected once, then rotated by each sample's time
        k_new, v_new = model._frames_kv(frame_tokens[:, None], rel[:, None])
        k_new = k_new.expand(-1, self.batch, -1, -1, -1, -1)
        v_new = v_new.expand(-1, self.batch, -1, -1, -1, -1)
        if self.k_own is None:
            k_own, v_own, t_own = k_new, v_new, rel[:, None]
        else:
            k_own = torch.cat([self.k_own, k_new.to(self.k_own.dtype)], dim=3)
            v_own = torch.cat([self.v_own, v_new.to(self.v_own.dtype)], dim=3)
            t_own = torch.cat([self.t_own, rel[:, None]], dim=1)
        k_sh, v_sh, t_sh, m_sh = self.k_shared, self.v_shared, self.t_shared, self.m_shared
        if k_sh.shape[3] + k_own.shape[3] > self.capacity:  # slide the window: drop the oldest frame
            if k_sh.shape[3] > 0:
                k_sh, v_sh, t_sh = k_sh[:, :, :, 1:], v_sh[:, :, :, 1:], t_sh[:, 1:]
                m_sh = None if m_sh is None else m_sh[:, 1:]
            else:
                k_own, v_own, t_own = k_own[:, :, :, 1:], v_own[:, :, :, 1:], t_own[:, 1:]
        return dataclasses.replace(
            self, k_shared=k_sh, v_shared=v_sh, t_shared=t_sh, m_shared=m_sh, k_own=k_own, v_own=v_own, t_own=t_own
        )

    # -- what the blocks read ------------------------------------------------------------------------------------
    def attention_mask(self) -> Tensor | None:
        """None (all frames valid) or boolean ``(Bk, 1, 1, S)`` over the keys of :meth:`block_kv`."""
        if self.m_shared is None or self.num_shared == 0:
            return None
        p = self.k_shared.shape[4]
        shared = self.m_shared[:, :, None].expand(-1, -1, p).reshape(self.m_shared.shape[0], -1)
        if self.k_own is None:
            return shared[:, None, None, :]
        shared = shared.expand(self.batch, -1)
        own = torch.ones(self.batch, self.num_own * p, dtype=torch.bool, device=shared.device)
        return torch.cat([shared, own], dim=1)[:, None, None, :]

    def block_kv(self, index: int) -> tuple[Tensor, Tensor]:
        """Keys and values of block ``index`` as ``(Bk, H, S, dh)``: Bk = 1 when only the shared segment is used
        and it was encoded with batch 1 (read once by all samples), else ``batch``."""
        ks, vs = self.k_shared[index], self.v_shared[index]
        bs, h, fs, p, dh = ks.shape
        ks, vs = ks.reshape(bs, h, fs * p, dh), vs.reshape(bs, h, fs * p, dh)
        if self.k_own is None:
            return ks, vs
        ko, vo = self.k_own[index], self.v_own[index]
        n, _, fo, _, _ = ko.shape
        ko, vo = ko.reshape(n, h, fo * p, dh), vo.reshape(n, h, fo * p, dh)
        if fs == 0:
            return ko, vo
        ks, vs = ks.expand(n, -1, -1, -1), vs.expand(n, -1, -1, -1)
        return torch.cat([ks, ko.to(ks.dtype)], dim=2), torch.cat([vs, vo.to(vs.dtype)], dim=2)


class CDiTPredictor(nn.Module):
    """Deterministic CDiT-style predictor. ``input_dim`` (d) and ``grid`` (Hp, Wp; P = Hp * Wp) are the image
    encoder's token width and patch grid."""

    def __init__(self, cfg: PredictorConfig, input_dim: int, grid: tuple[int, int], action_dim: int = ACTION_DIM):
        super().__init__()
        if not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"CDiTPredictor: input_dim must be a positive integer, found {input_dim!r}")
        if len(tuple(grid)) != 2 or any((not isinstance(g, int)) or g < 1 for g in grid):
            raise ValueError(f"CDiTPredictor: grid must be two positive integers (Hp, Wp), found {grid!r}")
        self.cfg = cfg
        self.input_dim = input_dim
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_tokens = self.grid[0] * self.grid[1]
        self.action_dim = action_dim
        self.grad_checkpoint = cfg.grad_checkpoint
        width, c = cfg.width, cfg.cond_dim

        self.in_proj = nn.Identity() if input_dim == width else nn.Linear(input_dim, width)
        self.pos_embed = nn.Parameter(torch.zeros(self.num_tokens, width))
        self.ctx_norm = nn.LayerNorm(width, elementwise_affine=False, eps=cfg.layer_norm_eps)
        self.action_embed = nn.Sequential(nn.Linear(action_dim, c), nn.SiLU(), nn.Linear(c, c))
        self.dt_embed = nn.Sequential(nn.Linear(cfg.time_features, c), nn.SiLU(), nn.Linear(c, c))
        self.blocks = nn.ModuleList(CDiTBlock(cfg) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=cfg.layer_norm_eps)
        self.final_modulation = nn.Linear(c, 2 * width)
        self.out_proj = nn.Linear(width, input_dim)

        # angular frequencies (rad/s), kept as Python floats so a dtype cast of the module cannot degrade them
        n_pairs = int(cfg.head_dim * cfg.rope_fraction) // 2
        periods = (cfg.time_min_period, cfg.time_max_period)
        self._rope_freqs = angular_frequencies(n_pairs, *periods) if n_pairs else ()
        self._dt_freqs = angular_frequencies(cfg.time_features // 2, *periods)
        self.reset_parameters()

    # -- initialisation ------------------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        init_linear_(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for block in self.blocks:  # AdaLN-Zero: every shift, scale and gate starts at 0
            nn.init.zeros_(block.modulation.weight)
            nn.init.zeros_(block.modulation.bias)
        nn.init.zeros_(self.final_modulation.weight)
        nn.init.zeros_(self.final_modulation.bias)
        if self.cfg.residual_output:
            nn.init.zeros_(self.out_proj.weight)
            nn.init.zeros_(self.out_proj.bias)

    # -- pieces ----------------------------------------------------------------------------------------------------
    def _freqs(self, values: tuple[float, ...], device: torch.device) -> Tensor:
        return torch.tensor(values, dtype=torch.float64, device=device)

    def _embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.in_proj(tokens) + self.pos_embed

    def _frames_kv(self, frames: Tensor, rel_times: Tensor) -> tuple[Tensor, Tensor]:
        """Stacked per-block keys/values of frames ``(B, F, P, d)`` at relative times ``(B, F)``:
        each ``(depth, B, H, F, P, dh)``."""
        ctx = self.ctx_norm(self._embed_tokens(frames))
        angles = rel_times.to(torch.float64)[..., None] * self._freqs(self._rope_freqs, frames.device)
        kv = [block.context_kv(ctx, angles) for block in self.blocks]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    def _condition(self, action: Tensor, dt: Tensor) -> Tensor:
        """SiLU(action embedding + time-gap embedding): (B, cond_dim)."""
        feats = time_features(dt.to(torch.float64), self._freqs(self._dt_freqs, dt.device))
        emb = self.action_embed(action) + self.dt_embed(feats.to(action.dtype))
        return F.silu(emb)

    def _output(self, x: Tensor, cond: Tensor, last_tokens: Tensor) -> Tensor:
        shift, scale = self.final_modulation(cond).unsqueeze(1).chunk(2, dim=-1)
        y = self.out_proj(modulate(self.final_norm(x), shift, scale))
        return last_tokens + y if self.cfg.residual_output else y

    def _use_checkpoint(self) -> bool:
        return self.grad_checkpoint and self.training and torch.is_grad_enabled()

    def _run_block(self, fn, *args):
        if self._use_checkpoint():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    @staticmethod
    def _block_from_context(block: CDiTBlock, x, cond, ctx, k_angles, mask, q_angles):
        k, v = block.context_kv(ctx, k_angles)
        b, h, f, p, dh = k.shape
        return block(x, cond, k.reshape(b, h, f * p, dh), v.reshape(b, h, f * p, dh), mask, q_angles)

    # -- public API --------------------------------------------------------------------------------------------------
    def forward(
        self, context: Tensor, times: Tensor, action: Tensor, dt: Tensor | float, mask: Tensor | None = None
    ) -> Tensor:
        """Predict the frame ``dt`` seconds after the newest context frame.

        context: (B, C, P, d), C <= max_context, oldest first, newest (always valid) last;
        times: (B, C) seconds; action: (B, 132) from the newest context frame to the target;
        dt: scalar or (B,) seconds (> 0); mask: None or (B, C) bool, True = valid frame (invalid frames have
        no influence at all). Returns (B, P, d).
        """
        b, c = self._check_context(context, times, mask)
        action = self._check_action(action, b)
        dt = self._as_batch(dt, b, "dt", context.device)
        if not torch.compiler.is_compiling():
            self._check_values(times, mask, dt)
        if mask is not None:
            context = torch.where(
                mask[:, :, None, None], context, torch.zeros((), dtype=context.dtype, device=context.device)
            )
        p = self.num_tokens
        rel = times.to(torch.float64) - times[:, -1:].to(torch.float64)
        ctx = self.ctx_norm(self._embed_tokens(context))
        rope = self._freqs(self._rope_freqs, context.device)
        k_angles = rel[..., None] * rope
        q_angles = dt.to(torch.float64)[:, None] * rope
        attn_mask = None if mask is None else mask[:, :, None].expand(b, c, p).reshape(b, 1, 1, c * p)
        last = context[:, -1]
        x = self._embed_tokens(last)
        cond = self._condition(action, dt)
        for block in self.blocks:
            x = self._run_block(self._block_from_context, block, x, cond, ctx, k_angles, attn_mask, q_angles)
        return self._output(x, cond, last)

    def encode_context(self, context: Tensor, times: Tensor, mask: Tensor | None = None) -> ContextCache:
        """Per-block keys/values of the context frames (same arguments as :meth:`forward`); independent of any
        action or ``dt``, so one cache serves every sample and every rollout step of a replan."""
        self._check_context(context, times, mask)
        if not torch.compiler.is_compiling():
            self._check_values(times, mask, None)
        if mask is not None:
            context = torch.where(
                mask[:, :, None, None], context, torch.zeros((), dtype=context.dtype, device=context.device)
            )
        ref = times[:, -1].to(torch.float64)
        rel = times.to(torch.float64) - ref[:, None]
        k, v = self._frames_kv(context, rel)
        return ContextCache(
            model=self,
            k_shared=k,
            v_shared=v,
            t_shared=rel,
            m_shared=None if mask is None else mask.clone(),
            k_own=None,
            v_own=None,
            t_own=None,
            ref_time=ref,
            batch=context.shape[0],
        )

    def predict(self, cache: ContextCache, last_tokens: Tensor, action: Tensor, dt: Tensor | float) -> Tensor:
        """Next frame from a :class:`ContextCache`: equals :meth:`forward` on the frames the cache holds.

        last_tokens: (N or 1, P, d) the newest frame's tokens; action: (N, 132); dt: scalar or (N,) seconds.
        A cache of batch 1 is broadcast to N. Returns (N, P, d).
        """
        if not isinstance(cache, ContextCache):
            raise TypeError(f"predict: cache must be a ContextCache, found {type(cache).__name__}")
        if cache.model is not self:
            raise ValueError("predict: the cache was encoded by a different predictor")
        if action.dim() != 2:
            raise ValueError(f"predict: action must be (N, {self.action_dim}), found shape {tuple(action.shape)}")
        n = action.shape[0]
        if cache.batch != n:
            if cache.batch != 1:
                raise ValueError(f"predict: the cache holds batch {cache.batch} but action has batch {n}")
            cache = cache.expand(n)
        action = self._check_action(action, n)
        self._check_tokens(last_tokens, "last_tokens", allowed_batch=(1, n))
        dt = self._as_batch(dt, n, "dt", last_tokens.device)
        rope = self._freqs(self._rope_freqs, last_tokens.device)
        q_angles = (cache.last_time_rel + dt.to(torch.float64))[:, None] * rope
        mask = cache.attention_mask()
        x = self._embed_tokens(last_tokens).expand(n, -1, -1)
        cond = self._condition(action, dt)
        for i, block in enumerate(self.blocks):
            k, v = cache.block_kv(i)
            x = self._run_block(block, x, cond, k, v, mask, q_angles)
        return self._output(x, cond, last_tokens)

    def rollout(
        self,
        context: Tensor,
        times: Tensor,
        actions: Tensor,
        dts: Tensor | float,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Autoregressive prediction of T frames: actions (B, T, 132); dts scalar, (T,) or (B, T) seconds
        between consecutive frames. Each prediction joins the context window, which keeps the newest
        ``max_context`` frames. Returns (B, T, P, d)."""
        cache = self.encode_context(context, times, mask)
        return self.rollout_from_cache(cache, context[:, -1], actions, dts)

    def rollout_from_cache(
        self, cache: ContextCache, last_tokens: Tensor, actions: Tensor, dts: Tensor | float
    ) -> Tensor:
        """:meth:`rollout` starting from an encoded context (batch 1 caches are broadcast to actions' batch)."""
        if actions.dim() != 3:
            raise ValueError(f"rollout: actions must be (B, T, {self.action_dim}), found shape {tuple(actions.shape)}")
        n, steps = actions.shape[:2]
        dts = torch.as_tensor(dts, dtype=torch.float64, device=actions.device)
        if dts.dim() == 0:
            dts = dts.expand(n, steps)
        elif dts.dim() == 1 and dts.shape[0] == steps:
            dts = dts[None].expand(n, steps)
        elif tuple(dts.shape) != (n, steps):
            raise ValueError(f"rollout: dts must be a scalar, ({steps},) or ({n}, {steps}), found {tuple(dts.shape)}")
        if cache.batch != n:
            if cache.batch != 1:
                raise ValueError(f"rollout: the cache holds batch {cache.batch} but actions have batch {n}")
            cache = cache.expand(n)
        last = last_tokens
        outputs = []
        for t in range(steps):
            pred = self.predict(cache, last, actions[:, t], dts[:, t])
            outputs.append(pred)
            if t + 1 < steps:
                cache = cache.append_relative(pred, cache.last_time_rel + dts[:, t].to(torch.float64))
            last = pred
        return torch.stack(outputs, dim=1)

    # -- validation --------------------------------------------------------------------------------------------------
    def _check_tokens(self, tokens: Tensor, name: str, allowed_batch: tuple[int, ...]) -> None:
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != (self.num_tokens, self.input_dim):
            raise ValueError(
                f"{name}: expected shape (batch, {self.num_tokens}, {self.input_dim}), found {tuple(tokens.shape)}"
            )
        if tokens.shape[0] not in allowed_batch:
            raise ValueError(f"{name}: batch must be one of {sorted(set(allowed_batch))}, found {tokens.shape[0]}")

    def _check_context(self, context: Tensor, times: Tensor, mask: Tensor | None) -> tuple[int, int]:
        if context.dim() != 4 or tuple(context.shape[2:]) != (self.num_tokens, self.input_dim):
            raise ValueError(
                f"context: expected shape (B, C, {self.num_tokens}, {self.input_dim}), found {tuple(context.shape)}"
            )
        b, c = context.shape[:2]
        if not 1 <= c <= self.cfg.max_context:
            raise ValueError(f"context: expected 1..{self.cfg.max_context} frames, found {c}")
        if tuple(times.shape) != (b, c) or not times.is_floating_point():
            raise ValueError(
                f"times: expected a float tensor of shape ({b}, {c}), found {times.dtype} {tuple(times.shape)}"
            )
        if mask is not None and (tuple(mask.shape) != (b, c) or mask.dtype != torch.bool):
            raise ValueError(
                f"mask: expected a bool tensor of shape ({b}, {c}), found {mask.dtype} {tuple(mask.shape)}"
            )
        return b, c

    def _check_action(self, action: Tensor, b: int) -> Tensor:
        if tuple(action.shape) != (b, self.action_dim) or not action.is_floating_point():
            raise ValueError(
                f"action: expected a float tensor of shape ({b}, {self.action_dim}), "
                f"found {action.dtype} {tuple(action.shape)}"
            )
        return action

    @staticmethod
    def _as_batch(value: Tensor | float, b: int, name: str, device: torch.device) -> Tensor:
        t = torch.as_tensor(value, dtype=torch.float64, device=device)
        if t.dim() == 0 or (t.dim() == 1 and t.shape[0] == 1):
            return t.reshape(()).expand(b)
        if tuple(t.shape) != (b,):
            raise ValueError(f"{name}: expected a scalar or shape ({b},), found {tuple(t.shape)}")
        return t

    @staticmethod
    def _check_values(times: Tensor, mask: Tensor | None, dt: Tensor | None) -> None:
        valid = torch.ones_like(times, dtype=torch.bool) if mask is None else mask
        if not bool(valid[:, -1].all()):
            raise ValueError("mask: the newest (last) context frame must be valid in every sample")
        if not bool(torch.isfinite(times[valid]).all()):
            raise ValueError("times: valid context frames must have finite timestamps")
        t = torch.where(valid, times.to(torch.float64), torch.full_like(times, -math.inf, dtype=torch.float64))
        if not bool(((torch.cummax(t, dim=1).values <= t) | ~valid).all()):
            raise ValueError("times: valid context frames must be ordered oldest first (non-decreasing times)")
        if dt is not None and not bool((dt > 0).all()):
            raise ValueError("dt: the target must lie after the newest context frame (dt > 0)")


def build_predictor(input_dim: int, grid: tuple[int, int], size: str | None = None, **overrides) -> CDiTPredictor:
    """A predictor of preset ``size`` (default: ``predictor.size`` in config/model.yaml) for an encoder with
    token width ``input_dim`` and patch grid ``grid``; ``overrides`` replace single config fields."""
    return CDiTPredictor(load_predictor_config(size, **overrides), input_dim=input_dim, grid=grid)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
