"""Task-free exploratory robot episodes in the simulator, written in the ``dexwm-episode`` format.

Three kinds of episodes (shares in ``config/data.yaml``, section ``exploration.mix``), as in the paper's
fine-tuning data:

* ``reach``: the arm visits several random reachable targets above the objects or the table, palm roughly down,
  each with a random hand pose (IK: damped least squares on the palm-centre site, :class:`ArmIK`);
* ``lift_replay``: a verified scripted lift from the demonstrator replayed with Gaussian noise on every waypoint.
  The demonstrator belongs to the planner layer above this one, so the caller passes it in (``plan_lift``; ``dexwm
  data sim`` gives ``dexwm_planner.tasks.demonstrator.plan_lift``);
* ``hand_only``: the arm holds still while the hand opens and closes.

Frames are recorded at ``record_fps`` while the robot moves. Episode ``i`` depends only on the seed
``base_seed + i``, so the output is the same whatever the number of worker processes. Generation is resumable:
finished files that validate are kept, stale ``.tmp`` files are removed, the rest is (re)generated.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from dexwm_hw.sim.robot import PandaAllegroSim  # noqa: E402
from dexwm_robot.scene import NUM_JOINTS, ROBOT_JOINTS  # noqa: E402
from dexwm_robot.config import ConfigError, load_section  # noqa: E402
from dexwm_model.data.episode import (  # noqa: E402
    TMP_SUFFIX,
    Episode,
    EpisodeFormatError,
    EpisodeMeta,
    EpisodeReader,
    WriterConfig,
    check_robot_joints,
    episode_filename,
    load_writer_config,
    write_episode,
)
from dexwm_robot.hand_layout import ALLEGRO_KEYPOINT_SITES, ALLEGRO_TO_HAND21  # noqa: E402

GENERATOR_VERSION = "dexwm-exploration/1"
KINDS = ("reach", "lift_replay", "hand_only")
IK_SITE = "allegro/palm_center"
_HAND_KEYPOINTS_21 = np.asarray(ALLEGRO_TO_HAND21)
_ARM = slice(0, 7)
_FLEXION = [4 * f + j for f in range(4) for j in (1, 2, 3)]  # hand-vector indices of the flexion joints
_ABDUCTION = [0, 4, 8]  # index, middle, ring spread
_THUMB_ROTATION = 12


# ``plan_lift(sim, object_name, rng) -> list of 23-joint waypoints | None``: a verified scripted lift of one object
PlanLift = Callable[[PandaAllegroSim, str, np.random.Generator], "Sequence[np.ndarray] | None"]


class DemonstratorUnavailable(RuntimeError):
    """``lift_replay`` episodes were asked for but no scripted demonstrator (``plan_lift``) was given."""


class SimulationUnstable(RuntimeError):
    """MuJoCo reported diverging accelerations (and reset its state): the recording is not physical."""


# ------------------------------------------------------------------------------------------------- config
@dataclass
class HandSampling:
    abduction: float
    thumb_rotation: list[float]
    jitter: float


@dataclass
class ReachConfig:
    waypoints: list[int]
    table_spot_probability: float
    xy_jitter: float
    height_above: list[float]
    yaw_range_deg: float
    tilt_max_deg: float
    flexion: list[float]
    segment_seconds: list[float]
    settle_seconds: list[float]
    max_attempts: int


@dataclass
class LiftReplayConfig:
    arm_noise_std: float
    hand_noise_std: float
    objects_tried: int
    settle_seconds: float
    lift_height: float


@dataclass
class HandOnlyConfig:
    cycles: list[int]
    height_above: list[float]
    open_flexion: list[float]
    close_flexion: list[float]
    segment_seconds: list[float]
    settle_seconds: list[float]


@dataclass
class IKConfig:
    max_iterations: int
    damping: float
    max_step: float
    position_tolerance: float
    orientation_tolerance: float
    restarts: int
    restart_noise: float
    clearance: float


@dataclass
class ExplorationConfig:
    base_seed: int
    record_fps: float
    robot: str
    unstable_retries: int
    mix: dict[str, float]
    hand: HandSampling
    reach: ReachConfig
    lift_replay: LiftReplayConfig
    hand_only: HandOnlyConfig
    ik: IKConfig
    _weights: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(KINDS))
        if unknown:
            raise ConfigError(f"data.yaml exploration.mix: unknown episode kind(s) {unknown}; allowed: {list(KINDS)}")
        w = np.array([float(self.mix.get(k, 0.0)) for k in KINDS])
        if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise ConfigError(f"data.yaml exploration.mix: shares must be >= 0 with a positive sum, found {self.mix}")
        self._weights = w / w.sum()
        if self.record_fps <= 0:
            raise ConfigError(f"data.yaml exploration.record_fps must be > 0, found {self.record_fps}")
        for name, rng in (("reach.waypoints", self.reach.waypoints), ("hand_only.cycles", self.hand_only.cycles)):
            if len(rng) != 2 or rng[0] < 1 or rng[1] < rng[0]:
                raise ConfigError(f"data.yaml exploration.{name} must be [min, max] with 1 <= min <= max, found {rng}")

    def kind_probability(self, kind: str) -> float:
        return float(self._weights[KINDS.index(kind)])


def load_exploration_config(path: str | os.PathLike = "data.yaml") -> ExplorationConfig:
    return load_section(ExplorationConfig, path, "exploration")


# ----------------------------------------------------------------------------------------------------- IK
def _rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (world frame) turning ``current`` into ``target`` (both 3x3)."""
    qt, qc, qe, qinv = np.empty(4), np.empty(4), np.empty(4), np.empty(4)
    mujoco.mju_mat2Quat(qt, np.ascontiguousarray(target).reshape(-1))
    mujoco.mju_mat2Quat(qc, np.ascontiguousarray(current).reshape(-1))
    mujoco.mju_negQuat(qinv, qc)
    mujoco.mju_mulQuat(qe, qt, qinv)
    if qe[0] < 0:
        qe = -qe
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, qe, 1.0)
    return vel


