"""Pinhole camera model of a MuJoCo camera (intrinsics, extrinsics, projection) and a fast offscreen renderer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

# MuJoCo cameras look along -z with +y up; the computer-vision convention (OpenCV, ROS optical frames) looks
# along +z with +y down. Keypoints in "the camera frame" are always in the optical convention.
_MJ_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics ``K`` (3x3) and the world pose of the optical frame (``R_wc`` columns = camera axes)."""

    K: np.ndarray
    R_wc: np.ndarray
    t_wc: np.ndarray
    width: int
    height: int

    @property
    def T_wc(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R_wc, self.t_wc
        return T

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points) - self.t_wc) @ self.R_wc

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Pixel coordinates (u, v) of camera-frame points; NaN where the point is behind the camera."""
        p = np.asarray(points_cam, dtype=np.float64)
        z = p[..., 2:3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (p[..., :2] / z) * np.array([self.K[0, 0], self.K[1, 1]]) + self.K[:2, 2]
        return np.where(z > 1e-6, uv, np.nan)


def intrinsics(fovy_deg: float, width: int, height: int) -> np.ndarray:
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def camera_model(model: mujoco.MjModel, data: mujoco.MjData, name: str, width: int, height: int) -> CameraModel:
    cam = model.camera(name)
    R = data.cam_xmat[cam.id].reshape(3, 3) @ _MJ_TO_OPTICAL
    return CameraModel(K=intrinsics(float(cam.fovy[0]), width, height), R_wc=R.copy(),
                       t_wc=data.cam_xpos[cam.id].copy(), width=width, height=height)


class FastRenderer:
    """Offscreen RGB rendering at the model's input size; shadows, reflections and MSAA off when ``fast``."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int, fast: bool = True) -> None:
        model.vis.quality.offsamples = 0 if fast else 4
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        if fast:
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        self._renderer.update_scene(data, camera=camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()
