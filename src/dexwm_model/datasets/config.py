"""Typed view of ``config/datasets.yaml``: clip sampling, one section per data source, and the mix.

Every number lives in the YAML file only (the dataclasses have no defaults for them); :func:`load_datasets_config`
reads it and checks the values.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dexwm_robot.config import ConfigError, from_dict, load_yaml

CONFIG_FILE = "datasets.yaml"
SHORT_EPISODE_POLICIES = ("error", "skip")
DROID_RAW_CAMERAS = ("ext1", "ext2", "wrist")
ROSBAG_STAMPS = ("header", "log")


@dataclass
class ClipConfig:
    """How clips are cut from episodes (section ``clip``).

    ``context_frames``: frames before the predicted one (a clip has ``context_frames + 1``); ``window_s``: all
    frames of a clip lie within this many seconds; ``min_gap_s``: the smallest time between two consecutive frames
    of a clip; ``clip_stride_s``: one clip per this much episode time per epoch (the clip's first frame is drawn
    inside its slot); ``short_episodes``: ``error`` (raise :class:`DatasetFormatError`) or ``skip`` (leave out and
    report) for episodes too short for one clip; ``seed``: base seed of the deterministic frame draws.
    """

    context_frames: int
    window_s: float
    min_gap_s: float
    clip_stride_s: float
    short_episodes: str
    seed: int

    def __post_init__(self) -> None:
        if not isinstance(self.context_frames, int) or self.context_frames < 1:
            raise ConfigError(f"clip.context_frames: expected an integer >= 1, found {self.context_frames!r}")
        for name in ("window_s", "clip_stride_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"clip.{name}: expected a positive number of seconds, found {v!r}")
        if not isinstance(self.min_gap_s, (int, float)) or not math.isfinite(self.min_gap_s) or self.min_gap_s < 0:
            raise ConfigError(f"clip.min_gap_s: expected a number of seconds >= 0, found {self.min_gap_s!r}")
        if self.context_frames * self.min_gap_s > self.window_s + 1e-9:
            raise ConfigError(f"clip: {self.context_frames} gaps of at least min_gap_s={self.min_gap_s} s do not fit "
                              f"in window_s={self.window_s} s")
        if self.short_episodes not in SHORT_EPISODE_POLICIES:
            raise ConfigError(f"clip.short_episodes: expected one of {list(SHORT_EPISODE_POLICIES)}, found "
                              f"{self.short_episodes!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"clip.seed: expected an integer >= 0, found {self.seed!r}")

    @property
    def num_frames(self) -> int:
        return self.context_frames + 1


def _check_fps(where: str, fps: Any) -> None:
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ConfigError(f"{where}.fps: expected a positive frame rate in Hz, found {fps!r}")


@dataclass
class SimSourceConfig:
    """Section ``sim``: a folder of our ``dexwm-episode`` files (``root``: null = not used)."""

    root: str | None
    pattern: str


@dataclass
class EgoDexSourceConfig:
    """Section ``egodex``: ``root`` holds ``<task>/<n>.hdf5`` + ``<n>.mp4`` (searched recursively)."""

    root: str | None
    fps: float
    confidence_threshold: float

    def __post_init__(self) -> None:
        _check_fps("egodex", self.fps)
        if not isinstance(self.confidence_threshold, (int, float)) or not 0 <= self.confidence_threshold <= 1:
            raise ConfigError(f"egodex.confidence_threshold: expected a number in [0, 1], found "
                              f"{self.confidence_threshold!r}")


@dataclass
class DroidRawSourceConfig:
    """Section ``droid_raw``: ``root`` holds episode folders with ``trajectory.h5``; ``camera``: ext1, ext2, wrist."""

    root: str | None
    camera: str
    fps: float

    def __post_init__(self) -> None:
        _check_fps("droid_raw", self.fps)
        if self.camera not in DROID_RAW_CAMERAS:
            raise ConfigError(f"droid_raw.camera: expected one of {list(DROID_RAW_CAMERAS)}, found {self.camera!r}")


@dataclass
class DroidLeRobotSourceConfig:
    """Section ``droid_lerobot``: ``root`` holds ``meta/info.json``; ``camera``: the camera name of the port
    (``exterior_1_left``, ``exterior_2_left``, ``wrist_left``)."""

    root: str | None
    camera: str


@dataclass
class RosbagSourceConfig:
    """Section ``rosbag``: ``root`` is one rosbag2 folder or a folder of them (MCAP or sqlite3)."""

    root: str | None
    image_topic: str
    camera_info_topic: str
    joint_states_topic: str
    tf_static_topic: str
    fk_frame: str
    camera_pose: list[float] | None
    stamp: str

    def __post_init__(self) -> None:
        if self.stamp not in ROSBAG_STAMPS:
            raise ConfigError(f"rosbag.stamp: expected one of {list(ROSBAG_STAMPS)}, found {self.stamp!r}")
        if self.camera_pose is not None and (
                not isinstance(self.camera_pose, (list, tuple)) or len(self.camera_pose) != 7
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in self.camera_pose)):
            raise ConfigError(f"rosbag.camera_pose: expected null or [x, y, z, qw, qx, qy, qz] (7 numbers), found "
                              f"{self.camera_pose!r}")


@dataclass
class MixConfig:
    """Section ``mix``: relative ``weights`` per source name; ``samples_per_epoch`` (null: the sum of the mixed
    datasets' lengths); ``seed`` of the draw."""

    weights: dict[str, float]
    samples_per_epoch: int | None
    seed: int

    def __post_init__(self) -> None:
        if not isinstance(self.weights, dict):
            raise ConfigError(f"mix.weights: expected a mapping source -> weight, found {type(self.weights).__name__}")
        for k, w in self.weights.items():
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"mix.weights.{k}: expected a number >= 0, found {w!r}")
        if self.samples_per_epoch is not None and (not isinstance(self.samples_per_epoch, int)
                                                   or self.samples_per_epoch < 1):
            raise ConfigError(f"mix.samples_per_epoch: expected null or an integer >= 1, found "
                              f"{self.samples_per_epoch!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"mix.seed: expected an integer >= 0, found {self.seed!r}")


@dataclass
class DatasetsConfig:
    """The whole of ``config/datasets.yaml``."""

    clip: ClipConfig
    sim: SimSourceConfig
    egodex: EgoDexSourceConfig
    droid_raw: DroidRawSourceConfig
    droid_lerobot: DroidLeRobotSourceConfig
    rosbag: RosbagSourceConfig
    mix: MixConfig


SOURCE_SECTIONS = ("sim", "egodex", "droid_raw", "droid_lerobot", "rosbag")


def load_datasets_config(path: str | os.PathLike = CONFIG_FILE) -> DatasetsConfig:
    """Read and check ``path`` (default: ``config/datasets.yaml``)."""
    return from_dict(DatasetsConfig, load_yaml(path), Path(path).name)


def load_clip_config(path: str | os.PathLike = CONFIG_FILE) -> ClipConfig:
    return load_datasets_config(path).clip
