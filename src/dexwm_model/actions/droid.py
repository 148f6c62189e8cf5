"""DROID (Franka + parallel-jaw gripper) -> 42 keypoints: the gripper as a pseudo right hand.

A gripper has no fingers to track, so (following DexWM) the right-hand slot carries keypoint 0 = the
end-effector position and 20 "dummy" keypoints on 4 concentric circles of 5 points each around it, in the
horizontal plane (world z up). The circles' radii follow the gripper opening ``g`` (DROID's
``gripper_position``: 0 open, 1 closed) linearly between ``RADII_OPEN`` and ``RADII_CLOSED``, so opening and
closing shows up in the action. Circle ``c`` (0..3) fills right-hand keypoints ``1 + 5c .. 5 + 5c`` (the
layout's finger slots simply hold the circle points in order); point ``j`` of every circle sits at angle
``2 pi j / 5`` from the world +x axis. The left hand is zeros.
These samples carry ``hand_consistency = False``: no heat-map loss on dummy points.

DROID raw episodes (``trajectory.h5``) hold poses as 6-vectors ``xyz + Euler`` in the robot base frame, the
Euler angles being *extrinsic* x-y-z (``R = Rz(c) @ Ry(b) @ Rx(a)``, scipy's ``as_euler("xyz")``), both for
``observation/robot_state/cartesian_position`` and for the camera extrinsics
``observation/camera_extrinsics/<serial>_left`` (camera-to-base, optical frame).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from dexwm_model.actions._arrays import check_shape, numpy_compatible, to_tensors
from dexwm_model.actions.rotations import axis_rotation, make_transform
from dexwm_model.actions.trajectory import KeypointTrajectory
from dexwm_robot.hand_layout import NUM_HAND_KEYPOINTS

RADII_OPEN = (0.03, 0.04, 0.05, 0.06)  # m, gripper_position = 0
RADII_CLOSED = (0.03, 0.04, 0.035, 0.03)  # m, gripper_position = 1
POINTS_PER_CIRCLE = 5
NUM_CIRCLES = len(RADII_OPEN)

ROBOT_STATE = "observation/robot_state"
CAMERA_EXTRINSICS = "observation/camera_extrinsics"


@numpy_compatible
def gripper_radii(gripper_position: Any) -> torch.Tensor:
    """(...) gripper opening (0 open .. 1 closed, clipped) -> (..., 4) circle radii in metres."""
    (g,) = to_tensors(gripper_position=gripper_position)
    if torch.isnan(g).any():
        raise ValueError("gripper_position contains NaN")
    g = g.clamp(0.0, 1.0).unsqueeze(-1)
    r_open = torch.tensor(RADII_OPEN, dtype=g.dtype, device=g.device)
    r_closed = torch.tensor(RADII_CLOSED, dtype=g.dtype, device=g.device)
    return r_open + g * (r_closed - r_open)


@numpy_compatible
def gripper_keypoints(ee_position: Any, gripper_position: Any) -> torch.Tensor:
    """End-effector world position ``(..., 3)`` and opening ``(...)`` -> world keypoints ``(..., 42, 3)``:
    left hand zeros; right hand = [end effector, 4 circles x 5 points]."""
    p, g = to_tensors(ee_position=ee_position, gripper_position=gripper_position)
    check_shape(p, "ee_position", (3,))
    batch = torch.broadcast_shapes(p.shape[:-1], g.shape)
    radii = gripper_radii(g)  # (..., 4)
    angles = torch.arange(POINTS_PER_CIRCLE, dtype=p.dtype, device=p.device) * (2.0 * math.pi / POINTS_PER_CIRCLE)
    unit = torch.stack((torch.cos(angles), torch.sin(angles), torch.zeros_like(angles)), dim=-1)  # (5, 3)
    ring = (radii[..., :, None, None] * unit).flatten(-3, -2)  # (..., 20, 3): circle-major
    center = p.expand(batch + (3,)).unsqueeze(-2)  # (..., 1, 3)
    right = torch.cat((center, center + ring), dim=-2)
    left = right.new_zeros(batch + (NUM_HAND_KEYPOINTS, 3))
    return torch.cat((left, right), dim=-2)


@numpy_compatible
def pose6_to_matrix(pose: Any) -> torch.Tensor:
    """DROID pose ``(..., 6)`` = xyz + extrinsic-xyz Euler (radians) -> ``(..., 4, 4)``."""
    (x,) = to_tensors(pose=pose)
    check_shape(x, "pose", (6,))
    R = axis_rotation(x[..., 5], 2) @ axis_rotation(x[..., 4], 1) @ axis_rotation(x[..., 3], 0)
    return make_transform(R, x[..., :3])


def droid_trajectory(cartesian_position: Any, gripper_position: Any, camera_extrinsics: Any) -> KeypointTrajectory:
    """DROID arrays -> :class:`KeypointTrajectory` (no hand-consistency loss).

    ``cartesian_position``: (N, 6) end-effector poses; ``gripper_position``: (N,); ``camera_extrinsics``: (N, 6)
    per-frame camera poses or one (6,) pose for the whole episode.
    """
    ee, g, cam = to_tensors(cartesian_position=cartesian_position, gripper_position=gripper_position,
                            camera_extrinsics=camera_extrinsics)
    if ee.ndim != 2 or ee.shape[1] != 6:
        raise ValueError(f"cartesian_position: expected shape (N, 6), found {tuple(ee.shape)}")
    n = ee.shape[0]
    if tuple(g.shape) != (n,):
        raise ValueError(f"gripper_position: expected shape ({n},) to match cartesian_position, found {tuple(g.shape)}")
    if tuple(cam.shape) == (6,):
        cam = cam.expand(n, 6)
    elif tuple(cam.shape) != (n, 6):
        raise ValueError(f"camera_extrinsics: expected shape ({n}, 6) or (6,), found {tuple(cam.shape)}")
    fixed = bool((cam == cam[:1]).all())
    return KeypointTrajectory(keypoints=gripper_keypoints(ee[:, :3], g), camera_poses=pose6_to_matrix(cam),
                              hand_consistency=False, source="droid", fixed_camera=fixed)


def droid_trajectory_from_h5(episode: Mapping[str, Any] | str | Path, camera_serial: str | None = None
                             ) -> KeypointTrajectory:
    """A raw DROID ``trajectory.h5`` (path or open ``h5py.File``) seen from camera ``camera_serial`` (its left
    lens; ``None`` = the only camera present) -> :class:`KeypointTrajectory`."""
    if isinstance(episode, (str, Path)):
        import h5py

        path = Path(episode)
        if not path.is_file():
            raise FileNotFoundError(f"DROID trajectory not found: {path}")
        with h5py.File(path, "r") as f:
            return droid_trajectory_from_h5(f, camera_serial)
    for key in (f"{ROBOT_STATE}/cartesian_position", f"{ROBOT_STATE}/gripper_position", CAMERA_EXTRINSICS):
        if key not in episode:
            raise KeyError(f"DROID trajectory: missing '{key}'")
    extr = episode[CAMERA_EXTRINSICS]
    lefts = sorted(k for k in extr.keys() if k.endswith("_left"))
    if camera_serial is None:
        if len(lefts) != 1:
            raise ValueError(f"DROID trajectory: choose camera_serial, the file has camera extrinsics {lefts}")
        key = lefts[0]
    else:
        key = f"{camera_serial}_left"
        if key not in extr:
            raise KeyError(f"DROID trajectory: no '{CAMERA_EXTRINSICS}/{key}'; available: {lefts}")
    return droid_trajectory(np.asarray(episode[f"{ROBOT_STATE}/cartesian_position"], dtype=np.float64),
                            np.asarray(episode[f"{ROBOT_STATE}/gripper_position"], dtype=np.float64).reshape(-1),
                            np.asarray(extr[key], dtype=np.float64))
