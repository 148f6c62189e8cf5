"""Computing, splitting and applying the 132-number keypoint action (layout in :mod:`.space`).

Inputs are world-frame keypoints ``(..., 42, 3)`` and camera-to-world poses ``(..., 4, 4)`` (optical frame), any
leading batch dimensions that broadcast; torch tensors (any device / float dtype) or numpy arrays (then numpy
comes back).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from dexwm_model.actions._arrays import check_shape, numpy_compatible, to_tensors
from dexwm_model.actions.rotations import euler_xyz_to_matrix, make_transform, matrix_to_euler_xyz
from dexwm_model.actions.space import ACTION_DIM, CAMERA_ROTATION, CAMERA_TRANSLATION, KEYPOINTS, NUM_KEYPOINTS

KP_TAIL = (NUM_KEYPOINTS, 3)


@numpy_compatible
def world_to_camera(points: Any, camera_pose: Any) -> torch.Tensor:
    """World points ``(..., K, 3)`` -> the frame of camera ``camera_pose`` (camera-to-world ``(..., 4, 4)``)."""
    p, T = to_tensors(points=points, camera_pose=camera_pose)
    check_shape(p, "points", (3,))
    check_shape(T, "camera_pose", (4, 4))
    R, t = T[..., :3, :3], T[..., :3, 3]
    # row vectors: R^T (p - t)  ==  (p - t) @ R
    return (p - t.unsqueeze(-2)) @ R


@numpy_compatible
def keypoint_action(keypoints_k1: Any, keypoints_k2: Any, camera_pose_k1: Any, camera_pose_k2: Any) -> torch.Tensor:
    """The action from k1 to k2: ``(..., 132)``.

    ``keypoints_k*``: world positions ``(..., 42, 3)``; ``camera_pose_k*``: camera-to-world ``(..., 4, 4)``.
    Keypoint part ``R1^T (p2 - p1)``; camera translation ``R1^T (t2 - t1)``; camera rotation
    ``euler_xyz(R1^T R2)``.
    """
    p1, p2, T1, T2 = to_tensors(keypoints_k1=keypoints_k1, keypoints_k2=keypoints_k2,
                                camera_pose_k1=camera_pose_k1, camera_pose_k2=camera_pose_k2)
    for name, t in (("keypoints_k1", p1), ("keypoints_k2", p2)):
        check_shape(t, name, KP_TAIL)
    for name, t in (("camera_pose_k1", T1), ("camera_pose_k2", T2)):
        check_shape(t, name, (4, 4))
    R1 = T1[..., :3, :3]
    disp = (p2 - p1) @ R1  # (..., 42, 3)
    cam_t = ((T2[..., :3, 3] - T1[..., :3, 3]).unsqueeze(-2) @ R1).squeeze(-2)
    cam_r = matrix_to_euler_xyz(R1.transpose(-1, -2) @ T2[..., :3, :3])
    batch = torch.broadcast_shapes(disp.shape[:-2], cam_t.shape[:-1])
    return torch.cat((disp.expand(batch + KP_TAIL).flatten(-2), cam_t.expand(batch + (3,)),
                      cam_r.expand(batch + (3,))), dim=-1)


@numpy_compatible
def fixed_camera_action(keypoints_k1: Any, keypoints_k2: Any, camera_pose: Any) -> torch.Tensor:
    """The action for a camera that does not move (``(..., 132)``, camera part exactly zero).

    Cheaper than :func:`keypoint_action` (one matrix product) and the form the planner uses for a fixed camera.
    """
    p1, p2, T = to_tensors(keypoints_k1=keypoints_k1, keypoints_k2=keypoints_k2, camera_pose=camera_pose)
    check_shape(p1, "keypoints_k1", KP_TAIL)
    check_shape(p2, "keypoints_k2", KP_TAIL)
    check_shape(T, "camera_pose", (4, 4))
    disp = ((p2 - p1) @ T[..., :3, :3]).flatten(-2)
    return torch.cat((disp, disp.new_zeros(disp.shape[:-1] + (6,))), dim=-1)


@numpy_compatible
def split_action(action: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(..., 132)`` -> (keypoint displacements ``(..., 42, 3)``, camera translation ``(..., 3)``,
    camera rotation Euler angles ``(..., 3)``), all in the k1 camera frame."""
    (a,) = to_tensors(action=action)
    check_shape(a, "action", (ACTION_DIM,))
    return a[..., KEYPOINTS].unflatten(-1, KP_TAIL), a[..., CAMERA_TRANSLATION], a[..., CAMERA_ROTATION]


