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

import numpy as np
import torch

from dexwm_planner.baselines.diffusion_policy.model import DiffusionPolicy
from dexwm_planner.benchmark.policy_controller import PolicyController


class DiffusionPolicyController(PolicyController):
    """Runs a :class:`DiffusionPolicy` as a goal-image controller."""

    name = "diffusion"

    def __init__(self, policy: DiffusionPolicy, joint_limits: tuple[np.ndarray, np.ndarray], execute_steps: int,
                 waypoint_duration_s: float, seed: int = 0, device: str | torch.device = "cpu") -> None:
        if isinstance(execute_steps, bool) or not isinstance(execute_steps, int) or \
                not 1 <= execute_steps <= policy.horizon:
            raise ValueError(f"execute_steps: expected an integer in 1..{policy.horizon} (the chunk length), found "
                             f"{execute_steps!r}")
        self.device = torch.device(device)
        self.policy = policy.to(self.device).eval()
        self.seed(seed)
        super().__init__(joint_limits, waypoint_duration_s, execute_steps)

    def seed(self, seed: int) -> None:
        """Re-seed the sampling noise (the harness does this per episode)."""
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))

    def reset(self) -> None:
        super().reset()
        self._goal_tokens: torch.Tensor | None = None
        self._tokens: torch.Tensor | None = None

    def _encode(self, image: np.ndarray) -> torch.Tensor:
        return self.policy.encode(torch.from_numpy(np.ascontiguousarray(image))[None].to(self.device))

    def _on_goal(self, goal_image: np.ndarray) -> None:
        self._goal_tokens = self._encode(goal_image)

    def _on_observe(self, image: np.ndarray, joints: np.ndarray) -> None:
        self._tokens = self._encode(image)

    def _waypoints(self) -> np.ndarray:
        joints = torch.as_tensor(self._joints, dtype=torch.float32, device=self.device)[None]
        chunk = self.policy.sample(self._tokens, self._goal_tokens, joints, generator=self.generator)
        return chunk[0].double().cpu().numpy()
