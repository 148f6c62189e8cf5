"""Our robot episodes (``dexwm-episode`` HDF5 files, ``docs/dataset_format.md``) as clips.

The Allegro's 21 keypoints are stored per frame (world, camera and pixel coordinates) together with the camera
pose; they fill the right-hand slot (left hand zeros, never valid). Actions come from the fixed-camera action
function (camera part exactly zero) when the episode's camera pose never changes, otherwise from the general
one. Heat-map pixels are the stored ``keypoints_pixels`` of the wrist and the five tips; object keypoints are the
stored object centres projected through the episode's camera.
"""

from __future__ import annotations

import os

import numpy as np

from dexwm_model.actions.trajectory import KeypointTrajectory
from dexwm_model.data.episode import EpisodeFormatError, EpisodeReader
from dexwm_model.datasets.base import ClipDataset, EpisodeEntry, LoadedClip, Transform
from dexwm_model.datasets.config import ClipConfig, SimSourceConfig
from dexwm_model.datasets.errors import DatasetFormatError
from dexwm_model.datasets.keypoints import finalize
from dexwm_model.datasets.objects import object_catalogue, object_pixels
from dexwm_model.kinematics.hand_layout import HEATMAP_KEYPOINTS_21, NUM_HAND_KEYPOINTS


def _reader(path) -> EpisodeReader:
    try:
        return EpisodeReader(path)
    except EpisodeFormatError as exc:
        raise DatasetFormatError(exc.path, exc.problem, exc.item) from None


class SimEpisodes(ClipDataset):
    """Clips from a folder of ``episode_*.h5`` files (``config.pattern``), validated by :class:`EpisodeReader`."""

    source = "sim"
    hand_loss = True

    def __init__(self, root: str | os.PathLike, config: SimSourceConfig, clip: ClipConfig,
                 transform: Transform | None = None) -> None:
        self.config = config
        super().__init__(root, clip, transform)

    def _looked_for(self) -> str:
        return f"no files matching '{self.config.pattern}' in {self.root}"

    def _index(self) -> list[EpisodeEntry]:
        files = [self.root] if self.root.is_file() else sorted(p for p in self.root.glob(self.config.pattern)
                                                               if p.is_file())
        entries = []
        for path in files:
            with _reader(path) as r:
                entries.append(EpisodeEntry(name=path.stem, path=path, times=np.array(r.timestamps, np.float64),
                                            info={"image_hw": (r.height, r.width)}))
        return entries

    def _load(self, entry: EpisodeEntry, indices: np.ndarray) -> LoadedClip:
        with _reader(entry.path) as r:
            if len(r) != len(entry.times):
                raise DatasetFormatError(entry.path, f"episode changed since indexing: {len(r)} frames, indexed "
                                                     f"{len(entry.times)}")
            frames = np.stack([r.frame(int(i)) for i in indices])
            kw = r.keypoints_world[indices]
            poses = r.camera_pose_world[indices]
            pixels = r.keypoints_pixels[indices]
            all_poses = r.camera_pose_world
            hw = (r.height, r.width)
            obj_world = r.object_poses[indices][..., :3]
            obj_names = tuple(r.object_names)
            intrinsics = r.camera_intrinsics
        k = len(indices)
        kp42 = np.zeros((k, 2 * NUM_HAND_KEYPOINTS, 3))
        kp42[:, NUM_HAND_KEYPOINTS:] = kw
        fixed = bool(np.all(all_poses == all_poses[:1]))
        traj = KeypointTrajectory(keypoints=kp42, camera_poses=poses, hand_consistency=True, source="allegro",
                                  fixed_camera=fixed)
        n6 = len(HEATMAP_KEYPOINTS_21)
        uv = np.zeros((k, 2 * n6, 2))
        valid = np.zeros((k, 2 * n6), dtype=bool)
        uv[:, n6:] = pixels[:, list(HEATMAP_KEYPOINTS_21)]
        valid[:, n6:] = True  # behind-camera points are NaN and fail the inside-image test
        px, ok = finalize(uv, valid, hw)
        obj_px, obj_ok = object_pixels(obj_world, obj_names, object_catalogue(), intrinsics, poses, hw)
        return LoadedClip(frames=frames, trajectory=traj, keypoints_px=px, keypoints_valid=ok, object_px=obj_px,
                          object_valid=obj_ok)
