"""The 132-d keypoint action: layout, Euler convention, computing / inverting actions (hand-computed cases)."""

import math

import numpy as np
import pytest
import torch

from dexwm_model.actions import (
    ActionSpace,
    apply_action,
    compose_action,
    euler_xyz_to_matrix,
    fixed_camera_action,
    invert_transform,
    keypoint_action,
    make_transform,
    matrix_to_euler_xyz,
    split_action,
    trajectory_actions,
    world_to_camera,
)
from dexwm_model.actions.space import keypoint_index

# camera 1: at (1, 0, 0), rotated 90 deg about world z: its x axis = world +y, its y axis = world -x
RZ90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
T1 = np.eye(4)
T1[:3, :3], T1[:3, 3] = RZ90, (1.0, 0.0, 0.0)


def rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=float)


def random_pose(g, n):
    R = euler_xyz_to_matrix(torch.randn(n, 3, generator=g, dtype=torch.float64))
    return make_transform(R, torch.randn(n, 3, generator=g, dtype=torch.float64))


def test_layout_constants_and_names():
    assert ActionSpace.DIM == 132 and len(ActionSpace.NAMES) == 132 and len(set(ActionSpace.NAMES)) == 132
    assert (ActionSpace.LEFT_HAND, ActionSpace.RIGHT_HAND) == (slice(0, 63), slice(63, 126))
    assert (ActionSpace.CAMERA_TRANSLATION, ActionSpace.CAMERA_ROTATION) == (slice(126, 129), slice(129, 132))
    assert keypoint_index("left", "wrist") == 0 and keypoint_index("left", "thumb_tip") == 4
    assert keypoint_index("right", "wrist") == 21 and keypoint_index("right", "index_tip") == 29
    assert keypoint_index("right", "little_tip") == 41
    assert ActionSpace.NAMES[3 * 29 : 3 * 29 + 3] == ("right_index_tip_dx", "right_index_tip_dy", "right_index_tip_dz")
    assert ActionSpace.NAMES[126:] == ("cam_dx", "cam_dy", "cam_dz", "cam_rx", "cam_ry", "cam_rz")
    with pytest.raises(ValueError, match="hand must be"):
        keypoint_index("middle", "wrist")
    with pytest.raises(ValueError, match="keypoint name"):
        keypoint_index("left", "pinky_tip")


def test_euler_convention_is_intrinsic_xyz():
    np.testing.assert_allclose(euler_xyz_to_matrix(np.array([math.pi / 2, 0, 0])), rx(math.pi / 2), atol=1e-15)
    # Rx(90) @ Ry(90), computed by hand; the extrinsic order (Ry @ Rx) would give a different matrix
    expected = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(euler_xyz_to_matrix(np.array([math.pi / 2, math.pi / 2, 0])), expected, atol=1e-15)
    np.testing.assert_allclose(matrix_to_euler_xyz(RZ90), [0, 0, math.pi / 2], atol=1e-15)
    np.testing.assert_allclose(matrix_to_euler_xyz(rx(-0.7)), [-0.7, 0, 0], atol=1e-15)


def test_euler_round_trip_batched_and_at_gimbal_lock():
    g = torch.Generator().manual_seed(0)
    e = torch.rand(4, 50, 3, generator=g, dtype=torch.float64) * 2 - 1
    e = e * torch.tensor([math.pi, math.pi / 2, math.pi], dtype=torch.float64) * 0.999
    assert torch.allclose(matrix_to_euler_xyz(euler_xyz_to_matrix(e)), e, atol=1e-10)
    R = euler_xyz_to_matrix(e * 3)  # out-of-range angles: the matrix still round-trips
    assert torch.allclose(euler_xyz_to_matrix(matrix_to_euler_xyz(R)), R, atol=1e-12)
    for ry in (math.pi / 2, -math.pi / 2):
        R = euler_xyz_to_matrix(np.array([0.1, ry, 0.3]))
        e = matrix_to_euler_xyz(R)
        assert e[2] == 0.0 and abs(e[1] - ry) < 1e-12
        np.testing.assert_allclose(euler_xyz_to_matrix(e), R, atol=1e-12)
    with pytest.raises(ValueError, match=r"rotation: expected shape \(\.\.\., 3, 3\)"):
        matrix_to_euler_xyz(np.eye(4))


def test_invert_transform():
    g = torch.Generator().manual_seed(1)
    T = random_pose(g, 6)
    assert torch.allclose(invert_transform(T) @ T, torch.eye(4, dtype=torch.float64).expand(6, 4, 4), atol=1e-12)


