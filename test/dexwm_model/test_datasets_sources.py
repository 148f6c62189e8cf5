"""Each source adapter reads small files written in its real on-disk format; values against closed-form results."""

import math

import h5py
import numpy as np
import pytest
import torch

from torch.utils.data import DataLoader

from dexwm_model.datasets import DatasetFormatError, DroidLeRobot, DroidRaw, EgoDex, SimEpisodes, collate_clips
from dexwm_model.datasets.config import DroidLeRobotSourceConfig, DroidRawSourceConfig
from dexwm_model.datasets.video import read_frames, video_info
from test_datasets_helpers import (
    DROID_RAW,
    EGODEX,
    EGODEX_R,
    LEROBOT,
    SIM,
    clip_config,
    droid_state,
    egodex_joint_position,
    frame_code,
    rot_z,
    write_droid_episode,
    write_egodex_episode,
    write_lerobot_v2,
    write_lerobot_v3,
    write_sim_folder,
    write_video,
)


def codes(sample) -> list[int]:
    return [frame_code(f) for f in sample["frames"].numpy()]


# ------------------------------------------------------------------------------------------------------ video


def test_video_reader_seeks_to_the_requested_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", 90, 30.0, gop=10)
    assert video_info(path)["fps"] == 30.0 and video_info(path)["frames"] == 90
    idx = [3, 4, 40, 12, 89, 61]  # any order, far apart and adjacent
    assert [frame_code(f) for f in read_frames(path, idx, fps=30.0)] == idx
    assert [frame_code(f) for f in read_frames(path, [0, 1], offset_s=2.0)] == [60, 61]
    with pytest.raises(DatasetFormatError, match=r"v.mp4: video ends before frame 95"):
        read_frames(path, [10, 95])
    with pytest.raises(DatasetFormatError, match=r"video stream runs at 30.000 fps, the dataset declares 15 fps"):
        read_frames(path, [1], fps=15.0)
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(DatasetFormatError, match=r"bad.mp4: unreadable video"):
        read_frames(tmp_path / "bad.mp4", [0])
    with pytest.raises(DatasetFormatError, match="video file not found"):
        read_frames(tmp_path / "none.mp4", [0])


# -------------------------------------------------------------------------------------------------------- sim


def test_sim_episodes_actions_and_stored_keypoints(tmp_path):
    (path,) = write_sim_folder(tmp_path, (30,))
    ds = SimEpisodes(tmp_path, SIM, clip_config())
    idx = np.array([0, 5, 12, 14])
    s = ds.episode_clip(0, idx)
    assert codes(s) == idx.tolist() and s["image_size"] == (24, 32) and s["hand_loss"] is True
    with h5py.File(path) as f:
        ts = f["timestamps"][()]
    np.testing.assert_allclose(s["times"].numpy(), ts[idx] - ts[idx[0]], atol=1e-6)
    # camera looks straight down (R = diag(1, -1, -1)); every right-hand point moves +0.02 m per frame along x,
    # so in the camera frame of k1 the displacement is (0.02 * (k2 - k1), 0, 0); camera part zero, left hand zero
    a = s["actions"].numpy()
    dk = np.diff(idx)
    right = a[:, 63:126].reshape(3, 21, 3)
    np.testing.assert_allclose(right, np.broadcast_to((0.02 * dk)[:, None, None] * [1, 0, 0], right.shape), atol=1e-6)
    assert np.all(a[:, :63] == 0) and np.all(a[:, 126:] == 0)
    # pixels: u = 50 x + 16, v = 12 - 50 y at depth 0.8 m; wrist x = -0.1 + 0.02 t, tip j at x + 0.01 j, y = 0.005 j
    px, valid = s["keypoints_px"].numpy(), s["keypoints_valid"].numpy()
    for r, t in enumerate(idx):
        for h, j in enumerate((0, 4, 8, 12, 16)):
            np.testing.assert_allclose(px[r, 6 + h], [50 * (0.01 * j - 0.1 + 0.02 * t) + 16, 12 - 0.25 * j],
                                       atol=1e-4)
    assert not valid[:, :6].any() and not valid[:, 11].any()  # left hand absent; little tip 5 m off to the side
    assert valid[:, 6:10].all()
    assert valid[:3, 10].all() and not valid[3, 10]  # ring tip: u = 19 + t leaves the 32 px image at t = 14


