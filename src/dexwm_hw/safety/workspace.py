"""Workspace bounds for the hand: the palm and fingertip sites (forward kinematics) must stay inside a box.

The box is axis-aligned in the robot base frame (``panda_link0``, which is the FK's world frame). The check runs on
the target and on points along the joint-space path from the current joints to it, since the controllers move in
joint space: a straight joint-space move between two poses inside the box can leave it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# (B, 23) joint vectors -> (B, P, 3) site positions in the base frame
PointsFn = Callable[[np.ndarray], np.ndarray]


class WorkspaceBox:
    def __init__(self, lower: Sequence[float], upper: Sequence[float], point_names: Sequence[str],
                 points_fn: PointsFn, path_samples: int = 1) -> None:
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        if self.lower.shape != (3,) or self.upper.shape != (3,):
            raise ValueError(f"lower/upper: expected 3 values (x, y, z), got shapes {self.lower.shape} and "
                             f"{self.upper.shape}")
        if np.any(self.lower >= self.upper):
            raise ValueError(f"lower {self.lower.tolist()} must be below upper {self.upper.tolist()} on every axis")
        if path_samples < 1:
            raise ValueError(f"path_samples: expected >= 1, got {path_samples}")
        self.point_names = tuple(point_names)
        self.points_fn = points_fn
        self.path_samples = int(path_samples)

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
            start = np.asarray(start, dtype=np.float64)
            fractions = np.arange(1, self.path_samples + 1) / self.path_samples
            qs = start[None] + fractions[:, None] * (goal - start)[None]
        pts = np.asarray(self.points_fn(qs), dtype=np.float64)
        if pts.shape != (len(qs), len(self.point_names), 3):
            raise ValueError(f"points_fn returned shape {pts.shape}, expected {(len(qs), len(self.point_names), 3)}")
        low = self.lower - pts
        high = pts - self.upper
        outside = np.maximum(low, high).max(axis=2)  # (B, P) > 0 where a point is out
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
                    parts.append(f"{self.point_names[p]} {axes[a]} = {pos[a]:.3f} m < {self.lower[a]:.3f}")
                elif high[b, p, a] > 0:
                    parts.append(f"{self.point_names[p]} {axes[a]} = {pos[a]:.3f} m > {self.upper[a]:.3f}")
        where = "at the target" if b == len(qs) - 1 else f"{fractions[b] * 100:.0f}% along the path to the target"
        return f"workspace bounds: {where}: " + "; ".join(parts)
