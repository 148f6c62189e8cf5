"""The LeRobot port of DROID as clips: ``meta/info.json`` + parquet tables + one MP4 per camera (AV1 or H.264).

Columns read (the names of the LeRobot DROID port, ``lerobot/droid_1.0.1``):

* ``observation.state.cartesian_position`` (6: x, y, z and extrinsic x-y-z Euler angles, robot base frame),
* ``observation.state.gripper_position`` (1: 0 open .. 1 closed),
* ``camera_extrinsics.<camera>`` (6: pose of the camera's left lens in the base frame, same convention),

and the video ``observation.images.<camera>``. The port's combined ``observation.state`` (7 joint angles + gripper)
holds no end-effector pose, so it cannot stand in for the cartesian column: a dataset without the columns above is
refused with a :class:`DatasetFormatError` naming what is missing.

Two on-disk layouts, told apart by ``info.json``'s ``codebase_version``:

* v2.x: ``data/chunk-XXX/episode_NNNNNN.parquet`` and ``videos/chunk-XXX/<video key>/episode_NNNNNN.mp4`` (one
  file per episode; the paths follow ``data_path`` / ``video_path`` of ``info.json``);
* v3.x: many episodes per ``data/chunk-XXX/file-XXX.parquet`` and ``videos/<video key>/chunk-XXX/file-XXX.mp4``;
  ``meta/episodes/chunk-XXX/file-XXX.parquet`` says which files hold an episode and where its video starts
  (``videos/<video key>/from_timestamp``).

Like raw DROID, samples carry dummy gripper keypoints, ``hand_loss`` False and no valid heat-map keypoints.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from dexwm_model.actions.droid import droid_trajectory
from dexwm_model.datasets.base import ClipDataset, EpisodeEntry, LoadedClip, Transform
from dexwm_model.datasets.config import ClipConfig, DroidLeRobotSourceConfig
from dexwm_model.datasets.droid_raw import dummy_keypoints
from dexwm_model.datasets.errors import DatasetFormatError
from dexwm_model.datasets.video import read_frames

INFO_FILE = ("meta", "info.json")
EPISODES_DIR = ("meta", "episodes")
CARTESIAN = "observation.state.cartesian_position"
GRIPPER = "observation.state.gripper_position"
COMBINED_STATE = "observation.state"
EXTRINSICS = "camera_extrinsics.{camera}"
VIDEO_KEY = "observation.images.{camera}"
EPISODE_INDEX, FRAME_INDEX = "episode_index", "frame_index"
_V2_DATA = re.compile(r"episode_(\d+)\.parquet$")
_CHUNK = re.compile(r"chunk-(\d+)$")


def _pq():
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a pinned requirement
        raise ImportError("reading LeRobot datasets needs pyarrow: pip install pyarrow") from exc
    return pq


def _columns(path: Path) -> tuple[list[str], int]:
    pq = _pq()
    try:
        f = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(path, f"not a readable parquet file ({exc})") from None
    return list(f.schema_arrow.names), int(f.metadata.num_rows)


def _read_table(path: Path, columns: list[str], episode: int | None):
    pq = _pq()
    names, _ = _columns(path)
    missing = [c for c in columns if c not in names]
    if missing:
        raise DatasetFormatError(path, f"missing column(s) {missing}; columns present: {names}")
    filters = [(EPISODE_INDEX, "=", episode)] if episode is not None else None
    try:
        return pq.read_table(path, columns=columns, filters=filters)
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(path, f"cannot read columns {columns} ({exc})") from None


def _vectors(table, column: str, width: int, path: Path) -> np.ndarray:
    values = table.column(column).to_pylist()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetFormatError(path, f"expected {width} numbers per row, found ragged or non-numeric rows",
                                 f"column '{column}'") from None
    if width == 1 and arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != width:
        raise DatasetFormatError(path, f"expected {width} numbers per row, found shape {arr.shape}",
                                 f"column '{column}'")
    return arr


class DroidLeRobot(ClipDataset):
    """Clips from a LeRobot DROID dataset folder (``root/meta/info.json``), camera ``config.camera``."""

    source = "droid"
    hand_loss = False

    def __init__(self, root: str | os.PathLike, config: DroidLeRobotSourceConfig, clip: ClipConfig,
                 transform: Transform | None = None) -> None:
        self.config = config
        self.video_key = VIDEO_KEY.format(camera=config.camera)
        self.extrinsics_column = EXTRINSICS.format(camera=config.camera)
        super().__init__(root, clip, transform)

    def _looked_for(self) -> str:
        return f"no episodes listed under {self.root} for layout {getattr(self, 'version', '?')}"

    # -------------------------------------------------------------------------------------------- indexing
    def _read_info(self) -> dict:
        path = self.root.joinpath(*INFO_FILE)
        if not path.is_file():
            raise DatasetFormatError(self.root, f"not a LeRobot dataset: {'/'.join(INFO_FILE)} not found")
        try:
            info = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetFormatError(path, f"not valid JSON ({exc})") from None
        for key in ("fps", "features", "data_path", "video_path"):
            if key not in info:
                raise DatasetFormatError(path, f"missing key '{key}'; keys: {sorted(info)}")
        features = info["features"]
        missing = [c for c in (CARTESIAN, GRIPPER, self.extrinsics_column, self.video_key) if c not in features]
        if missing:
            cams = sorted(k.split(".", 2)[2] for k in features if k.startswith("observation.images."))
            hint = (f"; '{COMBINED_STATE}' (joint angles + gripper) holds no end-effector pose"
                    if CARTESIAN in missing and COMBINED_STATE in features else "")
            raise DatasetFormatError(path, f"feature(s) {missing} not in 'features' (cameras present: {cams}){hint}")
        if not info.get("video_path"):
            raise DatasetFormatError(path, "video_path is null: this dataset stores no videos")
        self.info_path = path
        return info

    def _index(self) -> list[EpisodeEntry]:
        info = self._read_info()
        self.fps = float(info["fps"])
        version = str(info.get("codebase_version", "v2.1"))
        self.version = version
        major = re.match(r"v?(\d+)", version)
        if major is None or int(major.group(1)) not in (2, 3):
            raise DatasetFormatError(self.info_path, f"codebase_version {version!r} is not a supported layout "
                                                     "(v2.x or v3.x)")
        return self._index_v3(info) if int(major.group(1)) == 3 else self._index_v2(info)

    def _index_v2(self, info: dict) -> list[EpisodeEntry]:
        entries = []
        for path in sorted(self.root.glob("data/chunk-*/episode_*.parquet")):
            ep = int(_V2_DATA.search(path.name).group(1))
            chunk_match = _CHUNK.search(path.parent.name)
            chunk = int(chunk_match.group(1)) if chunk_match else ep // int(info.get("chunks_size", 1000))
            names, n = _columns(path)
            self._check_columns(path, names)
            video = self.root / info["video_path"].format(episode_chunk=chunk, video_key=self.video_key,
                                                          episode_index=ep)
            if not video.is_file():
                raise DatasetFormatError(video, f"video of episode {ep} not found (from video_path "
                                                f"'{info['video_path']}')")
            entries.append(EpisodeEntry(name=f"episode_{ep:06d}", path=path, times=np.arange(n) / self.fps,
                                        info={"episode": ep, "video": video, "offset_s": 0.0, "filter": False}))
        return entries

    def _index_v3(self, info: dict) -> list[EpisodeEntry]:
        files = sorted(self.root.joinpath(*EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetFormatError(self.root, f"v3 layout without episode tables: no "
                                                f"{'/'.join(EPISODES_DIR)}/chunk-*/file-*.parquet")
        vk = f"videos/{self.video_key}"
        cols = [EPISODE_INDEX, "length", "data/chunk_index", "data/file_index", f"{vk}/chunk_index",
                f"{vk}/file_index", f"{vk}/from_timestamp"]
        entries = []
        for meta_file in files:
            table = _read_table(meta_file, cols, None).to_pydict()
            for row in range(len(table[EPISODE_INDEX])):
                ep, n = int(table[EPISODE_INDEX][row]), int(table["length"][row])
                data = self.root / info["data_path"].format(chunk_index=int(table["data/chunk_index"][row]),
                                                            file_index=int(table["data/file_index"][row]))
                video = self.root / info["video_path"].format(video_key=self.video_key,
                                                              chunk_index=int(table[f"{vk}/chunk_index"][row]),
                                                              file_index=int(table[f"{vk}/file_index"][row]))
                for p, what in ((data, "data file"), (video, "video")):
                    if not p.is_file():
                        raise DatasetFormatError(p, f"{what} of episode {ep} not found (listed in {meta_file.name})")
                entries.append(EpisodeEntry(name=f"episode_{ep:06d}", path=data, times=np.arange(n) / self.fps,
                                            info={"episode": ep, "video": video, "filter": True,
                                                  "offset_s": float(table[f"{vk}/from_timestamp"][row])}))
        return entries

    def _check_columns(self, path: Path, names: list[str]) -> None:
        missing = [c for c in (CARTESIAN, GRIPPER, self.extrinsics_column) if c not in names]
        if missing:
            hint = (f"; '{COMBINED_STATE}' (joint angles + gripper) holds no end-effector pose"
                    if CARTESIAN in missing and COMBINED_STATE in names else "")
            raise DatasetFormatError(path, f"missing column(s) {missing}{hint}; columns present: {names}")

    # --------------------------------------------------------------------------------------------- loading
    def _load(self, entry: EpisodeEntry, indices: np.ndarray) -> LoadedClip:
        path = entry.path
        ep = entry.info["episode"]
        columns = [CARTESIAN, GRIPPER, self.extrinsics_column]
        names, _ = _columns(path)
        self._check_columns(path, names)
        order_col = [FRAME_INDEX] if FRAME_INDEX in names else []
        table = _read_table(path, columns + order_col + ([EPISODE_INDEX] if entry.info["filter"] else []),
                            ep if entry.info["filter"] else None)
        n = table.num_rows
        if n != len(entry.times):
            raise DatasetFormatError(path, f"episode {ep} has {n} rows, the dataset lists {len(entry.times)} frames")
        order = np.argsort(np.asarray(table.column(FRAME_INDEX).to_pylist()), kind="stable") if order_col else \
            np.arange(n)
        sel = order[np.asarray(indices, dtype=np.int64)]
        cart = _vectors(table, CARTESIAN, 6, path)[sel]
        grip = _vectors(table, GRIPPER, 1, path)[sel, 0]
        extr = _vectors(table, self.extrinsics_column, 6, path)[sel]
        try:
            traj = droid_trajectory(cart, grip, extr)
        except ValueError as exc:
            raise DatasetFormatError(path, str(exc)) from None
        frames = read_frames(entry.info["video"], indices, fps=self.fps, offset_s=entry.info["offset_s"])
        px, valid = dummy_keypoints(len(indices))
        return LoadedClip(frames=frames, trajectory=traj, keypoints_px=px, keypoints_valid=valid)