def test_sim_episodes_report_malformed_files(tmp_path):
    (path,) = write_sim_folder(tmp_path, (30,))
    with h5py.File(path, "a") as f:
        del f["keypoints_world"]
    with pytest.raises(DatasetFormatError, match=r"episode_000000.h5: dataset 'keypoints_world': missing"):
        SimEpisodes(tmp_path, SIM, clip_config())
    path.write_bytes(b"not hdf5")
    with pytest.raises(DatasetFormatError, match=r"episode_000000.h5: not a readable HDF5 file"):
        SimEpisodes(tmp_path, SIM, clip_config())


# ------------------------------------------------------------------------------------------------------ EgoDex


def test_egodex_actions_projection_confidence_and_frames(tmp_path):
    write_egodex_episode(tmp_path, "pour_cup", 0, n=40)
    write_egodex_episode(tmp_path, "pour_cup", 1, n=40)
    ds = EgoDex(tmp_path, EGODEX, clip_config())
    assert [e.name for e in ds.episodes] == ["pour_cup/0", "pour_cup/1"]
    idx = np.array([10, 18, 25, 33])
    s = ds.episode_clip("pour_cup/0", idx)
    assert codes(s) == idx.tolist() and s["image_size"] == (48, 64) and s["source"] == "egodex"
    np.testing.assert_allclose(s["times"].numpy(), (idx - idx[0]) / 30.0, atol=1e-6)
    # actions in the camera frame of k1: R0^T (p(k2) - p(k1)) for all 42 points; camera moves +0.002 m/frame in x
    R0 = EGODEX_R
    a = s["actions"].numpy().astype(np.float64)
    for r, (k1, k2) in enumerate(zip(idx[:-1], idx[1:])):
        P1 = np.stack([egodex_joint_position(j, np.array([float(k1)]))[0] for j in range(42)])
        P2 = np.stack([egodex_joint_position(j, np.array([float(k2)]))[0] for j in range(42)])
        np.testing.assert_allclose(a[r, :126].reshape(42, 3), (P2 - P1) @ R0, atol=1e-6)
        np.testing.assert_allclose(a[r, 126:129], R0.T @ [0.002 * (k2 - k1), 0, 0], atol=1e-7)
        np.testing.assert_allclose(a[r, 129:], 0.0, atol=1e-7)
    np.testing.assert_allclose(a[0, 63:66], [0.0, -0.004 * 8, 0.0], atol=1e-7)  # right wrist, by hand
    # right wrist in the camera: (0, -0.002 t, 0.5) -> u = 32, v = 24 - 0.2 t (fx = fy = 50, c = (32, 24))
    px, valid = s["keypoints_px"].numpy(), s["keypoints_valid"].numpy()
    np.testing.assert_allclose(px[:, 6], np.stack((np.full(4, 32.0), 24 - 0.2 * idx), -1), atol=1e-4)
    # left wrist appears at frame 20: (-0.05, -0.002 t, 0.5) -> u = 27
    np.testing.assert_allclose(px[2:, 0], np.stack((np.full(2, 27.0), 24 - 0.2 * idx[2:]), -1), atol=1e-4)
    assert not valid[:2, :6].any() and valid[2:, :6].all()  # left hand absent (zeros) before frame 20
    assert not valid[:, 8].any()  # right index tip has confidence 0.2 < 0.5
    assert valid[:, [6, 7, 9, 10, 11]].all() and s["hand_loss"] is True
    # random draws decode exactly the frames they name, also in DataLoader worker processes
    for i in range(len(ds)):
        d = ds[i]
        assert codes(d) == d["frame_indices"].tolist()
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_clips)
    for batch in loader:
        for b in range(len(batch["episode"])):
            assert [frame_code(f) for f in batch["frames"][b].numpy()] == batch["frame_indices"][b].tolist()


def test_egodex_without_confidences_uses_geometry_only(tmp_path):
    write_egodex_episode(tmp_path, "t", 0, n=30, confidences=False)
    s = EgoDex(tmp_path, EGODEX, clip_config()).episode_clip(0, [0, 1, 2, 3])
    assert s["keypoints_valid"][:, 6:].all() and not s["keypoints_valid"][:, :6].any()


