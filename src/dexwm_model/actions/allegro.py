"""Panda + Allegro joint angles -> the 42 keypoints and actions (right hand only, fixed camera).

The 23 joints (Panda ``joint1..7``, Allegro ``ff, mf, rf, th`` 0..3) go through the batched forward kinematics
(:class:`dexwm_model.kinematics.panda_allegro.PandaAllegroFK`, any object with ``hand21(q) -> (..., 21, 3)``
world positions can stand in) into the right-hand slot; the Allegro's ring finger is duplicated as the little
finger by the FK's 21-point layout. The left hand is zeros. The camera is fixed, so the camera part of every
action is exactly zero.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import torch

from dexwm_model.actions._arrays import as_tensor, check_shape, numpy_compatible, to_tensors
from dexwm_model.actions.keypoint_action import fixed_camera_action
from dexwm_model.actions.trajectory import KeypointTrajectory
from dexwm_robot.hand_layout import NUM_HAND_KEYPOINTS

NUM_JOINTS = 23


class Hand21FK(Protocol):
    def hand21(self, q: Any) -> torch.Tensor: ...


@functools.lru_cache(maxsize=1)
def default_fk() -> Hand21FK:
    """The FK of the default scene, built on first use (needs the robot models; see README)."""
    from dexwm_model.kinematics.panda_allegro import PandaAllegroFK

    return PandaAllegroFK.default()


def _joints(q: Any, fk: Hand21FK | None) -> tuple[torch.Tensor, Hand21FK]:
    qt = as_tensor(q, "joints")
    check_shape(qt, "joints", (NUM_JOINTS,))
    return qt, default_fk() if fk is None else fk


@numpy_compatible
def allegro_keypoints(joints: Any, fk: Hand21FK | None = None) -> torch.Tensor:
    """Joint angles ``(..., 23)`` -> world keypoints ``(..., 42, 3)``: left hand zeros, right hand from FK."""
    q, fk = _joints(joints, fk)
    right = fk.hand21(q)
    expected = tuple(q.shape[:-1]) + (NUM_HAND_KEYPOINTS, 3)
    if tuple(right.shape) != expected:
        raise ValueError(f"fk.hand21 returned shape {tuple(right.shape)}, expected {expected}")
    return torch.cat((torch.zeros_like(right), right), dim=-2)


@numpy_compatible
def allegro_action(joints_k1: Any, joints_k2: Any, camera_pose: Any, fk: Hand21FK | None = None) -> torch.Tensor:
    """The action ``(..., 132)`` of moving the robot from ``joints_k1`` to ``joints_k2`` (each ``(..., 23)``), seen
    by the fixed camera ``camera_pose`` (camera-to-world ``(4, 4)`` or ``(..., 4, 4)``)."""
    q1, q2 = to_tensors(joints_k1=joints_k1, joints_k2=joints_k2)
    batch = torch.broadcast_shapes(q1.shape, q2.shape)
    kp = allegro_keypoints(torch.stack((q1.expand(batch), q2.expand(batch))), fk)
    return fixed_camera_action(kp[0], kp[1], as_tensor(camera_pose, "camera_pose", kp))


@numpy_compatible
def allegro_sequence_actions(joints: Any, camera_pose: Any, fk: Hand21FK | None = None) -> torch.Tensor:
    """Consecutive actions of joint sequences ``(..., T+1, 23)`` -> ``(..., T, 132)``, one FK call for all frames
    (the planner's use: the current joints followed by the waypoints of every sample)."""
    kp = allegro_keypoints(joints, fk)
    if kp.ndim < 3 or kp.shape[-3] < 2:
        raise ValueError(f"joints: expected shape (..., T+1, 23) with T+1 >= 2 frames, found "
                         f"{tuple(kp.shape[:-2]) + (NUM_JOINTS,)}")
    return fixed_camera_action(kp[..., :-1, :, :], kp[..., 1:, :, :], as_tensor(camera_pose, "camera_pose", kp))


def allegro_trajectory(joints: Any, camera_pose: Any, fk: Hand21FK | None = None) -> KeypointTrajectory:
    """Recorded robot joints ``(T, 23)`` and the fixed camera pose ``(4, 4)`` -> :class:`KeypointTrajectory`."""
    kp = allegro_keypoints(as_tensor(joints, "joints"), fk)
    if kp.ndim != 3:
        raise ValueError(f"joints: expected shape (T, {NUM_JOINTS}), found {tuple(kp.shape[:-2]) + (NUM_JOINTS,)}")
    cam = as_tensor(camera_pose, "camera_pose", kp)
    if tuple(cam.shape) != (4, 4):
        raise ValueError(f"camera_pose: expected one fixed camera pose of shape (4, 4), found {tuple(cam.shape)}")
    return KeypointTrajectory(keypoints=kp, camera_poses=cam.expand(kp.shape[0], 4, 4).clone(),
                              hand_consistency=True, source="allegro", fixed_camera=True)
