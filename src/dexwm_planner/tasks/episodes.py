"""Task episodes: what a suite entry holds, and how an episode (start, goal state, goal image) is produced.

A suite entry is small and committed (``config/suites/<task>.json``): the scene seed, the target object and, for
reach and place, the drawn goal (hand pose / table spot). Everything else is regenerated from it, identically:
the scene layout (``sim.reset(seed)``), the start arm posture (home + seeded noise), the scripted demonstration
(verified grasp synthesis, seeded), and at its end the goal joint state, the goal object pose and the goal
image. The goal state is for scoring only; a planner sees the goal image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import mujoco
import numpy as np

from dexwm_planner.tasks.config import TASKS, TasksConfig, load_tasks_config
from dexwm_planner.tasks.demonstrator import Demonstrator, ReachGoal, demonstrator_for
from dexwm_planner.tasks.grasp import execute
from dexwm_planner.tasks.ik import robot_addresses
from dexwm_planner.tasks.success import REACH_SITES, TaskGoal, TaskMonitor, hand_points

# seed streams derived from an episode's scene seed (numpy SeedSequence entropy [seed, stream])
_STREAM_START, _STREAM_GOAL, _STREAM_DEMO = 1, 3, 4


@dataclass
class EpisodeSpec:
    task: str
    index: int
    seed: int  # scene seed: object layout (sim.reset) and every other random draw of the episode
    object_name: str  # the target object
    start_joints: np.ndarray  # (23,)
    goal_joints: np.ndarray  # (23,) at the end of the demonstration
    goal_object_position: np.ndarray  # (3,) target object at the end of the demonstration
    goal_object_quaternion: np.ndarray  # (4,) w, x, y, z
    goal_keypoints: np.ndarray  # (5, 3) wrist + 4 fingertips at the end of the demonstration
    rest_height: float  # target object's resting centre height at the start
    params: dict = field(default_factory=dict)  # the suite entry's drawn goal (reach_goal / place_goal)
    demo: dict = field(default_factory=dict)  # what the demonstration did (success, ticks, verifications)
    goal_image: np.ndarray | None = None  # (H, W, 3) uint8

    def goal(self) -> TaskGoal:
        """The success-test goal of this episode (its demonstrated end state)."""
        return TaskGoal(self.task, self.object_name, self.rest_height, self.goal_keypoints,
                        self.goal_object_position)

    def to_dict(self) -> dict:
        """JSON-able description (without the image)."""
        return {
            "task": self.task, "index": self.index, "seed": self.seed, "object": self.object_name,
            "start_joints": _r(self.start_joints), "goal_joints": _r(self.goal_joints),
            "goal_object_position": _r(self.goal_object_position),
            "goal_object_quaternion": _r(self.goal_object_quaternion),
            "goal_keypoints": _r(self.goal_keypoints), "rest_height": round(float(self.rest_height), 6),
            "params": self.params, "demo": self.demo,
        }

    @classmethod
    def from_dict(cls, d: dict, goal_image: np.ndarray | None = None) -> "EpisodeSpec":
        try:
            return cls(d["task"], int(d["index"]), int(d["seed"]), d["object"], np.asarray(d["start_joints"]),
                       np.asarray(d["goal_joints"]), np.asarray(d["goal_object_position"]),
                       np.asarray(d["goal_object_quaternion"]), np.asarray(d["goal_keypoints"]),
                       float(d["rest_height"]), d.get("params", {}), d.get("demo", {}), goal_image)
        except KeyError as exc:
            raise ValueError(f"episode spec is missing key {exc}") from exc


def _r(a: np.ndarray) -> list:
    return np.round(np.asarray(a, dtype=np.float64), 6).tolist()


def start_joints(seed: int, sim, cfg: TasksConfig) -> np.ndarray:
    """Home posture with the arm joints perturbed by seeded uniform noise (hand at home)."""
    rng = np.random.default_rng([int(seed), _STREAM_START])
    q = sim.scene_cfg.home.copy()
    q[:7] += rng.uniform(-cfg.suite.start_arm_noise, cfg.suite.start_arm_noise, size=7)
    return sim.clip(q)


def validate_entry(entry: dict, task: str, object_names: list[str]) -> None:
    """Raise a clear error if a suite entry is malformed."""
    where = f"{task} suite entry {entry.get('index', '?')}"
    for key in ("index", "seed", "object"):
        if key not in entry:
            raise ValueError(f"{where}: missing '{key}'")
    if entry["object"] not in object_names:
        raise ValueError(f"{where}: unknown object '{entry['object']}' (scene has {object_names})")
    if task == "reach" and "reach_goal" not in entry:
        raise ValueError(f"{where}: a reach entry needs 'reach_goal' {{palm, yaw, hand}}")
    if task == "place":
        goal = entry.get("place_goal")
        if goal is None or len(goal) != 2:
            raise ValueError(f"{where}: a place entry needs 'place_goal' [x, y], got {goal!r}")


def draw_entry(task: str, index: int, seed: int, sim, cfg: TasksConfig) -> dict | None:
    """A new suite entry for ``seed``: target object (round-robin over shapes) and, for reach/place, a goal.

    Leaves ``sim`` reset to the episode's start. None when no valid goal could be drawn.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got '{task}'")
    names = sim.object_names
    entry = {"index": int(index), "seed": int(seed), "object": names[index % len(names)]}
    sim.reset(seed, joints=start_joints(seed, sim, cfg))
    demo = demonstrator_for(sim, cfg)
    rng = np.random.default_rng([int(seed), _STREAM_GOAL])
    if task == "reach":
        goal = demo.draw_reach_goal(rng, entry["object"])
        if goal is None:
            return None
        entry["reach_goal"] = goal.as_dict()
    elif task == "place":
        xy = demo.draw_place_goal(rng, entry["object"])
        if xy is None:
            return None
        entry["place_goal"] = [round(float(v), 5) for v in xy]
    return entry


