"""Raw DROID episodes as clips: ``trajectory.h5`` + ``metadata_*.json`` + ``recordings/MP4/<serial>.mp4`` (15 Hz).

The camera (``ext1``, ``ext2`` or ``wrist``) is chosen in the config; its serial comes from the metadata
(``<camera>_cam_serial``), its per-frame pose from ``observation/camera_extrinsics/<serial>_left``, its frames from
``recordings/MP4/<serial>.mp4`` (else the file named by ``<camera>_mp4_path``, looked up in ``recordings/MP4``).
The gripper becomes the DROID dummy keypoints of :mod:`dexwm_model.actions.droid`; there are no hand keypoints to
supervise, so ``hand_loss`` is False and every heat-map keypoint is invalid (pixels 0).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from dexwm_model.actions.droid import CAMERA_EXTRINSICS, ROBOT_STATE, droid_trajectory_from_h5
from dexwm_model.datasets.base import ClipDataset, EpisodeEntry, LoadedClip, Transform
from dexwm_model.datasets.config import ClipConfig, DroidRawSourceConfig
from dexwm_model.datasets.errors import DatasetFormatError
from dexwm_model.datasets.keypoints import NUM_HEATMAP_KEYPOINTS
from dexwm_model.datasets.video import read_frames

TRAJECTORY_FILE = "trajectory.h5"
VIDEO_DIR = ("recordings", "MP4")
CARTESIAN = f"{ROBOT_STATE}/cartesian_position"
GRIPPER = f"{ROBOT_STATE}/gripper_position"


def dummy_keypoints(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (k, 12, 2) zeros and validity (k, 12) all False: robot samples without hand keypoints."""
    return np.zeros((k, NUM_HEATMAP_KEYPOINTS, 2), np.float32), np.zeros((k, NUM_HEATMAP_KEYPOINTS), bool)


def _metadata(episode_dir: Path) -> tuple[Path, dict]:
    files = sorted(episode_dir.glob("metadata_*.json"))
    if len(files) != 1:
        raise DatasetFormatError(episode_dir, f"expected exactly one metadata_*.json file, found "
                                              f"{[f.name for f in files]}")
    try:
        meta = json.loads(files[0].read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(files[0], f"not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DatasetFormatError(files[0], f"expected a JSON object, found {type(meta).__name__}")
    return files[0], meta


class DroidRaw(ClipDataset):
    """Clips from raw DROID episode folders found anywhere under ``root`` (each holding ``trajectory.h5``)."""

    source = "droid"
    hand_loss = False

    def __init__(self, root: str | os.PathLike, config: DroidRawSourceConfig, clip: ClipConfig,
                 transform: Transform | None = None) -> None:
        self.config = config
        super().__init__(root, clip, transform)

    def _looked_for(self) -> str:
        return f"no {TRAJECTORY_FILE} under {self.root}"

    def _index(self) -> list[EpisodeEntry]:
        trajectories = [self.root / TRAJECTORY_FILE] if (self.root / TRAJECTORY_FILE).is_file() else sorted(
            self.root.rglob(TRAJECTORY_FILE))
        cam = self.config.camera
        entries = []
        for traj in trajectories:
            ep_dir = traj.parent
            meta_path, meta = _metadata(ep_dir)
            key = f"{cam}_cam_serial"
            if key not in meta:
                raise DatasetFormatError(meta_path, f"no '{key}' for camera '{cam}'; keys: {sorted(meta)}")
            serial = str(meta[key])
            video = ep_dir.joinpath(*VIDEO_DIR, f"{serial}.mp4")
            if not video.is_file() and isinstance(meta.get(f"{cam}_mp4_path"), str):
                video = ep_dir.joinpath(*VIDEO_DIR, Path(meta[f"{cam}_mp4_path"]).name)
            if not video.is_file():
                raise DatasetFormatError(ep_dir, f"no video for camera '{cam}' (serial {serial}): expected "
                                                 f"{'/'.join(VIDEO_DIR)}/{serial}.mp4")
            try:
                f = h5py.File(traj, "r")
            except OSError as exc:
                raise DatasetFormatError(traj, f"not a readable HDF5 file ({exc})") from None
            with f:
                for name in (CARTESIAN, GRIPPER, f"{CAMERA_EXTRINSICS}/{serial}_left"):
                    if not isinstance(f.get(name), h5py.Dataset):
                        lefts = sorted(f[CAMERA_EXTRINSICS].keys()) if CAMERA_EXTRINSICS in f else []
                        hint = f" (camera extrinsics present: {lefts})" if "extrinsics" in name else ""
                        raise DatasetFormatError(traj, "missing" + hint, f"dataset '{name}'")
                shape = f[CARTESIAN].shape
                if len(shape) != 2 or shape[1] != 6:
                    raise DatasetFormatError(traj, f"expected shape (N, 6), found {shape}", f"dataset '{CARTESIAN}'")
                n = int(shape[0])
            name = ep_dir.relative_to(self.root).as_posix() if ep_dir != self.root else ep_dir.name
            entries.append(EpisodeEntry(name=name, path=traj, times=np.arange(n) / self.config.fps,
                                        info={"serial": serial, "video": video}))
        return entries

    def _load(self, entry: EpisodeEntry, indices: np.ndarray) -> LoadedClip:
        try:
            full = droid_trajectory_from_h5(entry.path, entry.info["serial"])
        except (KeyError, ValueError) as exc:
            raise DatasetFormatError(entry.path, str(exc).strip("'\"")) from None
        if len(full) != len(entry.times):
            raise DatasetFormatError(entry.path, f"{len(full)} frames, but {len(entry.times)} when indexed")
        sel = np.asarray(indices, dtype=np.int64)
        traj = type(full)(keypoints=full.keypoints[sel], camera_poses=full.camera_poses[sel],
                          hand_consistency=False, source="droid", fixed_camera=full.fixed_camera)
        frames = read_frames(entry.info["video"], sel, fps=self.config.fps)
        px, valid = dummy_keypoints(len(sel))
        return LoadedClip(frames=frames, trajectory=traj, keypoints_px=px, keypoints_valid=valid)
