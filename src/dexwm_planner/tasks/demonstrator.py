"""Scripted demonstrator: IK reaching, verified lifts from grasp synthesis, and verified pick-and-place.

Every plan is a list of 23-joint waypoints replayed with :func:`execute` (each waypoint at the controller's own
pace, as the planner's waypoints are). Lifts and places are verified by simulating them from a saved state
(``get_state``/``set_state``) before they are returned, and the simulator is left exactly as it was found.

``plan_lift(sim, object_name, rng)`` is the entry point other components (the exploratory data generator) use.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np

from dexwm_planner.tasks.config import TasksConfig, load_tasks_config
from dexwm_planner.tasks.geometry import ShapeInstance
from dexwm_planner.tasks.grasp import (
    GraspSynthesizer,
    LiftPlan,
    execute,
    object_vertical_extent,
    palm_down_rotation,
    palm_down_seed,
)

__all__ = ["Demonstrator", "PlacePlan", "ReachGoal", "execute", "plan_lift"]

_SYNTH: "weakref.WeakKeyDictionary[object, Demonstrator]" = weakref.WeakKeyDictionary()


def demonstrator_for(sim, cfg: TasksConfig | None = None) -> "Demonstrator":
    """One :class:`Demonstrator` per simulator (its IK and geometry caches are reused between calls)."""
    demo = _SYNTH.get(sim)
    if demo is None or (cfg is not None and demo.cfg is not cfg):
        demo = Demonstrator(sim, cfg)
        _SYNTH[sim] = demo
    return demo


def plan_lift(sim, object_name: str, rng: np.random.Generator) -> list[np.ndarray] | None:
    """Waypoints (23 joints each) of a verified lift of ``object_name`` from the sim's current state, or None.

    Grasps are synthesised, ranked and verified by simulation (pre-grasp above, descend, close fingers and
    thumb, lift, hold); the first that keeps the object lifted is returned. The simulator's state is restored
    before returning. Replay with ``execute(sim, waypoints)`` (``sim.move_to`` per waypoint).
    """
    plan = demonstrator_for(sim).lift(object_name, rng)
    return None if plan is None else plan.waypoints


@dataclass
class ReachGoal:
    """A hand goal: palm-site position, finger direction (yaw, palm down) and the 16 hand joints."""

    palm_position: np.ndarray
    yaw: float
    hand: np.ndarray

    def as_dict(self) -> dict:
        return {"palm": [round(float(v), 5) for v in self.palm_position], "yaw": round(float(self.yaw), 5),
                "hand": [round(float(v), 5) for v in self.hand]}

    @classmethod
    def from_dict(cls, d: dict) -> "ReachGoal":
        try:
            palm, yaw, hand = np.asarray(d["palm"], dtype=np.float64), float(d["yaw"]), np.asarray(d["hand"], float)
        except KeyError as exc:
            raise ValueError(f"reach goal needs keys 'palm', 'yaw', 'hand'; missing {exc}") from exc
        if palm.shape != (3,) or hand.shape != (16,):
            raise ValueError(f"reach goal: 'palm' needs 3 values and 'hand' 16, got {palm.shape} and {hand.shape}")
        return cls(palm, yaw, hand)


@dataclass
class PlacePlan:
    waypoints: list[np.ndarray]
    lift: LiftPlan
    goal_xy: np.ndarray
    final_error: float  # m, object to goal spot (xy) at the end of the verification


class Demonstrator:
    """Scripted reach / lift / place on a :class:`PandaAllegroSim`."""

    def __init__(self, sim, cfg: TasksConfig | None = None) -> None:
        self.sim = sim
        self.cfg = cfg or load_tasks_config()
        self.grasp = GraspSynthesizer(sim, self.cfg)
        self.ik = self.grasp.ik

    # ------------------------------------------------------------------------------------------------ reach
    def reach_goal_joints(self, goal: ReachGoal, seed: np.ndarray | None = None) -> np.ndarray | None:
        start = self.sim.joints if seed is None else np.asarray(seed, dtype=np.float64)
        q0 = palm_down_seed(start, goal.palm_position, goal.yaw, self.grasp.home_wrist)
        res = self.ik.solve(q0, goal.palm_position, palm_down_rotation(goal.yaw))
        if not res.converged:
            return None
        q = res.joints.copy()
        q[7:] = goal.hand
        return q

    def plan_reach(self, goal: ReachGoal) -> list[np.ndarray] | None:
        """Waypoints to the goal via a point above it (arm first, hand shaped on the way down)."""
        rc = self.cfg.reach
        if self.reach_goal_joints(goal) is None:
            return None
        R = palm_down_rotation(goal.yaw)
        above = goal.palm_position + np.array([0.0, 0.0, rc.approach_height])
        q = self.ik.solve(palm_down_seed(self.sim.joints, above, goal.yaw, self.grasp.home_wrist), above, R)
        if not q.converged:
            return None
        waypoints = []
        seed = q.joints
        for k in range(rc.steps + 1):
            pos = above + (goal.palm_position - above) * k / rc.steps
            res = self.ik.solve(seed, pos, R)
            if not res.converged:
                return None
            w = res.joints.copy()
            w[7:] = self.sim.joints[7:] + (goal.hand - self.sim.joints[7:]) * k / rc.steps
            waypoints.append(w)
            seed = res.joints
        waypoints += [waypoints[-1].copy() for _ in range(rc.settle_ticks)]
        return waypoints

    def draw_reach_goal(self, rng: np.random.Generator, object_name: str) -> ReachGoal | None:
        """A random reachable hand pose near ``object_name`` that clears every object and the table."""
        rc, sim = self.cfg.reach, self.sim
        m, d = sim.model, sim.data
        shapes = [ShapeInstance.of_geom(m, d, m.geom(n).id) for n in sim.object_names]
        centre = sim.object_pose(object_name).position
        table = sim.scene_cfg.table_height
        for _ in range(rc.max_goal_draws):
            r, a = rc.offset_xy * math.sqrt(rng.uniform()), rng.uniform(-math.pi, math.pi)
            palm = np.array([centre[0] + r * math.cos(a), centre[1] + r * math.sin(a),
                             table + rng.uniform(*rc.palm_height)])
            yaw = float(rng.uniform(-math.pi, math.pi))
            flex = rng.uniform(*rc.finger_flex, size=(3, 2))
            hand = np.concatenate([np.concatenate([[0.0], [f[0], f[1], f[1]]]) for f in flex]
                                  + [[rng.uniform(0.3, 1.2), rng.uniform(0.0, 0.6), *([rng.uniform(0.2, 1.0)] * 2)]])
            goal = ReachGoal(palm, yaw, sim.clip(np.concatenate([np.zeros(7), hand]))[7:])
            sp = self.grasp.spheres(goal.hand)
            W = sp.world(palm, palm_down_rotation(yaw))
            if (W[:, 2] - sp.radii).min() - table < rc.object_clearance:
                continue
            if min((s.distance(W) - sp.radii).min() for s in shapes) < rc.object_clearance:
                continue
            if self.reach_goal_joints(goal) is None:
                continue
            return goal
        return None

    # ------------------------------------------------------------------------------------------------- lift
    def lift(self, object_name: str, rng: np.random.Generator, accept=None) -> LiftPlan | None:
        return self.grasp.plan_lift(object_name, rng, accept=accept)

    # ------------------------------------------------------------------------------------------------ place
    def _arm_path(self, seed: np.ndarray, positions: list[np.ndarray], R: np.ndarray,
                  hand: np.ndarray) -> list[np.ndarray] | None:
        waypoints = []
        for pos in positions:
            res = self.ik.solve(seed, pos, R)
            if not res.converged:
                return None
            w = res.joints.copy()
            w[7:] = hand
            waypoints.append(w)
            seed = res.joints
        return waypoints

    def _simulate_place(self, plan: LiftPlan, goal_xy: np.ndarray) -> tuple[list[np.ndarray], float] | None:
        """Run the lift, then carry / lower / release / retreat, each stage planned from the state the previous
        one left (the object shifts in the hand while carried). Leaves the sim at the end; returns the
        waypoints after the lift and the object's final distance to the goal spot (xy)."""
        pc, sim, name = self.cfg.place, self.sim, plan.object_name
        execute(sim, plan.waypoints[: plan.lift_end_index + 1])
        R = palm_down_rotation(plan.candidate.yaw)
        lifted = plan.waypoints[plan.lift_end_index]
        closed = lifted[7:].copy()
        palm, _ = self.ik.forward(lifted)
        tail: list[np.ndarray] = []

        def offset() -> np.ndarray:
            xy = sim.object_pose(name).position[:2]
            return np.array([goal_xy[0] - xy[0], goal_xy[1] - xy[1], 0.0])

        # carry at lift height
        shift = offset()
        carry = self._arm_path(lifted, [palm + shift * k / pc.carry_steps for k in range(1, pc.carry_steps + 1)],
                               R, closed)
        if carry is None:
            return None
        execute(sim, carry)
        tail += carry
        # lower until the object's bottom is just above the table, correcting the object's drift in the hand
        palm = palm + shift + offset()
        geom = sim.model.geom(name).id
        bottom = sim.object_pose(name).position[2] - object_vertical_extent(sim.model, sim.data, geom)
        drop = bottom - (sim.scene_cfg.table_height + pc.release_height)
        low = palm - np.array([0.0, 0.0, drop])
        lower = self._arm_path(tail[-1], [palm + (low - palm) * k / pc.lower_steps
                                          for k in range(1, pc.lower_steps + 1)], R, closed)
        if lower is None:
            return None
        execute(sim, lower)
        tail += lower
        # release: loosen fingers and thumb together (neither pushes the object away), then rise
        relaxed = closed.copy()
        flex = np.array([j % 4 != 0 for j in range(12)])  # the fingers' flexion joints (not their spread)
        relaxed[:12][flex] = np.maximum(closed[:12][flex] - pc.release_open, self.grasp.preshape()[:12][flex])
        relaxed[12] -= pc.thumb_relax  # thumb rotation back out of opposition (less flexion would push in)
        relaxed = sim.clip(np.concatenate([np.zeros(7), relaxed]))[7:]
        release = tail[-1].copy()
        release[7:] = relaxed
        retreat = self._arm_path(tail[-1], [low + np.array([0.0, 0.0, pc.retreat_height])], R, relaxed)
        if retreat is None:
            return None
        rest = [release] * (1 + pc.open_ticks) + retreat
        execute(sim, rest)
        tail += rest
        return tail, float(np.linalg.norm(sim.object_pose(name).position[:2] - goal_xy))

    def plan_place(self, object_name: str, goal_xy: np.ndarray, rng: np.random.Generator) -> PlacePlan | None:
        """A verified lift, carry to ``goal_xy``, lower, open and retreat; the object ends near the goal."""
        sim, pc = self.sim, self.cfg.place
        goal_xy = np.asarray(goal_xy, dtype=np.float64)
        if goal_xy.shape != (2,):
            raise ValueError(f"place goal must be (x, y), got shape {goal_xy.shape}")
        found: dict = {}

        def accept(plan: LiftPlan) -> bool:
            state, t0 = sim.get_state(), sim.time
            try:
                result = self._simulate_place(plan, goal_xy)
                ok = (result is not None and result[1] <= pc.accept_distance
                      and sim.hand_contacts(object_name) == 0)
            finally:
                sim.set_state(state)
                sim.time = t0
            if ok:
                found["tail"], found["err"] = result
            return ok

        lift = self.lift(object_name, rng, accept=accept)
        if lift is None:
            return None
        waypoints = lift.waypoints[: lift.lift_end_index + 1] + found["tail"]
        return PlacePlan(waypoints, lift, goal_xy, found["err"])

    def draw_place_goal(self, rng: np.random.Generator, object_name: str) -> np.ndarray | None:
        """A free table spot for ``object_name``: far enough from its start, clear of the other objects."""
        pc, sim, sc = self.cfg.place, self.sim, self.sim.scene_cfg
        start = sim.object_pose(object_name).position[:2]
        others = [sim.object_pose(n).position[:2] for n in sim.object_names if n != object_name]
        for _ in range(pc.max_goal_draws):
            xy = np.array([rng.uniform(*sc.object_region_x), rng.uniform(*sc.object_region_y)])
            dist = np.linalg.norm(xy - start)
            if not pc.min_displacement <= dist <= pc.max_displacement:
                continue
            if any(np.linalg.norm(xy - o) < pc.goal_clearance for o in others):
                continue
            return xy
        return None
