"""The ``dexwm-episode`` format, version 1: one HDF5 file per recorded robot episode.

``docs/dataset_format.md`` is the specification; this module is its reference implementation:

* :func:`write_episode` validates an in-memory :class:`Episode` and writes it atomically (``name.h5.tmp``, then
  ``os.replace``), so an interrupted write never leaves a file under the final name.
* :class:`EpisodeReader` opens a file, checks every attribute and every dataset (presence, dtype, shape, the
  shared time axis, finite values, strictly increasing timestamps, sane intrinsics, rigid camera poses, unit
  quaternions, keypoints consistent across the world, camera and pixel frames) and then serves frames lazily.
  Validation reads only the dataset headers of ``frames``; ``deep=True`` also decompresses every frame.
* Anything wrong raises :class:`EpisodeFormatError`, whose message names the file, the dataset or attribute, what
  was expected and what was found.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from dexwm_robot.hand_layout import NUM_HAND_KEYPOINTS

FORMAT_NAME = "dexwm-episode"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
NUM_ROBOT_JOINTS = 23  # Panda joint1..7 + Allegro ah_joint00..33 (see dexwm_robot.scene)
EPISODE_PREFIX = "episode_"
EPISODE_SUFFIX = ".h5"
TMP_SUFFIX = ".tmp"
COMPRESSIONS = ("lzf", "gzip", "none")

# tolerances of the cross-checks between datasets (float64 data written by our tools match to ~1e-12)
BEHIND_CAMERA_Z = 1e-6  # m; a keypoint with optical z at or below this has NaN pixel coordinates
CAMERA_FRAME_TOL = 1e-5  # m; keypoints_camera vs keypoints_world mapped through camera/pose_world
PIXEL_TOL = 1e-2  # px; keypoints_pixels vs the pinhole projection of keypoints_camera
ROTATION_TOL = 1e-6  # orthonormality of camera/pose_world rotations
QUATERNION_TOL = 1e-3  # |1 - norm| of object quaternions
# rad a recorded joint may lie beyond the robot's position limit: contact and controller overshoot push measured
# joints a little past a limit (< 0.1 rad in 97.5 % of 816 simulated episodes); more is not this robot, or a
# simulation whose contacts pushed the hand through its soft limits (the generator retries those episodes)
JOINT_LIMIT_MARGIN_RAD = 0.1


class EpisodeFormatError(ValueError):
    """A file (or an in-memory episode) does not follow the ``dexwm-episode`` format."""

    def __init__(self, path: str | os.PathLike, problem: str, item: str | None = None) -> None:
        self.path, self.item, self.problem = str(path), item, problem
        super().__init__(f"{self.path}: {item}: {problem}" if item else f"{self.path}: {problem}")


@dataclass(frozen=True)
class _DatasetSpec:
    name: str  # path inside the file
    field: str  # attribute of Episode
    shape: tuple  # ints, or symbols shared across datasets: T frames, H, W image size, N objects
    kind: str  # "uint8" | "float64" | "str"


DATASETS: tuple[_DatasetSpec, ...] = (
    _DatasetSpec("frames", "frames", ("T", "H", "W", 3), "uint8"),
    _DatasetSpec("timestamps", "timestamps", ("T",), "float64"),
    _DatasetSpec("joint_positions", "joint_positions", ("T", NUM_ROBOT_JOINTS), "float64"),
    _DatasetSpec("commanded_targets", "commanded_targets", ("T", NUM_ROBOT_JOINTS), "float64"),
    _DatasetSpec("keypoints_world", "keypoints_world", ("T", NUM_HAND_KEYPOINTS, 3), "float64"),
    _DatasetSpec("keypoints_camera", "keypoints_camera", ("T", NUM_HAND_KEYPOINTS, 3), "float64"),
    _DatasetSpec("keypoints_pixels", "keypoints_pixels", ("T", NUM_HAND_KEYPOINTS, 2), "float64"),
    _DatasetSpec("camera/intrinsics", "camera_intrinsics", (3, 3), "float64"),
    _DatasetSpec("camera/pose_world", "camera_pose_world", ("T", 4, 4), "float64"),
    _DatasetSpec("object_poses", "object_poses", ("T", "N", 7), "float64"),
    _DatasetSpec("joint_names", "joint_names", (NUM_ROBOT_JOINTS,), "str"),
    _DatasetSpec("object_names", "object_names", ("N",), "str"),
)

# file attributes: name -> (python type checked, description used in messages)
_ATTRS: dict[str, tuple[type, str]] = {
    "format": (str, "a string"),
    "format_version": (int, "an integer"),
    "robot": (str, "a string"),
    "scene_seed": (int, "an integer"),
    "episode_kind": (str, "a string"),
    "object_layout": (str, "a JSON string"),
    "fps": (float, "a number"),
    "generator_version": (str, "a string"),
    "camera_name": (str, "a string"),
    "created_at": (str, "an ISO-8601 time string"),
    "extra": (str, "a JSON string"),
}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class EpisodeMeta:
    """Episode-level metadata, stored as file attributes."""

    robot: str
    scene_seed: int
    episode_kind: str
    object_layout: dict[str, list[float]]  # object name -> [x, y, yaw] where it was dropped at reset
    fps: float  # nominal recording rate, Hz
    generator_version: str
    camera_name: str
    created_at: str = field(default_factory=now_iso)
    extra: dict[str, Any] = field(default_factory=dict)  # generator-specific details (JSON-serialisable)

    def to_attrs(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "robot": self.robot,
            "scene_seed": int(self.scene_seed),
            "episode_kind": self.episode_kind,
            "object_layout": json.dumps({k: [float(x) for x in v] for k, v in self.object_layout.items()}),
            "fps": float(self.fps),
            "generator_version": self.generator_version,
            "camera_name": self.camera_name,
            "created_at": self.created_at,
            "extra": json.dumps(self.extra, sort_keys=True),
        }


@dataclass
class Episode:
    """One episode held in memory. Arrays follow ``DATASETS`` (T frames, N objects)."""

    meta: EpisodeMeta
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (T,) float64 s since the episode start
    joint_positions: np.ndarray  # (T, 23) measured joints
    commanded_targets: np.ndarray  # (T, 23) waypoint the controller was moving to
    keypoints_world: np.ndarray  # (T, 21, 3) m
    keypoints_camera: np.ndarray  # (T, 21, 3) m, optical frame (x right, y down, z forward)
    keypoints_pixels: np.ndarray  # (T, 21, 2) (u, v); NaN where behind the camera
    camera_intrinsics: np.ndarray  # (3, 3)
    camera_pose_world: np.ndarray  # (T, 4, 4) T_wc of the optical frame
    object_poses: np.ndarray  # (T, N, 7) x, y, z, qw, qx, qy, qz
    joint_names: tuple[str, ...]
    object_names: tuple[str, ...]

    @property
    def num_frames(self) -> int:
        return int(np.shape(self.frames)[0])

    def validate(self, where: str | os.PathLike = "<episode in memory>") -> None:
        """Raise :class:`EpisodeFormatError` unless writing this episode would give a valid file."""
        shapes = {}
        for spec in DATASETS:
            value = getattr(self, spec.field)
            if spec.kind == "str":
                if not all(isinstance(s, str) for s in value):
                    raise EpisodeFormatError(where, "expected a sequence of strings", f"dataset '{spec.name}'")
                shapes[spec.name] = ((len(value),), "str")
            else:
                arr = np.asarray(value)
                shapes[spec.name] = (arr.shape, str(arr.dtype))
        dims = _check_structure(where, shapes)
        values = {s.name: np.asarray(getattr(self, s.field)) for s in DATASETS if s.kind == "float64"}
        _check_values(where, values, dims)
        names = {"joint_names": tuple(self.joint_names), "object_names": tuple(self.object_names)}
        _check_names(where, names)
        check_robot_joints(where, names["joint_names"], values)
        _parse_attrs(where, self.meta.to_attrs(), names["object_names"])


# ------------------------------------------------------------------------------------------------ validation
def _fmt_shape(shape: tuple, dims: dict[str, int]) -> str:
    return "(" + ", ".join(f"{d}={dims[d]}" if isinstance(d, str) and d in dims else str(d) for d in shape) + ")"


def _check_structure(where, shapes: dict[str, tuple[tuple, str]]) -> dict[str, int]:
    """Check dtypes and shapes (from headers only); return the resolved dims T, H, W, N."""
    dims: dict[str, int] = {}
    owner: dict[str, str] = {}
    for spec in DATASETS:
        item = f"dataset '{spec.name}'"
        if spec.name not in shapes:
            raise EpisodeFormatError(where, "missing", item)
        shape, dtype = shapes[spec.name]
        if dtype != spec.kind:
            raise EpisodeFormatError(where, f"expected dtype {spec.kind}, found {dtype}", item)
        if len(shape) != len(spec.shape):
            raise EpisodeFormatError(
                where, f"expected {len(spec.shape)} dimensions {_fmt_shape(spec.shape, dims)}, found shape {shape}",
                item,
            )
        for axis, (want, got) in enumerate(zip(spec.shape, shape)):
            if isinstance(want, int):
                if got != want:
                    raise EpisodeFormatError(
                        where, f"expected shape {_fmt_shape(spec.shape, dims)}, found {shape} (axis {axis})", item
                    )
            elif want in dims:
                if got != dims[want]:
                    raise EpisodeFormatError(
                        where,
                        f"expected shape {_fmt_shape(spec.shape, dims)}, found {shape}: axis {axis} ({want}) is "
                        f"{got} but dataset '{owner[want]}' has {want}={dims[want]}",
                        item,
                    )
            else:
                if got < 1 and want != "N":
                    raise EpisodeFormatError(where, f"axis {axis} ({want}) must not be empty, found shape {shape}",
                                             item)
                dims[want], owner[want] = int(got), spec.name
    return dims


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_finite(where, name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = _first_bad(bad)
        raise EpisodeFormatError(
            where, f"contains {int(bad.sum())} non-finite value(s) (first {arr[idx]} at index {idx})",
            f"dataset '{name}'",
        )


def _check_values(where, v: dict[str, np.ndarray], dims: dict[str, int]) -> None:
    """Value checks on every dataset except ``frames`` (all arrays already have the right shapes and dtypes)."""
    for name in ("timestamps", "joint_positions", "commanded_targets", "keypoints_world", "keypoints_camera",
                 "camera/intrinsics", "camera/pose_world", "object_poses"):
        _check_finite(where, name, v[name])

    ts = v["timestamps"]
    if ts[0] < 0:
        raise EpisodeFormatError(where, f"must start at or after 0 s, found {float(ts[0])!r}", "dataset 'timestamps'")
    steps = np.diff(ts)
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise EpisodeFormatError(
            where,
            f"not strictly increasing: index {i} is {float(ts[i])!r} s and index {i + 1} is {float(ts[i + 1])!r} s",
            "dataset 'timestamps'"
        )

    K = v["camera/intrinsics"]
    item = "dataset 'camera/intrinsics'"
    if not np.array_equal(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0.0:
        raise EpisodeFormatError(where, f"not an upper-triangular pinhole matrix with last row (0, 0, 1): {K.tolist()}",
                                 item)
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise EpisodeFormatError(where, f"focal lengths must be positive, found fx={K[0, 0]}, fy={K[1, 1]}", item)
    if not (0 < K[0, 2] < dims["W"] and 0 < K[1, 2] < dims["H"]):
        raise EpisodeFormatError(
            where, f"principal point ({K[0, 2]}, {K[1, 2]}) lies outside the {dims['W']}x{dims['H']} image", item
        )

    T = v["camera/pose_world"]
    item = "dataset 'camera/pose_world'"
    if not np.all(T[:, 3] == np.array([0.0, 0.0, 0.0, 1.0])):
        i = int(np.argmax(np.any(T[:, 3] != np.array([0.0, 0.0, 0.0, 1.0]), axis=1)))
        raise EpisodeFormatError(where, f"frame {i}: last row must be (0, 0, 0, 1), found {T[i, 3].tolist()}", item)
    R = T[:, :3, :3]
    ortho = np.abs(np.einsum("tji,tjk->tik", R, R) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bad = (ortho > ROTATION_TOL) | (det < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise EpisodeFormatError(
            where, f"frame {i}: rotation is not proper orthonormal (|R^T R - I| = {ortho[i]:.2e}, det = {det[i]:.6f})",
            item
        )

    q = v["object_poses"][..., 3:]
    if q.size:
        err = np.abs(np.linalg.norm(q, axis=-1) - 1.0)
        if np.any(err > QUATERNION_TOL):
            t, n = _first_bad(err > QUATERNION_TOL)
            raise EpisodeFormatError(
                where, f"frame {t}, object {n}: quaternion (qw, qx, qy, qz) has norm {1 + err[t, n]:.6f} "
                f"(or {1 - err[t, n]:.6f}), expected 1", "dataset 'object_poses'"
            )

    # keypoints: camera frame = inverse camera pose applied to the world points
    kw, kc, kp = v["keypoints_world"], v["keypoints_camera"], v["keypoints_pixels"]
    expect_c = np.einsum("tji,tkj->tki", R, kw - T[:, None, :3, 3])
    dev = np.abs(expect_c - kc).max(axis=(1, 2))
    if np.any(dev > CAMERA_FRAME_TOL):
        i = int(np.argmax(dev > CAMERA_FRAME_TOL))
        raise EpisodeFormatError(
            where, f"frame {i}: differs by {dev[i]:.3e} m from keypoints_world expressed in the camera frame given by "
            f"camera/pose_world (tolerance {CAMERA_FRAME_TOL} m)", "dataset 'keypoints_camera'"
        )
    # pixels: pinhole projection, NaN exactly where the point is not in front of the camera
    item = "dataset 'keypoints_pixels'"
    behind = kc[..., 2] <= BEHIND_CAMERA_Z
    nan = np.isnan(kp)
    if np.any(np.isinf(kp)):
        raise EpisodeFormatError(where, f"contains inf at index {_first_bad(np.isinf(kp))}", item)
    if np.any(nan[..., 0] != nan[..., 1]):
        raise EpisodeFormatError(where, f"u and v must be NaN together, index {_first_bad(nan[..., 0] != nan[..., 1])}",
                                 item)
    if np.any(nan[..., 0] != behind):
        t, k = _first_bad(nan[..., 0] != behind)
        raise EpisodeFormatError(
            where, f"frame {t}, keypoint {k}: pixel is {'NaN' if nan[t, k, 0] else kp[t, k].tolist()} but the point's "
            f"camera depth is {kc[t, k, 2]:.4f} m (NaN is required exactly when depth <= {BEHIND_CAMERA_Z} m)", item
        )
    front = ~behind
    if front.any():
        z = np.where(front, kc[..., 2], 1.0)[..., None]
        proj = kc[..., :2] / z * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
        proj[..., 0] += K[0, 1] * kc[..., 1] / z[..., 0]
        dev = np.where(front, np.abs(proj - kp).max(axis=-1), 0.0)
        if np.any(dev > PIXEL_TOL):
            t, k = _first_bad(dev > PIXEL_TOL)
            raise EpisodeFormatError(
                where, f"frame {t}, keypoint {k}: {kp[t, k].tolist()} differs by {dev[t, k]:.3f} px from the "
                f"projection of keypoints_camera through camera/intrinsics {proj[t, k].tolist()} "
                f"(tolerance {PIXEL_TOL} px)", item
            )


def _check_names(where, names: dict[str, tuple[str, ...]]) -> None:
    for name, values in names.items():
        item = f"dataset '{name}'"
        if any(not s for s in values):
            raise EpisodeFormatError(where, "names must be non-empty strings", item)
        if len(set(values)) != len(values):
            dup = sorted({s for s in values if values.count(s) > 1})
            raise EpisodeFormatError(where, f"names must be unique, found duplicates {dup}", item)


def check_robot_joints(where, joint_names: tuple[str, ...], values: dict[str, np.ndarray]) -> None:
    """Joint names are the robot's, in the project's order; joints and targets lie within its limits (+ margin).
    Raises :class:`EpisodeFormatError`; the exploratory generator calls it on every episode it simulates."""
    from dexwm_model.kinematics.panda_allegro import robot_joint_limits, robot_joint_names

    robot = robot_joint_names()
    if tuple(joint_names) != robot:
        wrong = [i for i, (a, b) in enumerate(zip(joint_names, robot)) if a != b]
        i = wrong[0] if wrong else 0
        raise EpisodeFormatError(where, f"expected the robot's {len(robot)} joints in the project's order "
                                        f"{list(robot[:3])} ... {list(robot[-2:])}; joint {i} is {joint_names[i]!r}, "
                                        f"expected {robot[i]!r} ({len(wrong)} of {len(robot)} differ)",
                                 "dataset 'joint_names'")
    low, high = robot_joint_limits()
    for name in ("joint_positions", "commanded_targets"):
        q = values[name]
        below, above = low - JOINT_LIMIT_MARGIN_RAD - q, q - high - JOINT_LIMIT_MARGIN_RAD
        over = np.maximum(below, above)
        if q.size and float(over.max()) > 0:
            t, j = np.unravel_index(int(np.argmax(over)), over.shape)
            raise EpisodeFormatError(where, f"joint {robot[j]!r} is {q[t, j]:.4g} rad at frame {t}, outside its limits "
                                            f"[{low[j]:.4g}, {high[j]:.4g}] by more than {JOINT_LIMIT_MARGIN_RAD} rad "
                                            f"({int((over > 0).sum())} value(s) out of range)", f"dataset '{name}'")


def _parse_attrs(where, attrs: dict[str, Any], object_names: tuple[str, ...]) -> EpisodeMeta:
    for name, (typ, desc) in _ATTRS.items():
        item = f"attribute '{name}'"
        if name not in attrs:
            raise EpisodeFormatError(where, f"missing (expected {desc})", item)
        value = attrs[name]
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        ok = {
            str: isinstance(value, str),
            int: isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)),
            float: isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)),
        }[typ]
        if not ok:
            raise EpisodeFormatError(where, f"expected {desc}, found {type(value).__name__} {value!r}", item)
        attrs = {**attrs, name: value}
    if attrs["format"] != FORMAT_NAME:
        raise EpisodeFormatError(where, f"expected '{FORMAT_NAME}', found {attrs['format']!r}", "attribute 'format'")
    version = int(attrs["format_version"])
    if version not in SUPPORTED_VERSIONS:
        raise EpisodeFormatError(
            where, f"version {version} is not supported by this reader (supported: {list(SUPPORTED_VERSIONS)})",
            "attribute 'format_version'"
        )
    fps = float(attrs["fps"])
    if not (math.isfinite(fps) and fps > 0):
        raise EpisodeFormatError(where, f"must be a positive finite rate in Hz, found {fps}", "attribute 'fps'")
    try:
        datetime.fromisoformat(attrs["created_at"])
    except ValueError:
        raise EpisodeFormatError(where, f"not an ISO-8601 time: {attrs['created_at']!r}", "attribute 'created_at'")
    parsed = {}
    for name in ("object_layout", "extra"):
        try:
            parsed[name] = json.loads(attrs[name])
        except json.JSONDecodeError as exc:
            raise EpisodeFormatError(where, f"not valid JSON ({exc})", f"attribute '{name}'")
        if not isinstance(parsed[name], dict):
            raise EpisodeFormatError(where, f"expected a JSON object, found {type(parsed[name]).__name__}",
                                     f"attribute '{name}'")
    layout = parsed["object_layout"]
    item = "attribute 'object_layout'"
    if set(layout) != set(object_names):
        raise EpisodeFormatError(
            where, f"names {sorted(layout)} do not match dataset 'object_names' {sorted(object_names)}", item
        )
    for name, value in layout.items():
        if (not isinstance(value, list) or len(value) != 3
                or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in value)):
            raise EpisodeFormatError(
                where, f"object '{name}': expected [x, y, yaw] (3 finite numbers), found {value!r}", item)
    return EpisodeMeta(
        robot=attrs["robot"], scene_seed=int(attrs["scene_seed"]), episode_kind=attrs["episode_kind"],
        object_layout=layout, fps=fps, generator_version=attrs["generator_version"],
        camera_name=attrs["camera_name"], created_at=attrs["created_at"], extra=parsed["extra"],
    )


# ---------------------------------------------------------------------------------------------------- writer
@dataclass
class WriterConfig:
    """How frames are stored (``config/data.yaml`` section ``writer``)."""

    compression: str  # lzf | gzip | none
    gzip_level: int  # 1..9, used when compression is gzip

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"writer.compression must be one of {list(COMPRESSIONS)}, found {self.compression!r}")
        if not (isinstance(self.gzip_level, int) and 0 <= self.gzip_level <= 9):
            raise ValueError(f"writer.gzip_level must be an integer 0..9, found {self.gzip_level!r}")


def load_writer_config(path: str | os.PathLike = "data.yaml") -> WriterConfig:
    from dexwm_robot.config import load_section

    return load_section(WriterConfig, path, "writer")


def episode_filename(index: int) -> str:
    if index < 0:
        raise ValueError(f"episode index must be >= 0, got {index}")
    return f"{EPISODE_PREFIX}{index:06d}{EPISODE_SUFFIX}"


def tmp_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.name + TMP_SUFFIX)


def list_episodes(directory: str | os.PathLike) -> list[Path]:
    """Final episode files (``*.h5``) in ``directory``, sorted by name; ``.tmp`` leftovers are not included."""
    return sorted(p for p in Path(directory).glob(f"*{EPISODE_SUFFIX}") if p.is_file())


def write_episode(path: str | os.PathLike, episode: Episode, config: WriterConfig | None = None) -> int:
    """Validate ``episode`` and write it atomically to ``path``. Returns the file size in bytes.

    ``config`` (frame compression) defaults to section ``writer`` of ``config/data.yaml``.
    The data go to ``path + '.tmp'`` first, are flushed to disk, and only then renamed onto ``path``; if anything
    fails on the way the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    config = config or load_writer_config()
    episode.validate(path)
    tmp = tmp_path(path)
    frames = np.ascontiguousarray(episode.frames)
    try:
        with h5py.File(tmp, "w") as f:
            for k, v in episode.meta.to_attrs().items():
                f.attrs[k] = v
            opts: dict[str, Any] = {"chunks": (1,) + frames.shape[1:]}
            if config.compression == "lzf":
                opts["compression"] = "lzf"
            elif config.compression == "gzip":
                opts.update(compression="gzip", compression_opts=config.gzip_level)
            f.create_dataset("frames", data=frames, **opts)
            for spec in DATASETS:
                if spec.name == "frames":
                    continue
                value = getattr(episode, spec.field)
                if spec.kind == "str":
                    f.create_dataset(spec.name, data=list(value), dtype=h5py.string_dtype("utf-8"))
                else:
                    f.create_dataset(spec.name, data=np.asarray(value, dtype=np.float64))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


