"""Time-parameterised joint trajectories for the simulated drivers (numpy only, no ROS import).

A ``JointTrajectory`` as ros2_control's JointTrajectoryController receives it is a list of points reached at their
``time_from_start``. :func:`plan_trajectory` turns such points into a piecewise cubic Hermite curve that starts at
the current set-point with the current set-point velocity (so a new trajectory pre-empts a running one without a
velocity jump), passes through every point at its time, and ends at rest. Points without velocities get
shape-preserving (PCHIP) knot velocities, so the curve does not overshoot between points. Where the requested
timing would exceed a joint's speed limit the whole trajectory is slowed down uniformly (the returned scale
says by how much), and set-points are clipped to the joint limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SEGMENT = 0.05  # s; the shortest move the drivers accept (same floor as the sim controller)


class HermiteTrajectory:
    """Piecewise cubic Hermite curve through knots ``(times[k], positions[k], velocities[k])``; holds the last knot."""

    def __init__(self, times: np.ndarray, positions: np.ndarray, velocities: np.ndarray,
                 low: np.ndarray | None = None, high: np.ndarray | None = None) -> None:
        self.times = np.asarray(times, dtype=np.float64)
        self.positions = np.asarray(positions, dtype=np.float64)
        self.velocities = np.asarray(velocities, dtype=np.float64)
        if self.times.ndim != 1 or self.times.size < 1:
            raise ValueError(f"times: expected a non-empty 1-D array, got shape {self.times.shape}")
        if self.positions.shape != (self.times.size, self.positions.shape[-1]) or self.positions.ndim != 2:
            raise ValueError(f"positions: expected shape ({self.times.size}, J), got {self.positions.shape}")
        if self.velocities.shape != self.positions.shape:
            raise ValueError(f"velocities: expected shape {self.positions.shape}, got {self.velocities.shape}")
        if np.any(np.diff(self.times) <= 0):
            raise ValueError(f"times: must be strictly increasing, got {self.times.tolist()}")
        self.low = None if low is None else np.asarray(low, dtype=np.float64)
        self.high = None if high is None else np.asarray(high, dtype=np.float64)

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def done(self, t: float) -> bool:
        return t >= self.duration

    def _segment(self, t: float) -> tuple[int, float, float]:
        k = int(np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, self.times.size - 2))
        h = self.times[k + 1] - self.times[k]
        return k, h, (t - self.times[k]) / h

    def __call__(self, t: float) -> np.ndarray:
        if self.times.size == 1 or t >= self.times[-1]:
            q = self.positions[-1]
        elif t <= self.times[0]:
            q = self.positions[0]
        else:
            k, h, s = self._segment(t)
            s2, s3 = s * s, s * s * s
            q = ((2 * s3 - 3 * s2 + 1) * self.positions[k] + (s3 - 2 * s2 + s) * h * self.velocities[k]
                 + (-2 * s3 + 3 * s2) * self.positions[k + 1] + (s3 - s2) * h * self.velocities[k + 1])
        if self.low is not None:
            q = np.clip(q, self.low, self.high)
        return np.array(q, dtype=np.float64)

    def velocity(self, t: float) -> np.ndarray:
        if self.times.size == 1 or t >= self.times[-1]:
            return np.zeros(self.positions.shape[1])
        if t < self.times[0]:
            return np.zeros(self.positions.shape[1])
        k, h, s = self._segment(t)
        s2 = s * s
        return ((6 * s2 - 6 * s) * self.positions[k] / h + (3 * s2 - 4 * s + 1) * self.velocities[k]
                + (-6 * s2 + 6 * s) * self.positions[k + 1] / h + (3 * s2 - 2 * s) * self.velocities[k + 1])

    def peak_speed(self) -> np.ndarray:
        """Largest |velocity| of each joint over the whole curve (exact: the derivative is quadratic per segment)."""
        q0, q1 = self.positions[:-1], self.positions[1:]
        v0, v1 = self.velocities[:-1], self.velocities[1:]
        h = np.diff(self.times)[:, None]
        if h.size == 0:
            return np.zeros(self.positions.shape[1])
        a = (6 * q0 - 6 * q1) / h + 3 * v0 + 3 * v1
        b = (-6 * q0 + 6 * q1) / h - 4 * v0 - 2 * v1
        c = v0
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(np.abs(a) > 1e-12, -b / (2 * a), 0.0)
        s = np.clip(s, 0.0, 1.0)
        candidates = np.stack([np.abs(c), np.abs(a + b + c), np.abs(a * s * s + b * s + c)])
        return candidates.max(axis=(0, 1))


def pchip_velocities(times: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Shape-preserving knot velocities for interior knots (Fritsch-Carlson); the two end knots get zero."""
    v = np.zeros_like(positions)
    if times.size < 3:
        return v
    h = np.diff(times)[:, None]
    slope = np.diff(positions, axis=0) / h
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    same_sign = slope[:-1] * slope[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / slope[:-1] + w2 / slope[1:])
    v[1:-1] = np.where(same_sign, harmonic, 0.0)
    return v