def solved_at_start(sim, spec: EpisodeSpec, cfg: TasksConfig | None = None) -> bool:
    """True when the episode's success test -- against the goal it is scored with (:meth:`EpisodeSpec.goal`, the
    demonstrated end state) -- already holds at its start state while the robot holds still for
    ``success.hold_ticks`` control ticks: such an episode tests nothing (holding still solves it), so the suite
    builder rejects it. Leaves ``sim`` at the episode's start (after the hold)."""
    cfg = cfg or load_tasks_config()
    sim.reset(spec.seed, joints=spec.start_joints)
    monitor = TaskMonitor(spec.goal(), cfg.success)
    sim.move_to(spec.start_joints, duration=(cfg.success.hold_ticks + 1) * sim.control_dt, on_tick=monitor.update)
    return bool(monitor.success)


def goal_keypoints_for(sim, joints: np.ndarray) -> np.ndarray:
    """Wrist + fingertip positions (5, 3) for a 23-joint posture (kinematics only; sim untouched)."""
    m = sim.model
    d = mujoco.MjData(m)
    d.qpos[:] = sim.data.qpos
    qadr, _ = robot_addresses(m)
    d.qpos[qadr] = joints
    mujoco.mj_kinematics(m, d)
    return np.stack([d.site(f"allegro/{s}").xpos.copy() for s in REACH_SITES])


def grasp_goal_waypoints(plan, cfg: TasksConfig) -> list[np.ndarray]:
    """The part of a verified lift a grasp episode's demonstration runs (``suite.grasp_goal``): up to the end of
    closing the hand on the resting object (closed), or the whole lift and hold (lifted)."""
    if cfg.suite.grasp_goal == "lifted":
        return plan.waypoints
    return plan.waypoints[: plan.grasp_index + 1 + cfg.grasp.close_ticks]


