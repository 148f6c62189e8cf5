"""One closed-loop episode: render -> observe -> plan -> execute the waypoint(s) -> ... until the task's success
test has held for ``hold_ticks`` control ticks or ``max_steps`` replans were made; then classify a failure.

The success monitor is fed every control tick (:class:`~dexwm_planner.tasks.success.TaskMonitor`, the same
tests as the scripted demonstrator). Failure categories (the paper's: last-centimetre errors, latent drift,
dropped objects; plus "no contact" for grasp / place), flags computed for every failed episode, the category is
the first flag that holds in this order:

* ``dropped_object`` (grasp, place): the object was lifted in the hand at some tick and later lost;
* ``no_contact`` (grasp, place): the hand never touched the target object;
* ``last_centimetre``: the task's final distance (reach: hand points to goal; grasp: wrist to object; place:
  object to goal spot) is within ``near_miss_factor`` x the success threshold;
* ``latent_drift``: the world model's prediction error (predicted latent of the frame after the executed
  waypoints vs the observed one) grows: mean of the last third of the replans > ``drift_growth`` x the first;
* otherwise ``other``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dexwm_robot.config import ConfigError, load_section
from dexwm_planner.tasks.config import SuccessConfig
from dexwm_planner.tasks.success import TaskMonitor

FAILURE_ORDER = ("dropped_object", "no_contact", "last_centimetre", "latent_drift")
# the task's own distance and the success threshold it is compared with
TASK_DISTANCE = {"reach": ("reach_distance", "reach_distance"),
                 "grasp": ("wrist_object_distance", "grasp_wrist_distance"),
                 "place": ("place_distance", "place_distance")}


@dataclass
class BenchConfig:
    """Section ``bench`` of ``config/mpc.yaml``."""

    near_miss_factor: float = 2.0
    drift_growth: float = 2.0
    drift_min_replans: int = 3
    random_step_arm: float = 0.15
    random_step_hand: float = 0.1
    gif_fps: float = 4.0
    keypoint_radius_px: int = 3

    def __post_init__(self) -> None:
        for name in ("near_miss_factor", "drift_growth", "gif_fps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError(f"bench.{name}: expected a number > 0, found {v!r}")
        for name in ("random_step_arm", "random_step_hand"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(f"bench.{name}: expected a number of radians >= 0, found {v!r}")
        for name in ("drift_min_replans", "keypoint_radius_px"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"bench.{name}: expected a positive integer, found {v!r}")


def load_bench_config(file: str | Path = "mpc.yaml") -> BenchConfig:
    return load_section(BenchConfig, file, "bench")


@dataclass
class EpisodeResult:
    record: dict[str, Any]  # the per-episode JSON
    frames: list[np.ndarray] = field(default_factory=list)  # recording (one frame per replan + the end)


class _ContactWatch:
    """Per tick: has the hand touched the object, held it lifted, and lost it after lifting?"""

    def __init__(self, lift_height: float) -> None:
        self.lift_height = lift_height
        self.touched = False
        self.lifted = False
        self.dropped = False

    def update(self, m: dict) -> None:
        contact = m["contacts"] > 0
        self.touched |= contact
        held = contact and m["object_rise"] >= self.lift_height
        if held:
            self.lifted = True
        elif self.lifted and not contact and m["object_rise"] < self.lift_height:
            self.dropped = True


def drift_ratio(errors: list[float], min_replans: int) -> float | None:
    """Mean prediction error of the last third of the replans over that of the first third (None: too few)."""
    e = [x for x in errors if x is not None and math.isfinite(x)]
    if len(e) < max(3, min_replans):
        return None
    k = max(1, len(e) // 3)
    first, last = float(np.mean(e[:k])), float(np.mean(e[-k:]))
    if first <= 0:
        return math.inf if last > 0 else 1.0
    return last / first


def classify_failure(task: str, success: bool, final: dict, success_cfg: SuccessConfig, watch: _ContactWatch,
                     errors: list[float], cfg: BenchConfig) -> dict:
    """Failure flags and the category (see module doc); ``{"category": None}`` for a success."""
    key, thr_name = TASK_DISTANCE[task]
    threshold = float(getattr(success_cfg, thr_name))
    distance = final.get(key)
    ratio = drift_ratio(errors, cfg.drift_min_replans)
    flags: dict[str, bool | None] = {
        "dropped_object": watch.dropped if task != "reach" else None,
        "no_contact": (not watch.touched) if task != "reach" else None,
        "last_centimetre": distance is not None and distance < cfg.near_miss_factor * threshold,
        "latent_drift": ratio is not None and ratio > cfg.drift_growth,
    }
    out = {"category": None, "flags": flags, "distance": distance, "threshold": threshold,
           "drift_ratio": None if ratio is None else round(ratio, 4)}
    if not success:
        out["category"] = next((f for f in FAILURE_ORDER if flags[f]), "other")
    return out


def _r(x: Any, nd: int = 5) -> Any:
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def run_closed_loop(sim, spec, policy, success_cfg: SuccessConfig, bench_cfg: BenchConfig, max_steps: int,
                    recorder: Callable[..., np.ndarray] | None = None, run_recording=None,
                    privileged_goal_keypoints: bool = False) -> EpisodeResult:
    """Run ``policy`` (a :class:`~dexwm_planner.mpc.GoalImageMPC` or a baseline) on one built suite episode
    ``spec`` (an :class:`~dexwm_planner.tasks.episodes.EpisodeSpec` with its goal image) in ``sim``.

    ``recorder(image, goal_image, step, text)`` (optional) returns one recording frame per replan;
    ``run_recording`` (optional, a :class:`~dexwm_planner.recording.RunRecording`) receives the goal, every replan
    (camera frame, joints, plan, task distance) and the final frame, and is left open for the caller to close.
    ``privileged_goal_keypoints`` (diagnostic; world-model planner only): the goal hand pixels come from the FK
    projection of the episode's goal state instead of the hand head on the goal image."""
    if spec.goal_image is None:
        raise ValueError(f"{spec.task} episode {spec.index}: no goal image (its demonstration failed)")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps: expected a positive integer, found {max_steps!r}")
    t_start = time.perf_counter()
    task = spec.task
    sim.reset(spec.seed, joints=spec.start_joints)
    monitor = TaskMonitor(spec.goal(), success_cfg)
    watch = _ContactWatch(success_cfg.lift_height)
    key, _ = TASK_DISTANCE[task]

    def on_tick(s) -> None:
        monitor.update(s)
        watch.update(monitor.last)

    if privileged_goal_keypoints:
        planner = getattr(policy, "planner", None)
        if planner is None:
            raise ValueError("privileged_goal_keypoints: only the world-model planner takes goal keypoints")
        goal_q = torch.as_tensor(np.asarray(spec.goal_joints, dtype=np.float64))
        policy.set_goal(spec.goal_image, task, goal_keypoints=planner.kin.hand_pixels(goal_q).numpy())
    else:
        policy.set_goal(spec.goal_image, task)
    if run_recording is not None:
        run_recording.log_goal(spec.goal_image)
    duration = float(policy.waypoint_duration_s)
    steps: list[dict] = []
    frames: list[np.ndarray] = []
    ticks = 0
    for i in range(max_steps):
        a = time.perf_counter()
        image = sim.render()
        b = time.perf_counter()
        t_obs = sim.time
        q_obs = np.array(sim.joints, dtype=np.float64)
        policy.observe(image, q_obs, t_obs)
        c = time.perf_counter()
        st = policy.plan()
        d = time.perf_counter()
        record_s = None
        if run_recording is not None:
            record_s = run_recording.log_step(i, image, q_obs, st, t=t_obs,
                                              scalars={f"{key}_m": monitor.last.get(key)})
        if recorder is not None:
            dist = monitor.last.get(key)
            text = f"{task} ep {spec.index}  step {i}  cost {st.cost:.3g}" + \
                   (f"  d {dist:.3f} m" if dist is not None else "")
            frames.append(recorder(image, spec.goal_image, st, text))
        step_ticks = 0
        for wp in st.waypoints:
            step_ticks += sim.move_to(wp, duration=duration, on_tick=on_tick)
        ticks += step_ticks
        last_iter = st.info.get("iterations") or []
        steps.append({
            "step": i, "t": round(float(t_obs), 4),
            "cost": _r(st.cost, 6), "best_cost_per_iteration": [_r(s["best_cost"], 6) for s in last_iter],
            "warm_started": bool(st.info.get("warm_started", False)),
            "prediction_error": _r(st.info.get("prediction_error"), 6),
            "render_s": round(b - a, 5), "observe_s": round(c - b, 5), "plan_s": round(d - c, 5),
            "planning_time_s": round(float(st.planning_time_s), 5), "ticks": step_ticks,
            "rerun_log_s": None if record_s is None else round(record_s, 5),
            "distance": _r(monitor.last.get(key)),
        })
        if monitor.success:
            break
    errors = list(getattr(policy, "prediction_errors", []) or [])
    summary = monitor.summary()
    success = bool(summary["success"])
    failure = classify_failure(task, success, summary["final"], success_cfg, watch, errors, bench_cfg)
    if run_recording is not None:
        run_recording.log_step(len(steps), sim.render(), np.array(sim.joints, dtype=np.float64), None, t=sim.time,
                               scalars={f"{key}_m": monitor.last.get(key)})
        run_recording.note(f"{task} episode {spec.index}: "
                           + ("SUCCESS" if success else f"FAILED ({failure['category']})")
                           + f" after {len(steps)} replans")
    if recorder is not None:
        end = sim.render()
        frames.append(recorder(end, spec.goal_image, None,
                               f"{task} ep {spec.index}  {'SUCCESS' if success else 'FAILED: ' + failure['category']}"
                               f"  after {len(steps)} replans"))
    loop_s = sum(s["render_s"] + s["observe_s"] + s["plan_s"] for s in steps)
    plan_s = sum(s["plan_s"] for s in steps)
    tracker = monitor.trackers[task]
    record = {
        "task": task, "episode": spec.index, "seed": spec.seed, "object": spec.object_name,
        "success": success, **{t: bool(summary[t]) for t in monitor.tests},
        "success_tick": tracker.success_tick, "held_ticks": summary["held_ticks"],
        "steps": len(steps), "ticks": ticks, "sim_time_s": round(ticks * sim.control_dt, 3),
        "final": summary["final"], "best": summary["best"],
        "final_distance": failure["distance"], "threshold": failure["threshold"],
        "failure": {k: failure[k] for k in ("category", "flags", "drift_ratio")},
        "touched_object": watch.touched, "lifted_object": watch.lifted,
        "costs": [s["cost"] for s in steps],
        "planning_time_s": [s["planning_time_s"] for s in steps],
        "prediction_errors": [_r(e, 6) for e in errors],
        "loop_rate_hz": round(len(steps) / loop_s, 3) if loop_s > 0 else None,
        "plan_rate_hz": round(len(steps) / plan_s, 3) if plan_s > 0 else None,
        "wall_s": round(time.perf_counter() - t_start, 3),
        "replans": steps,
    }
    return EpisodeResult(record=record, frames=frames)
