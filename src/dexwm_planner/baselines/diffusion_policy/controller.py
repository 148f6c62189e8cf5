"""The Diffusion Policy in the closed-loop task harness (same interface as the world-model MPC and the other
baselines: ``set_goal``, ``observe``, ``plan``, ``reset``, ``execute_steps``, ``waypoint_duration_s``; ``plan``
returns an :class:`~dexwm_planner.mpc.MPCStep`).

Receding horizon: ``set_goal`` encodes the goal image once; ``observe`` encodes the current camera frame; ``plan``
samples one action chunk (DDIM) from (current frame, goal, current joints) and hands the harness its first
``execute_steps`` joint targets (clipped to the joint limits) to execute before the next frame is observed; the
full chunk is the step's ``plan``. The sampling noise comes from a generator re-seeded per episode (:meth:`seed`), so
a run is reproducible.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dexwm_model.kinematics.panda_allegro import NUM_ROBOT_JOINTS
from dexwm_planner.baselines.diffusion_policy.model import DiffusionPolicy
from dexwm_planner.mpc import TASK_NAMES, MPCNotReady, MPCStep, _check_joints, check_image


class DiffusionPolicyController:
    """Runs a :class:`DiffusionPolicy` as a goal-image controller."""

    name = "diffusion"

    def __init__(self, policy: DiffusionPolicy, joint_limits: tuple[np.ndarray, np.ndarray], execute_steps: int,
                 waypoint_duration_s: float, seed: int = 0, device: str | torch.device = "cpu") -> None:
        low, high = (np.asarray(v, dtype=np.float64) for v in joint_limits)
        if low.shape != (NUM_ROBOT_JOINTS,) or high.shape != (NUM_ROBOT_JOINTS,) or not (low <= high).all():
            raise ValueError(f"joint_limits: expected two ({NUM_ROBOT_JOINTS},) vectors with low <= high, found "
                             f"shapes {low.shape} and {high.shape}")
        if isinstance(execute_steps, bool) or not isinstance(execute_steps, int) or \
                not 1 <= execute_steps <= policy.horizon:
            raise ValueError(f"execute_steps: expected an integer in 1..{policy.horizon} (the chunk length), found "
                             f"{execute_steps!r}")
        if not waypoint_duration_s > 0:
            raise ValueError(f"waypoint_duration_s: expected > 0, found {waypoint_duration_s}")
        self.device = torch.device(device)
        self.policy = policy.to(self.device).eval()
        self.low, self.high = low, high
        self.execute_steps = int(execute_steps)
        self.waypoint_duration_s = float(waypoint_duration_s)
        self.task: str | None = None
        self._goal_tokens: torch.Tensor | None = None
        self.seed(seed)
        self.reset()

    def seed(self, seed: int) -> None:
        """Re-seed the sampling noise (the harness does this per episode)."""
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))

    def reset(self) -> None:
        self._tokens: torch.Tensor | None = None
        self._joints: np.ndarray | None = None
        self._t: float | None = None
        self._replans = 0

    def set_goal(self, goal_image: np.ndarray, task: str, goal_keypoints: np.ndarray | None = None) -> None:
        check_image(goal_image, "set_goal: goal_image")
        if task not in TASK_NAMES:
            raise ValueError(f"set_goal: task must be one of {TASK_NAMES}, found {task!r}")
        self.reset()
        self.task = task
        self._goal_tokens = self.policy.encode(torch.from_numpy(np.ascontiguousarray(goal_image))[None].to(self.device))

    def observe(self, image: np.ndarray, joints: np.ndarray, t: float) -> None:
        check_image(image, "observe: image")
        q = _check_joints(joints)
        t = float(t)
        if self._t is not None and t < self._t:
            raise ValueError(f"observe: time went backwards: t = {t:.6f} s is before the previous observation's "
                             f"{self._t:.6f} s")
        self._tokens = self.policy.encode(torch.from_numpy(np.ascontiguousarray(image))[None].to(self.device))
        self._joints, self._t = q, t

    def plan(self) -> MPCStep:
        if self._goal_tokens is None:
            raise MPCNotReady("plan: no goal set (call set_goal(goal_image, task) first)")
        if self._tokens is None:
            raise MPCNotReady("plan: no camera frame observed since the goal was set")
        t0 = time.perf_counter()
        joints = torch.as_tensor(self._joints, dtype=torch.float32, device=self.device)[None]
        chunk = self.policy.sample(self._tokens, self._goal_tokens, joints, generator=self.generator)
        chunk = np.clip(chunk[0].double().cpu().numpy(), self.low, self.high)
        info = {"task": self.task, "replan": self._replans, "policy": self.name, "warm_started": False,
                "elite_costs": [], "terms": {}, "prediction_error": None}
        self._replans += 1
        return MPCStep(waypoints=chunk[: self.execute_steps], plan=chunk, cost=float("nan"), predicted_keypoints=None,
                       planning_time_s=time.perf_counter() - t0, info=info)
