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
from dexwm_planner.tasks.runner import Executed, Observation, Replan, Stop, TaskRun, finite_or_none, run_task
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
    run: TaskRun | None = None  # the runner's account (stop reason, replans), not part of the JSON


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


_r = finite_or_none


class SimPort:
    """The MuJoCo simulator as the runner's robot port: observations are renders, a waypoint is ``sim.move_to``
    (the success monitor and the contact watch fed every control tick); ``recorder`` / ``run_recording`` as in
    :func:`run_closed_loop`, which builds the episode's JSON from the per-replan ``steps``."""

    def __init__(self, sim, spec, monitor: TaskMonitor, watch: _ContactWatch, recorder=None,
                 run_recording=None) -> None:
        self.sim, self.spec, self.monitor, self.watch = sim, spec, monitor, watch
        self.recorder, self.run_recording = recorder, run_recording
        self.key = TASK_DISTANCE[spec.task][0]
        self.steps: list[dict] = []
        self.frames: list[np.ndarray] = []

    def clock(self) -> float:
        return time.perf_counter()

    def stop_reason(self) -> Stop | None:
        return None  # a simulator has no e-stop, stale camera or cancel

    def succeeded(self) -> bool:
        return self.monitor.success

    def observe(self, interrupt) -> Observation:
        a = time.perf_counter()
        image = self.sim.render()
        b = time.perf_counter()
        return Observation(image=image, joints=np.array(self.sim.joints, dtype=np.float64), t=self.sim.time,
                           wait_s=b - a)

    def planning(self, loop) -> None:
        pass

    def planned(self, replan: Replan, loop) -> None:
        obs, st, i = replan.observation, replan.step, replan.index
        replan.observation.extra["record_s"] = None
        if self.run_recording is not None:
            replan.observation.extra["record_s"] = self.run_recording.log_step(
                i, obs.image, obs.joints, st, t=obs.t, scalars={f"{self.key}_m": self.monitor.last.get(self.key)})
        if self.recorder is not None:
            dist = self.monitor.last.get(self.key)
            text = f"{self.spec.task} ep {self.spec.index}  step {i}  cost {st.cost:.3g}" + \
                   (f"  d {dist:.3f} m" if dist is not None else "")
            self.frames.append(self.recorder(obs.image, self.spec.goal_image, st, text))

    def executing(self, replan: Replan, loop) -> None:
        pass

    def _on_tick(self, s) -> None:
        self.monitor.update(s)
        self.watch.update(self.monitor.last)

    def execute(self, waypoint, duration: float, replan: Replan, i: int, interrupt) -> Executed:
        return Executed(executed=True, ticks=self.sim.move_to(waypoint, duration=duration, on_tick=self._on_tick))

    def executed(self, replan: Replan, loop) -> None:
        st, obs = replan.step, replan.observation
        last_iter = st.info.get("iterations") or []
        record_s = obs.extra.get("record_s")
        self.steps.append({
            "step": replan.index, "t": round(float(obs.t), 4),
            "cost": _r(st.cost, 6), "best_cost_per_iteration": [_r(s["best_cost"], 6) for s in last_iter],
            "warm_started": bool(st.info.get("warm_started", False)),
            "prediction_error": _r(st.info.get("prediction_error"), 6),
            "render_s": round(obs.wait_s, 5), "observe_s": round(replan.observe_s, 5),
            "plan_s": round(replan.plan_s, 5),
            "planning_time_s": round(float(st.planning_time_s), 5), "ticks": replan.ticks,
            "rerun_log_s": None if record_s is None else round(record_s, 5),
            "distance": _r(self.monitor.last.get(self.key)),
        })


def run_closed_loop(sim, spec, policy, success_cfg: SuccessConfig, bench_cfg: BenchConfig, max_steps: int,
                    recorder: Callable[..., np.ndarray] | None = None, run_recording=None,
                    privileged_goal_keypoints: bool = False) -> EpisodeResult:
    """Run ``policy`` (a :class:`~dexwm_planner.mpc.GoalImageMPC` or a baseline) on one built suite episode
    ``spec`` (an :class:`~dexwm_planner.tasks.episodes.EpisodeSpec` with its goal image) in ``sim``, through the
    task runner (:func:`dexwm_planner.tasks.runner.run_task`) with the simulator as its port (:class:`SimPort`).

    ``recorder(image, goal_image, step, text)`` (optional) returns one recording frame per replan;
    ``run_recording`` (optional, a :class:`~dexwm_planner.recording.RunRecording`) receives the goal, every replan
    (camera frame, joints, plan, task distance) and the final frame, and is left open for the caller to close.
    ``privileged_goal_keypoints`` (diagnostic; world-model planner only): the goal hand pixels come from the FK
    projection of the episode's goal state instead of the hand head on the goal image (and, for the depth term, their
    camera depths instead of the hand depth head's)."""
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

    if privileged_goal_keypoints:
        planner = getattr(policy, "planner", None)
        if planner is None:
            raise ValueError("privileged_goal_keypoints: only the world-model planner takes goal keypoints")
        goal_q = torch.as_tensor(np.asarray(spec.goal_joints, dtype=np.float64))
        policy.set_goal(spec.goal_image, task, goal_keypoints=planner.kin.hand_pixels(goal_q).numpy(),
                        goal_depth=planner.kin.hand_depths(goal_q).numpy())
    else:
        policy.set_goal(spec.goal_image, task)
    if run_recording is not None:
        run_recording.log_goal(spec.goal_image)
    port = SimPort(sim, spec, monitor, watch, recorder, run_recording)
    run = run_task(port, policy, max_steps)
    steps, frames, ticks = port.steps, port.frames, run.ticks
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
    return EpisodeResult(record=record, frames=frames, run=run)
