"""What the planner needs from the robot: joint limits, the fixed camera, and batched FK of sampled plans.

:class:`PlanKinematics` turns the current joints and all sampled waypoint sequences ``(N, T, 23)`` into, with ONE
forward-kinematics call over the ``1 + N * T`` distinct joint vectors:

* the keypoint actions ``(N, T, 132)`` the world model is conditioned on (exactly
  :func:`dexwm_model.actions.allegro.allegro_sequence_actions`: right hand from FK, left hand and camera part
  zero, displacements in the fixed camera's frame);
* the pixel positions of the right hand's wrist and 5 fingertips at every waypoint (the hand-consistency
  head's keypoints, projected through the camera: what the hand term of the cost compares);
* the palm normal's alignment with "down" at every waypoint (the grasping orientation term).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dexwm_model.actions.space import ACTION_DIM, RIGHT_HAND
from dexwm_model.kinematics.chain import project, world_to_camera
from dexwm_model.kinematics.hand_layout import ALLEGRO_TO_HAND21, HEATMAP_KEYPOINTS_21
from dexwm_model.kinematics.panda_allegro import KEYPOINT_SITE_NAMES, NUM_ROBOT_JOINTS, PALM_CENTER, PandaAllegroFK
from dexwm_model.predictor.hand_head import RIGHT_HAND_MAPS

# the palm_center site carries the palm body's axes; the palm normal is its +x axis (dexwm_hw.sim.scene)
PALM_NORMAL_AXIS = 0
DOWN = (0.0, 0.0, -1.0)
# the 6 keypoints of the right hand among the 12 heat-maps (left wrist + 5 tips, then right wrist + 5 tips)
RIGHT_HEATMAPS = RIGHT_HAND_MAPS
NUM_HAND_POINTS = len(HEATMAP_KEYPOINTS_21)  # 6


@dataclass(frozen=True)
class CameraSetup:
    """The fixed camera: camera-to-world pose of the optical frame ``(4, 4)`` and intrinsics ``(3, 3)`` in the
    pixels of the world model's input image (the encoder's crop) of size ``image_hw``."""

    pose: np.ndarray
    intrinsics: np.ndarray
    image_hw: tuple[int, int]

    def __post_init__(self) -> None:
        pose, K = np.asarray(self.pose, dtype=np.float64), np.asarray(self.intrinsics, dtype=np.float64)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise ValueError(f"camera pose: expected a finite (4, 4) camera-to-world matrix, found shape {pose.shape}")
        R = pose[:3, :3]
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-5) or np.linalg.det(R) <= 0:
            raise ValueError("camera pose: the rotation block is not a proper rotation (the pose is not rigid)")
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"camera intrinsics: expected a (3, 3) matrix with positive focal lengths, found {K}")
        if len(self.image_hw) != 2 or min(self.image_hw) < 1:
            raise ValueError(f"camera image_hw: expected (height, width), found {self.image_hw!r}")
        object.__setattr__(self, "pose", pose)
        object.__setattr__(self, "intrinsics", K)
        object.__setattr__(self, "image_hw", (int(self.image_hw[0]), int(self.image_hw[1])))


def pixel_rays(uv: Tensor, camera: CameraSetup, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """Rays through pixels ``uv (K, 2)`` of ``camera``: optical-frame directions ``(K, 3)`` scaled to z = 1 (a point
    at depth z along the optical axis is ``z * ray``), and the camera-to-world rotation ``(3, 3)`` and position
    ``(3,)``, all in ``dtype`` on ``uv``'s device (rows of NaN pixels stay NaN)."""
    K = torch.as_tensor(camera.intrinsics, dtype=dtype, device=uv.device)
    pose = torch.as_tensor(camera.pose, dtype=dtype, device=uv.device)
    uv1 = torch.cat([uv.to(dtype), torch.ones_like(uv[:, :1], dtype=dtype)], dim=-1)
    return uv1 @ torch.linalg.inv(K).T, pose[:3, :3], pose[:3, 3]