# ---------------------------------------------------------------------------------------------------- reader
class EpisodeReader:
    """Open and validate one episode file; frames are read lazily.

    ``deep=True`` additionally decompresses every frame once (detects damaged compressed chunks).
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, deep: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise EpisodeFormatError(self.path, "no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise EpisodeFormatError(self.path, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from None
        try:
            self._validate(deep)
        except BaseException:
            self._file.close()
            raise

    # -- validation
    def _dataset(self, name: str) -> h5py.Dataset:
        item = f"dataset '{name}'"
        try:
            obj = self._file.get(name)
        except (OSError, KeyError, ValueError) as exc:
            raise EpisodeFormatError(self.path, f"unreadable ({exc})", item) from None
        if obj is None:
            raise EpisodeFormatError(self.path, "missing", item)
        if not isinstance(obj, h5py.Dataset):
            raise EpisodeFormatError(self.path, f"expected a dataset, found a {type(obj).__name__}", item)
        return obj

    def _read(self, name: str, fn: Callable[[h5py.Dataset], Any] = lambda d: d[()]) -> Any:
        try:
            return fn(self._dataset(name))
        except EpisodeFormatError:
            raise
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise EpisodeFormatError(self.path, f"cannot read the data ({exc})", f"dataset '{name}'") from None

    def _validate(self, deep: bool) -> None:
        shapes = {}
        for spec in DATASETS:
            ds = self._dataset(spec.name)
            if h5py.check_string_dtype(ds.dtype) is not None:
                dtype = "str"
            else:
                dtype = str(ds.dtype)
            shapes[spec.name] = (ds.shape, dtype)
        dims = _check_structure(self.path, shapes)
        self.num_frames, self.height, self.width = dims["T"], dims["H"], dims["W"]
        values = {s.name: self._read(s.name) for s in DATASETS if s.kind == "float64"}
        _check_values(self.path, values, dims)
        names = {n: tuple(self._read(n, lambda d: d.asstr()[()].tolist())) for n in ("joint_names", "object_names")}
        _check_names(self.path, names)
        check_robot_joints(self.path, names["joint_names"], values)
        try:
            attrs = dict(self._file.attrs)
        except OSError as exc:
            raise EpisodeFormatError(self.path, f"cannot read the file attributes ({exc})") from None
        self.meta = _parse_attrs(self.path, attrs, names["object_names"])
        self.joint_names, self.object_names = names["joint_names"], names["object_names"]
        self.timestamps = values["timestamps"]
        self.joint_positions = values["joint_positions"]
        self.commanded_targets = values["commanded_targets"]
        self.keypoints_world = values["keypoints_world"]
        self.keypoints_camera = values["keypoints_camera"]
        self.keypoints_pixels = values["keypoints_pixels"]
        self.camera_intrinsics = values["camera/intrinsics"]
        self.camera_pose_world = values["camera/pose_world"]
        self.object_poses = values["object_poses"]
        if deep:
            for i in range(self.num_frames):
                self.frame(i)

    # -- access
    def __len__(self) -> int:
        return self.num_frames

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as (H, W, 3) uint8; reads (and decompresses) only that frame."""
        if not -self.num_frames <= index < self.num_frames:
            raise IndexError(f"{self.path}: frame {index} out of range (episode has {self.num_frames} frames)")
        return self._read("frames", lambda d: d[index])

    def frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start:stop`` as (n, H, W, 3) uint8."""
        return self._read("frames", lambda d: d[start:stop])

    def iter_frames(self) -> Iterator[np.ndarray]:
        for i in range(self.num_frames):
            yield self.frame(i)

    def load(self) -> Episode:
        """Everything, frames included, as an in-memory :class:`Episode`."""
        return Episode(
            meta=self.meta, frames=self.frames(), timestamps=self.timestamps, joint_positions=self.joint_positions,
            commanded_targets=self.commanded_targets, keypoints_world=self.keypoints_world,
            keypoints_camera=self.keypoints_camera, keypoints_pixels=self.keypoints_pixels,
            camera_intrinsics=self.camera_intrinsics, camera_pose_world=self.camera_pose_world,
            object_poses=self.object_poses, joint_names=self.joint_names, object_names=self.object_names,
        )

    def close(self) -> None:
        if self._file:
            self._file.close()

    def __enter__(self) -> "EpisodeReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_episode(path: str | os.PathLike) -> Episode:
    """Validate and load a whole episode (frames included, so every frame is decompressed once)."""
    with EpisodeReader(path) as reader:
        return reader.load()
