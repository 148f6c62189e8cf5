"""Baselines run by the same harness as the world-model MPC (same interface: ``set_goal``, ``observe``, ``plan``,
``reset``, ``execute_steps``, ``waypoint_duration_s``; ``plan`` returns an :class:`~dexwm_planner.mpc.MPCStep`).

* ``still``: does nothing -- holds the joints it first observed after the goal was set;
* ``random``: a random joint waypoint near the current joints (uniform change of up to ``random_step_arm`` /
  ``random_step_hand`` rad per joint), within the joint limits.
Neither looks at the images (the harness still renders them, so recordings and timings stay comparable).
"""

from __future__ import annotations

import abc

import numpy as np

from dexwm_model.kinematics.panda_allegro import NUM_ROBOT_JOINTS
from dexwm_planner.benchmark.policy_controller import PolicyController

NUM_ARM_JOINTS = 7


class _Baseline(PolicyController):
    """One waypoint per replan from the joints alone."""

    def reset(self) -> None:
        super().reset()
        self._first: np.ndarray | None = None

    def _on_observe(self, image: np.ndarray, joints: np.ndarray) -> None:
        if self._first is None:
            self._first = joints.copy()

    def _waypoints(self) -> np.ndarray:
        return self._waypoint()[None]

    @abc.abstractmethod
    def _waypoint(self) -> np.ndarray:
        """The next joint waypoint (23,), before clipping to the limits."""


class StillPolicy(_Baseline):
    """Holds the first observed joints (does nothing)."""

    name = "still"

    def _waypoint(self) -> np.ndarray:
        return self._first.copy()


class RandomPolicy(_Baseline):
    """Uniform random joint changes around the current joints, within the limits."""

    name = "random"

    def __init__(self, joint_limits: tuple[np.ndarray, np.ndarray], waypoint_duration_s: float, step_arm: float,
                 step_hand: float, seed: int = 0) -> None:
        if not (step_arm >= 0 and step_hand >= 0):
            raise ValueError(f"random steps must be >= 0 rad, found arm {step_arm}, hand {step_hand}")
        self.step = np.where(np.arange(NUM_ROBOT_JOINTS) < NUM_ARM_JOINTS, float(step_arm), float(step_hand))
        self.seed(seed)
        super().__init__(joint_limits, waypoint_duration_s)

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(int(seed))

    def _waypoint(self) -> np.ndarray:
        return self._joints + self.rng.uniform(-1.0, 1.0, NUM_ROBOT_JOINTS) * self.step
