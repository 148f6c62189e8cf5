"""The safety layer's workspace box as a planning cost: plans the safety layer would reject cost more.

The safety node (``dexwm_safety``) rejects a waypoint when a hand site (``workspace_points``) leaves the box
``workspace_min..workspace_max`` (robot base frame = the FK's world frame) anywhere along the straight joint-space
path to it, checked at ``workspace_path_samples`` points. The planner reads the same box from the same file
(``config/controllers.yaml``, one source of truth) shrunk by ``cost.workspace_margin`` and charges every sample
``cost.workspace_weight`` x the metres its checked points lie outside, summed over points, path samples and steps.
Inside the box the term is exactly 0, so it changes nothing for plans the safety layer accepts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class PlanWorkspace:
    def __init__(self, fk, lower: Sequence[float], upper: Sequence[float], point_names: Sequence[str],
                 path_samples: int) -> None:
        lo = torch.as_tensor(lower, dtype=torch.float64)
        hi = torch.as_tensor(upper, dtype=torch.float64)
        if lo.shape != (3,) or hi.shape != (3,) or bool((lo >= hi).any()):
            raise ValueError(f"workspace: expected lower < upper (3 values each), found {lo.tolist()} and "
                             f"{hi.tolist()} (is cost.workspace_margin larger than half the box?)")
        if path_samples < 1:
            raise ValueError(f"workspace path_samples: expected >= 1, found {path_samples}")
        unknown = [n for n in point_names if n not in set(fk.site_names)]
        if unknown:
            raise ValueError(f"workspace_points: unknown FK site(s) {unknown}")
        self.fk = fk
        self.lower, self.upper = lo, hi
        self.point_names = list(point_names)
        self.path_samples = int(path_samples)

    @classmethod
    def from_safety_config(cls, fk, margin: float) -> "PlanWorkspace":
        """The box of ``config/controllers.yaml`` (section ``dexwm_safety``) shrunk by ``margin`` metres."""
        from dexwm_hw.safety.config import load_safety_config

        cfg = load_safety_config()
        lower = [v + margin for v in cfg.workspace_min]
        upper = [v - margin for v in cfg.workspace_max]
        return cls(fk, lower, upper, cfg.workspace_points, cfg.workspace_path_samples)

    def violation(self, current: Tensor, samples: Tensor) -> Tensor:
        """Metres outside the box ``(N,)`` of waypoint sequences ``samples (N, T, 23)`` starting at ``current
        (23,)``, checked along each joint-space segment as the safety layer checks it."""
        n, t, d = samples.shape
        dtype = samples.dtype
        prev = torch.cat([current.to(samples)[None, None].expand(n, 1, d), samples[:, :-1]], dim=1)
        fractions = torch.arange(1, self.path_samples + 1, dtype=dtype, device=samples.device) / self.path_samples
        path = prev[:, :, None] + fractions[None, None, :, None] * (samples - prev)[:, :, None]  # (N, T, S, 23)
        pts = self.fk.positions(path.reshape(-1, d), self.point_names)  # (N T S, P, 3)
        lo = self.lower.to(pts)
        hi = self.upper.to(pts)
        outside = (torch.relu(lo - pts) + torch.relu(pts - hi)).sum(dim=(-1, -2))
        return outside.view(n, t * self.path_samples).sum(-1)
