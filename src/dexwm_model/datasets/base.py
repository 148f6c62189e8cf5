"""The clip dataset every source adapter derives from: episode index, clip slots, deterministic draws, assembly.

A subclass lists its episodes (:meth:`ClipDataset._index`, each an :class:`EpisodeEntry` with its frame times) and
loads the chosen frames of one episode (:meth:`ClipDataset._load`, returning a :class:`LoadedClip`); this class
draws the frames, computes the actions and builds the sample dictionary of the package contract.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from dexwm_model.actions.trajectory import KeypointTrajectory
from dexwm_model.datasets.config import ClipConfig
from dexwm_model.datasets.errors import DatasetFormatError
from dexwm_model.datasets.keypoints import NUM_HEATMAP_KEYPOINTS
from dexwm_model.datasets.objects import no_objects, object_catalogue
from dexwm_model.datasets.sampling import clip_starts, sample_clip, start_slots

Transform = Callable[[dict], dict]


@dataclass
class EpisodeEntry:
    """One episode: a display ``name``, its main ``path``, frame ``times`` (s, increasing) and adapter ``info``."""

    name: str
    path: Path
    times: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedClip:
    """What an adapter returns for the chosen frames of one episode.

    ``frames`` (K, H, W, 3) uint8; ``trajectory``: the 42 keypoints and camera poses of exactly these K frames
    (actions are taken between its consecutive frames); ``keypoints_px`` (K, 12, 2) and ``keypoints_valid`` (K, 12);
    ``object_px`` (K, M, 2) / ``object_valid`` (K, M) the catalogue objects' centres
    (:mod:`dexwm_model.datasets.objects`; None: the source has no object poses).
    """

    frames: np.ndarray
    trajectory: KeypointTrajectory
    keypoints_px: np.ndarray
    keypoints_valid: np.ndarray
    object_px: np.ndarray | None = None
    object_valid: np.ndarray | None = None


class ClipDataset(Dataset):
    """Clips of ``clip.context_frames + 1`` frames from the episodes of one source (see the package docstring).

    Item ``i`` is slot ``s`` of episode ``e`` (one slot per ``clip.clip_stride_s`` of valid start times); its
    frames are drawn with ``numpy.random.default_rng([clip.seed, epoch, i])``, so they are the same in every run and
    every worker, and change with :meth:`set_epoch`. ``transform`` (e.g. :class:`ClipTransform`) is applied to each
    sample last.
    """

    source: str = ""  # the "source" of the samples
    hand_loss: bool = True  # whether the hand-consistency loss applies

    def __init__(self, root: str | os.PathLike, clip: ClipConfig, transform: Transform | None = None) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise DatasetFormatError(self.root, f"{type(self).__name__}: dataset path not found")
        self.clip = clip
        self.transform = transform
        self.epoch = 0
        entries = self._index()
        if not entries:
            raise DatasetFormatError(self.root, f"{type(self).__name__}: no episodes found ({self._looked_for()})")
        self.episodes: list[EpisodeEntry] = []
        self.skipped: list[tuple[str, str]] = []  # (episode, why) left out under short_episodes: skip
        self._starts: list[np.ndarray] = []
        items: list[tuple[int, int]] = []
        self._slots: list[list[np.ndarray]] = []
        k = clip.num_frames
        for entry in entries:
            times = np.asarray(entry.times, dtype=np.float64)
            if times.ndim != 1 or (len(times) > 1 and np.any(np.diff(times) <= 0)) or not np.all(np.isfinite(times)):
                raise DatasetFormatError(entry.path, "frame times must be finite and strictly increasing")
            starts = clip_starts(times, k, clip.window_s, clip.min_gap_s)
            if len(starts) == 0:
                span = float(times[-1] - times[0]) if len(times) else 0.0
                why = (f"episode too short for one clip: {len(times)} frames over {span:.3f} s, a clip needs {k} "
                       f"frames at least {clip.min_gap_s} s apart within {clip.window_s} s")
                if clip.short_episodes == "error":
                    raise DatasetFormatError(entry.path, why + " (set clip.short_episodes: skip to leave such "
                                                               "episodes out)")
                self.skipped.append((entry.name, why))
                continue
            entry.times = times
            e = len(self.episodes)
            self.episodes.append(entry)
            slots = start_slots(times, starts, clip.clip_stride_s)
            self._slots.append(slots)
            items.extend((e, s) for s in range(len(slots)))
        if not self.episodes:
            raise DatasetFormatError(self.root, f"{type(self).__name__}: all {len(entries)} episodes are too short "
                                                f"for one clip (first: {self.skipped[0][1]})")
        self._items = np.asarray(items, dtype=np.int64)

    # ------------------------------------------------------------------------------------------ for subclasses
    def _index(self) -> list[EpisodeEntry]:
        """Every episode of the source with its frame times (each adapter reads its own on-disk format)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _index() (list its episodes)")

    def _load(self, entry: EpisodeEntry, indices: np.ndarray) -> LoadedClip:
        """Frames, keypoints and camera data of ``entry`` at the sampled frame ``indices``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _load() (read the sampled frames)")

    def _looked_for(self) -> str:
        return f"under {self.root}"

    # ------------------------------------------------------------------------------------------------ public
    def set_epoch(self, epoch: int) -> None:
        """Draw different frames from the next epoch on (call before each epoch, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._items)

    def draw(self, index: int) -> tuple[int, np.ndarray]:
        """(episode number, frame indices) of item ``index`` in the current epoch."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} clips")
        index %= n
        e, s = (int(v) for v in self._items[index])
        rng = np.random.default_rng([self.clip.seed, self.epoch, index])
        slot = self._slots[e][s]
        start = int(slot[rng.integers(len(slot))])
        c = self.clip
        return e, sample_clip(self.episodes[e].times, start, c.num_frames, c.window_s, c.min_gap_s, rng)

    def __getitem__(self, index: int) -> dict:
        e, idx = self.draw(index)
        return self.episode_clip(e, idx)

    def episode_clip(self, episode: int | str, indices: Sequence[int]) -> dict:
        """The sample made of frames ``indices`` (increasing) of episode ``episode`` (number or name)."""
        e = self._episode_number(episode)
        entry = self.episodes[e]
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(entry.times)
        if idx.size < 2 or np.any(np.diff(idx) <= 0) or idx[0] < 0 or idx[-1] >= n:
            raise ValueError(f"{entry.name}: indices must be >= 2 increasing frame numbers in [0, {n}), found "
                             f"{idx.tolist()}")
        loaded = self._load(entry, idx)
        sample = self._assemble(entry, idx, loaded)
        return self.transform(sample) if self.transform is not None else sample

    def summary(self) -> dict:
        """Episodes, clips per epoch, hours of episode time, skipped episodes."""
        seconds = sum(float(e.times[-1] - e.times[0]) for e in self.episodes)
        return {"source": self.source, "dataset": type(self).__name__, "root": str(self.root),
                "episodes": len(self.episodes), "clips_per_epoch": len(self), "hours": seconds / 3600.0,
                "skipped": len(self.skipped)}

    # ----------------------------------------------------------------------------------------------- helpers
    def _episode_number(self, episode: int | str) -> int:
        if isinstance(episode, str):
            for i, entry in enumerate(self.episodes):
                if entry.name == episode:
                    return i
            raise KeyError(f"{type(self).__name__}: no episode named {episode!r}")
        if not -len(self.episodes) <= episode < len(self.episodes):
            raise IndexError(f"{type(self).__name__}: episode {episode} out of range ({len(self.episodes)})")
        return int(episode) % len(self.episodes)

    def _assemble(self, entry: EpisodeEntry, idx: np.ndarray, loaded: LoadedClip) -> dict:
        k = len(idx)
        frames = np.asarray(loaded.frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != k or frames.shape[3] != 3:
            raise DatasetFormatError(entry.path, f"frames: expected uint8 ({k}, H, W, 3), found {frames.dtype} "
                                                 f"{frames.shape}")
        traj = loaded.trajectory
        if len(traj) != k:
            raise DatasetFormatError(entry.path, f"keypoint trajectory has {len(traj)} frames for a {k}-frame clip")
        actions = traj.actions(torch.arange(k - 1), torch.arange(1, k)).to(torch.float32)
        if not torch.isfinite(actions).all():
            bad = int(torch.nonzero(~torch.isfinite(actions).all(dim=-1))[0, 0])
            raise DatasetFormatError(entry.path, f"non-finite action between frames {int(idx[bad])} and "
                                                 f"{int(idx[bad + 1])} (NaN/inf keypoints or camera poses)")
        px = np.asarray(loaded.keypoints_px, dtype=np.float32)
        valid = np.asarray(loaded.keypoints_valid, dtype=bool)
        if px.shape != (k, NUM_HEATMAP_KEYPOINTS, 2) or valid.shape != (k, NUM_HEATMAP_KEYPOINTS):
            raise DatasetFormatError(entry.path, f"keypoints: expected ({k}, 12, 2) and ({k}, 12), found {px.shape} "
                                                 f"and {valid.shape}")
        times = entry.times[idx] - entry.times[idx[0]]
        h, w = frames.shape[1:3]
        obj_px, obj_valid = checked_objects(entry.path, loaded, k)
        return {
            "frames": torch.from_numpy(np.ascontiguousarray(frames)),
            "times": torch.from_numpy(times.astype(np.float32)),
            "actions": actions,
            "keypoints_px": torch.from_numpy(px),
            "keypoints_valid": torch.from_numpy(valid),
            "object_px": torch.from_numpy(obj_px),
            "object_valid": torch.from_numpy(obj_valid),
            "hand_loss": bool(self.hand_loss and traj.hand_consistency),
            "source": self.source,
            "episode": entry.name,
            "image_size": (int(h), int(w)),
            "frame_indices": torch.from_numpy(idx.copy()),
        }


def checked_objects(path, loaded: LoadedClip, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The clip's object keypoints in the catalogue's slots (all invalid when the source has none)."""
    catalogue = object_catalogue()
    if loaded.object_px is None:
        return no_objects(k, catalogue)
    px = np.asarray(loaded.object_px, dtype=np.float32)
    valid = np.asarray(loaded.object_valid, dtype=bool)
    m = len(catalogue)
    if px.shape != (k, m, 2) or valid.shape != (k, m):
        raise DatasetFormatError(path, f"object keypoints: expected ({k}, {m}, 2) and ({k}, {m}), found {px.shape} "
                                       f"and {valid.shape}")
    return px, valid
