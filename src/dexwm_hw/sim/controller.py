"""The low-level joint controller of the paper: interpolate from the current joints to each waypoint.

A quintic (minimum-jerk) profile from the joints at the moment a waypoint arrives to the waypoint, over a
duration that respects per-joint velocity limits; the servos of the simulated robot track the interpolated
set-point at every physics step.
"""

from __future__ import annotations

import numpy as np


class JointInterpolator:
    """Minimum-jerk interpolation between two joint vectors."""

    def __init__(self, start: np.ndarray, goal: np.ndarray, duration: float) -> None:
        start = np.asarray(start, dtype=np.float64)
        goal = np.asarray(goal, dtype=np.float64)
        if start.shape != goal.shape:
            raise ValueError(f"start {start.shape} and goal {goal.shape} differ in shape")
        if not np.all(np.isfinite(goal)):
            raise ValueError("waypoint contains NaN or inf")
        if duration <= 0:
            raise ValueError(f"duration must be positive, got {duration}")
        self.start, self.goal, self.duration = start, goal, float(duration)

    def __call__(self, t: float) -> np.ndarray:
        s = min(max(t / self.duration, 0.0), 1.0)
        blend = s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)
        return self.start + (self.goal - self.start) * blend

    def done(self, t: float) -> bool:
        return t >= self.duration


def min_duration(start: np.ndarray, goal: np.ndarray, max_velocity: np.ndarray, floor: float = 0.05) -> float:
    """Shortest minimum-jerk duration keeping every joint under its velocity limit (peak speed = 1.875 d/T)."""
    delta = np.abs(np.asarray(goal) - np.asarray(start))
    return float(max(floor, np.max(1.875 * delta / np.asarray(max_velocity))))
