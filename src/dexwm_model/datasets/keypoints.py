"""The 12 heat-map keypoints of a sample: selection from the 42, pinhole projection and validity.

Pixel coordinates are those of the pinhole projection through the source's intrinsics ``K``: continuous, the image
spanning ``[0, W] x [0, H]`` with pixel ``(row i, column j)`` covering ``[j, j + 1) x [i, i + 1)`` (the convention
of ``dexwm_hw.sim.camera.intrinsics`` and of :class:`dexwm_model.encoders.ImagePreprocessor`). A keypoint is valid
when it is finite, in front of the camera, inside ``[0, W) x [0, H)`` and not flagged absent / low confidence by its
source; invalid keypoints keep their projected coordinates when finite and are 0 otherwise.
"""

from __future__ import annotations

import numpy as np

from dexwm_model.kinematics.hand_layout import HEATMAP_KEYPOINTS_21, NUM_HAND_KEYPOINTS

NUM_HEATMAP_KEYPOINTS = 2 * len(HEATMAP_KEYPOINTS_21)  # 12: left wrist + 5 tips, right wrist + 5 tips
# positions in the 42-keypoint layout (left hand 0..20, right hand 21..41) of the 12 heat-map keypoints
HEATMAP_KEYPOINTS_42 = tuple(h * NUM_HAND_KEYPOINTS + i for h in (0, 1) for i in HEATMAP_KEYPOINTS_21)
MIN_DEPTH = 1e-6  # m; points at or below this optical z are behind the camera


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points ``(..., 3)`` (optical: x right, y down, z forward) -> pixels ``(..., 2)``; NaN behind."""
    p = np.asarray(points_cam, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    z = p[..., 2]
    front = z > MIN_DEPTH
    zs = np.where(front, z, 1.0)
    x, y = p[..., 0] / zs, p[..., 1] / zs
    u = K[0, 0] * x + K[0, 1] * y + K[0, 2]
    v = K[1, 1] * y + K[1, 2]
    uv = np.stack((u, v), axis=-1)
    uv[~front] = np.nan
    return uv


def world_to_camera(points_world: np.ndarray, camera_pose: np.ndarray) -> np.ndarray:
    """World points ``(K, N, 3)`` -> camera frame, for camera-to-world poses ``(K, 4, 4)`` (or one ``(4, 4)``)."""
    p = np.asarray(points_world, dtype=np.float64)
    T = np.asarray(camera_pose, dtype=np.float64)
    if T.ndim == 2:
        T = np.broadcast_to(T, p.shape[:-2] + (4, 4))
    R, t = T[..., :3, :3], T[..., :3, 3]
    return np.einsum("...ji,...nj->...ni", R, p - t[..., None, :])


def inside_image(uv: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """``(...)`` bool: finite and inside ``[0, W) x [0, H)``."""
    h, w = image_hw
    u, v = uv[..., 0], uv[..., 1]
    with np.errstate(invalid="ignore"):
        return np.isfinite(u) & np.isfinite(v) & (u >= 0) & (u < w) & (v >= 0) & (v < h)


def finalize(uv: np.ndarray, valid: np.ndarray, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Combine ``valid`` with the inside-image test; float32 pixels (non-finite -> 0) and the bool mask."""
    ok = np.asarray(valid, dtype=bool) & inside_image(uv, image_hw)
    out = np.where(np.isfinite(uv), uv, 0.0).astype(np.float32)
    return out, ok
