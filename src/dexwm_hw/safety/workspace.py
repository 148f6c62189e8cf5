"""Workspace bounds for the hand: the palm and fingertip sites (forward kinematics) must stay inside a box.

The box is axis-aligned in the robot base frame (``panda_link0``, which is the FK's world frame). The check runs on
the target and on points along the joint-space path from the current joints to it, since the controllers move in
joint space: a straight joint-space move between two poses inside the box can leave it.

:class:`BoxSpec` is the one definition of the box (bounds, margin, checked sites, path samples), of the sampled
path (:func:`joint_path`) and of the distance outside it (:func:`excess`), in numpy or torch: the safety layer's
:class:`WorkspaceBox` gives reasons with it, the planner's differentiable cost
(:class:`dexwm_planner.planners.workspace.PlanWorkspace`) charges the same points outside the same box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# (B, 23) joint vectors -> (B, P, 3) site positions in the base frame
PointsFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BoxSpec:
    """The workspace box: ``lower`` < ``upper`` (3 values each, metres, base frame; ``lower`` may also be given as
    one row per checked site, ``(P, 3)``: the fingertips' floor below the palm's, and is kept as ``(P, 3)`` either
    way), the checked sites and the samples of each straight joint-space path (``ValueError`` naming the problem)."""

    lower: np.ndarray
    upper: np.ndarray
    point_names: tuple[str, ...]
    path_samples: int

    @classmethod
    def make(cls, lower: Sequence[float], upper: Sequence[float], point_names: Sequence[str],
             path_samples: int = 1) -> "BoxSpec":
        lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        if lo.shape not in ((3,), (len(point_names), 3)) or hi.shape != (3,):
            raise ValueError(f"lower/upper: expected 3 values (x, y, z; lower also one row per site, "
                             f"({len(point_names)}, 3)), got shapes {lo.shape} and {hi.shape}")
        if np.any(lo >= hi):
            raise ValueError(f"lower {lo.tolist()} must be below upper {hi.tolist()} on every axis")
        if path_samples < 1:
            raise ValueError(f"path_samples: expected >= 1, got {path_samples}")
        lo = np.broadcast_to(lo, (len(point_names), 3)).copy()  # one row per site: the bound of each point
        return cls(lo, hi, tuple(point_names), int(path_samples))

    @classmethod
    def from_safety_config(cls, margin: float = 0.0, cfg=None) -> "BoxSpec":
        """The box of ``config/controllers.yaml`` (section ``dexwm_safety``; or ``cfg``) shrunk by ``margin``
        metres on every side."""
        from dexwm_hw.safety.config import load_safety_config

        cfg = load_safety_config() if cfg is None else cfg
        lower, upper = shrink(cfg.point_lower(), cfg.workspace_max, margin)
        return cls.make(lower, upper, cfg.workspace_points, cfg.workspace_path_samples)

    def path_fractions(self) -> np.ndarray:
        """(S,) the checked fractions of a path, the last 1 (the target)."""
        return np.arange(1, self.path_samples + 1) / self.path_samples


def shrink(lower, upper, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The bounds (``(3,)`` or ``(P, 3)``) moved ``margin`` metres inwards on every side (the planner keeps that far
    from the walls)."""
    return np.asarray(lower, dtype=np.float64) + margin, np.asarray(upper, dtype=np.float64) - margin


def joint_path(start, goal, samples: int):
    """``(..., S, 23)``: ``samples`` evenly spaced joint vectors of the straight joint-space path from ``start``
    to ``goal`` (``(..., 23)``, numpy arrays or torch tensors), after ``start``; the last is ``goal``."""
    if isinstance(goal, np.ndarray):
        fractions = np.arange(1, samples + 1) / samples
    else:
        import torch

        fractions = torch.arange(1, samples + 1, dtype=goal.dtype, device=goal.device) / samples
    return start[..., None, :] + fractions[:, None] * (goal - start)[..., None, :]


def excess(points, lower, upper):
    """Metres each point lies outside the box, per axis (``points`` shape; 0 inside), numpy or torch."""
    if isinstance(points, np.ndarray):
        return np.maximum(lower - points, 0.0) + np.maximum(points - upper, 0.0)
    import torch

    return torch.relu(lower - points) + torch.relu(points - upper)


class WorkspaceBox:
    def __init__(self, lower: Sequence[float], upper: Sequence[float], point_names: Sequence[str],
                 points_fn: PointsFn, path_samples: int = 1) -> None:
        self.spec = BoxSpec.make(lower, upper, point_names, path_samples)
        self.lower, self.upper = self.spec.lower, self.spec.upper
        self.point_names = self.spec.point_names
        self.points_fn = points_fn
        self.path_samples = self.spec.path_samples

    @classmethod
    def from_fk(cls, fk, lower: Sequence[float], upper: Sequence[float], point_names: Sequence[str],
                path_samples: int = 1) -> "WorkspaceBox":
        """Use ``dexwm_model.kinematics.PandaAllegroFK`` (or any chain with ``positions(q, names)``)."""
        import torch

        known = set(fk.site_names) | set(getattr(fk, "body_names", ()))
        unknown = [n for n in point_names if n not in known and not n.startswith("body:")]
        if unknown:
            raise ValueError(f"workspace_points: unknown FK site(s) {unknown}; known sites: {list(fk.site_names)}")
        names = list(point_names)

        def points(q: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return fk.positions(torch.as_tensor(q, dtype=torch.float64), names).cpu().numpy()

        return cls(lower, upper, point_names, points, path_samples)

    def check_path(self, start: np.ndarray | None, goal: np.ndarray) -> str | None:
        """None when every checked point stays inside the box, else the reason (point, where, which bound).

        ``start`` None checks the goal alone; otherwise ``path_samples`` evenly spaced joint vectors of the
        straight joint-space path after ``start`` (the last one is ``goal``)."""
        goal = np.asarray(goal, dtype=np.float64)
        if start is None or self.path_samples == 1:
            qs = goal[None]
            fractions = np.ones(1)
        else:
            fractions = self.spec.path_fractions()
            qs = joint_path(np.asarray(start, dtype=np.float64), goal, self.path_samples)
        pts = np.asarray(self.points_fn(qs), dtype=np.float64)
        if pts.shape != (len(qs), len(self.point_names), 3):
            raise ValueError(f"points_fn returned shape {pts.shape}, expected {(len(qs), len(self.point_names), 3)}")
        low = self.lower - pts
        high = pts - self.upper
        outside = excess(pts, self.lower, self.upper).max(axis=2)  # (B, P) > 0 where a point is out
        if not np.any(outside > 0):
            return None
        # report the first sample along the path that leaves the box (the target last)
        b = int(np.flatnonzero(np.any(outside > 0, axis=1))[0])
        axes = "xyz"
        parts = []
        for p in np.flatnonzero(outside[b] > 0):
            pos = pts[b, p]
            for a in range(3):
                if low[b, p, a] > 0:
                    parts.append(f"{self.point_names[p]} {axes[a]} = {pos[a]:.3f} m < {self.lower[p, a]:.3f}")
                elif high[b, p, a] > 0:
                    parts.append(f"{self.point_names[p]} {axes[a]} = {pos[a]:.3f} m > {self.upper[a]:.3f}")
        where = "at the target" if b == len(qs) - 1 else f"{fractions[b] * 100:.0f}% along the path to the target"
        return f"workspace bounds: {where}: " + "; ".join(parts)
