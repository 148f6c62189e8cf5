"""Joint position and velocity limits of the 23-joint waypoints (numpy only, no ROS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dexwm_hw.safety.motion import min_jerk_duration


@dataclass
class LimitCheck:
    target: np.ndarray            # the waypoint clipped into the limits (valid only when ``rejection`` is None)
    clipped: list[str]            # joints that were outside by no more than the tolerance and were clipped
    rejection: str | None         # why the waypoint is refused, naming every offending joint


class JointLimits:
    def __init__(self, names: Sequence[str], lower: Sequence[float], upper: Sequence[float],
                 velocity: Sequence[float], tolerance: float, min_duration: float) -> None:
        self.names = tuple(names)
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.velocity = np.asarray(velocity, dtype=np.float64)
        n = len(self.names)
        for what, arr in (("lower", self.lower), ("upper", self.upper), ("velocity", self.velocity)):
            if arr.shape != (n,):
                raise ValueError(f"{what}: expected {n} values (one per joint name), got shape {arr.shape}")
        if np.any(self.lower >= self.upper):
            raise ValueError("lower: every lower limit must be below its upper limit")
        if np.any(self.velocity <= 0):
            raise ValueError(f"velocity: every limit must be positive, got {self.velocity.tolist()}")
        if tolerance < 0 or min_duration < 0:
            raise ValueError(f"tolerance and min_duration must be >= 0, got {tolerance} and {min_duration}")
        self.tolerance = float(tolerance)
        self.min_duration = float(min_duration)

    def check_positions(self, target: np.ndarray) -> LimitCheck:
        """Clip joints that are outside their range by at most the tolerance; reject when any is further out."""
        target = np.asarray(target, dtype=np.float64)
        if target.shape != self.lower.shape:
            raise ValueError(f"target: expected {self.lower.size} joint positions, got shape {target.shape}")
        if not np.all(np.isfinite(target)):
            bad = [self.names[i] for i in np.flatnonzero(~np.isfinite(target))]
            return LimitCheck(target, [], f"non-finite position for {', '.join(bad)}")
        below = self.lower - target
        above = target - self.upper
        problems = []
        for i in np.flatnonzero((below > self.tolerance) | (above > self.tolerance)):
            if below[i] > self.tolerance:
                problems.append(f"{self.names[i]} = {target[i]:.4f} rad is {below[i]:.4f} below its lower limit "
                                f"{self.lower[i]:.4f}")
            else:
                problems.append(f"{self.names[i]} = {target[i]:.4f} rad is {above[i]:.4f} above its upper limit "
                                f"{self.upper[i]:.4f}")
        if problems:
            return LimitCheck(target, [], "joint position limit: " + "; ".join(problems)
                              + f" (tolerance {self.tolerance:g} rad)")
        outside = np.flatnonzero((below > 0) | (above > 0))
        return LimitCheck(np.clip(target, self.lower, self.upper), [self.names[i] for i in outside], None)

    def safe_duration(self, start: np.ndarray, goal: np.ndarray, requested: float) -> tuple[float, bool]:
        """Duration of the move ``start -> goal``: the requested one, stretched (second value True) so that the
        minimum-jerk profile the controllers execute stays within every joint's velocity limit."""
        fastest = max(self.min_duration, min_jerk_duration(start, goal, self.velocity))
        requested = float(requested)
        if requested >= fastest:
            return requested, False
        return fastest, True