def test_world_to_camera_hand_computed():
    p = world_to_camera(np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 2.0]]), T1)
    np.testing.assert_allclose(p, [[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]], atol=1e-15)


def test_keypoint_action_hand_computed():
    kp1 = np.zeros((42, 3))
    kp1[5] = (1.0, 1.0, 0.0)
    kp2 = kp1.copy()
    kp2[5] = (1.0, 1.0, 3.0)  # world +z 3 -> camera z 3
    kp2[30] = (-1.0, 0.0, 0.0)  # world -x 1 -> camera +y 1
    kp1[40] = kp2[40] = (5.0, 6.0, 7.0)  # a keypoint that does not move
    T2 = np.eye(4)
    T2[:3, :3], T2[:3, 3] = RZ90 @ rx(0.2), (1.0, 2.0, 0.0)  # moved world +y 2 -> camera +x 2; rolled 0.2 about x
    a = keypoint_action(kp1, kp2, T1, T2)
    assert isinstance(a, np.ndarray) and a.shape == (132,)
    expected = np.zeros(132)
    expected[15:18] = (0.0, 0.0, 3.0)
    expected[90:93] = (0.0, 1.0, 0.0)
    expected[126:129] = (2.0, 0.0, 0.0)
    expected[129:132] = (0.2, 0.0, 0.0)
    np.testing.assert_allclose(a, expected, atol=1e-12)


def test_keypoint_action_broadcasts_keeps_dtype_and_inverts():
    g = torch.Generator().manual_seed(2)
    kp1 = torch.randn(3, 4, 42, 3, generator=g, dtype=torch.float64)
    kp2 = kp1 + 0.1 * torch.randn(3, 4, 42, 3, generator=g, dtype=torch.float64)
    T1, T2 = random_pose(g, 4), random_pose(g, 4)  # broadcast over the first dimension
    a = keypoint_action(kp1, kp2, T1, T2)
    assert a.shape == (3, 4, 132) and a.dtype == torch.float64
    p2, T2b = apply_action(kp1, T1, a)
    assert torch.allclose(p2, kp2, atol=1e-12) and torch.allclose(T2b, T2.expand(3, 4, 4, 4), atol=1e-12)
    a32 = keypoint_action(kp1.float(), kp2.float(), T1.float(), T2.float())
    assert a32.dtype == torch.float32 and torch.allclose(a32.double(), a, atol=1e-4)
    d, t, r = split_action(a)
    assert d.shape == (3, 4, 42, 3) and t.shape == r.shape == (3, 4, 3)
    assert torch.equal(compose_action(d, t, r), a)


def test_fixed_camera_action_matches_general_and_is_exactly_zero_on_camera():
    g = torch.Generator().manual_seed(3)
    kp1, kp2 = torch.randn(2, 7, 42, 3, generator=g, dtype=torch.float64)
    T = random_pose(g, 1)[0]
    a = fixed_camera_action(kp1, kp2, T)
    assert torch.all(a[:, 126:] == 0)
    assert torch.allclose(a, keypoint_action(kp1, kp2, T, T), atol=1e-12)


def test_trajectory_actions_irregular_steps():
    g = torch.Generator().manual_seed(4)
    kp = torch.randn(2, 6, 42, 3, generator=g, dtype=torch.float64)
    cams = random_pose(g, 12).reshape(2, 6, 4, 4)
    k1, k2 = [0, 1, 3], [1, 3, -1]
    a = trajectory_actions(kp, cams, k1, k2)
    assert a.shape == (2, 3, 132)
    for j, (i1, i2) in enumerate(zip(k1, k2)):
        assert torch.allclose(a[:, j], keypoint_action(kp[:, i1], kp[:, i2], cams[:, i1], cams[:, i2]))
    assert trajectory_actions(kp, cams, 2, 5).shape == (2, 132)
    with pytest.raises(IndexError, match="out of range for 6 frames"):
        trajectory_actions(kp, cams, [0], [6])
    with pytest.raises(ValueError, match="keypoints have 6 frames but camera_poses have 5"):
        trajectory_actions(kp, cams[:, :5], 0, 1)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"keypoints_k2: expected shape \(\.\.\., 42, 3\), found \(41, 3\)"):
        keypoint_action(np.zeros((42, 3)), np.zeros((41, 3)), np.eye(4), np.eye(4))
    with pytest.raises(ValueError, match="camera_pose_k1"):
        keypoint_action(np.zeros((42, 3)), np.zeros((42, 3)), np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match=r"action: expected shape \(\.\.\., 132\)"):
        split_action(np.zeros(131))
