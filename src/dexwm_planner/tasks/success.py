"""The paper's success tests for reach, grasp and place, and a tracker that requires them to hold.

Each test is evaluated once per control tick (20 Hz) on the simulator's true state; a task succeeds when its
test holds for ``hold_ticks`` consecutive ticks (10 in the paper). Thresholds live in ``config/tasks.yaml``.

- reach: mean distance of the wrist and the four fingertips to their goal positions < ``reach_distance``;
- grasp: wrist within ``grasp_wrist_distance`` of the object and the hand touching it; the stronger "lifted"
  variant additionally needs the object ``lift_height`` above its resting height (reported separately);
- place: object centre within ``place_distance`` of its goal position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dexwm_planner.tasks.config import TASKS, SuccessConfig, load_tasks_config

# wrist + four fingertips, the points the reach test compares (MuJoCo sites, prefixed "allegro/")
REACH_SITES = ("wrist", "th_tip", "ff_tip", "mf_tip", "rf_tip")


def hand_points(sim) -> np.ndarray:
    """World positions (5, 3) of the wrist and the four fingertips."""
    return np.stack([sim.site_pose(f"allegro/{s}")[0] for s in REACH_SITES])


@dataclass
class TaskGoal:
    """What a success test compares against (taken from an episode spec; never shown to a planner)."""

    task: str
    object_name: str
    rest_height: float  # the object's resting centre height at the start of the episode (lifted)
    goal_keypoints: np.ndarray | None = None  # (5, 3) wrist + fingertips at the goal (needed by reach)
    goal_object_position: np.ndarray | None = None  # (3,) (needed by place)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got '{self.task}'")
        if self.goal_keypoints is not None:
            self.goal_keypoints = np.asarray(self.goal_keypoints, dtype=np.float64)
            if self.goal_keypoints.shape != (len(REACH_SITES), 3):
                raise ValueError(f"goal_keypoints must have shape ({len(REACH_SITES)}, 3), "
                                 f"got {self.goal_keypoints.shape}")
        elif self.task == "reach":
            raise ValueError("a reach goal needs goal_keypoints (wrist + 4 fingertips, shape (5, 3))")
        if self.goal_object_position is not None:
            self.goal_object_position = np.asarray(self.goal_object_position, dtype=np.float64)
            if self.goal_object_position.shape != (3,):
                raise ValueError(f"goal_object_position must have shape (3,), got {self.goal_object_position.shape}")
        elif self.task == "place":
            raise ValueError("a place goal needs goal_object_position (shape (3,))")


def measure(sim, goal: TaskGoal, cfg: SuccessConfig) -> dict:
    """Every quantity the tests use, and each test's verdict for this instant."""
    pts = hand_points(sim)
    obj = sim.object_pose(goal.object_name).position
    contacts = sim.hand_contacts(goal.object_name)
    reach_d = (float(np.linalg.norm(pts - goal.goal_keypoints, axis=1).mean())
               if goal.goal_keypoints is not None else float("inf"))
    wrist_d = float(np.linalg.norm(pts[0] - obj))
    rise = float(obj[2] - goal.rest_height)
    place_d = (float(np.linalg.norm(obj - goal.goal_object_position))
               if goal.goal_object_position is not None else float("inf"))
    grasp = wrist_d < cfg.grasp_wrist_distance and contacts > 0
    return {
        "reach_distance": reach_d,
        "wrist_object_distance": wrist_d,
        "contacts": int(contacts),
        "object_rise": rise,
        "place_distance": place_d,
        "reach": reach_d < cfg.reach_distance,
        "grasp": grasp,
        "lifted": grasp and rise >= cfg.lift_height,
        "place": place_d < cfg.place_distance,
    }


class SuccessTracker:
    """Feed one verdict per control tick; success once it has held for ``hold_ticks`` consecutive ticks."""

    def __init__(self, hold_ticks: int) -> None:
        if int(hold_ticks) < 1:
            raise ValueError(f"hold_ticks must be >= 1, got {hold_ticks}")
        self.hold_ticks = int(hold_ticks)
        self.reset()

    def reset(self) -> None:
        self.held = 0  # current run of consecutive passing ticks
        self.max_held = 0
        self.ticks = 0
        self.success = False
        self.success_tick: int | None = None  # tick (1-based) at which the hold completed

    def update(self, passed: bool) -> bool:
        self.ticks += 1
        self.held = self.held + 1 if passed else 0
        self.max_held = max(self.max_held, self.held)
        if not self.success and self.held >= self.hold_ticks:
            self.success, self.success_tick = True, self.ticks
        return self.success


@dataclass
class TaskMonitor:
    """Per-tick evaluation of one task's tests (the task's own test, plus "lifted" for grasp)."""

    goal: TaskGoal
    cfg: SuccessConfig = field(default_factory=lambda: load_tasks_config().success)

    def __post_init__(self) -> None:
        self.trackers = {name: SuccessTracker(self.cfg.hold_ticks) for name in self.tests}
        self.last: dict = {}
        self.best: dict = {}

    @property
    def tests(self) -> tuple[str, ...]:
        return ("grasp", "lifted") if self.goal.task == "grasp" else (self.goal.task,)

    def update(self, sim) -> bool:
        m = measure(sim, self.goal, self.cfg)
        self.last = m
        for key in ("reach_distance", "wrist_object_distance", "place_distance"):
            self.best[key] = min(self.best.get(key, np.inf), m[key])
        self.best["object_rise"] = max(self.best.get("object_rise", -np.inf), m["object_rise"])
        for name, tracker in self.trackers.items():
            tracker.update(bool(m[name]))
        return self.success

    @property
    def success(self) -> bool:
        return self.trackers[self.goal.task].success

    def summary(self) -> dict:
        out = {name: t.success for name, t in self.trackers.items()}
        out["success"] = self.success
        out["held_ticks"] = self.trackers[self.goal.task].max_held
        if "lifted" in self.trackers:
            out["lifted_held_ticks"] = self.trackers["lifted"].max_held
        out["final"] = {k: _num(v) for k, v in self.last.items() if not isinstance(v, bool) and np.isfinite(v)}
        out["best"] = {k: _num(v) for k, v in self.best.items() if np.isfinite(v)}
        return out


def _num(v):
    return int(v) if isinstance(v, (int, np.integer)) else round(float(v), 5)
