"""Goal-pose proposals: where the goal image puts the hand, in joint space, as a line for the search to try.

The goal image gives the hand's six keypoints (wrist + 5 fingertips) as pixels (hand head, or given) and, with the
depth term on, their camera depths (hand depth head, or given). Pixel + depth is a 3-D point, so the goal fixes the
hand's keypoints in the world. :func:`solve_goal_pose` finds joints whose forward kinematics put the keypoints
there (damped least squares on all 23 joints, clamped to the joint limits, started from the current joints), and
:func:`proposal_sequence` turns that pose into T waypoints that move toward it at most ``step`` rad per joint and
waypoint. The planner draws part of its first iteration's samples around that sequence
(``planner.proposal_fraction``): random joint noise rarely finds the centimetre-precise descent onto an object that
the cost ranks first, a line to the goal pose does. The world model still scores every sample, the proposal
included; nothing is executed because it was proposed. With ``planner.proposal_lift`` > 0 the line first goes to the
goal pose lifted by that much while the hand is more than ``proposal_align`` m (mean over the keypoints, in the
horizontal plane) away from its goal (:func:`approach_target`): the hand comes down onto the goal from above, as the
scripted demonstrator does, instead of sweeping through the objects beside it. With
``planner.proposal_close_within`` > 0 the line keeps the hand's joints as they are until the hand is that close (m,
mean 3-D distance of its keypoints to the goal's; :func:`keep_hand_until_near`): the hand arrives open and closes
at the goal. This is our addition (not in the paper).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dexwm_planner.planners.kinematics import CameraSetup, PlanKinematics, pixel_rays
from dexwm_robot.joint_names import NUM_ARM_JOINTS


def goal_points(goal_uv: Tensor, goal_depth: Tensor, camera: CameraSetup) -> Tensor:
    """World points ``(K, 3)`` of pixels ``goal_uv (K, 2)`` at camera depths ``goal_depth (K,)`` (along the optical
    axis, metres); rows with an unknown pixel or depth are NaN."""
    rays, R, t = pixel_rays(goal_uv, camera)
    return (rays * goal_depth.to(rays)[:, None]) @ R.T + t


def approach_target(points: Tensor, hand: Tensor, lift: float, align: float) -> tuple[Tensor, bool]:
    """The keypoints ``(K, 3)`` to aim at now: ``points`` raised by ``lift`` m while the hand's keypoints ``hand
    (K, 3)`` are on average more than ``align`` m from them horizontally, else ``points``; and whether lifted."""
    known = torch.isfinite(points).all(-1)
    if lift <= 0 or not bool(known.any()):
        return points, False
    gap = torch.linalg.vector_norm((hand.to(points) - points)[known, :2], dim=-1).mean()
    if float(gap) <= align:
        return points, False
    raised = points.clone()
    raised[:, 2] += lift
    return raised, True


def keep_hand_until_near(target: Tensor, current: Tensor, hand: Tensor, points: Tensor, within: float) -> Tensor:
    """``target (23,)`` with the hand's 16 joints kept at ``current``'s while the hand's keypoints ``hand (K, 3)``
    are on average more than ``within`` m from the goal's ``points (K, 3)`` (3-D, known rows): the hand arrives
    as it is (open) and closes only near the goal, as the scripted demonstrator's grasps do. ``within`` 0: the
    target unchanged."""
    known = torch.isfinite(points).all(-1)
    if within <= 0 or not bool(known.any()):
        return target
    gap = torch.linalg.vector_norm((hand.to(points) - points)[known], dim=-1).mean()
    if float(gap) <= within:
        return target
    kept = target.clone()
    kept[NUM_ARM_JOINTS:] = current.to(kept)[NUM_ARM_JOINTS:]
    return kept


def solve_goal_pose(kin: PlanKinematics, points: Tensor, start: Tensor, low: Tensor, high: Tensor,
                    iterations: int = 12, damping: float = 0.02, fd_step: float = 1e-6) -> tuple[Tensor, float]:
    """Joints ``(23,)`` whose FK puts the right wrist + 5 tips on ``points (6, 3)`` (NaN rows left out), from
    ``start (23,)``, within ``[low, high]``; and the remaining mean keypoint distance (m). Damped least squares;
    the Jacobian of the keypoints comes from ONE batched FK call (central differences over the 23 joints); a step
    that does not lower the error is halved."""
    known = torch.isfinite(points).all(-1)
    q = start.detach().to(torch.float64).clone()
    if not bool(known.any()):
        return q.to(start.dtype), float("nan")
    target = points[known].to(torch.float64)
    lo, hi = low.to(q), high.to(q)
    n = q.numel()
    probe = torch.eye(n, dtype=torch.float64, device=q.device) * fd_step

    def residual(x: Tensor) -> Tensor:  # (..., 23) -> (..., 3k)
        return (kin.hand_world_points(x)[..., known, :] - target).flatten(-2)

    def mean_error(r: Tensor) -> float:
        return float(r.view(-1, 3).norm(dim=-1).mean())

    r = residual(q)
    err = mean_error(r)
    eye = torch.eye(r.numel(), dtype=torch.float64, device=q.device)
    for _ in range(iterations):
        both = residual(torch.cat([q + probe, q - probe]))  # (2n, 3k)
        J = ((both[:n] - both[n:]) / (2 * fd_step)).T  # (3k, n)
        step = J.T @ torch.linalg.solve(J @ J.T + damping ** 2 * eye, r)
        scale = 1.0
        while scale >= 1e-3:
            trial = torch.minimum(torch.maximum(q - scale * step, lo), hi)
            r_trial = residual(trial)
            e_trial = mean_error(r_trial)
            if e_trial < err:
                break
            scale *= 0.5
        else:
            break  # no step along this direction lowers the error: converged (or stuck on the limits)
        q, r, err = trial, r_trial, e_trial
    return q.to(start.dtype), err


def proposal_sequence(current: Tensor, target: Tensor, horizon: int, step: float) -> Tensor:
    """Waypoints ``(T, 23)`` from ``current`` toward ``target``: waypoint t is ``current + f_t (target -
    current)`` with ``f_t = min(1, t * step / max |target - current|)``, so no joint moves more than ``step`` rad
    per waypoint and the line ends on the target."""
    delta = (target - current).to(current.dtype)
    span = float(delta.abs().max())
    t = torch.arange(1, horizon + 1, dtype=current.dtype, device=current.device)
    frac = torch.clamp(t * step / span, max=1.0) if span > 0 else torch.ones_like(t)
    return current[None] + frac[:, None] * delta[None]
