"""Compose the simulated scene with MjSpec: table, Panda arm, right Allegro hand, graspable objects, camera.

Joint order everywhere in the project (the 23-vector): Panda ``joint1..joint7``, then the Allegro in the
order of its position controller (``allegro_hand_ros2``: ``ah_joint10..13`` index, ``20..23`` middle, ``30..33`` ring,
``00..03`` thumb), which is the MuJoCo model's ``ff, mf, rf, th`` order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mujoco
import numpy as np

from dexwm_robot.assets import robot_model_paths
from dexwm_robot.config import load_section
from dexwm_robot.hand_layout import ALLEGRO_KEYPOINT_SITES

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
HAND_FINGERS = ("ff", "mf", "rf", "th")
HAND_JOINTS = tuple(f"{f}j{i}" for f in HAND_FINGERS for i in range(4))
ROBOT_JOINTS = tuple(f"panda/{j}" for j in ARM_JOINTS) + tuple(f"allegro/{j}" for j in HAND_JOINTS)
NUM_JOINTS = 23

# Keypoint sites on the hand: the 17 distinct points of the 21-keypoint layout (see hand_layout).
FINGERTIP_OFFSET = {"ff": 0.035, "mf": 0.035, "rf": 0.035, "th": 0.051}  # m along the distal link's z
WRIST_POINT = (0.0, 0.0, -0.09)  # palm frame: bottom centre of the palm, where a human wrist would be
PALM_CENTER_POINT = (0.012, 0.0, -0.04)  # palm frame: centre of the palm face (the face points along +x)
KEYPOINT_SITES = ALLEGRO_KEYPOINT_SITES

# Palm frame -> flange frame: the palm normal (+x of the palm body) along the flange axis (+z), fingers (+z of
# the palm) along the flange's +x. This is a 180 degree turn about (1, 0, 1)/sqrt(2).
_HAND_MOUNT_QUAT = (0.0, math.sqrt(0.5), 0.0, math.sqrt(0.5))
_PALM_BACK = 0.0297  # m, palm back face behind the palm frame origin (along -x)
_PALM_HALF_LENGTH = 0.0475  # m, half the palm length along the finger direction


@dataclass
class ObjectSpec:
    name: str
    shape: str
    size: list[float]
    rgba: list[float]
    mass: float

    def half_height(self) -> float:
        """Height of the centre above the table when resting upright (geoms are built along their z axis)."""
        s = self.size
        if self.shape == "sphere":
            return s[0]
        if self.shape == "capsule":
            return s[0] + s[1]
        if self.shape == "cylinder":
            return s[1]
        return s[2]


@dataclass
class SceneConfig:
    physics_dt: float
    control_rate_hz: float
    table_height: float
    hand_mount_offset: float
    robot_gravcomp: bool
    hand_kp: float
    hand_kv: float
    hand_max_torque: float
    max_joint_velocity: list[float]
    object_region_x: list[float]
    object_region_y: list[float]
    object_min_separation: float
    home_arm: list[float]
    home_hand: list[float]
    objects: list[ObjectSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.objects = [o if isinstance(o, ObjectSpec) else ObjectSpec(**o) for o in self.objects]
        if len(self.home_arm) != 7 or len(self.home_hand) != 16:
            raise ValueError("home_arm needs 7 values and home_hand 16")
        if len(self.max_joint_velocity) != NUM_JOINTS:
            raise ValueError(f"max_joint_velocity needs {NUM_JOINTS} values")
        if len(self.objects) < 1:
            raise ValueError("the scene needs at least one object")
        steps = 1.0 / (self.control_rate_hz * self.physics_dt)
        if abs(steps - round(steps)) > 1e-6:
            raise ValueError("control period must be a whole number of physics steps")

    @property
    def home(self) -> np.ndarray:
        return np.array(self.home_arm + self.home_hand, dtype=np.float64)


@dataclass
class CameraConfig:
    name: str
    position: list[float]
    pitch_deg: float
    yaw_deg: float
    fovy_deg: float
    width: int
    height: int
    fast_render: bool


def load_sim_config(path: str = "sim.yaml") -> tuple[SceneConfig, CameraConfig]:
    return load_section(SceneConfig, path, "scene"), load_section(CameraConfig, path, "camera")


_SHAPES = {
    "box": mujoco.mjtGeom.mjGEOM_BOX,
    "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
    "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
    "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
    "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
}


def camera_quat(pitch_deg: float, yaw_deg: float) -> np.ndarray:
    """MuJoCo camera orientation (camera looks along its -z, +y up) for a yaw about world z and a downward pitch."""
    p, y = math.radians(pitch_deg), math.radians(yaw_deg)
    forward = np.array([math.cos(p) * math.cos(y), math.cos(p) * math.sin(y), -math.sin(p)])
    right = np.array([math.sin(y), -math.cos(y), 0.0])
    up = np.cross(right, forward)
    rot = np.stack([right, up, -forward], axis=1)  # columns: camera x, y, z in world
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, rot.reshape(-1))
    return q


def _hand_spec(path: str, scene: SceneConfig) -> mujoco.MjSpec:
    hand = mujoco.MjSpec.from_file(path)
    for act in hand.actuators:
        act.gainprm[0], act.biasprm[1], act.biasprm[2] = scene.hand_kp, -scene.hand_kp, -scene.hand_kv
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-scene.hand_max_torque, scene.hand_max_torque]
    palm = hand.body("palm")
    for j in list(palm.joints):  # the carrier model floats the palm on a freejoint: the hand is bolted on
        hand.delete(j)
    palm.quat = [1, 0, 0, 0]
    palm.add_site(name="wrist", pos=list(WRIST_POINT), size=[0.004], group=4)
    palm.add_site(name="palm_center", pos=list(PALM_CENTER_POINT), size=[0.004], group=4)
    for f in HAND_FINGERS:
        hand.body(f"{f}_proximal").add_site(name=f"{f}_knuckle", size=[0.003], group=4)
        hand.body(f"{f}_medial").add_site(name=f"{f}_ibase", size=[0.003], group=4)
        hand.body(f"{f}_distal").add_site(name=f"{f}_itip", size=[0.003], group=4)
        hand.body(f"{f}_tip").add_site(name=f"{f}_tip", pos=[0, 0, FINGERTIP_OFFSET[f]], size=[0.003], group=4)
    return hand


def build_spec(scene: SceneConfig, camera: CameraConfig) -> mujoco.MjSpec:
    paths = robot_model_paths()
    spec = mujoco.MjSpec()
    spec.modelname = "dexwm_panda_allegro"
    spec.option.timestep = scene.physics_dt
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10
    spec.visual.global_.offwidth = max(camera.width, 640)
    spec.visual.global_.offheight = max(camera.height, 480)
    spec.visual.quality.shadowsize = 0 if camera.fast_render else 4096

    wb = spec.worldbody
    z0 = scene.table_height
    spec.add_material(name="table_mat", rgba=[0.55, 0.45, 0.35, 1])
    spec.add_material(name="floor_mat", rgba=[0.3, 0.32, 0.35, 1])
    wb.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], pos=[0, 0, z0 - 0.75],
                material="floor_mat")
    # light walls behind the workspace: the black Allegro must stand out against the background in every view
    spec.add_material(name="wall_mat", rgba=[0.78, 0.8, 0.84, 1])
    for name, pos, zaxis in (("wall_front", [1.4, 0, z0], [-1, 0, 0]), ("wall_left", [0, 1.2, z0], [0, -1, 0]),
                             ("wall_right", [0, -1.6, z0], [0, 1, 0]), ("wall_back", [-1.2, 0, z0], [1, 0, 0])):
        wb.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], pos=pos, zaxis=zaxis,
                    material="wall_mat", contype=0, conaffinity=0)
    wb.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.6, 0.5, 0.375],
                pos=[0.35, 0, z0 - 0.375], material="table_mat", friction=[1.0, 0.005, 0.0001])
    wb.add_light(name="key", pos=[0.4, -0.4, z0 + 1.6], dir=[-0.1, 0.3, -1], castshadow=not camera.fast_render,
                 diffuse=[0.7, 0.7, 0.7])
    wb.add_light(name="fill", pos=[-0.5, 0.5, z0 + 1.2], dir=[0.5, -0.3, -1], castshadow=False,
                 diffuse=[0.35, 0.35, 0.35])

    panda = mujoco.MjSpec.from_file(str(paths.panda_xml))
    for key in list(panda.keys):
        panda.delete(key)
    for light in list(panda.lights):
        panda.delete(light)
    mount = wb.add_frame(pos=[0, 0, z0])
    mount.attach_body(panda.body("link0"), "panda/", "")

    hand = _hand_spec(str(paths.allegro_xml), scene)
    flange = spec.site("panda/attachment_site")
    hand_frame = spec.body("panda/attachment").add_frame(
        pos=[_PALM_HALF_LENGTH, 0.0, scene.hand_mount_offset + _PALM_BACK], quat=list(_HAND_MOUNT_QUAT)
    )
    hand_frame.attach_body(hand.body("palm"), "allegro/", "")
    del flange

    if scene.robot_gravcomp:
        for body in spec.bodies:
            if body.name.startswith(("panda/", "allegro/")):
                body.gravcomp = 1.0

    for obj in scene.objects:
        if obj.shape not in _SHAPES:
            raise ValueError(f"object {obj.name}: unknown shape '{obj.shape}' (use one of {sorted(_SHAPES)})")
        body = wb.add_body(name=obj.name, pos=[0.5, 0, z0 + obj.half_height()])
        body.add_freejoint(name=f"{obj.name}_free")
        body.add_geom(name=obj.name, type=_SHAPES[obj.shape], size=(list(obj.size) + [0, 0])[:3], rgba=obj.rgba,
                      mass=obj.mass, friction=[1.2, 0.01, 0.0002], condim=4)

    wb.add_camera(name=camera.name, pos=list(camera.position), quat=list(camera_quat(camera.pitch_deg,
                                                                                     camera.yaw_deg)),
                  fovy=camera.fovy_deg)
    return spec


def build_model(scene: SceneConfig | None = None, camera: CameraConfig | None = None) -> mujoco.MjModel:
    if scene is None or camera is None:
        s, c = load_sim_config()
        scene, camera = scene or s, camera or c
    model = build_spec(scene, camera).compile()
    names = tuple(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, model.actuator_trnid[i, 0])
                  for i in range(model.nu))
    if names != ROBOT_JOINTS:
        raise RuntimeError(f"unexpected actuator order {names}")
    return model