def run_episode(sim, task: str, entry: dict, cfg: TasksConfig | None = None, demo: Demonstrator | None = None,
                on_tick=None, render_goal: bool = True) -> tuple[EpisodeSpec, dict]:
    """Reset to the entry's start, plan and run the scripted demonstration, and take its end as the goal.

    Returns the episode spec (goal image rendered when ``render_goal`` and the demonstration succeeded) and
    an outcome dict (success tests against the entry's own goal, distances, timings). ``on_tick(sim)`` is
    called after every control tick of the demonstration.
    """
    cfg = cfg or load_tasks_config()
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got '{task}'")
    validate_entry(entry, task, sim.object_names)
    seed, name = int(entry["seed"]), entry["object"]
    start = start_joints(seed, sim, cfg)
    sim.reset(seed, joints=start)
    demo = demo or demonstrator_for(sim, cfg)
    rest = float(sim.object_pose(name).position[2])
    rng = np.random.default_rng([seed, _STREAM_DEMO])
    t0 = time.perf_counter()
    info: dict = {}
    params: dict = {}
    if task == "reach":
        goal = ReachGoal.from_dict(entry["reach_goal"])
        params["reach_goal"] = goal.as_dict()
        goal_q = demo.reach_goal_joints(goal)
        if goal_q is None:
            raise RuntimeError(f"reach entry {entry['index']}: no IK solution for its goal pose {goal.as_dict()} "
                               "(the entry was not made by `dexwm suite create` with this robot model)")
        waypoints = demo.plan_reach(goal)
        target = TaskGoal("reach", name, rest, goal_keypoints_for(sim, goal_q))
    elif task == "grasp":
        plan = demo.lift(name, rng)
        waypoints = None if plan is None else grasp_goal_waypoints(plan, cfg)
        if plan is not None:
            info = {"verifications": plan.verifications, "candidates": plan.candidates_ranked,
                    "grasp_candidate": plan.candidate.as_dict()}
        target = TaskGoal("grasp", name, rest)
    else:
        xy = np.asarray(entry["place_goal"], dtype=np.float64)
        params["place_goal"] = [float(v) for v in xy]
        plan = demo.plan_place(name, xy, rng)
        waypoints = None if plan is None else plan.waypoints
        if plan is not None:
            info = {"verifications": plan.lift.verifications, "candidates": plan.lift.candidates_ranked,
                    "grasp_candidate": plan.lift.candidate.as_dict()}
        target = TaskGoal("place", name, rest, goal_object_position=np.array([xy[0], xy[1], rest]))
    planning_s = time.perf_counter() - t0
    monitor = TaskMonitor(target, cfg.success)

    def tick(s) -> None:
        monitor.update(s)
        if on_tick is not None:
            on_tick(s)

    ticks = 0
    if waypoints:
        ticks = execute(sim, waypoints + [waypoints[-1]] * cfg.suite.goal_settle_ticks, on_tick=tick)
    pose = sim.object_pose(name)
    summary = monitor.summary()
    spec = EpisodeSpec(task, int(entry["index"]), seed, name, start, sim.joints, pose.position, pose.quaternion,
                       hand_points(sim), rest, params)
    outcome = {
        "task": task, "episode": int(entry["index"]), "seed": seed, "object": name,
        "planned": waypoints is not None, **summary,
        "ticks": ticks, "duration_s": round(ticks * sim.control_dt, 3),
        "planning_s": round(planning_s, 3), "wall_s": round(time.perf_counter() - t0, 3), **info,
    }
    spec.demo = {"planned": waypoints is not None, "success": summary["success"],
                 **{t: summary[t] for t in monitor.tests},
                 "held_ticks": summary["held_ticks"], "ticks": ticks, "duration_s": outcome["duration_s"]}
    if render_goal and outcome["success"]:
        spec.goal_image = sim.render()
    return spec, outcome
