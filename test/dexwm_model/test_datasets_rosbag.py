"""RosbagEpisodes reads real rosbag2 recordings (MCAP and sqlite3) written with rosbags."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from dexwm_model.actions.allegro import default_fk
from dexwm_model.datasets import DatasetFormatError, RosbagEpisodes
from dexwm_model.datasets.rosbag import chain_pose, quaternion_matrix
from test_datasets_helpers import (
    ROS_K,
    ROSBAG,
    WORLD_TO_BASE,
    camera_pose_in_base,
    clip_config,
    frame_code,
    joints_at,
    write_rosbag,
)


class PlanarFK:
    """A small closed-form stand-in kinematics for tests of storage / TF handling (not of FK itself):
    keypoint j sits at (0.3 + 0.01 j + 0.1 q0, 0.02 j + 0.1 q1, 0.1 q2)."""

    def hand21(self, q):
        j = torch.arange(21, dtype=q.dtype)
        x = 0.3 + 0.01 * j + 0.1 * q[..., 0:1]
        y = 0.02 * j + 0.1 * q[..., 1:2]
        z = 0.1 * q[..., 2:3] + 0.0 * j
        return torch.stack((x, y, z), dim=-1)


def expected_camera_pose() -> np.ndarray:
    T = camera_pose_in_base().copy()
    T[:3, 3] += WORLD_TO_BASE  # world -> panda_link0 is a pure translation
    return T


def test_mcap_bag_frames_joints_fk_keypoints_and_actions(tmp_path):
    bag = write_rosbag(tmp_path / "run_000", n_images=12, storage="mcap")
    fk = default_fk()
    ds = RosbagEpisodes(tmp_path, ROSBAG, clip_config(), fk=fk)
    entry = ds.episodes[0]
    assert entry.name == "run_000" and len(entry.times) == 12
    np.testing.assert_allclose(entry.times, np.arange(12) * 0.2, atol=1e-6)
    T = expected_camera_pose()
    np.testing.assert_allclose(entry.info["camera_pose"], T, atol=1e-9)  # world -> link0 -> optical frame
    np.testing.assert_allclose(entry.info["K"], ROS_K)
    # joints: two publishers (arm, hand) at 20 Hz, interpolated at the image stamps, in the project's order
    np.testing.assert_allclose(entry.info["joints"], joints_at(np.arange(12) * 0.2), atol=1e-9)

    idx = np.array([1, 4, 6, 11])
    s = ds.episode_clip(0, idx)
    assert [frame_code(f) for f in s["frames"].numpy()] == idx.tolist()  # padded rgb8 rows read correctly
    assert s["image_size"] == (48, 64) and s["source"] == "rosbag" and s["hand_loss"] is True
    np.testing.assert_allclose(s["times"].numpy(), (idx - idx[0]) * 0.2, atol=1e-6)
    kw = fk.hand21(torch.as_tensor(joints_at(idx * 0.2))).numpy()  # (4, 21, 3) world
    R, c = T[:3, :3], T[:3, 3]
    a = s["actions"].numpy().astype(np.float64)
    np.testing.assert_allclose(a[:, 63:126].reshape(3, 21, 3), (kw[1:] - kw[:-1]) @ R, atol=1e-6)
    assert np.all(a[:, :63] == 0) and np.all(a[:, 126:] == 0)  # left hand absent, fixed camera
    pc = (kw[:, [0, 4, 8, 12, 16, 20]] - c) @ R
    uv = pc[..., :2] / pc[..., 2:] * [ROS_K[0, 0], ROS_K[1, 1]] + ROS_K[:2, 2]
    inside = (pc[..., 2] > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < 64) & (uv[..., 1] >= 0) & (uv[..., 1] < 48)
    assert inside.any()
    np.testing.assert_allclose(s["keypoints_px"].numpy()[:, 6:], uv, atol=1e-3)
    assert np.array_equal(s["keypoints_valid"].numpy()[:, 6:], inside) and not s["keypoints_valid"][:, :6].any()
    for i in range(len(ds)):
        d = ds[i]
        assert [frame_code(f) for f in d["frames"].numpy()] == d["frame_indices"].tolist()
    assert bag.is_dir()


def test_sqlite3_bag_bgr_images_and_configured_camera_pose(tmp_path):
    write_rosbag(tmp_path / "bag", n_images=10, storage="sqlite3", encoding="bgr8", tf=False)
    with pytest.raises(DatasetFormatError, match=r"camera frame 'camera_color_optical_frame' is not connected to "
                                                 r"fk_frame 'world' on '/tf_static' \(frames there: \[\]\) and "
                                                 r"rosbag.camera_pose is not set"):
        RosbagEpisodes(tmp_path / "bag", ROSBAG, clip_config(), fk=PlanarFK())
    qw, qz = math.cos(0.25), math.sin(0.25)  # 0.5 rad about z
    cfg = dataclasses.replace(ROSBAG, camera_pose=[0.1, 0.2, -1.0, qw, 0.0, 0.0, qz])
    ds = RosbagEpisodes(tmp_path / "bag", cfg, clip_config(), fk=PlanarFK())
    T = ds.episodes[0].info["camera_pose"]
    np.testing.assert_allclose(T[:3, :3], [[math.cos(0.5), -math.sin(0.5), 0], [math.sin(0.5), math.cos(0.5), 0],
                                           [0, 0, 1]], atol=1e-12)
    idx = [0, 3, 5, 9]
    s = ds.episode_clip(0, idx)
    assert [frame_code(f) for f in s["frames"].numpy()] == idx  # bgr8 turned into RGB
    # PlanarFK: every point moves by 0.1 * (dq0, dq1, dq2) = 0.1 * QV[:3] * dt in the world
    dq = joints_at(np.array(idx) * 0.2)[:, :3]
    d_world = 0.1 * (dq[1:] - dq[:-1])
    np.testing.assert_allclose(s["actions"].numpy()[:, 63:66], d_world @ T[:3, :3], atol=1e-6)


def test_frames_without_joint_coverage_are_left_out(tmp_path):
    write_rosbag(tmp_path / "b", n_images=12, joints_from=0.3)  # joints start after the images at 0 and 0.2 s
    ds = RosbagEpisodes(tmp_path / "b", ROSBAG, clip_config(), fk=PlanarFK())
    entry = ds.episodes[0]
    np.testing.assert_allclose(entry.times, np.arange(10) * 0.2, atol=1e-6)  # first kept frame: t = 0.4 s
    np.testing.assert_allclose(entry.info["joints"], joints_at(0.4 + np.arange(10) * 0.2), atol=1e-9)
    assert [frame_code(f) for f in ds.episode_clip(0, [0, 1, 2, 9])["frames"].numpy()] == [2, 3, 4, 11]


@pytest.mark.parametrize("case, message", [
    ("joint", r"topic '/joint_states': joints \['ah_joint21'\] never appear"),
    ("topic", r"no messages on topic '/cam/image'; topics: \['/camera/color/camera_info \(sensor_msgs/msg/CameraInfo\)'"),
    ("not_a_bag", r"not a readable rosbag2 recording"),
])
def test_rosbag_malformed_inputs(tmp_path, case, message):
    cfg = ROSBAG
    if case == "not_a_bag":
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 99}\n")
    else:
        write_rosbag(tmp_path / "b", n_images=8, drop_joint="ah_joint21" if case == "joint" else None)
        if case == "topic":
            cfg = dataclasses.replace(ROSBAG, image_topic="/cam/image")
    with pytest.raises(DatasetFormatError, match=message):
        RosbagEpisodes(tmp_path / "b", cfg, clip_config(), fk=PlanarFK())


def test_tf_chain_walks_both_directions():
    def tr(x, yaw):
        T = np.eye(4)
        T[:3, :3] = quaternion_matrix(math.cos(yaw / 2), 0, 0, math.sin(yaw / 2))
        T[0, 3] = x
        return T

    edges = {("a", "b"): tr(1.0, 0.3), ("c", "b"): tr(2.0, -0.2), ("c", "d"): tr(0.5, 0.0)}
    got = chain_pose(edges, "a", "d")
    np.testing.assert_allclose(got, tr(1.0, 0.3) @ np.linalg.inv(tr(2.0, -0.2)) @ tr(0.5, 0.0), atol=1e-12)
    assert chain_pose(edges, "a", "zzz") is None and np.array_equal(chain_pose(edges, "d", "d"), np.eye(4))