@numpy_compatible
def compose_action(displacements: Any, camera_translation: Any, camera_rotation: Any) -> torch.Tensor:
    """Inverse of :func:`split_action`: parts -> ``(..., 132)`` (leading dimensions broadcast)."""
    d, t, r = to_tensors(displacements=displacements, camera_translation=camera_translation,
                         camera_rotation=camera_rotation)
    check_shape(d, "displacements", KP_TAIL)
    check_shape(t, "camera_translation", (3,))
    check_shape(r, "camera_rotation", (3,))
    batch = torch.broadcast_shapes(d.shape[:-2], t.shape[:-1], r.shape[:-1])
    return torch.cat((d.expand(batch + KP_TAIL).flatten(-2), t.expand(batch + (3,)), r.expand(batch + (3,))), -1)


@numpy_compatible
def apply_action(keypoints_k1: Any, camera_pose_k1: Any, action: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`keypoint_action`: from the state at k1 and the action, the world keypoints ``(..., 42, 3)``
    and camera-to-world pose ``(..., 4, 4)`` at k2."""
    p1, T1, a = to_tensors(keypoints_k1=keypoints_k1, camera_pose_k1=camera_pose_k1, action=action)
    check_shape(p1, "keypoints_k1", KP_TAIL)
    check_shape(T1, "camera_pose_k1", (4, 4))
    disp, cam_t, cam_r = split_action(a)
    R1 = T1[..., :3, :3]
    Rt = R1.transpose(-1, -2)
    p2 = p1 + disp @ Rt  # rows: R1 d
    t2 = T1[..., :3, 3] + (cam_t.unsqueeze(-2) @ Rt).squeeze(-2)
    R2 = R1 @ euler_xyz_to_matrix(cam_r)
    return p2, make_transform(R2, t2)


def take_frames(x: torch.Tensor, index: int | Sequence[int] | torch.Tensor, dim: int, name: str) -> torch.Tensor:
    """Select frames ``index`` (int or index array, negatives count from the end) along axis ``dim`` of ``x``."""
    n = x.shape[dim]
    idx = torch.as_tensor(index, dtype=torch.long, device=x.device)
    if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise IndexError(f"{name}: time index out of range for {n} frames: {idx.tolist()}")
    return x.index_select(dim, idx.reshape(-1) % n).reshape(x.shape[:dim] + idx.shape + x.shape[dim:][1:])


@numpy_compatible
def trajectory_actions(keypoints: Any, camera_poses: Any, k1: Any, k2: Any) -> torch.Tensor:
    """Actions between frames ``k1`` and ``k2`` of a trajectory.

    ``keypoints``: world positions ``(..., T, 42, 3)``; ``camera_poses``: ``(..., T, 4, 4)``; ``k1``/``k2``: an
    int or equally shaped index sequences along the time axis (irregular steps allowed). Returns
    ``(..., *k.shape, 132)``.
    """
    kp, cams = to_tensors(keypoints=keypoints, camera_poses=camera_poses)
    check_shape(kp, "keypoints", (NUM_KEYPOINTS, 3))
    check_shape(cams, "camera_poses", (4, 4))
    if kp.ndim < 3 or cams.ndim < 3:
        raise ValueError(f"keypoints (..., T, 42, 3) and camera_poses (..., T, 4, 4) need a time axis, found "
                         f"{tuple(kp.shape)} and {tuple(cams.shape)}")
    if kp.shape[-3] != cams.shape[-3]:
        raise ValueError(f"keypoints have {kp.shape[-3]} frames but camera_poses have {cams.shape[-3]}")
    i1 = torch.as_tensor(k1 if not isinstance(k1, torch.Tensor) else k1.cpu())
    i2 = torch.as_tensor(k2 if not isinstance(k2, torch.Tensor) else k2.cpu())
    if i1.shape != i2.shape:
        raise ValueError(f"k1 and k2 must have the same shape, found {tuple(i1.shape)} and {tuple(i2.shape)}")
    d_kp, d_cam = kp.ndim - 3, cams.ndim - 3
    return keypoint_action(take_frames(kp, i1, d_kp, "k1"), take_frames(kp, i2, d_kp, "k2"),
                           take_frames(cams, i1, d_cam, "k1"), take_frames(cams, i2, d_cam, "k2"))