@dataclass
class PlannedTrajectory:
    curve: HermiteTrajectory
    time_scale: float  # >= 1; how much the requested timing was slowed down to respect the speed limits


def min_safe_duration(start: np.ndarray, goal: np.ndarray, max_velocity: np.ndarray) -> float:
    """Shortest rest-to-rest cubic move from ``start`` to ``goal`` within ``max_velocity`` (peak = 1.5 d / T)."""
    delta = np.abs(np.asarray(goal, dtype=np.float64) - np.asarray(start, dtype=np.float64))
    return float(max(MIN_SEGMENT, np.max(1.5 * delta / np.asarray(max_velocity, dtype=np.float64))))


def plan_trajectory(start: np.ndarray, start_velocity: np.ndarray, times: np.ndarray, positions: np.ndarray,
                    velocities: np.ndarray | None, max_velocity: np.ndarray, low: np.ndarray,
                    high: np.ndarray) -> PlannedTrajectory:
    """Hermite curve from the current set-point through ``positions`` at ``times`` (s from now), ending at rest.

    ``times`` must be non-negative and strictly increasing; a first point at time 0 is reached in the minimum
    safe duration (the rest of the trajectory shifts by it). Positions are clipped to ``[low, high]``.
    """
    start = np.asarray(start, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64)
    max_velocity = np.asarray(max_velocity, dtype=np.float64)
    if positions.shape != (times.size, start.size):
        raise ValueError(f"positions: expected shape ({times.size}, {start.size}), got {positions.shape}")
    positions = np.clip(positions, low, high)
    if np.any(times < 0) or np.any(np.diff(times) <= 0):
        raise ValueError(f"time_from_start: must be non-negative and strictly increasing, got {times.tolist()}")
    if times[0] < 1e-9:
        times = times + min_safe_duration(start, positions[0], max_velocity)
    knot_t = np.concatenate([[0.0], times])
    knot_q = np.vstack([start, positions])
    if velocities is None:
        knot_v = pchip_velocities(knot_t, knot_q)
    else:
        velocities = np.asarray(velocities, dtype=np.float64)
        if velocities.shape != positions.shape:
            raise ValueError(f"velocities: expected shape {positions.shape}, got {velocities.shape}")
        knot_v = np.vstack([np.zeros_like(start), velocities])
    knot_v[0] = np.clip(np.asarray(start_velocity, dtype=np.float64), -max_velocity, max_velocity)
    scale = 1.0
    for _ in range(20):  # uniform time scaling until every joint is within its limit
        curve = HermiteTrajectory(knot_t * scale, knot_q, np.vstack([knot_v[:1], knot_v[1:] / scale]), low, high)
        ratio = float(np.max(curve.peak_speed() / max_velocity))
        if ratio <= 1.0 + 1e-9:
            return PlannedTrajectory(curve, scale)
        scale *= ratio * 1.02
    return PlannedTrajectory(curve, scale)


class CombinedSetpoint:
    """The 23-joint set-point profile the simulator tracks: the arm's and the hand's curves, each started at its
    own sim time, evaluated at ``origin + t`` (the simulator counts ``t`` from when it started following)."""

    def __init__(self, origin: float, arm: HermiteTrajectory, arm_start: float, hand: HermiteTrajectory,
                 hand_start: float) -> None:
        self.origin, self.arm, self.arm_start, self.hand, self.hand_start = origin, arm, arm_start, hand, hand_start

    def at(self, time: float) -> np.ndarray:
        return np.concatenate([self.arm(time - self.arm_start), self.hand(time - self.hand_start)])

    def velocity_at(self, time: float) -> np.ndarray:
        return np.concatenate([self.arm.velocity(time - self.arm_start), self.hand.velocity(time - self.hand_start)])

    def __call__(self, t: float) -> np.ndarray:
        return self.at(self.origin + t)

    @property
    def duration(self) -> float:
        return max(self.arm_start + self.arm.duration, self.hand_start + self.hand.duration) - self.origin

    def done(self, t: float) -> bool:
        return t >= self.duration