def palm_down_rotation(yaw: float, tilt_axis_angle: float = 0.0, tilt: float = 0.0) -> np.ndarray:
    """World orientation of the palm-centre site: palm normal (site x) down, fingers (site z) heading ``yaw``,
    then tilted by ``tilt`` rad about the horizontal axis at angle ``tilt_axis_angle``."""
    x = np.array([0.0, 0.0, -1.0])
    z = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    R = np.stack([x, np.cross(z, x), z], axis=1)
    if tilt:
        axis = np.array([math.cos(tilt_axis_angle), math.sin(tilt_axis_angle), 0.0])
        K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        R = (np.eye(3) + math.sin(tilt) * K + (1 - math.cos(tilt)) * K @ K) @ R
    return R


class ArmIK:
    """Damped-least-squares IK of the 7 arm joints for a pose of the palm-centre site (hand joints held).

    Works on its own ``MjData`` (kinematics only), so it never disturbs the simulation.
    """

    def __init__(self, model: mujoco.MjModel, cfg: IKConfig, table_height: float = 0.0, site: str = IK_SITE) -> None:
        self.model, self.cfg, self.table_height = model, cfg, table_height
        self.data = mujoco.MjData(model)
        self.site = model.site(site).id
        joints = model.actuator_trnid[:NUM_JOINTS, 0]
        self.qpos_adr = model.jnt_qposadr[joints]
        self.arm_dofs = model.jnt_dofadr[joints[_ARM]]
        self.low = model.actuator_ctrlrange[:NUM_JOINTS, 0].copy()
        self.high = model.actuator_ctrlrange[:NUM_JOINTS, 1].copy()
        self.check_sites = np.array([model.site(f"allegro/{s}").id for s in ALLEGRO_KEYPOINT_SITES] + [self.site])
        self.check_bodies = np.array([model.body(f"panda/link{i}").id for i in range(2, 8)])
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def _kinematics(self, q: np.ndarray) -> None:
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def site_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._kinematics(np.asarray(q, dtype=np.float64))
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def clear_of_table(self, q: np.ndarray) -> bool:
        """Whether every hand keypoint and arm link origin is ``clearance`` above the table in joints ``q``."""
        self._kinematics(q)
        floor = self.table_height + self.cfg.clearance
        return bool(np.all(self.data.site_xpos[self.check_sites, 2] > floor)
                    and np.all(self.data.xpos[self.check_bodies, 2] > floor))

    def solve(self, q_init: np.ndarray, position: np.ndarray, rotation: np.ndarray,
              rng: np.random.Generator | None = None) -> np.ndarray | None:
        """Joints (23) putting the site at ``position`` / ``rotation``, hand joints as in ``q_init``; None if the
        pose is not reached within tolerance, or the solution brings the robot too close to the table."""
        cfg = self.cfg
        q_init = np.clip(np.asarray(q_init, dtype=np.float64), self.low, self.high)
        position = np.asarray(position, dtype=np.float64)
        lam2 = cfg.damping ** 2
        for attempt in range(cfg.restarts + 1):
            q = q_init.copy()
            if attempt and rng is not None:
                q[_ARM] = np.clip(q[_ARM] + rng.normal(0.0, cfg.restart_noise, 7), self.low[_ARM], self.high[_ARM])
            elif attempt:
                break
            for _ in range(cfg.max_iterations):
                self._kinematics(q)
                e_pos = position - self.data.site_xpos[self.site]
                e_rot = _rotation_error(rotation, self.data.site_xmat[self.site].reshape(3, 3))
                if np.linalg.norm(e_pos) < cfg.position_tolerance and np.linalg.norm(e_rot) < cfg.orientation_tolerance:
                    if self.clear_of_table(q):
                        return q
                    break
                mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
                J = np.vstack([self._jacp[:, self.arm_dofs], self._jacr[:, self.arm_dofs]])
                e = np.concatenate([e_pos, e_rot])
                dq = J.T @ np.linalg.solve(J @ J.T + lam2 * np.eye(6), e)
                biggest = np.abs(dq).max()
                if biggest > cfg.max_step:
                    dq *= cfg.max_step / biggest
                q[_ARM] = np.clip(q[_ARM] + dq, self.low[_ARM], self.high[_ARM])
        return None