@pytest.mark.parametrize("case, message", [
    ("intrinsic", r"0.hdf5: dataset 'camera/intrinsic': missing"),
    ("joint", r"0.hdf5: dataset 'transforms/rightThumbTip': missing"),
    ("short_video", r"0.mp4: video ends before frame 20 \(file frame 20; last decoded file frame 19\)"),
    ("no_video", r"0.hdf5: no video beside it \(expected 0.mp4\)"),
    ("garbage_video", r"0.mp4: unreadable video"),
    ("too_short", r"0.hdf5: episode too short for one clip: 3 frames"),
    ("shape", r"0.hdf5: dataset 'transforms/rightHand': expected shape \(40, 4, 4\), found \(40, 3, 4\)"),
])
def test_egodex_malformed_inputs(tmp_path, case, message):
    drop = {"intrinsic": ("camera/intrinsic",), "joint": ("transforms/rightThumbTip",)}.get(case, ())
    n = 3 if case == "too_short" else 40
    path = write_egodex_episode(tmp_path, "t", 0, n=n, drop=drop, video_frames=20 if case == "short_video" else None)
    if case == "no_video":
        path.with_suffix(".mp4").unlink()
    if case == "garbage_video":
        path.with_suffix(".mp4").write_bytes(b"garbage" * 50)
    if case == "shape":
        with h5py.File(path, "a") as f:
            del f["transforms/rightHand"]
            f["transforms/rightHand"] = np.zeros((40, 3, 4))
    with pytest.raises(DatasetFormatError, match=message):
        ds = EgoDex(tmp_path, EGODEX, clip_config())
        ds.episode_clip(0, [0, 10, 20, 30 + (5 if case == "short_video" else 0)])


# ---------------------------------------------------------------------------------------------------- DROID raw


def _droid_expected(k1: int, k2: int, n: int, R: np.ndarray) -> np.ndarray:
    """Right-hand 21 displacements (camera frame of k1) of the DROID dummy keypoints, from first principles."""
    cart, grip = droid_state(n)
    open_r, closed_r = np.array([0.03, 0.04, 0.05, 0.06]), np.array([0.03, 0.04, 0.035, 0.03])
    radii = [open_r + g * (closed_r - open_r) for g in (grip[k1], grip[k2])]
    pts = []
    for ee, r in ((cart[k1, :3], radii[0]), (cart[k2, :3], radii[1])):
        p = [ee]
        for c in range(4):
            for j in range(5):
                ang = 2 * math.pi * j / 5
                p.append(ee + r[c] * np.array([math.cos(ang), math.sin(ang), 0.0]))
        pts.append(np.stack(p))
    return (pts[1] - pts[0]) @ R


def test_droid_raw_dummy_keypoints_camera_choice_and_frames(tmp_path):
    write_droid_episode(tmp_path / "lab" / "success", "2023-07-07_run1", n=30)
    ds = DroidRaw(tmp_path, DROID_RAW, clip_config())
    assert ds.episodes[0].name == "lab/success/2023-07-07_run1"
    idx = np.array([2, 9, 15, 29])
    s = ds.episode_clip(0, idx)
    assert codes(s) == idx.tolist() and s["hand_loss"] is False and s["source"] == "droid"
    np.testing.assert_allclose(s["times"].numpy(), (idx - idx[0]) / 15.0, atol=1e-6)
    assert not s["keypoints_valid"].any() and torch.all(s["keypoints_px"] == 0)
    a = s["actions"].numpy().astype(np.float64)
    Rz90 = rot_z(math.pi / 2)  # ext1 extrinsics: yaw 90 deg
    for r, (k1, k2) in enumerate(zip(idx[:-1], idx[1:])):
        np.testing.assert_allclose(a[r, 63:126].reshape(21, 3), _droid_expected(k1, k2, 30, Rz90), atol=1e-6)
    np.testing.assert_allclose(a[0, 63:66], [0.0, -0.07, 0.0], atol=1e-7)  # end effector +0.07 m along x
    assert np.all(a[:, :63] == 0) and np.allclose(a[:, 126:], 0.0)

    ext2 = DroidRaw(tmp_path, DroidRawSourceConfig(root=None, camera="ext2", fps=15.0), clip_config())
    s2 = ext2.episode_clip(0, idx)
    assert codes(s2) == (100 + idx).tolist()
    np.testing.assert_allclose(s2["actions"][0, 63:66].numpy(), [0.0, 0.07, 0.0], atol=1e-6)  # yaw -90 deg


