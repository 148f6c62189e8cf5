"""EgoDex / DROID / Allegro -> 42 keypoints and actions, on hand-computed cases."""

import math

import h5py
import numpy as np
import pytest
import torch

from dexwm_model.actions.allegro import allegro_action, allegro_keypoints, allegro_sequence_actions, allegro_trajectory
from dexwm_model.actions.droid import (
    droid_trajectory,
    droid_trajectory_from_h5,
    gripper_keypoints,
    gripper_radii,
    pose6_to_matrix,
)
from dexwm_model.actions.egodex import EGODEX_KEYPOINT_JOINTS, egodex_keypoints, egodex_trajectory

RZ90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])

# ------------------------------------------------------------------------------------------------- EgoDex
# the ARKit joint names as spelled in EgoDex files, written out by hand (not derived from the module's table)
FINGERS = {
    "Thumb": ["Knuckle", "IntermediateBase", "IntermediateTip", "Tip"],
    "IndexFinger": ["Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip"],
    "MiddleFinger": ["Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip"],
    "RingFinger": ["Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip"],
    "LittleFinger": ["Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip"],
}
ALL_HAND_JOINTS = [f"{h}Hand" for h in ("left", "right")] + [
    f"{h}{f}{p}" for h in ("left", "right") for f, parts in FINGERS.items() for p in parts
]
# the body joints of an EgoDex file that must be ignored
BODY = ["hip", "spine1", "leftShoulder", "leftArm", "leftForearm", "neck1"]


def write_egodex(path, n=2, with_confidences=True):
    rng = np.random.default_rng(0)
    pos = {name: rng.normal(size=(n, 3)) for name in ALL_HAND_JOINTS + BODY}
    with h5py.File(path, "w") as f:
        for name, p in pos.items():
            T = np.tile(np.eye(4), (n, 1, 1))
            T[:, :3, :3] = RZ90  # joint orientation is irrelevant to the keypoint
            T[:, :3, 3] = p
            f[f"transforms/{name}"] = T
            if with_confidences:
                f[f"confidences/{name}"] = np.full(n, 0.5) + 0.01 * ALL_HAND_JOINTS.index(name) \
                    if name in ALL_HAND_JOINTS else np.ones(n)
        cam = np.tile(np.eye(4), (n, 1, 1))
        cam[0, :3, :3], cam[0, :3, 3] = RZ90, (1.0, 0.0, 0.0)
        cam[1, :3, 3] = (1.0, 2.0, 0.0)  # second frame: rotated back to identity, moved world +y 2
        cam[1, :3, :3] = np.eye(3)
        f["transforms/camera"] = cam
        f["camera/intrinsic"] = np.array([[736.6, 0, 960], [0, 736.6, 540], [0, 0, 1.0]])
        f.attrs["description"] = "test episode"
    return pos


def test_egodex_joint_order_and_spelling():
    assert len(EGODEX_KEYPOINT_JOINTS) == 42
    assert EGODEX_KEYPOINT_JOINTS[:5] == ("leftHand", "leftThumbKnuckle", "leftThumbIntermediateBase",
                                          "leftThumbIntermediateTip", "leftThumbTip")
    assert EGODEX_KEYPOINT_JOINTS[5] == "leftIndexFingerKnuckle" and EGODEX_KEYPOINT_JOINTS[8] == "leftIndexFingerTip"
    assert EGODEX_KEYPOINT_JOINTS[17] == "leftLittleFingerKnuckle"
    assert EGODEX_KEYPOINT_JOINTS[21] == "rightHand" and EGODEX_KEYPOINT_JOINTS[41] == "rightLittleFingerTip"
    assert not any("Metacarpal" in j for j in EGODEX_KEYPOINT_JOINTS)
    assert set(EGODEX_KEYPOINT_JOINTS) <= set(ALL_HAND_JOINTS)