@functools.lru_cache(maxsize=1)
def _sim_robot() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Joint limits, camera pose / intrinsics / image size of the simulated scene (``config/sim.yaml``)."""
    import mujoco

    from dexwm_hw.sim.camera import camera_model
    from dexwm_hw.sim.scene import build_model, load_sim_config

    scene, cam = load_sim_config()
    model = build_model(scene, cam)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    cm = camera_model(model, data, cam.name, cam.width, cam.height)
    low, high = model.actuator_ctrlrange[:, 0].copy(), model.actuator_ctrlrange[:, 1].copy()
    return low, high, cm.T_wc, cm.K, (cam.height, cam.width)


def sim_joint_limits() -> tuple[np.ndarray, np.ndarray]:
    """The actuator control ranges (= joint limits) of the simulated robot, in the 23-joint order."""
    low, high, *_ = _sim_robot()
    return low.copy(), high.copy()


def sim_camera(preprocess: Any | None = None) -> CameraSetup:
    """The simulated fixed camera; with the encoder's ``preprocess`` (an ``ImagePreprocessor``) its intrinsics are
    mapped into the encoder's crop (the pixels the hand head and the planner's keypoints live in)."""
    _, _, pose, K, hw = _sim_robot()
    if preprocess is not None:
        K = preprocess.adjust_intrinsics(K, hw)
        hw = tuple(preprocess.image_size)
    return CameraSetup(pose=pose.copy(), intrinsics=np.asarray(K).copy(), image_hw=hw)


@dataclass
class PlanKinematicsOutput:
    actions: Tensor  # (N, T, 132)
    hand_uv: Tensor | None  # (N, T, 6, 2) right wrist + 5 tips, pixels of the model's input image
    palm_down: Tensor | None  # (N, T) cosine between the palm normal and "down"
    hand_xyz: Tensor | None = None  # (N, T, 6, 3) the hand keypoints in the world (robot base) frame
    hand_depth: Tensor | None = None  # (N, T, 6) their depth along the camera's optical axis (m)


class PlanKinematics:
    """Batched FK of sampled plans (see module doc). ``fk`` is used with ``check_finite`` off: samples are
    clamped to the joint limits, so they are finite by construction."""

    def __init__(self, fk: PandaAllegroFK, camera: CameraSetup) -> None:
        if fk.n_joints != NUM_ROBOT_JOINTS:
            raise ValueError(f"fk: expected the {NUM_ROBOT_JOINTS}-joint Panda + Allegro chain, found {fk.n_joints}")
        self.fk = fk
        self.fk.check_finite = False
        self.camera = camera
        self._hand21 = list(ALLEGRO_TO_HAND21)
        self._tips = list(HEATMAP_KEYPOINTS_21)
        self._consts: dict[tuple, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    def _constants(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        key = (device, dtype)
        if key not in self._consts:
            pose = torch.as_tensor(self.camera.pose, dtype=dtype, device=device)
            K = torch.as_tensor(self.camera.intrinsics, dtype=dtype, device=device)
            h21 = torch.as_tensor(self._hand21, dtype=torch.long, device=device)
            tips = torch.as_tensor(self._tips, dtype=torch.long, device=device)
            self._consts[key] = (pose, K, h21, tips)
        return self._consts[key]

    def evaluate(self, current: Tensor, samples: Tensor, hand: bool = True, orientation: bool = False
                 ) -> PlanKinematicsOutput:
        """``current (23,)`` joints and ``samples (N, T, 23)`` waypoint sequences -> actions and keypoints."""
        if samples.dim() != 3 or samples.shape[-1] != NUM_ROBOT_JOINTS:
            raise ValueError(f"samples: expected shape (N, T, {NUM_ROBOT_JOINTS}), found {tuple(samples.shape)}")
        if tuple(current.shape) != (NUM_ROBOT_JOINTS,):
            raise ValueError(f"current joints: expected shape ({NUM_ROBOT_JOINTS},), found {tuple(current.shape)}")
        n, t, _ = samples.shape
        dtype = samples.dtype if samples.dtype in (torch.float32, torch.float64) else torch.float32
        pose, K, h21, tips = self._constants(samples.device, dtype)
        q = torch.cat([current.to(samples.device, dtype)[None], samples.to(dtype).reshape(n * t, -1)])
        if orientation:
            pos, rot = self.fk.frames(q, KEYPOINT_SITE_NAMES + (PALM_CENTER,))
            sites = pos[:, :-1]
            palm_down = (rot[:, -1, :, PALM_NORMAL_AXIS] * torch.tensor(DOWN, dtype=dtype, device=q.device)).sum(-1)
            palm_down = palm_down[1:].view(n, t)
        else:
            sites = self.fk.positions(q, KEYPOINT_SITE_NAMES)
            palm_down = None
        hand21 = sites.index_select(1, h21)  # (1 + N T, 21, 3) world
        first, rest = hand21[:1], hand21[1:].view(n, t, -1, 3)
        prev = torch.cat([first.expand(n, 1, -1, -1), rest[:, :-1]], dim=1)
        disp = ((rest - prev) @ pose[:3, :3]).flatten(-2)  # right-hand displacements in the camera frame
        actions = torch.zeros(n, t, ACTION_DIM, dtype=dtype, device=q.device)
        actions[..., RIGHT_HAND] = disp
        hand_uv = pts = depth = None
        if hand:
            pts = rest.index_select(2, tips)  # (N, T, 6, 3)
            cam = world_to_camera(pts, pose[:3, :3], pose[:3, 3])
            hand_uv, depth = project(cam, K), cam[..., 2]
        return PlanKinematicsOutput(actions=actions, hand_uv=hand_uv, palm_down=palm_down, hand_xyz=pts,
                                    hand_depth=depth)

    def hand_world_points(self, joints: Tensor) -> Tensor:
        """The right wrist + 5 tips ``(..., 6, 3)`` in the world (robot base) frame for joint vectors ``(..., 23)``."""
        dtype = joints.dtype if joints.dtype in (torch.float32, torch.float64) else torch.float32
        _, _, h21, tips = self._constants(joints.device, dtype)
        sites = self.fk.positions(joints.to(dtype), KEYPOINT_SITE_NAMES)
        return sites.index_select(-2, h21).index_select(-2, tips)

    def hand_camera_points(self, joints: Tensor) -> Tensor:
        """The right wrist + 5 tips ``(..., 6, 3)`` in the camera's optical frame (x right, y down, z forward,
        metres) for joint vectors ``(..., 23)`` (e.g. a goal pose)."""
        pts = self.hand_world_points(joints)
        pose = self._constants(joints.device, pts.dtype)[0]
        return world_to_camera(pts, pose[:3, :3], pose[:3, 3])

    def hand_pixels(self, joints: Tensor) -> Tensor:
        """Pixels ``(..., 6, 2)`` of the right wrist + 5 tips for joint vectors ``(..., 23)`` (e.g. a goal pose)."""
        cam = self.hand_camera_points(joints)
        K = self._constants(joints.device, cam.dtype)[1]
        return project(cam, K)

    def hand_depths(self, joints: Tensor) -> Tensor:
        """Camera depths ``(..., 6)`` (m, along the optical axis) of the right wrist + 5 tips for ``(..., 23)``."""
        return self.hand_camera_points(joints)[..., 2]
