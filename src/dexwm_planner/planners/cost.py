"""The planning cost, term by term (one definition used by the fast planner and the reference pattern).

For a sample with predicted latents ``z_1..z_T`` (``(P, d)`` each)::

    cost = sum_t w_t * ( latent_t + mu * hand_t + delta * depth_t + beta * orientation_t + rho * object_t
                         + alpha * approach_t )

* ``latent_t = mean over tokens of ||z_t[p] - z_goal[p]||^2`` (squared L2 over the width, mean over the P
  tokens, as the paper); with ``cost.latent_focus = a > 0`` a weighted mean instead, ``sum_p w_p ||.||^2`` with
  ``w_p = (1 - a) / P + a * g_p / sum g``, ``g_p`` a Gaussian bump (``latent_focus_sigma_px``) around the goal's
  hand keypoints at the token's patch centre: the few tokens where the hand meets the object weigh as much as the
  rest of the image (our addition; 0 = the paper's mean);
* ``hand_t``: mean pixel distance between the right hand's wrist + 5 fingertips at step t and the goal's
  (keypoints the goal does not have -- NaN -- are left out; a keypoint that cannot be projected costs the
  image diagonal);
* ``depth_t``: mean absolute difference (m) between the camera depth (along the optical axis) of those keypoints
  at step t and the goal's, weight ``delta = cost.depth_weight``: the pixel term fixes each keypoint only up to
  its ray from the camera; this fixes where on the ray (our addition, 0 = off; the goal's depths come from the
  world model's hand depth head on the goal image, or are given);
* ``orientation_t = 1 - cos(palm normal, down)`` (0 when the palm faces straight down);
* ``object_t``: mean pixel distance between the object centres the world model's object head reads out of the
  predicted latent at step t and those it reads on the goal image (objects the goal does not show clearly --
  heat-map peak below ``object_min_confidence`` -- are left out);
* ``approach_t``: the approach term of :mod:`dexwm_planner.planners.approach` (hand keypoints low and off the
  rays through the goal's keypoints), weight ``alpha = cost.approach_weight`` (our addition, 0 = off);
* ``w_t`` proportional to ``t ** step_weight_exponent`` (t = 1..T), normalised to sum 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dexwm_planner.planners.config import CostConfig


def step_weights(horizon: int, exponent: float, device: torch.device | None = None) -> Tensor:
    """``(T,)`` float64 weights ``t ** exponent`` normalised to sum 1."""
    t = torch.arange(1, horizon + 1, dtype=torch.float64, device=device)
    w = t ** float(exponent)
    return w / w.sum()


def latent_distance(pred: Tensor, goal: Tensor, token_weights: Tensor | None = None) -> Tensor:
    """``pred (n, P, d)``, ``goal (1 or n, P, d)`` -> ``(n,)`` mean over tokens of the squared L2 distance (fp32+);
    with ``token_weights (P,)`` (summing to 1) their weighted sum instead."""
    work = torch.promote_types(pred.dtype, torch.float32)
    diff = pred.to(work) - goal.to(work)
    per_token = (diff * diff).sum(-1)
    if token_weights is None:
        return per_token.mean(-1)
    return per_token @ token_weights.to(per_token)


def focus_weights(goal_uv: Tensor, grid: tuple[int, int], image_hw: tuple[int, int], focus: float,
                  sigma_px: float) -> Tensor | None:
    """Token weights ``(P,)`` (row-major patch grid, summing to 1) of the focused latent term (module doc), or None
    (the plain mean) when ``focus`` is 0 or the goal shows no hand keypoint."""
    known = torch.isfinite(goal_uv).all(-1)
    if focus <= 0 or not bool(known.any()):
        return None
    hp, wp = grid
    h, w = image_hw
    v = (torch.arange(hp, dtype=torch.float64) + 0.5) * (h / hp)
    u = (torch.arange(wp, dtype=torch.float64) + 0.5) * (w / wp)
    centres = torch.stack(torch.meshgrid(u, v, indexing="xy"), -1).reshape(-1, 2)  # (P, 2) as (u, v), row-major
    kp = goal_uv[known].to(torch.float64).cpu()
    d2 = ((centres[:, None] - kp[None]) ** 2).sum(-1)  # (P, K)
    bump = torch.exp(-d2 / (2.0 * float(sigma_px) ** 2)).max(-1).values
    p = centres.shape[0]
    return ((1.0 - focus) / p + focus * bump / bump.sum()).to(goal_uv.device)


def hand_distance(uv: Tensor, goal_uv: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """``uv (..., K, 2)`` pixels, ``goal_uv (K, 2)`` (NaN rows = unknown) -> ``(...)`` mean pixel distance over
    the goal's known keypoints (0 when the goal has none). Used for the hand (K = 6) and the objects."""
    known = torch.isfinite(goal_uv).all(-1)  # (K,)
    if not bool(known.any()):
        return torch.zeros(uv.shape[:-2], dtype=uv.dtype, device=uv.device)
    g = torch.where(known[:, None], goal_uv, torch.zeros_like(goal_uv)).to(uv)
    d = torch.linalg.vector_norm(uv - g, dim=-1)
    penalty = math.hypot(*image_hw)
    d = torch.where(torch.isfinite(d), d, torch.full_like(d, penalty))
    k = known.to(d.dtype)
    return (d * k).sum(-1) / k.sum()


def depth_distance(depth: Tensor, goal_depth: Tensor) -> Tensor:
    """``depth (..., K)`` metres, ``goal_depth (K,)`` (NaN = unknown) -> ``(...)`` mean absolute difference over
    the goal's known keypoints (0 when it has none)."""
    known = torch.isfinite(goal_depth)
    if not bool(known.any()):
        return torch.zeros(depth.shape[:-1], dtype=depth.dtype, device=depth.device)
    g = torch.where(known, goal_depth, torch.zeros_like(goal_depth)).to(depth)
    k = known.to(depth.dtype)
    return ((depth - g).abs() * k).sum(-1) / k.sum()


def total_cost(cfg: CostConfig, weights: Tensor, latent: Tensor, hand: Tensor | None,
               palm_down: Tensor | None, objects: Tensor | None = None, approach: Tensor | None = None,
               depth: Tensor | None = None) -> Tensor:
    """Per-step terms ``(n, T)`` -> ``(n,)``; ``palm_down`` is the cosine between the palm normal and down."""
    per_step = latent.to(torch.float64)
    if hand is not None and cfg.uses_hand:
        per_step = per_step + cfg.hand_weight * hand.to(torch.float64)
    if depth is not None and cfg.uses_depth:
        per_step = per_step + cfg.depth_weight * depth.to(torch.float64)
    if palm_down is not None and cfg.orientation_weight > 0:
        per_step = per_step + cfg.orientation_weight * (1.0 - palm_down.to(torch.float64))
    if objects is not None and cfg.uses_objects:
        per_step = per_step + cfg.object_weight * objects.to(torch.float64)
    if approach is not None and cfg.uses_approach:
        per_step = per_step + cfg.approach_weight * approach.to(torch.float64)
    return (per_step * weights.to(per_step.device)).sum(-1)
