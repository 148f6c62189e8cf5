"""Baselines run by the same harness as the world-model MPC (same interface: ``set_goal``, ``observe``, ``plan``,
``reset``, ``execute_steps``, ``waypoint_duration_s``; ``plan`` returns an :class:`~dexwm_planner.mpc.MPCStep`).

* ``still``: does nothing -- holds the joints it first observed after the goal was set;
* ``random``: a random joint waypoint near the current joints (uniform change of up to ``random_step_arm`` /
  ``random_step_hand`` rad per joint), within the joint limits.
Neither looks at the images (the harness still renders them, so recordings and timings stay comparable).
"""

from __future__ import annotations

import abc
import time

import numpy as np

from dexwm_model.kinematics.panda_allegro import NUM_ROBOT_JOINTS
from dexwm_planner.mpc import TASK_NAMES, MPCNotReady, MPCStep, _check_joints, check_image

NUM_ARM_JOINTS = 7


class _Baseline(abc.ABC):
    name = "baseline"

    def __init__(self, joint_limits: tuple[np.ndarray, np.ndarray], waypoint_duration_s: float) -> None:
        low, high = (np.asarray(v, dtype=np.float64) for v in joint_limits)
        if low.shape != (NUM_ROBOT_JOINTS,) or high.shape != (NUM_ROBOT_JOINTS,) or not (low <= high).all():
            raise ValueError(f"joint_limits: expected two ({NUM_ROBOT_JOINTS},) vectors with low <= high, found "
                             f"shapes {low.shape} and {high.shape}")
        if not waypoint_duration_s > 0:
            raise ValueError(f"waypoint_duration_s: expected > 0, found {waypoint_duration_s}")
        self.low, self.high = low, high
        self.waypoint_duration_s = float(waypoint_duration_s)
        self.execute_steps = 1
        self.task: str | None = None
        self.reset()

    def reset(self) -> None:
        self._goal_set = False
        self._joints: np.ndarray | None = None
        self._first: np.ndarray | None = None
        self._t: float | None = None
        self._replans = 0

    def set_goal(self, goal_image: np.ndarray, task: str, goal_keypoints: np.ndarray | None = None) -> None:
        check_image(goal_image, "set_goal: goal_image")
        if task not in TASK_NAMES:
            raise ValueError(f"set_goal: task must be one of {TASK_NAMES}, found {task!r}")
        self.reset()
        self.task = task
        self._goal_set = True

    def observe(self, image: np.ndarray, joints: np.ndarray, t: float) -> None:
        check_image(image, "observe: image")
        q = _check_joints(joints)
        t = float(t)
        if self._t is not None and t < self._t:
            raise ValueError(f"observe: time went backwards: t = {t:.6f} s is before the previous observation's "
                             f"{self._t:.6f} s")
        self._t, self._joints = t, q
        if self._first is None:
            self._first = q.copy()

    @abc.abstractmethod
    def _waypoint(self) -> np.ndarray:
        """The next joint waypoint (23,), before clipping to the limits."""

    def plan(self) -> MPCStep:
        if not self._goal_set:
            raise MPCNotReady("plan: no goal set (call set_goal(goal_image, task) first)")
        if self._joints is None:
            raise MPCNotReady("plan: no camera frame observed since the goal was set")
        t0 = time.perf_counter()
        wp = np.clip(self._waypoint(), self.low, self.high)
        info = {"task": self.task, "replan": self._replans, "policy": self.name, "warm_started": False,
                "elite_costs": [], "terms": {}, "prediction_error": None}
        self._replans += 1
        return MPCStep(waypoints=wp[None], plan=wp[None], cost=float("nan"), predicted_keypoints=None,
                       planning_time_s=time.perf_counter() - t0, info=info)


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
