"""Point-to-point joint motion profiles shared by the safety layer and the controllers (numpy only).

A move is a quintic polynomial per joint from ``(start, start_velocity, start_acceleration)`` to ``(goal, zero
velocity, zero acceleration)`` over ``duration`` seconds. From rest it is the minimum-jerk profile, whose peak
speed is ``MIN_JERK_PEAK_FACTOR * |goal - start| / duration``: the safety layer stretches durations with that
factor so that the controllers, which execute exactly this profile, stay within the joint velocity limits.
"""

from __future__ import annotations

import numpy as np

# peak of d/ds (10 s^3 - 15 s^4 + 6 s^5) on [0, 1], reached at s = 1/2
MIN_JERK_PEAK_FACTOR = 1.875


def min_jerk_duration(start: np.ndarray, goal: np.ndarray, max_velocity: np.ndarray) -> float:
    """Shortest rest-to-rest minimum-jerk move from ``start`` to ``goal`` that keeps every joint within
    ``max_velocity`` (rad/s, per joint)."""
    delta = np.abs(np.asarray(goal, dtype=np.float64) - np.asarray(start, dtype=np.float64))
    max_velocity = np.asarray(max_velocity, dtype=np.float64)
    if delta.shape != max_velocity.shape:
        raise ValueError(f"max_velocity: expected {delta.size} values (one per joint), got {max_velocity.size}")
    if np.any(max_velocity <= 0):
        raise ValueError(f"max_velocity: every limit must be positive, got {max_velocity.tolist()}")
    return float(np.max(MIN_JERK_PEAK_FACTOR * delta / max_velocity)) if delta.size else 0.0


class QuinticMove:
    """Joint positions, velocities and accelerations of one quintic move; holds ``goal`` after ``duration``.

    ``start_velocity`` and ``start_acceleration`` (default zero) let a new move take over a running one without a
    jump in velocity or acceleration.
    """

    def __init__(self, start: np.ndarray, goal: np.ndarray, duration: float,
                 start_velocity: np.ndarray | None = None, start_acceleration: np.ndarray | None = None) -> None:
        self.start = np.asarray(start, dtype=np.float64).copy()
        self.goal = np.asarray(goal, dtype=np.float64).copy()
        if self.start.shape != self.goal.shape or self.start.ndim != 1:
            raise ValueError(f"start and goal: expected two 1-D arrays of the same length, got shapes "
                             f"{self.start.shape} and {self.goal.shape}")
        v0 = np.zeros_like(self.start) if start_velocity is None else np.asarray(start_velocity, dtype=np.float64)
        a0 = (np.zeros_like(self.start) if start_acceleration is None
              else np.asarray(start_acceleration, dtype=np.float64))
        for what, arr in (("start_velocity", v0), ("start_acceleration", a0)):
            if arr.shape != self.start.shape:
                raise ValueError(f"{what}: expected shape {self.start.shape}, got {arr.shape}")
        if not all(np.all(np.isfinite(a)) for a in (self.start, self.goal, v0, a0)):
            raise ValueError("start, goal, start_velocity and start_acceleration must be finite")
        self.duration = float(duration)
        if not np.isfinite(self.duration) or self.duration < 0:
            raise ValueError(f"duration: expected a finite number >= 0, got {duration}")
        self.start_velocity, self.start_acceleration = v0.copy(), a0.copy()
        # q(s) = q0 + w s + (alpha / 2) s^2 + c3 s^3 + c4 s^4 + c5 s^5 with s = t / T; at s = 1 the goal at rest
        T = max(self.duration, 1e-9)
        w, alpha = v0 * T, a0 * T * T
        r1 = self.goal - self.start - w - 0.5 * alpha  # remaining position
        r2 = -w - alpha                                # remaining scaled velocity
        r3 = -alpha                                    # remaining scaled acceleration
        self._w, self._alpha = w, alpha
        self._c3 = 10 * r1 - 4 * r2 + 0.5 * r3
        self._c4 = -15 * r1 + 7 * r2 - r3
        self._c5 = 6 * r1 - 3 * r2 + 0.5 * r3

    def position(self, t: float) -> np.ndarray:
        if t >= self.duration:
            return self.goal.copy()
        if t <= 0:
            return self.start.copy()
        s = t / self.duration
        return self.start + s * (self._w + s * (0.5 * self._alpha + s * (self._c3 + s * (self._c4 + s * self._c5))))

    def velocity(self, t: float) -> np.ndarray:
        if t >= self.duration or self.duration <= 0:
            return np.zeros_like(self.start)
        if t <= 0:
            return self.start_velocity.copy()
        s = t / self.duration
        return (self._w + s * (self._alpha + s * (3 * self._c3 + s * (4 * self._c4 + s * 5 * self._c5)))) \
            / self.duration

    def acceleration(self, t: float) -> np.ndarray:
        if t >= self.duration or self.duration <= 0:
            return np.zeros_like(self.start)
        if t <= 0:
            return self.start_acceleration.copy()
        s = t / self.duration
        return (self._alpha + s * (6 * self._c3 + s * (12 * self._c4 + s * 20 * self._c5))) / self.duration ** 2

    def done(self, t: float) -> bool:
        return t >= self.duration

    def peak_speed(self, samples: int = 64) -> np.ndarray:
        """Largest |velocity| of each joint (sampled; exact for moves from rest, where it is at mid-time)."""
        ts = np.linspace(0.0, self.duration, max(2, samples))
        return np.max(np.abs(np.stack([self.velocity(t) for t in ts[:-1]])), axis=0)
