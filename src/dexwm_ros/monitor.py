"""Ground-truth success tests of a RunTask goal from what the ROS graph measures (no simulator object).

The paper's tests (:mod:`dexwm_planner.tasks.success`, thresholds and the hold count from ``config/tasks.yaml``)
evaluated on every ``/joint_states`` message (one per control tick) while a goal runs:

- reach: forward kinematics of the measured joints -> wrist + 4 fingertips; mean distance to the goal's
  (``goal_keypoints``) below ``reach_distance``;
- place: the target object's position (``/dexwm/sim/object_poses``) within ``place_distance`` of
  ``target_position``;
- grasp: the wrist within ``grasp_wrist_distance`` of the object *and* the object lifted at least ``lift_height``
  above where it rested when the goal started. Hand-object contact is not published on any topic; an object that
  rose while the wrist is next to it is the observable evidence of it (the "lifted" variant of the test).

Positions are in the scene's world frame (the simulator's ``world``; forward kinematics' frame).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from dexwm_model.kinematics.panda_allegro import PandaAllegroFK
from dexwm_planner.tasks.config import SuccessConfig
from dexwm_planner.tasks.success import REACH_SITES, SuccessTracker

REACH_SITE_NAMES = tuple(f"allegro/{s}" for s in REACH_SITES)  # wrist, th_tip, ff_tip, mf_tip, rf_tip
WRIST = "allegro/wrist"


@dataclass
class GroundTruth:
    """What a goal gives to judge success by (world frame); a test runs only when its inputs are given."""

    task: str
    goal_points: np.ndarray | None = None     # (5, 3) wrist + 4 fingertips (reach)
    object_name: str = ""
    target_position: np.ndarray | None = None  # (3,) (place)

    @property
    def available(self) -> bool:
        if self.task == "reach":
            return self.goal_points is not None
        if self.task == "place":
            return self.target_position is not None and bool(self.object_name)
        return bool(self.object_name)  # grasp: the object's pose is enough


class TaskMonitor:
    """Feed joint states (and object positions); ``held`` counts consecutive passing ticks (thread-safe)."""

    def __init__(self, truth: GroundTruth, cfg: SuccessConfig, fk: PandaAllegroFK) -> None:
        self.truth = truth
        self.cfg = cfg
        self.fk = fk
        self.tracker = SuccessTracker(cfg.hold_ticks)
        self.rest_height: float | None = None
        self.last: dict[str, float] = {}
        self._lock = threading.Lock()

    def hand_points(self, q: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            pts = self.fk.positions(torch.as_tensor(q, dtype=torch.float64), REACH_SITE_NAMES)
        return pts.cpu().numpy()

    def measure(self, q: np.ndarray, object_position: np.ndarray | None) -> tuple[bool | None, dict[str, float]]:
        """This instant's verdict (None: not decidable, e.g. no object pose yet) and the distances."""
        t = self.truth
        pts = self.hand_points(q)
        if t.task == "reach":
            d = float(np.linalg.norm(pts - t.goal_points, axis=1).mean())
            return d < self.cfg.reach_distance, {"keypoint_distance_m": d}
        if object_position is None:
            return None, {}
        obj = np.asarray(object_position, dtype=np.float64)
        if t.task == "place":
            d = float(np.linalg.norm(obj - t.target_position))
            return d < self.cfg.place_distance, {"object_distance_m": d}
        if self.rest_height is None:
            self.rest_height = float(obj[2])
        wrist = float(np.linalg.norm(pts[0] - obj))
        rise = float(obj[2] - self.rest_height)
        passed = wrist < self.cfg.grasp_wrist_distance and rise >= self.cfg.lift_height
        return passed, {"wrist_object_distance_m": wrist, "object_rise_m": rise}

    def update(self, q: np.ndarray, object_position: np.ndarray | None = None) -> int:
        """One control tick; returns the consecutive passing ticks so far."""
        verdict, values = self.measure(q, object_position)
        with self._lock:
            if verdict is not None:
                self.tracker.update(bool(verdict))
                self.last = values
            return self.tracker.held

    @property
    def held(self) -> int:
        with self._lock:
            return self.tracker.held

    @property
    def success(self) -> bool:
        with self._lock:
            return self.tracker.success

    def metrics(self) -> dict[str, float]:
        with self._lock:
            return {k: v for k, v in self.last.items() if math.isfinite(v)}


class CostMonitor:
    """Success by the planning cost alone (goals without ground truth): the observation's cost below
    ``threshold`` for ``hold`` consecutive replans; a threshold of 0 never passes."""

    def __init__(self, threshold: float, hold: int) -> None:
        self.threshold = float(threshold)
        self.tracker = SuccessTracker(hold)

    def update(self, cost: float) -> int:
        self.tracker.update(self.threshold > 0 and math.isfinite(cost) and cost < self.threshold)
        return self.tracker.held

    @property
    def held(self) -> int:
        return self.tracker.held

    @property
    def success(self) -> bool:
        return self.tracker.success
