"""What every controller of the closed-loop harness that is not the world-model MPC shares: the interface
(``set_goal``, ``observe``, ``plan``, ``reset``, ``execute_steps``, ``waypoint_duration_s``; ``plan`` returns an
:class:`~dexwm_planner.mpc.MPCStep`), its input checks, and the joint limits every commanded waypoint is clipped to.
A subclass says what a goal and a frame mean to it (``_on_goal``, ``_on_observe``) and gives the next waypoints
(``_waypoints``)."""

from __future__ import annotations

import abc
import time

import numpy as np

from dexwm_model.kinematics.panda_allegro import NUM_ROBOT_JOINTS
from dexwm_planner.mpc import TASK_NAMES, MPCNotReady, MPCStep, _check_joints, check_image


class PolicyController(abc.ABC):
    name = "policy"

    def __init__(self, joint_limits: tuple[np.ndarray, np.ndarray], waypoint_duration_s: float,
                 execute_steps: int = 1) -> None:
        low, high = (np.asarray(v, dtype=np.float64) for v in joint_limits)
        if low.shape != (NUM_ROBOT_JOINTS,) or high.shape != (NUM_ROBOT_JOINTS,) or not (low <= high).all():
            raise ValueError(f"joint_limits: expected two ({NUM_ROBOT_JOINTS},) vectors with low <= high, found "
                             f"shapes {low.shape} and {high.shape}")
        if not waypoint_duration_s > 0:
            raise ValueError(f"waypoint_duration_s: expected > 0, found {waypoint_duration_s}")
        self.low, self.high = low, high
        self.waypoint_duration_s = float(waypoint_duration_s)
        self.execute_steps = int(execute_steps)
        self.task: str | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the goal and the observations (a new episode)."""
        self._goal_set = False
        self._joints: np.ndarray | None = None
        self._t: float | None = None
        self._replans = 0

    def set_goal(self, goal_image: np.ndarray, task: str, goal_keypoints: np.ndarray | None = None) -> None:
        check_image(goal_image, "set_goal: goal_image")
        if task not in TASK_NAMES:
            raise ValueError(f"set_goal: task must be one of {TASK_NAMES}, found {task!r}")
        self.reset()
        self.task = task
        self._on_goal(goal_image)
        self._goal_set = True

    def observe(self, image: np.ndarray, joints: np.ndarray, t: float) -> None:
        check_image(image, "observe: image")
        q = _check_joints(joints)
        t = float(t)
        if self._t is not None and t < self._t:
            raise ValueError(f"observe: time went backwards: t = {t:.6f} s is before the previous observation's "
                             f"{self._t:.6f} s")
        self._on_observe(image, q)
        self._t, self._joints = t, q

    def plan(self) -> MPCStep:
        if not self._goal_set:
            raise MPCNotReady("plan: no goal set (call set_goal(goal_image, task) first)")
        if self._joints is None:
            raise MPCNotReady("plan: no camera frame observed since the goal was set")
        t0 = time.perf_counter()
        chunk = np.clip(self._waypoints(), self.low, self.high)
        info = {"task": self.task, "replan": self._replans, "policy": self.name, "warm_started": False,
                "elite_costs": [], "terms": {}, "prediction_error": None}
        self._replans += 1
        return MPCStep(waypoints=chunk[: self.execute_steps], plan=chunk, cost=float("nan"), predicted_keypoints=None,
                       planning_time_s=time.perf_counter() - t0, info=info)

    def _on_goal(self, goal_image: np.ndarray) -> None:
        """A new goal image (after ``reset``); nothing by default."""

    def _on_observe(self, image: np.ndarray, joints: np.ndarray) -> None:
        """A new camera frame and the joints at it (checked), before they become the current ones."""

    @abc.abstractmethod
    def _waypoints(self) -> np.ndarray:
        """The next joint waypoints (k, 23), before clipping to the limits; the first ``execute_steps`` are run."""
