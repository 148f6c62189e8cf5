"""EgoDex episodes (``<task>/<n>.hdf5`` + ``<n>.mp4``, 30 Hz) as clips.

Keypoints: the 21 ARKit joints per hand through :func:`dexwm_model.actions.egodex.egodex_trajectory`, read only at
the sampled frames; the camera moves (``transforms/camera``), so actions carry the camera's motion. Heat-map
pixels: the wrist and five tips of each hand in the frame of ``transforms/camera``, projected through
``camera/intrinsic``. A keypoint is not valid when its ARKit confidence (``confidences/<joint>``, when present) is
below ``confidence_threshold``, when its position is exactly zero or not finite (hand not tracked), behind the
camera or outside the image. Frames are decoded with PyAV, seeking to the sampled frames only.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from dexwm_model.actions.egodex import EGODEX_CAMERA, EGODEX_KEYPOINT_JOINTS, egodex_trajectory
from dexwm_model.datasets.base import ClipDataset, EpisodeEntry, LoadedClip, Transform
from dexwm_model.datasets.config import ClipConfig, EgoDexSourceConfig
from dexwm_model.datasets.errors import DatasetFormatError
from dexwm_model.datasets.keypoints import HEATMAP_KEYPOINTS_42, finalize, project, world_to_camera
from dexwm_model.datasets.video import read_frames

TRANSFORMS = "transforms"
CONFIDENCES = "confidences"
INTRINSIC = "camera/intrinsic"


def _dataset(f: h5py.File, name: str, path) -> h5py.Dataset:
    obj = f.get(name)
    if obj is None:
        raise DatasetFormatError(path, "missing", f"dataset '{name}'")
    if not isinstance(obj, h5py.Dataset):
        raise DatasetFormatError(path, f"expected a dataset, found a {type(obj).__name__}", f"dataset '{name}'")
    return obj


def _open(path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetFormatError(path, f"not a readable HDF5 file ({exc})") from None


class EgoDex(ClipDataset):
    """Clips from an EgoDex folder (any depth: ``<root>/<task>/<n>.hdf5`` with ``<n>.mp4`` beside it)."""

    source = "egodex"
    hand_loss = True

    def __init__(self, root: str | os.PathLike, config: EgoDexSourceConfig, clip: ClipConfig,
                 transform: Transform | None = None) -> None:
        self.config = config
        super().__init__(root, clip, transform)

    def _looked_for(self) -> str:
        return f"no <task>/<n>.hdf5 files under {self.root}"

    def _index(self) -> list[EpisodeEntry]:
        files = [self.root] if self.root.is_file() else sorted(self.root.rglob("*.hdf5"))
        entries = []
        for path in files:
            video = path.with_suffix(".mp4")
            if not video.is_file():
                raise DatasetFormatError(path, f"no video beside it (expected {video.name})")
            with _open(path) as f:
                cam = _dataset(f, f"{TRANSFORMS}/{EGODEX_CAMERA}", path)
                if cam.ndim != 3 or cam.shape[1:] != (4, 4):
                    raise DatasetFormatError(path, f"expected shape (N, 4, 4), found {cam.shape}",
                                             f"dataset '{TRANSFORMS}/{EGODEX_CAMERA}'")
                n = int(cam.shape[0])
            name = path.relative_to(self.root).with_suffix("").as_posix() if path != self.root else path.stem
            entries.append(EpisodeEntry(name=name, path=path, times=np.arange(n) / self.config.fps,
                                        info={"video": video}))
        return entries

    def _load(self, entry: EpisodeEntry, indices: np.ndarray) -> LoadedClip:
        path = entry.path
        sel = np.asarray(indices, dtype=np.int64)
        with _open(path) as f:
            transforms, confidences = {}, {}
            for joint in EGODEX_KEYPOINT_JOINTS + (EGODEX_CAMERA,):
                ds = _dataset(f, f"{TRANSFORMS}/{joint}", path)
                if ds.ndim != 3 or ds.shape[1:] != (4, 4) or ds.shape[0] != len(entry.times):
                    raise DatasetFormatError(path, f"expected shape ({len(entry.times)}, 4, 4), found {ds.shape}",
                                             f"dataset '{TRANSFORMS}/{joint}'")
                transforms[joint] = ds[sel]
            if CONFIDENCES in f:
                for joint in EGODEX_KEYPOINT_JOINTS:
                    ds = _dataset(f, f"{CONFIDENCES}/{joint}", path)
                    if ds.shape != (len(entry.times),):
                        raise DatasetFormatError(path, f"expected shape ({len(entry.times)},), found {ds.shape}",
                                                 f"dataset '{CONFIDENCES}/{joint}'")
                    confidences[joint] = ds[sel]
            K = np.asarray(_dataset(f, INTRINSIC, path)[()], dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise DatasetFormatError(path, f"expected a 3x3 pinhole matrix with positive focal lengths, found "
                                           f"{K.tolist()}", f"dataset '{INTRINSIC}'")
        episode = {TRANSFORMS: transforms}
        if confidences:
            episode[CONFIDENCES] = confidences
        try:
            traj = egodex_trajectory(episode)
        except (KeyError, ValueError) as exc:
            raise DatasetFormatError(path, str(exc).strip("'\"")) from None
        frames = read_frames(entry.info["video"], sel, fps=self.config.fps)
        hw = frames.shape[1:3]
        kp = traj.keypoints.numpy()[:, list(HEATMAP_KEYPOINTS_42)]  # (K, 12, 3) world
        cam = world_to_camera(kp, traj.camera_poses.numpy())
        uv = project(cam, K)
        valid = np.all(np.isfinite(kp), axis=-1) & np.any(kp != 0.0, axis=-1)
        if traj.confidence is not None:
            conf = traj.confidence.numpy()[:, list(HEATMAP_KEYPOINTS_42)]
            valid &= conf >= self.config.confidence_threshold
        px, ok = finalize(uv, valid, hw)
        return LoadedClip(frames=frames, trajectory=traj, keypoints_px=px, keypoints_valid=ok)