def test_egodex_file_to_trajectory(tmp_path):
    path = tmp_path / "0.hdf5"
    pos = write_egodex(path)
    traj = egodex_trajectory(path)
    assert len(traj) == 2 and traj.hand_consistency and traj.source == "egodex" and not traj.fixed_camera
    kp = traj.keypoints.numpy()
    assert kp.shape == (2, 42, 3)
    np.testing.assert_array_equal(kp[:, 0], pos["leftHand"])
    np.testing.assert_array_equal(kp[:, 4], pos["leftThumbTip"])
    np.testing.assert_array_equal(kp[:, 9], pos["leftMiddleFingerKnuckle"])
    np.testing.assert_array_equal(kp[:, 21], pos["rightHand"])
    np.testing.assert_array_equal(kp[:, 41], pos["rightLittleFingerTip"])
    assert traj.confidence.shape == (2, 42)
    assert traj.confidence[0, 1] == pytest.approx(0.5 + 0.01 * ALL_HAND_JOINTS.index("leftThumbKnuckle"))
    # action frame 0 -> 1 in camera-0 coordinates (camera 0 x axis = world +y, y axis = world -x)
    a = traj.actions(0, 1).numpy()
    d_left_wrist = pos["leftHand"][1] - pos["leftHand"][0]
    np.testing.assert_allclose(a[0:3], [d_left_wrist[1], -d_left_wrist[0], d_left_wrist[2]], atol=1e-12)
    np.testing.assert_allclose(a[126:129], [2.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(a[129:132], [0.0, 0.0, -math.pi / 2], atol=1e-12)  # R0^T R1 = Rz(-90)


def test_egodex_missing_joint_and_shape_errors(tmp_path):
    path = tmp_path / "1.hdf5"
    write_egodex(path, with_confidences=False)
    with h5py.File(path, "a") as f:
        del f["transforms/rightRingFingerIntermediateTip"]
    with pytest.raises(KeyError, match="rightRingFingerIntermediateTip"):
        egodex_trajectory(path)
    with pytest.raises(ValueError, match=r"transforms/leftHand: expected shape \(N, 4, 4\)"):
        egodex_keypoints({"leftHand": np.zeros((3, 3, 4))})
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        egodex_trajectory(tmp_path / "nope.hdf5")


# -------------------------------------------------------------------------------------------------- DROID
def test_gripper_radii_interpolate():
    np.testing.assert_allclose(gripper_radii(np.array(0.0)), [0.03, 0.04, 0.05, 0.06])
    np.testing.assert_allclose(gripper_radii(np.array(1.0)), [0.03, 0.04, 0.035, 0.03])
    np.testing.assert_allclose(gripper_radii(np.array([0.5, 2.0])), [[0.03, 0.04, 0.0425, 0.045],
                                                                      [0.03, 0.04, 0.035, 0.03]])


def test_gripper_keypoints_hand_computed():
    ee = np.array([0.5, -0.1, 0.2])
    kp = gripper_keypoints(ee, np.array(0.0))
    assert kp.shape == (42, 3)
    np.testing.assert_array_equal(kp[:21], 0.0)  # left hand empty
    np.testing.assert_array_equal(kp[21], ee)  # keypoint 0 of the right hand: the end effector
    np.testing.assert_allclose(kp[22], ee + [0.03, 0, 0], atol=1e-15)  # circle 0, point 0
    c72, s72 = math.cos(2 * math.pi / 5), math.sin(2 * math.pi / 5)
    np.testing.assert_allclose(kp[23], ee + [0.03 * c72, 0.03 * s72, 0], atol=1e-15)  # circle 0, point 1
    np.testing.assert_allclose(kp[21 + 16], ee + [0.06, 0, 0], atol=1e-15)  # circle 3, point 0 (open)
    np.testing.assert_allclose(kp[21:, 2], 0.2)  # horizontal plane
    closed = gripper_keypoints(ee, np.array(1.0))
    np.testing.assert_allclose(closed[21 + 11], ee + [0.035, 0, 0], atol=1e-15)  # circle 2 point 0 (closed)
    batch = gripper_keypoints(torch.zeros(4, 3), torch.linspace(0, 1, 4))
    assert batch.shape == (4, 42, 3)


def test_pose6_extrinsic_xyz():
    T = pose6_to_matrix(np.array([1.0, 2.0, 3.0, 0.0, 0.0, math.pi / 2]))
    np.testing.assert_allclose(T[:3, :3], RZ90, atol=1e-15)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    # extrinsic x then y: Ry(90) @ Rx(90), computed by hand
    R = pose6_to_matrix(np.array([0, 0, 0, math.pi / 2, math.pi / 2, 0.0]))[:3, :3]
    np.testing.assert_allclose(R, [[0, 1, 0], [0, 0, -1], [-1, 0, 0]], atol=1e-15)


def test_droid_closing_gripper_action(tmp_path):
    ee = np.array([[0.4, 0.0, 0.3, math.pi, 0.0, 0.0]] * 2)
    traj = droid_trajectory(ee, np.array([0.0, 1.0]), np.zeros(6))
    assert not traj.hand_consistency and traj.fixed_camera and traj.source == "droid"
    a = traj.actions(0, 1).numpy()
    np.testing.assert_array_equal(a[:63], 0.0)
    np.testing.assert_array_equal(a[63:66], 0.0)  # end effector did not move
    np.testing.assert_allclose(a[63 + 3 * 16 : 63 + 3 * 17], [-0.03, 0.0, 0.0], atol=1e-15)  # r 0.06 -> 0.03
    np.testing.assert_array_equal(a[126:], 0.0)
    with pytest.raises(ValueError, match=r"gripper_position: expected shape \(2,\)"):
        droid_trajectory(ee, np.zeros(3), np.zeros(6))

    with h5py.File(tmp_path / "trajectory.h5", "w") as f:
        f["observation/robot_state/cartesian_position"] = ee
        f["observation/robot_state/gripper_position"] = np.array([0.0, 1.0])
        f["observation/camera_extrinsics/111_left"] = np.zeros((2, 6))
        f["observation/camera_extrinsics/111_right"] = np.zeros((2, 6))
        f["observation/camera_extrinsics/222_left"] = np.tile([0, 0, 1.0, 0, 0, 0], (2, 1))
    with pytest.raises(ValueError, match=r"choose camera_serial.*111_left.*222_left"):
        droid_trajectory_from_h5(tmp_path / "trajectory.h5")
    with pytest.raises(KeyError, match="no 'observation/camera_extrinsics/333_left'"):
        droid_trajectory_from_h5(tmp_path / "trajectory.h5", "333")
    t2 = droid_trajectory_from_h5(tmp_path / "trajectory.h5", "222")
    np.testing.assert_allclose(t2.camera_poses[0, :3, 3].numpy(), [0, 0, 1.0])
    np.testing.assert_allclose(t2.actions(0, 1).numpy(), a, atol=1e-15)


# ------------------------------------------------------------------------------------------------ Allegro
class LineFK:
    """Stand-in FK: keypoint k of the hand at joints q sits at (q0 + 0.01 k, q1, q2)."""

    offsets = torch.stack((torch.arange(21, dtype=torch.float64) * 0.01, torch.zeros(21), torch.zeros(21)), -1)

    def hand21(self, q):
        return q[..., None, :3] + self.offsets.to(q.dtype)


def test_allegro_keypoints_with_stand_in_fk():
    q = np.zeros(23)
    q[:3] = (0.1, 0.2, 0.3)
    kp = allegro_keypoints(q, fk=LineFK())
    assert kp.shape == (42, 3)
    np.testing.assert_array_equal(kp[:21], 0.0)
    np.testing.assert_allclose(kp[21], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(kp[41], [0.3, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"joints: expected shape \(\.\.\., 23\)"):
        allegro_keypoints(np.zeros(16), fk=LineFK())


def test_allegro_actions_fixed_camera():
    cam = np.eye(4)
    cam[:3, :3] = RZ90
    q1, q2 = np.zeros(23), np.zeros(23)
    q2[0] = 0.1  # every right-hand keypoint moves world +x 0.1 -> camera -y 0.1
    a = allegro_action(q1, q2, cam, fk=LineFK())
    expected = np.zeros(132)
    expected[63:126] = np.tile([0.0, -0.1, 0.0], 21)
    np.testing.assert_allclose(a, expected, atol=1e-15)
    assert np.all(a[126:] == 0)
    seq = torch.zeros(5, 4, 23, dtype=torch.float64)  # 5 samples, current joints + 3 waypoints
    seq[:, 1:, 0] = 0.1
    acts = allegro_sequence_actions(seq, cam, fk=LineFK())
    assert acts.shape == (5, 3, 132)
    assert torch.allclose(acts[:, 0], torch.from_numpy(expected)) and torch.all(acts[:, 1:] == 0)
    traj = allegro_trajectory(seq[0], cam, fk=LineFK())
    assert traj.fixed_camera and traj.hand_consistency and traj.source == "allegro"
    assert torch.allclose(traj.actions([0, 0], [1, 3]), torch.from_numpy(np.stack([expected, expected])))


def test_allegro_with_the_robot_fk():
    """The real Panda + Allegro chain: moving only hand joints leaves the wrist where it is."""
    q1 = torch.zeros(2, 23, dtype=torch.float64)
    q2 = q1.clone()
    q2[:, 7:] = 0.3  # the 16 Allegro joints
    a = allegro_action(q1, q2, torch.eye(4, dtype=torch.float64))
    assert a.shape == (2, 132) and torch.isfinite(a).all()
    assert torch.all(a[:, :63] == 0) and torch.all(a[:, 126:] == 0)
    assert torch.allclose(a[:, 63:66], torch.zeros(2, 3, dtype=torch.float64), atol=1e-12)  # wrist still
    assert a[:, 66:126].abs().max() > 0.005  # fingers moved
