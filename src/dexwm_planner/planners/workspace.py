"""The safety layer's workspace box as a planning cost: plans the safety layer would reject cost more.

The safety node (``dexwm_safety``) rejects a waypoint when a hand site (``workspace_points``) leaves the box
``workspace_min..workspace_max`` (robot base frame = the FK's world frame) anywhere along the straight joint-space
path to it, checked at ``workspace_path_samples`` points. The planner reads the same box from the same file
(``config/controllers.yaml``, one source of truth) shrunk by ``cost.workspace_margin`` and charges every sample
``cost.workspace_weight`` x the metres its checked points lie outside, summed over points, path samples and steps.
Inside the box the term is exactly 0, so it changes nothing for plans the safety layer accepts. The box, its margin,
the sampled path and the distance outside are the safety layer's own definitions
(:class:`dexwm_hw.safety.workspace.BoxSpec`, :func:`~dexwm_hw.safety.workspace.joint_path`,
:func:`~dexwm_hw.safety.workspace.excess`), in torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from dexwm_hw.safety.workspace import BoxSpec, excess, joint_path, shrink


def workspace_floor() -> float:
    """The floor of the safety layer's workspace box (``config/controllers.yaml``): the table top, m."""
    from dexwm_hw.safety.config import load_safety_config

    return float(load_safety_config().workspace_min[2])


class PlanWorkspace:
    def __init__(self, fk, lower: Sequence[float], upper: Sequence[float], point_names: Sequence[str],
                 path_samples: int) -> None:
        try:
            self.spec = BoxSpec.make(lower, upper, point_names, path_samples)
        except ValueError as exc:
            if "path_samples" in str(exc):
                raise ValueError(f"workspace path_samples: expected >= 1, found {path_samples}") from None
            raise ValueError(f"workspace: expected lower < upper (3 values each), found "
                             f"{np.asarray(lower, dtype=np.float64).tolist()} and "
                             f"{np.asarray(upper, dtype=np.float64).tolist()} (is cost.workspace_margin larger than "
                             "half the box?)") from None
        unknown = [n for n in point_names if n not in set(fk.site_names)]
        if unknown:
            raise ValueError(f"workspace_points: unknown FK site(s) {unknown}")
        self.fk = fk
        self.lower, self.upper = torch.as_tensor(self.spec.lower), torch.as_tensor(self.spec.upper)
        self.point_names = list(self.spec.point_names)
        self.path_samples = self.spec.path_samples

    @classmethod
    def from_safety_config(cls, fk, margin: float) -> "PlanWorkspace":
        """The box of ``config/controllers.yaml`` (section ``dexwm_safety``) shrunk by ``margin`` metres."""
        from dexwm_hw.safety.config import load_safety_config

        cfg = load_safety_config()
        lower, upper = shrink(cfg.point_lower(), cfg.workspace_max, margin)
        return cls(fk, lower, upper, cfg.workspace_points, cfg.workspace_path_samples)

    def violation(self, current: Tensor, samples: Tensor) -> Tensor:
        """Metres outside the box ``(N,)`` of waypoint sequences ``samples (N, T, 23)`` starting at ``current
        (23,)``, checked along each joint-space segment as the safety layer checks it."""
        n, t, d = samples.shape
        prev = torch.cat([current.to(samples)[None, None].expand(n, 1, d), samples[:, :-1]], dim=1)
        path = joint_path(prev, samples, self.path_samples)  # (N, T, S, 23)
        pts = self.fk.positions(path.reshape(-1, d), self.point_names)  # (N T S, P, 3)
        outside = excess(pts, self.lower.to(pts), self.upper.to(pts)).sum(dim=(-1, -2))
        return outside.view(n, t * self.path_samples).sum(-1)
