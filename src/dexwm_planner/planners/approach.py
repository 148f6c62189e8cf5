"""The approach term: keep the hand high until it is lined up with the goal, so it comes down onto the goal from
above instead of sweeping across the table through the objects around it.

The goal is an image, so each of its six hand keypoints (wrist + 5 fingertips, from the hand head or given) fixes
only a *ray* from the camera, not a 3-D point. That is enough to say when the hand is lined up: the FK position
of keypoint ``k`` of a sampled plan is lined up when it lies within ``radius`` of the ray through goal keypoint
``k``. A keypoint that is not lined up pays for every metre it is below ``height`` above the table (the safety
layer's workspace floor, ``config/controllers.yaml``; one source of truth)::

    approach_t = mean_k  relu(height - (z_k - floor)) * relu(dist(p_k, ray_k) - radius) / (height * radius)

(dimensionless: 1 for a keypoint on the table a full ``radius`` off its ray; 0 once lined up or high enough). The
term is 0 at the goal itself (every keypoint on its own ray) and anywhere above ``height``, so it removes no
solution; it only closes the low, off-target part of the workspace, where a world model that does not predict
pushed objects cannot see the harm. The descent then follows the rays: down and away from the camera onto the
goal. This is our addition (not in the paper); ``cost.approach_weight: 0`` turns it off.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dexwm_planner.planners.kinematics import CameraSetup, pixel_rays


def goal_rays(goal_uv: Tensor, camera: CameraSetup) -> tuple[Tensor, Tensor]:
    """Camera centre ``(3,)`` and unit world directions ``(K, 3)`` of the rays through the goal pixels
    ``goal_uv (K, 2)`` (rows with NaN stay NaN: the goal does not show that keypoint)."""
    dtype = goal_uv.dtype if goal_uv.dtype in (torch.float32, torch.float64) else torch.float32
    d_cam, R, origin = pixel_rays(goal_uv, camera, dtype)  # optical frame: x right, y down, z forward
    d_world = d_cam @ R.T
    return origin, d_world / torch.linalg.vector_norm(d_world, dim=-1, keepdim=True)


def approach_violation(points: Tensor, origin: Tensor, dirs: Tensor, floor: float, height: float,
                       radius: float) -> Tensor:
    """``points (..., K, 3)`` world FK keypoints, rays ``origin (3,)`` / ``dirs (K, 3)`` -> ``(...)`` the term of
    the module doc (keypoints whose ray is unknown are left out; 0 when none is known)."""
    known = torch.isfinite(dirs).all(-1)  # (K,)
    if not bool(known.any()):
        return torch.zeros(points.shape[:-2], dtype=points.dtype, device=points.device)
    d = torch.where(known[:, None], dirs, torch.zeros_like(dirs)).to(points)
    rel = points - origin.to(points)
    along = (rel * d).sum(-1, keepdim=True)
    off_ray = torch.linalg.vector_norm(rel - along * d, dim=-1)  # (..., K)
    low = torch.relu(height - (points[..., 2] - floor))
    per_point = low * torch.relu(off_ray - radius) / (height * radius)
    k = known.to(per_point.dtype)
    return (per_point * k).sum(-1) / k.sum()
