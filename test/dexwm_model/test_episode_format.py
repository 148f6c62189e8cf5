"""The dexwm-episode format: round trip, validation of malformed files, atomic writes, lazy frames, data check."""

import json
import math

import h5py
import numpy as np
import pytest

from dexwm_cli.main import main as dexwm_main
from dexwm_model.data import episode as fmt
from dexwm_model.data.cli_check import check_directory
from dexwm_model.data.episode import (
    Episode,
    EpisodeFormatError,
    EpisodeMeta,
    EpisodeReader,
    WriterConfig,
    read_episode,
    write_episode,
)
from dexwm_model.kinematics.panda_allegro import robot_joint_limits, robot_joint_names

_LOW, _HIGH = robot_joint_limits()
MID = (_LOW + _HIGH) / 2  # the middle of every joint's range: a posture inside the robot's limits

T, H, W, N = 6, 12, 16, 2
K = np.array([[20.0, 0.0, 8.0], [0.0, 21.0, 6.0], [0.0, 0.0, 1.0]])


def _rot(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    S = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * S + (1 - math.cos(angle)) * S @ S


def make_episode(seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    pose = np.tile(np.eye(4), (T, 1, 1))
    for t in range(T):
        pose[t, :3, :3] = _rot([1, 0.2, -0.3], 0.3 + 0.01 * t)
        pose[t, :3, 3] = [0.1, -0.4, 0.5 + 0.001 * t]
    kc = np.stack([rng.uniform(-0.2, 0.2, (T, 21)), rng.uniform(-0.2, 0.2, (T, 21)), rng.uniform(0.3, 1.0, (T, 21))],
                  -1)
    kc[2, 5, 2] = -0.1  # one keypoint behind the camera: its pixel is NaN
    kw = np.einsum("tij,tkj->tki", pose[:, :3, :3], kc) + pose[:, None, :3, 3]
    kc = np.einsum("tji,tkj->tki", pose[:, :3, :3], kw - pose[:, None, :3, 3])  # exactly what readers recompute
    kp = kc[..., :2] / kc[..., 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]
    kp[kc[..., 2] <= 0] = np.nan
    quat = rng.normal(size=(T, N, 4))
    quat /= np.linalg.norm(quat, axis=-1, keepdims=True)
    return Episode(
        meta=EpisodeMeta(robot="panda_allegro_right", scene_seed=42, episode_kind="reach",
                         object_layout={"cube": [0.5, 0.1, 0.3], "ball": [0.6, -0.1, -1.0]}, fps=5.0,
                         generator_version="test/1", camera_name="ego", extra={"note": "synthetic", "n": 3}),
        frames=rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8),
        timestamps=np.arange(T) * 0.2,
        joint_positions=MID + 0.1 * rng.normal(size=(T, 23)),
        commanded_targets=MID + 0.1 * rng.normal(size=(T, 23)),
        keypoints_world=kw, keypoints_camera=kc, keypoints_pixels=kp,
        camera_intrinsics=K.copy(), camera_pose_world=pose,
        object_poses=np.concatenate([rng.normal(size=(T, N, 3)), quat], -1),
        joint_names=robot_joint_names(), object_names=("cube", "ball"),
    )


def assert_same(a: Episode, b: Episode) -> None:
    for spec in fmt.DATASETS:
        x, y = getattr(a, spec.field), getattr(b, spec.field)
        if spec.kind == "str":
            assert tuple(x) == tuple(y), spec.name
        else:
            assert np.asarray(x).dtype == np.asarray(y).dtype, spec.name
            np.testing.assert_array_equal(x, y, err_msg=spec.name)  # NaNs compare equal here
    assert a.meta == b.meta


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "episode_000000.h5"
    write_episode(path, make_episode(), WriterConfig("gzip", 1))
    return path


@pytest.mark.parametrize("compression", ["lzf", "gzip", "none"])
def test_round_trip_is_exact(tmp_path, compression):
    ep = make_episode(1)
    path = tmp_path / "episode_000001.h5"
    size = write_episode(path, ep, WriterConfig(compression, 1))
    assert size == path.stat().st_size > 0
    back = read_episode(path)
    assert_same(ep, back)
    assert np.isnan(back.keypoints_pixels[2, 5]).all()
    with h5py.File(path) as f:
        assert f.attrs["format"] == "dexwm-episode" and f.attrs["format_version"] == 1
        assert f["frames"].chunks == (1, H, W, 3)
        assert f["frames"].compression == (None if compression == "none" else compression)
    assert not (tmp_path / "episode_000001.h5.tmp").exists()


def test_default_writer_config_comes_from_data_yaml(tmp_path):
    cfg = fmt.load_writer_config()
    path = tmp_path / "e.h5"
    write_episode(path, make_episode())
    with h5py.File(path) as f:
        assert f["frames"].compression == (None if cfg.compression == "none" else cfg.compression)
    with pytest.raises(ValueError, match="writer.compression must be one of"):
        WriterConfig("zstd", 1)


def test_reader_serves_frames_lazily_and_deep_check_reads_them(good):
    ep = make_episode()
    with h5py.File(good, "r") as f:
        offset, size = f["frames"].id.get_chunk_info(3).byte_offset, f["frames"].id.get_chunk_info(3).size
    with open(good, "r+b") as fh:  # damage the compressed bytes of frame 3 only
        fh.seek(offset)
        fh.write(b"\xff" * size)
    with EpisodeReader(good) as r:  # header-level validation never decompresses frames
        assert len(r) == T and (r.height, r.width) == (H, W)
        np.testing.assert_array_equal(r.frame(2), ep.frames[2])
        np.testing.assert_array_equal(r.frames(0, 2), ep.frames[:2])
        np.testing.assert_array_equal(r.joint_positions, ep.joint_positions)
        with pytest.raises(EpisodeFormatError, match=r"dataset 'frames': cannot read the data"):
            r.frame(3)
        with pytest.raises(IndexError, match="frame 6 out of range"):
            r.frame(T)
    with pytest.raises(EpisodeFormatError, match=r"episode_000000.h5: dataset 'frames'"):
        EpisodeReader(good, deep=True)


def _replace(name, value):
    def edit(f):
        del f[name]
        f.create_dataset(name, data=value)
    return edit


def _modify(name, fn):
    def edit(f):
        data = f[name][()]
        fn(data)
        f[name][...] = data
    return edit


def _set_at(index, value):
    def fn(a):
        a[index] = value
    return fn


def _set_attr(name, value):
    def edit(f):
        f.attrs[name] = value
    return edit


def _nan_at(idx):
    def fn(a):
        a[idx] = np.nan
    return fn


def _dup_time(a):
    a[3] = a[2]


def _bad_focal(a):
    a[0, 0] = -5.0


def _bad_center(a):
    a[0, 2] = 100.0


def _shift_pixel(a):
    a[1, 0, 0] += 0.5


def _nan_pixel(a):
    a[1, 2] = np.nan


def _scale_rotation(a):
    a[4, :3, :3] *= 1.01


def _bad_quat(a):
    a[2, 1, 3:] *= 2.0


def _move_camera_points(a):
    a[0, 0, 0] += 0.01


MALFORMED = {
    "missing dataset": (lambda f: f.__delitem__("keypoints_camera"), r"dataset 'keypoints_camera': missing"),
    "missing group": (lambda f: f.__delitem__("camera"), r"dataset 'camera/intrinsics': missing"),
    "wrong shape": (_replace("joint_positions", np.zeros((T, 22))),
                    r"dataset 'joint_positions': expected shape \(T=6, 23\), found \(6, 22\)"),
    "time axis mismatch": (_replace("keypoints_world", np.zeros((T - 1, 21, 3))),
                           r"dataset 'keypoints_world': .*axis 0 \(T\) is 5 but dataset 'frames' has T=6"),
    "wrong rank": (_replace("timestamps", np.zeros((T, 1))), r"dataset 'timestamps': expected 1 dimensions"),
    "wrong dtype": (_replace("timestamps", (np.arange(T) * 0.2).astype(np.float32)),
                    r"dataset 'timestamps': expected dtype float64, found float32"),
    "frames dtype": (_replace("frames", np.zeros((T, H, W, 3), np.float32)),
                     r"dataset 'frames': expected dtype uint8, found float32"),
    "NaN": (_modify("joint_positions", _nan_at((2, 3))),
            r"dataset 'joint_positions': contains 1 non-finite value\(s\) \(first nan at index \(2, 3\)\)"),
    "non-increasing timestamps": (_modify("timestamps", _dup_time),
                                  r"dataset 'timestamps': not strictly increasing: index 2 is 0.4 s and index 3 "
                                  r"is 0.4 s"),
    "wrong version": (_set_attr("format_version", 2),
                      r"attribute 'format_version': version 2 is not supported by this reader \(supported: \[1\]\)"),
    "wrong format name": (_set_attr("format", "something-else"), r"attribute 'format': expected 'dexwm-episode'"),
    "missing attribute": (lambda f: f.attrs.__delitem__("fps"), r"attribute 'fps': missing \(expected a number\)"),
    "attribute type": (_set_attr("scene_seed", "42"), r"attribute 'scene_seed': expected an integer, found str"),
    "layout JSON": (_set_attr("object_layout", "{not json"), r"attribute 'object_layout': not valid JSON"),
    "layout names": (_set_attr("object_layout", json.dumps({"cube": [0, 0, 0]})),
                     r"attribute 'object_layout': names \['cube'\] do not match dataset 'object_names'"),
    "negative focal length": (_modify("camera/intrinsics", _bad_focal),
                              r"dataset 'camera/intrinsics': focal lengths must be positive, found fx=-5.0"),
    "principal point": (_modify("camera/intrinsics", _bad_center),
                        r"dataset 'camera/intrinsics': principal point \(100.0, 6.0\) lies outside the 16x12 image"),
    "pixel mismatch": (_modify("keypoints_pixels", _shift_pixel),
                       r"dataset 'keypoints_pixels': frame 1, keypoint 0: .* differs by 0.500 px"),
    "pixel NaN in front": (_modify("keypoints_pixels", _nan_pixel),
                           r"dataset 'keypoints_pixels': frame 1, keypoint 2: pixel is NaN but the point's camera "
                           r"depth is"),
    "camera frame mismatch": (_modify("keypoints_camera", _move_camera_points),
                              r"dataset 'keypoints_camera': frame 0: differs by 1.000e-02 m"),
    "non-rigid camera pose": (_modify("camera/pose_world", _scale_rotation),
                              r"dataset 'camera/pose_world': frame 4: rotation is not proper orthonormal"),
    "quaternion": (_modify("object_poses", _bad_quat), r"dataset 'object_poses': frame 2, object 1: quaternion"),
    "duplicate names": (_replace("object_names", np.array([b"cube", b"cube"], dtype=h5py.string_dtype())),
                        r"dataset 'object_names': names must be unique, found duplicates \['cube'\]"),
    "dataset is a group": (lambda f: (f.__delitem__("object_poses"), f.create_group("object_poses")),
                           r"dataset 'object_poses': expected a dataset, found a Group"),
    "not the robot's joints": (_replace("joint_names", np.array([f"j{i}".encode() for i in range(23)],
                                                                 dtype=h5py.string_dtype())),
                               r"dataset 'joint_names': expected the robot's 23 joints in the project's order "
                               r"\['panda/joint1', .*joint 0 is 'j0', expected 'panda/joint1' \(23 of 23 differ\)"),
    "joints in another order": (_replace("joint_names", np.array([n.encode() for n in reversed(robot_joint_names())],
                                                                  dtype=h5py.string_dtype())),
                                r"dataset 'joint_names': .*joint 0 is 'allegro/thj3', expected 'panda/joint1'"),
    "joint beyond its limit": (_modify("joint_positions", _set_at((4, 2), 1000.0)),
                               r"dataset 'joint_positions': joint 'panda/joint3' is 1000 rad at frame 4, outside its "
                               r"limits \[-2.897, 2.897\] by more than 0.1 rad \(1 value\(s\) out of range\)"),
    "target beyond its limit": (_modify("commanded_targets", _set_at((1, 19), -0.5)),
                                r"dataset 'commanded_targets': joint 'allegro/thj0' is -0.5 rad at frame 1"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_rejected_with_precise_messages(good, case):
    edit, pattern = MALFORMED[case]
    with h5py.File(good, "r+") as f:
        edit(f)
    with pytest.raises(EpisodeFormatError, match=pattern) as info:
        EpisodeReader(good)
    assert str(info.value).startswith(str(good) + ": ")
    with pytest.raises(EpisodeFormatError):
        read_episode(good)


def test_truncated_and_garbage_files_are_rejected(good, tmp_path):
    data = good.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(EpisodeFormatError, match=r"truncated.h5: not a readable HDF5 file \(truncated or corrupt\?\)"):
        EpisodeReader(truncated)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(EpisodeFormatError, match=r"garbage.h5: not a readable HDF5 file"):
        EpisodeReader(garbage)
    with pytest.raises(EpisodeFormatError, match=r"absent.h5: no such file"):
        EpisodeReader(tmp_path / "absent.h5")


def test_writer_refuses_invalid_episode_and_leaves_nothing(tmp_path):
    ep = make_episode()
    ep.timestamps = ep.timestamps[::-1].copy()
    path = tmp_path / "bad.h5"
    with pytest.raises(EpisodeFormatError, match=r"bad.h5: dataset 'timestamps': not strictly increasing"):
        write_episode(path, ep)
    ep = make_episode()
    ep.object_names = ("cube", "ball", "extra")
    with pytest.raises(EpisodeFormatError, match=r"dataset 'object_names': expected shape \(N=2\), found \(3,\): "
                       r"axis 0 \(N\) is 3 but dataset 'object_poses' has N=2"):
        write_episode(path, ep)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_previous_file_and_removes_tmp(tmp_path, monkeypatch):
    path = tmp_path / "episode_000007.h5"
    first = make_episode(1)
    write_episode(path, first)

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(fmt.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_episode(path, make_episode(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_000007.h5"]
    assert_same(read_episode(path), first)  # the old episode is intact
    monkeypatch.undo()
    fresh = tmp_path / "episode_000008.h5"
    monkeypatch.setattr(fmt.os, "replace", crash)
    with pytest.raises(OSError):
        write_episode(fresh, make_episode(2))
    assert not fresh.exists() and not (tmp_path / "episode_000008.h5.tmp").exists()


def test_data_check_reports_valid_and_invalid_files(good, tmp_path, capsys):
    bad = tmp_path / "episode_000001.h5"
    write_episode(bad, make_episode(3))
    with h5py.File(bad, "r+") as f:
        f.attrs["format_version"] = 9
    (tmp_path / "episode_000002.h5.tmp").write_bytes(b"partial")
    report = check_directory(tmp_path)
    assert (report["episodes"], report["valid"], report["invalid"], report["frames"]) == (2, 1, 1, T)
    assert report["unfinished_tmp"] == ["episode_000002.h5.tmp"]
    assert "episode_000001.h5: attribute 'format_version'" in report["errors"][0]
    assert dexwm_main(["data", "check", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["invalid"] == 1 and "INVALID" in out.err
    assert report["deep"] is False and "robot (joint names and order, joint limits)" in report["checked"]
    assert report["skipped"] == ["frames were not decompressed (only their headers were read); run with --deep to "
                                 "read them"]
    assert "skipped: frames were not decompressed" in out.err
    bad.unlink()
    assert dexwm_main(["data", "check", str(tmp_path), "--deep"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["skipped"] == [] and "skipped" not in out.err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert dexwm_main(["data", "check", str(empty)]) == 1
    assert dexwm_main(["data", "check", str(tmp_path / "nowhere")]) == 2