# ------------------------------------------------------------------------------------------------ sampling
def _uniform(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _integer(rng: np.random.Generator, bounds) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def sample_hand(rng: np.random.Generator, cfg: HandSampling, flexion, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """16 hand joints: per finger one flexion level (fraction of the joints' upper limits) plus jitter, random
    spread of index/middle/ring and a random thumb opposition; clipped to the limits."""
    q = np.zeros(16)
    for f in range(4):
        level = _uniform(rng, flexion)
        for j in (1, 2, 3):
            i = 4 * f + j
            q[i] = level * high[i] + rng.normal(0.0, cfg.jitter)
    q[_ABDUCTION] = rng.uniform(-cfg.abduction, cfg.abduction, len(_ABDUCTION))
    q[_THUMB_ROTATION] = _uniform(rng, cfg.thumb_rotation)
    return np.clip(q, low, high)


def _top_of(sim: PandaAllegroSim, name: str) -> np.ndarray:
    """A point just above the object's bounding sphere."""
    pos = sim.object_pose(name).position
    return pos + np.array([0.0, 0.0, float(sim.model.geom_rbound[sim.model.geom(name).id])])


def sample_palm_target(sim: PandaAllegroSim, rng: np.random.Generator, cfg: ReachConfig, height_above,
                       table_spot_probability: float) -> tuple[np.ndarray, np.ndarray]:
    """A palm-centre position above a random object (or table spot) and a palm-down-ish orientation."""
    scene = sim.scene_cfg
    if rng.random() < table_spot_probability:
        j = cfg.xy_jitter
        xy = np.array([rng.uniform(scene.object_region_x[0] - j, scene.object_region_x[1] + j),
                       rng.uniform(scene.object_region_y[0] - j, scene.object_region_y[1] + j)])
        base_z = scene.table_height
    else:
        top = _top_of(sim, sim.object_names[int(rng.integers(len(sim.object_names)))])
        r, a = cfg.xy_jitter * math.sqrt(rng.random()), rng.uniform(-math.pi, math.pi)
        xy = top[:2] + r * np.array([math.cos(a), math.sin(a)])
        base_z = top[2]
    position = np.array([xy[0], xy[1], base_z + _uniform(rng, height_above)])
    yaw = math.atan2(xy[1], xy[0]) + math.radians(rng.uniform(-cfg.yaw_range_deg, cfg.yaw_range_deg))
    tilt = math.radians(cfg.tilt_max_deg) * math.sqrt(rng.random())
    return position, palm_down_rotation(yaw, rng.uniform(-math.pi, math.pi), tilt)


def reach_waypoint(sim: PandaAllegroSim, ik: ArmIK, rng: np.random.Generator, cfg: ExplorationConfig,
                   hand: np.ndarray, height_above, table_spot_probability: float) -> np.ndarray | None:
    """A reachable 23-joint waypoint with the given hand pose, or None after ``reach.max_attempts`` targets."""
    q0 = np.concatenate([sim.commanded[_ARM], hand])
    for _ in range(cfg.reach.max_attempts):
        pos, rot = sample_palm_target(sim, rng, cfg.reach, height_above, table_spot_probability)
        q = ik.solve(q0, pos, rot, rng)
        if q is not None:
            return q
    return None


# ----------------------------------------------------------------------------------------------- recording
class _Recorder:
    """Collects one sample every ``every`` control ticks (plus one at the start)."""

    def __init__(self, sim: PandaAllegroSim, every: int) -> None:
        self.sim, self.every, self.ticks = sim, every, 0
        self.target = sim.commanded
        self.rows: dict[str, list] = {k: [] for k in ("frames", "timestamps", "joint_positions", "commanded_targets",
                                                       "keypoints_world", "keypoints_camera", "keypoints_pixels",
                                                       "camera_pose_world", "object_poses")}
        self.intrinsics: np.ndarray | None = None
        self.capture()

    def capture(self) -> None:
        sim, r = self.sim, self.rows
        if sim.data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number:
            raise SimulationUnstable(f"simulation diverged at t = {sim.time:.2f} s (MuJoCo reset its state)")
        cam = sim.camera()
        kw = sim.keypoints_world()[_HAND_KEYPOINTS_21]
        kc = cam.world_to_camera(kw)
        r["frames"].append(sim.render())
        r["timestamps"].append(sim.time)
        r["joint_positions"].append(sim.joints)
        r["commanded_targets"].append(np.array(self.target, dtype=np.float64))
        r["keypoints_world"].append(kw)
        r["keypoints_camera"].append(kc)
        r["keypoints_pixels"].append(cam.project(kc))
        r["camera_pose_world"].append(cam.T_wc)
        poses = []
        for name in sim.object_names:
            p = sim.object_pose(name)
            poses.append(np.concatenate([p.position, p.quaternion]))
        r["object_poses"].append(np.array(poses))
        if self.intrinsics is None:
            self.intrinsics = cam.K.copy()

    def on_tick(self, sim: PandaAllegroSim) -> None:
        self.ticks += 1
        if self.ticks % self.every == 0:
            self.capture()

    def move(self, waypoint: np.ndarray, duration: float | None = None, settle: float = 0.0) -> None:
        self.target = self.sim.clip(np.asarray(waypoint, dtype=np.float64))
        self.sim.move_to(self.target, duration=duration, settle=settle, on_tick=self.on_tick)

    def hold(self, seconds: float) -> None:
        for _ in range(int(round(seconds / self.sim.control_dt))):
            self.sim.step()
            self.on_tick(self.sim)

    def finish(self) -> None:
        """Keep holding until the next frame time, so the last frame shows where the last move ended."""
        while self.ticks % self.every:
            self.sim.step()
            self.on_tick(self.sim)

    def episode(self, meta: EpisodeMeta) -> Episode:
        self.finish()
        if self.sim.data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number:
            raise SimulationUnstable(f"simulation diverged before t = {self.sim.time:.2f} s")
        r = self.rows
        positions = {"joint_positions": np.stack(r["joint_positions"]),
                     "commanded_targets": np.stack(r["commanded_targets"])}
        try:  # a joint far past its limit: contacts pushed the hand through MuJoCo's soft joint limits
            check_robot_joints(f"simulated episode at t = {self.sim.time:.2f} s", ROBOT_JOINTS, positions)
        except EpisodeFormatError as exc:
            raise SimulationUnstable(f"simulation left the robot's joint limits: {exc}") from None
        return Episode(
            meta=meta, frames=np.stack(r["frames"]), timestamps=np.array(r["timestamps"], dtype=np.float64),
            joint_positions=np.stack(r["joint_positions"]), commanded_targets=np.stack(r["commanded_targets"]),
            keypoints_world=np.stack(r["keypoints_world"]), keypoints_camera=np.stack(r["keypoints_camera"]),
            keypoints_pixels=np.stack(r["keypoints_pixels"]), camera_intrinsics=self.intrinsics,
            camera_pose_world=np.stack(r["camera_pose_world"]), object_poses=np.stack(r["object_poses"]),
            joint_names=ROBOT_JOINTS, object_names=tuple(self.sim.object_names),
        )


def ticks_per_frame(sim: PandaAllegroSim, record_fps: float) -> int:
    ratio = sim.scene_cfg.control_rate_hz / record_fps
    if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
        raise ConfigError(f"data.yaml exploration.record_fps = {record_fps} Hz must divide the controller rate "
                          f"{sim.scene_cfg.control_rate_hz} Hz (sim.yaml scene.control_rate_hz)")
    return int(round(ratio))


# ------------------------------------------------------------------------------------------------ episodes
def _run_reach(sim, ik, rng, cfg, rec: _Recorder) -> dict:
    c = cfg.reach
    n = _integer(rng, c.waypoints)
    reached = 0
    for _ in range(n):
        hand = sample_hand(rng, cfg.hand, c.flexion, sim.joint_low[7:], sim.joint_high[7:])
        q = reach_waypoint(sim, ik, rng, cfg, hand, c.height_above, c.table_spot_probability)
        if q is None:
            continue
        rec.move(q, duration=_uniform(rng, c.segment_seconds), settle=_uniform(rng, c.settle_seconds))
        reached += 1
    if reached == 0:  # no reachable target at all: still produce a valid, moving clip (hand only, arm at home)
        hand = sample_hand(rng, cfg.hand, c.flexion, sim.joint_low[7:], sim.joint_high[7:])
        rec.move(np.concatenate([sim.commanded[_ARM], hand]), duration=_uniform(rng, c.segment_seconds))
    return {"waypoints_planned": n, "waypoints_reached": reached}


def _run_hand_only(sim, ik, rng, cfg, rec_factory, seed, layout) -> tuple[_Recorder, dict]:
    c = cfg.hand_only
    hand = sample_hand(rng, cfg.hand, c.open_flexion, sim.joint_low[7:], sim.joint_high[7:])
    q = reach_waypoint(sim, ik, rng, cfg, hand, c.height_above, 0.0)
    arm_from_ik = q is not None
    if q is None:
        q = np.concatenate([sim.scene_cfg.home[_ARM], hand])
    sim.reset(seed, joints=q, object_layout=layout)
    rec = rec_factory()
    cycles = _integer(rng, c.cycles)
    for _ in range(cycles):
        for flex in (c.close_flexion, c.open_flexion):
            hand = sample_hand(rng, cfg.hand, flex, sim.joint_low[7:], sim.joint_high[7:])
            rec.move(np.concatenate([q[_ARM], hand]), duration=_uniform(rng, c.segment_seconds),
                     settle=_uniform(rng, c.settle_seconds))
    return rec, {"cycles": cycles, "arm_from_ik": arm_from_ik}


def _run_lift_replay(sim, rng, cfg, seed, layout, rec_factory, plans: dict,
                     plan_lift: PlanLift | None) -> tuple[_Recorder, dict] | None:
    """``plans`` caches the demonstrator's answer per object across retries of the same episode."""
    c = cfg.lift_replay
    if plan_lift is None:
        raise DemonstratorUnavailable(_no_demonstrator(cfg))
    order = [sim.object_names[i] for i in rng.permutation(len(sim.object_names))[: c.objects_tried]]
    for name in order:
        sim.reset(seed, object_layout=layout)
        if name not in plans:
            plans[name] = plan_lift(sim, name, rng)
        plan = plans[name]
        if plan is None:
            continue
        waypoints = [np.asarray(w, dtype=np.float64) for w in plan]
        for i, w in enumerate(waypoints):
            if w.shape != (NUM_JOINTS,) or not np.isfinite(w).all():
                raise ValueError(f"plan_lift returned an invalid waypoint {i} for '{name}': expected {NUM_JOINTS} "
                                 f"finite joint values, found shape {w.shape}")
        if not waypoints:
            continue
        sim.reset(seed, object_layout=layout)  # the demonstrator may have advanced the simulation
        rec = rec_factory()
        z0 = sim.object_pose(name).position[2]
        top = z0
        std = np.concatenate([np.full(7, c.arm_noise_std), np.full(16, c.hand_noise_std)])
        for w in waypoints:
            rec.move(w + rng.normal(0.0, 1.0, NUM_JOINTS) * std)
            top = max(top, sim.object_pose(name).position[2])
        rec.hold(c.settle_seconds)
        top = max(top, sim.object_pose(name).position[2])
        return rec, {"object": name, "waypoints": len(waypoints), "lifted": bool(top - z0 >= c.lift_height),
                     "lift_height": float(top - z0)}
    return None


def generate_episode(sim: PandaAllegroSim, ik: ArmIK, seed: int, cfg: ExplorationConfig,
                     index: int | None = None, plan_lift: PlanLift | None = None) -> Episode:
    """One exploratory episode from scratch; a pure function of ``seed`` and ``cfg`` (the simulator is reset).

    ``plan_lift``: the scripted demonstrator, needed when the seed draws a ``lift_replay`` episode.

    The kind and the object layout come from ``seed``. Should the physics diverge (MuJoCo's bad-acceleration
    warning), the motion is drawn again from the stream ``(seed, attempt)``, up to ``unstable_retries`` times.
    """
    base = np.random.default_rng(seed)
    kind = KINDS[int(base.choice(len(KINDS), p=cfg._weights))]
    layout = sim.random_layout(base)
    failures: list[str] = []
    plans: dict = {}
    for attempt in range(cfg.unstable_retries + 1):
        rng = base if attempt == 0 else np.random.default_rng([seed, attempt])
        try:
            episode = _episode_attempt(sim, ik, seed, cfg, kind, layout, rng, plans, plan_lift)
        except SimulationUnstable as exc:
            failures.append(str(exc))
            continue
        episode.meta.extra.update(episode_index=index, unstable_retries=attempt)
        if failures:
            episode.meta.extra["unstable_attempts"] = failures
        return episode
    raise SimulationUnstable(f"episode with seed {seed} ({kind}): the simulation diverged in all "
                             f"{cfg.unstable_retries + 1} attempts: {failures}")


def _episode_attempt(sim: PandaAllegroSim, ik: ArmIK, seed: int, cfg: ExplorationConfig, kind: str,
                     layout: dict, rng: np.random.Generator, plans: dict, plan_lift: PlanLift | None) -> Episode:
    every = ticks_per_frame(sim, cfg.record_fps)
    sim.reset(seed, object_layout=layout)

    def fresh_recorder() -> _Recorder:
        return _Recorder(sim, every)

    extra: dict = {"record_every_ticks": every}
    recorded_kind = kind
    if kind == "lift_replay":
        result = _run_lift_replay(sim, rng, cfg, seed, layout, fresh_recorder, plans, plan_lift)
        if result is None:
            extra["fallback_from"] = "lift_replay"
            recorded_kind = "reach"
            sim.reset(seed, object_layout=layout)
        else:
            rec, details = result
    if recorded_kind == "reach":
        rec = fresh_recorder()
        details = _run_reach(sim, ik, rng, cfg, rec)
    elif recorded_kind == "hand_only":
        rec, details = _run_hand_only(sim, ik, rng, cfg, fresh_recorder, seed, layout)
    extra.update(details)
    meta = EpisodeMeta(
        robot=cfg.robot, scene_seed=int(seed), episode_kind=recorded_kind,
        object_layout={k: [float(x) for x in v] for k, v in layout.items()}, fps=float(cfg.record_fps),
        generator_version=GENERATOR_VERSION, camera_name=sim.camera_cfg.name, extra=extra,
    )
    return rec.episode(meta)


# --------------------------------------------------------------------------------------------- generation
_WORKER: dict = {}


def _worker_init(cfg: ExplorationConfig, writer: WriterConfig, plan_lift: PlanLift | None) -> None:
    sim = PandaAllegroSim()
    _WORKER.update(sim=sim, ik=ArmIK(sim.model, cfg.ik, sim.scene_cfg.table_height), cfg=cfg, writer=writer,
                   plan_lift=plan_lift)


def _worker_episode(task: tuple[int, int, str]) -> dict:
    index, seed, path = task
    t0 = time.perf_counter()
    try:
        episode = generate_episode(_WORKER["sim"], _WORKER["ik"], seed, _WORKER["cfg"], index, _WORKER["plan_lift"])
    except SimulationUnstable as exc:
        return {"index": index, "kind": None, "frames": 0, "bytes": 0, "sim_seconds": time.perf_counter() - t0,
                "write_seconds": 0.0, "lifted": None, "retries": None, "error": str(exc)}
    t1 = time.perf_counter()
    size = write_episode(path, episode, _WORKER["writer"])
    return {"index": index, "kind": episode.meta.episode_kind, "frames": episode.num_frames, "bytes": size,
            "sim_seconds": t1 - t0, "write_seconds": time.perf_counter() - t1,
            "lifted": episode.meta.extra.get("lifted"), "retries": episode.meta.extra["unstable_retries"],
            "error": None}


def _valid_seed(path: Path) -> int | None:
    """The scene seed of a valid episode file, None when the file does not validate."""
    try:
        with EpisodeReader(path) as reader:
            return reader.meta.scene_seed
    except EpisodeFormatError:
        return None


def generate(out_dir: str | os.PathLike, episodes: int, workers: int = 1, seed: int | None = None,
             cfg: ExplorationConfig | None = None, writer: WriterConfig | None = None,
             progress: bool = True, plan_lift: PlanLift | None = None) -> dict:
    """Generate episodes ``0..episodes-1`` into ``out_dir`` (resumable). Returns a JSON-able summary.

    ``plan_lift``: the scripted demonstrator, required when ``cfg.mix`` gives ``lift_replay`` a share; with worker
    processes it must be picklable (a module-level function).
    """
    from tqdm import tqdm

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cfg = cfg or load_exploration_config()
    writer = writer or load_writer_config()
    base_seed = cfg.base_seed if seed is None else int(seed)
    if cfg.kind_probability("lift_replay") > 0 and plan_lift is None:
        raise DemonstratorUnavailable(_no_demonstrator(cfg))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    tasks, kept, invalid = [], 0, []
    for i in range(episodes):
        path = out / episode_filename(i)
        if path.exists():
            found = _valid_seed(path)
            if found is not None and found != base_seed + i:
                raise ValueError(f"{path} was generated with seed {found} but this run gives episode {i} the seed "
                                 f"{base_seed + i}: resume with --seed {found - i} or write to another folder")
            if found is not None:
                kept += 1
                continue
            invalid.append(path.name)
        tasks.append((i, base_seed + i, str(path)))
    stale = sorted(out.glob(f"*{TMP_SUFFIX}"))
    for p in stale:
        p.unlink()

    results: list[dict] = []
    bar = tqdm(total=len(tasks), unit="ep", desc="data sim", disable=not progress, dynamic_ncols=True)
    try:
        if tasks and (workers == 1 or len(tasks) == 1):
            _worker_init(cfg, writer, plan_lift)
            try:
                for task in tasks:
                    results.append(_worker_episode(task))
                    bar.update(1)
                    bar.set_postfix(frames=sum(r["frames"] for r in results))
            finally:
                _WORKER.pop("sim").close()
                _WORKER.clear()
        elif tasks:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(min(workers, len(tasks)), initializer=_worker_init,
                          initargs=(cfg, writer, plan_lift)) as pool:
                for r in pool.imap_unordered(_worker_episode, tasks, chunksize=1):
                    results.append(r)
                    bar.update(1)
                    bar.set_postfix(frames=sum(x["frames"] for x in results))
    finally:
        bar.close()
    wall = time.perf_counter() - t_start
    frames = sum(r["frames"] for r in results)
    size = sum(r["bytes"] for r in results)
    kinds = {k: sum(1 for r in results if r["kind"] == k) for k in KINDS}
    lifts = [r["lifted"] for r in results if r["kind"] == "lift_replay"]
    failed = sorted((r for r in results if r["error"]), key=lambda r: r["index"])
    return {
        "out": str(out), "episodes_requested": episodes, "generated": len(results) - len(failed), "kept_valid": kept,
        "failed": [{"episode": episode_filename(r["index"]), "error": r["error"]} for r in failed],
        "unstable_retries": sum(r["retries"] or 0 for r in results),
        "regenerated_invalid": invalid, "stale_tmp_removed": [p.name for p in stale], "workers": workers,
        "base_seed": base_seed, "kinds": kinds, "lift_replays_lifted": sum(bool(x) for x in lifts),
        "frames": frames, "bytes": size, "bytes_per_frame": round(size / frames, 1) if frames else None,
        "seconds": round(wall, 3), "frames_per_s": round(frames / wall, 2) if frames else 0.0,
        "sim_render_seconds": round(sum(r["sim_seconds"] for r in results), 3),
        "write_seconds": round(sum(r["write_seconds"] for r in results), 3),
        "compression": writer.compression, "record_fps": cfg.record_fps,
    }


def _no_demonstrator(cfg: ExplorationConfig) -> str:
    return (f"exploration.mix.lift_replay = {cfg.mix.get('lift_replay')} needs the scripted demonstrator (plan_lift, "
            "e.g. dexwm_planner.tasks.demonstrator.plan_lift), and none was given; set that share to 0 in "
            "config/data.yaml to generate without it")


def summary_json(summary: dict) -> str:
    return json.dumps(summary, indent=2, sort_keys=False)
