"""Rotation matrices, Euler angles and rigid transforms, batched over leading dimensions (torch or numpy).

Convention of the action's rotation part: **intrinsic X-Y-Z** Euler angles ``(rx, ry, rz)``::

    R = Rx(rx) @ Ry(ry) @ Rz(rz)

(rotate about x, then about the new y, then about the newest z; the same matrix as scipy's
``Rotation.from_euler("XYZ", [rx, ry, rz])``). :func:`matrix_to_euler_xyz` returns ``rx, rz`` in (-pi, pi] and
``ry`` in [-pi/2, pi/2]; at the singularity ``|ry| = pi/2`` it sets ``rz = 0`` and puts the whole in-plane
rotation into ``rx``. :func:`euler_xyz_to_matrix` is its inverse (exactly, away from the singularity).
"""

from __future__ import annotations

from typing import Any

import torch

from dexwm_model.actions._arrays import check_shape, numpy_compatible, to_tensors

# below this cos(ry) the X and Z axes are treated as aligned (gimbal lock)
_GIMBAL_EPS = 1e-9


def axis_rotation(angle: torch.Tensor, axis: int) -> torch.Tensor:
    """(...,) angles -> (..., 3, 3) rotations about the x (0), y (1) or z (2) axis."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0 (x), 1 (y) or 2 (z), found {axis!r}")
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis == 1:
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    else:
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


@numpy_compatible
def euler_xyz_to_matrix(euler: Any) -> torch.Tensor:
    """(..., 3) intrinsic XYZ angles (radians) -> (..., 3, 3) rotation ``Rx(rx) @ Ry(ry) @ Rz(rz)``."""
    (e,) = to_tensors(euler=euler)
    check_shape(e, "euler", (3,))
    return axis_rotation(e[..., 0], 0) @ axis_rotation(e[..., 1], 1) @ axis_rotation(e[..., 2], 2)


@numpy_compatible
def matrix_to_euler_xyz(rotation: Any) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) intrinsic XYZ angles; inverse of :func:`euler_xyz_to_matrix`."""
    (R,) = to_tensors(rotation=rotation)
    check_shape(R, "rotation", (3, 3))
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12, r22 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2], R[..., 2, 2]
    cy = torch.sqrt(r00 * r00 + r01 * r01)  # |cos(ry)|, >= 0 for a proper rotation
    ry = torch.atan2(r02, cy)
    regular = cy > _GIMBAL_EPS
    rx = torch.where(regular, torch.atan2(-r12, r22), torch.atan2(torch.sign(r02) * r10, r11))
    rz = torch.where(regular, torch.atan2(-r01, r00), torch.zeros_like(r00))
    return torch.stack((rx, ry, rz), dim=-1)


@numpy_compatible
def invert_transform(T: Any) -> torch.Tensor:
    """(..., 4, 4) rigid transforms -> their inverses ``[R^T, -R^T t]`` (no general matrix inverse)."""
    (T,) = to_tensors(T=T)
    check_shape(T, "T", (4, 4))
    R, t = T[..., :3, :3], T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


@numpy_compatible
def make_transform(rotation: Any, translation: Any) -> torch.Tensor:
    """(..., 3, 3) rotation and (..., 3) translation -> (..., 4, 4) homogeneous transform."""
    R, t = to_tensors(rotation=rotation, translation=translation)
    check_shape(R, "rotation", (3, 3))
    check_shape(t, "translation", (3,))
    batch = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    out = torch.zeros(batch + (4, 4), dtype=R.dtype, device=R.device)
    out[..., :3, :3] = R
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out
