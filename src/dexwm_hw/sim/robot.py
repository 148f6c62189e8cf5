"""The simulated Panda + Allegro: reset with randomised objects, interpolated position control, camera, state.

This class is the simulator's whole robot-facing surface; the ROS simulator node and the data generators are
thin users of it. Time advances only through :meth:`step` (one control tick = a whole number of physics steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from dexwm_hw.sim.camera import CameraModel, FastRenderer, camera_model
from dexwm_hw.sim.controller import JointInterpolator, min_duration
from dexwm_robot.scene import (
    KEYPOINT_SITES,
    NUM_JOINTS,
    CameraConfig,
    SceneConfig,
    build_model,
    load_sim_config,
)


@dataclass
class ObjectPose:
    name: str
    position: np.ndarray  # world, m
    quaternion: np.ndarray  # w, x, y, z


class PandaAllegroSim:
    def __init__(self, scene: SceneConfig | None = None, camera: CameraConfig | None = None,
                 render: bool = True) -> None:
        if scene is None or camera is None:
            s, c = load_sim_config()
            scene, camera = scene or s, camera or c
        self.scene_cfg, self.camera_cfg = scene, camera
        self.model = build_model(scene, camera)
        self.data = mujoco.MjData(self.model)
        self.substeps = int(round(1.0 / (scene.control_rate_hz * scene.physics_dt)))
        self.control_dt = self.substeps * scene.physics_dt
        self.joint_low = self.model.actuator_ctrlrange[:, 0].copy()
        self.joint_high = self.model.actuator_ctrlrange[:, 1].copy()
        self.max_velocity = np.asarray(scene.max_joint_velocity, dtype=np.float64)
        self._qpos_adr = np.array([self.model.jnt_qposadr[self.model.actuator_trnid[i, 0]] for i in range(NUM_JOINTS)])
        self._dof_adr = np.array([self.model.jnt_dofadr[self.model.actuator_trnid[i, 0]] for i in range(NUM_JOINTS)])
        self._site_ids = np.array([self.model.site(f"allegro/{s}").id for s in KEYPOINT_SITES])
        self._object_names = [o.name for o in scene.objects]
        self._object_body = {n: self.model.body(n).id for n in self._object_names}
        self._object_qadr = {n: self.model.jnt_qposadr[self.model.joint(f"{n}_free").id] for n in self._object_names}
        self._object_dadr = {n: self.model.jnt_dofadr[self.model.joint(f"{n}_free").id] for n in self._object_names}
        self._hand_geoms = {g for g in range(self.model.ngeom)
                            if self.model.body(self.model.geom_bodyid[g]).name.startswith("allegro/")}
        self._renderer = FastRenderer(self.model, camera.width, camera.height, camera.fast_render) if render else None
        self._interp: JointInterpolator | None = None
        self._t_in_segment = 0.0
        self.time = 0.0

    # ----------------------------------------------------------------------------------------------- reset
    def reset(self, seed: int, joints: np.ndarray | None = None, object_layout: dict | None = None) -> None:
        """Reset to ``joints`` (default: home) and drop every object at a random, separated spot on the table."""
        rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        q = self.scene_cfg.home if joints is None else self.clip(np.asarray(joints, dtype=np.float64))
        self.data.qpos[self._qpos_adr] = q
        self.data.ctrl[:] = q
        layout = object_layout if object_layout is not None else self.random_layout(rng)
        for name, (x, y, yaw) in layout.items():
            spec = next(o for o in self.scene_cfg.objects if o.name == name)
            adr = self._object_qadr[name]
            self.data.qpos[adr:adr + 3] = [x, y, self.scene_cfg.table_height + spec.half_height() + 0.002]
            self.data.qpos[adr + 3:adr + 7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        mujoco.mj_forward(self.model, self.data)
        self._interp = None
        self.time = 0.0
        for _ in range(int(0.3 / self.control_dt)):  # let objects settle with the robot holding still
            self._physics(self.control_dt, q)
        self.time = 0.0

    def random_layout(self, rng: np.random.Generator) -> dict[str, tuple[float, float, float]]:
        """Object positions (x, y, yaw) in the workspace, at least ``object_min_separation`` apart."""
        cfg = self.scene_cfg
        placed: dict[str, tuple[float, float, float]] = {}
        for name in self._object_names:
            for _ in range(1000):
                x = rng.uniform(*cfg.object_region_x)
                y = rng.uniform(*cfg.object_region_y)
                if all(np.hypot(x - px, y - py) >= cfg.object_min_separation for px, py, _ in placed.values()):
                    break
            else:
                raise RuntimeError("could not place objects: enlarge object_region_* or reduce the separation")
            placed[name] = (x, y, rng.uniform(-np.pi, np.pi))
        return placed

    # --------------------------------------------------------------------------------------------- control
    def clip(self, q: np.ndarray) -> np.ndarray:
        return np.clip(q, self.joint_low, self.joint_high)

    def command(self, waypoint: np.ndarray, duration: float | None = None) -> float:
        """Start interpolating from the current joints to ``waypoint`` (clipped to limits). Returns the duration."""
        waypoint = np.asarray(waypoint, dtype=np.float64)
        if waypoint.shape != (NUM_JOINTS,):
            raise ValueError(f"waypoint must have {NUM_JOINTS} joints, got shape {waypoint.shape}")
        start = self.data.ctrl.copy()
        goal = self.clip(waypoint)
        fastest = min_duration(start, goal, self.max_velocity)
        duration = fastest if duration is None else max(float(duration), fastest)
        self._interp = JointInterpolator(start, goal, duration)
        self._t_in_segment = 0.0
        return duration

    def follow(self, profile) -> float:
        """Track ``profile(t)`` (23 joint set-points, ``t`` in s from now; with ``duration`` and ``done(t)``), e.g. a
        multi-point trajectory, until the next :meth:`command` or :meth:`follow`. Returns its duration."""
        self._interp = profile
        self._t_in_segment = 0.0
        return float(profile.duration)

    @property
    def moving(self) -> bool:
        return self._interp is not None and not self._interp.done(self._t_in_segment)

    def step(self) -> None:
        """Advance one control tick."""
        target = self.data.ctrl.copy() if self._interp is None else None
        for _ in range(self.substeps):
            if self._interp is not None:
                self._t_in_segment += self.scene_cfg.physics_dt
                target = self._interp(self._t_in_segment)
            self.data.ctrl[:] = target
            mujoco.mj_step(self.model, self.data)
        self.time += self.control_dt

    def move_to(self, waypoint: np.ndarray, duration: float | None = None, settle: float = 0.0,
                on_tick=None) -> int:
        """Command a waypoint and step until the interpolation ends (+ ``settle`` s). Returns the ticks taken."""
        self.command(waypoint, duration)
        ticks = 0
        while self.moving or ticks * self.control_dt < settle + (self._interp.duration if self._interp else 0):
            self.step()
            ticks += 1
            if on_tick is not None:
                on_tick(self)
        return ticks

    def _physics(self, seconds: float, hold: np.ndarray) -> None:
        self.data.ctrl[:] = hold
        for _ in range(int(round(seconds / self.scene_cfg.physics_dt))):
            mujoco.mj_step(self.model, self.data)

    # ----------------------------------------------------------------------------------------------- state
    @property
    def joints(self) -> np.ndarray:
        return self.data.qpos[self._qpos_adr].copy()

    @property
    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self._dof_adr].copy()

    @property
    def commanded(self) -> np.ndarray:
        return self.data.ctrl.copy()

    @property
    def object_names(self) -> list[str]:
        return list(self._object_names)

    def object_pose(self, name: str) -> ObjectPose:
        adr = self._object_qadr[name]
        return ObjectPose(name, self.data.qpos[adr:adr + 3].copy(), self.data.qpos[adr + 3:adr + 7].copy())

    def object_speed(self, name: str) -> float:
        adr = self._object_dadr[name]
        return float(np.linalg.norm(self.data.qvel[adr:adr + 3]))

    def keypoints_world(self) -> np.ndarray:
        """The 17 distinct hand keypoint sites (``KEYPOINT_SITES`` order), world frame, (17, 3)."""
        return self.data.site_xpos[self._site_ids].copy()

    def site_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        site = self.data.site(name)
        return site.xpos.copy(), site.xmat.reshape(3, 3).copy()

    def hand_contacts(self, object_name: str) -> int:
        """Number of active contacts between any hand geom and the object."""
        obj = self._object_body[object_name]
        n = 0
        for c in self.data.contact[: self.data.ncon]:
            g1, g2 = int(c.geom1), int(c.geom2)
            b1, b2 = self.model.geom_bodyid[g1], self.model.geom_bodyid[g2]
            if (g1 in self._hand_geoms and b2 == obj) or (g2 in self._hand_geoms and b1 == obj):
                n += 1
        return n

    def get_state(self) -> np.ndarray:
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, state, spec)
        return state

    def set_state(self, state: np.ndarray) -> None:
        mujoco.mj_setState(self.model, self.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.model, self.data)
        self._interp = None

    # ---------------------------------------------------------------------------------------------- camera
    def camera(self, name: str | None = None) -> CameraModel:
        cfg = self.camera_cfg
        return camera_model(self.model, self.data, name or cfg.name, cfg.width, cfg.height)

    def render(self, name: str | None = None) -> np.ndarray:
        if self._renderer is None:
            raise RuntimeError("this simulator was created with render=False")
        return self._renderer.render(self.data, name or self.camera_cfg.name)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