@pytest.mark.parametrize("case, message", [
    ("meta", r"metadata_ep.json: no 'ext1_cam_serial' for camera 'ext1'"),
    ("extrinsics", r"trajectory.h5: dataset 'observation/camera_extrinsics/111_left': missing \(camera extrinsics "
                   r"present: \['222_left', '222_right'\]\)"),
    ("video", r"ep: no video for camera 'ext1' \(serial 111\): expected recordings/MP4/111.mp4"),
])
def test_droid_raw_malformed_inputs(tmp_path, case, message):
    ep = write_droid_episode(tmp_path, "ep", drop_meta_key="ext1_cam_serial" if case == "meta" else None,
                             drop_extrinsics=case == "extrinsics")
    if case == "video":
        (ep / "recordings" / "MP4" / "111.mp4").unlink()
    with pytest.raises(DatasetFormatError, match=message):
        DroidRaw(tmp_path, DROID_RAW, clip_config())


# ------------------------------------------------------------------------------------------------ DROID LeRobot


def test_droid_lerobot_v2_av1(tmp_path):
    write_lerobot_v2(tmp_path, lengths=(30, 24), codec="libsvtav1")
    ds = DroidLeRobot(tmp_path, LEROBOT, clip_config())
    assert [e.name for e in ds.episodes] == ["episode_000000", "episode_000001"]
    idx = np.array([2, 9, 15, 23])
    s = ds.episode_clip(1, idx)  # episode 1's rows are stored in reverse frame order
    assert codes(s) == (40 + idx).tolist() and s["hand_loss"] is False
    a = s["actions"].numpy().astype(np.float64)
    for r, (k1, k2) in enumerate(zip(idx[:-1], idx[1:])):
        np.testing.assert_allclose(a[r, 63:126].reshape(21, 3), _droid_expected(k1, k2, 24, rot_z(math.pi / 2)),
                                   atol=2e-6)  # float32 columns
    cam2 = DroidLeRobot(tmp_path, DroidLeRobotSourceConfig(root=None, camera="exterior_2_left"), clip_config())
    assert codes(cam2.episode_clip(0, [0, 1, 2, 3])) == [100, 101, 102, 103]
    for i in range(len(ds)):
        d = ds[i]
        assert codes(d) == (d["frame_indices"] + 40 * ("1" in d["episode"][-1])).tolist()


def test_droid_lerobot_v3_files_with_many_episodes(tmp_path):
    write_lerobot_v3(tmp_path, lengths=(30, 24))
    ds = DroidLeRobot(tmp_path, LEROBOT, clip_config())
    assert len(ds.episodes) == 2 and ds.version == "v3.0"
    s = ds.episode_clip("episode_000001", [0, 4, 11, 23])
    assert codes(s) == [30, 34, 41, 53]  # episode 1 starts at frame 30 of the shared video (from_timestamp 2 s)
    np.testing.assert_allclose(s["actions"][0, 63:66].numpy(), [0.0, -0.04, 0.0], atol=1e-6)


def test_droid_lerobot_refuses_missing_columns(tmp_path):
    write_lerobot_v2(tmp_path / "a", lengths=(30,), codec="libx264", with_cartesian=False)
    with pytest.raises(DatasetFormatError, match=r"info.json: feature\(s\) \['observation.state.cartesian_position'\] "
                                                 r"not in 'features'.*'observation.state' \(joint angles \+ gripper\) "
                                                 r"holds no end-effector pose"):
        DroidLeRobot(tmp_path / "a", LEROBOT, clip_config())
    write_lerobot_v2(tmp_path / "b", lengths=(30,), codec="libx264")
    with pytest.raises(DatasetFormatError, match=r"camera_extrinsics.wrist_left.*cameras present: "
                                                 r"\['exterior_1_left', 'exterior_2_left', 'wrist_left'\]"):
        DroidLeRobot(tmp_path / "b", DroidLeRobotSourceConfig(root=None, camera="wrist_left"), clip_config())
    with pytest.raises(DatasetFormatError, match=r"not a LeRobot dataset: meta/info.json not found"):
        DroidLeRobot(tmp_path, LEROBOT, clip_config())
    # a cartesian column with 5 numbers per row
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "b" / "data/chunk-000/episode_000000.parquet"
    table = pq.read_table(data)
    i = table.schema.get_field_index("observation.state.cartesian_position")
    table = table.set_column(i, "observation.state.cartesian_position",
                             pa.array([[0.0] * 5] * table.num_rows, pa.list_(pa.float32())))
    pq.write_table(table, data)
    with pytest.raises(DatasetFormatError, match=r"episode_000000.parquet: column 'observation.state.cartesian_position': "
                                                 r"expected 6 numbers per row, found shape \(30, 5\)"):
        DroidLeRobot(tmp_path / "b", LEROBOT, clip_config()).episode_clip(0, [0, 1, 2, 3])
