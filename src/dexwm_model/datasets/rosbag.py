"""Our robot's own rosbag2 recordings (MCAP or sqlite3, read with ``rosbags``) as clips.

Per bag (one episode):

* frames: every message on ``image_topic`` (``sensor_msgs/Image`` in rgb8, bgr8, rgba8, bgra8 or mono8, respecting
  ``step``; or ``sensor_msgs/CompressedImage``), timed by their header stamps (``stamp: header``) or by the bag's
  receive times (``stamp: log``);
* joints: ``joint_states_topic`` messages (``sensor_msgs/JointState``, possibly several publishers each naming a
  subset) give each of ``panda_joint1..7`` and ``ah_joint00..33`` a time series, linearly interpolated at the frame
  times; frames outside the time span covered by every joint are left out;
* camera: intrinsics and frame name from the first ``camera_info_topic`` message; the pose of that frame in
  ``fk_frame`` from the transforms on ``tf_static_topic`` (chained through any number of frames, either direction),
  else from ``camera_pose`` in the config; the camera is fixed;
* keypoints: forward kinematics of the 23 joints (:mod:`dexwm_model.actions.allegro`) in the right-hand slot; actions
  from the fixed-camera action function; heat-map pixels are the FK wrist and tips projected through the
  intrinsics (left hand never valid).
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from dexwm_model.actions.allegro import Hand21FK, allegro_trajectory, default_fk
from dexwm_model.data.raw_image import RawImageError, raw_image_rgb
from dexwm_model.datasets.base import ClipDataset, EpisodeEntry, LoadedClip, Transform
from dexwm_model.datasets.config import ClipConfig, RosbagSourceConfig
from dexwm_model.datasets.errors import DatasetFormatError
from dexwm_robot.joint_names import ALL_JOINT_NAMES
from dexwm_model.datasets.keypoints import HEATMAP_KEYPOINTS_42, NUM_HEATMAP_KEYPOINTS, finalize, project, \
    world_to_camera

# the 23-joint order of the project (joint_names holds only names: importing it pulls in no ROS package)
ROBOT_JOINT_NAMES = ALL_JOINT_NAMES
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
OPEN_BAGS = 8  # bags each process keeps open between samples (opening one parses its metadata: ~0.1 s)

def _stamp(header: Any) -> float:
    return float(header.stamp.sec) + 1e-9 * float(header.stamp.nanosec)


def _frame(name: str) -> str:
    return name.lstrip("/")


def quaternion_matrix(qw: float, qx: float, qy: float, qz: float) -> np.ndarray:
    """Unit quaternion (normalised here) -> 3x3 rotation."""
    q = np.array([qw, qx, qy, qz], dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} has no direction")
    w, x, y, z = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _transform(t: Any, q: Any) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quaternion_matrix(q.w, q.x, q.y, q.z)
    T[:3, 3] = (t.x, t.y, t.z)
    return T


def image_to_rgb(msg: Any, msgtype: str, where: Path) -> np.ndarray:
    """A deserialised ``sensor_msgs/Image`` or ``CompressedImage`` -> (H, W, 3) uint8 RGB."""
    if msgtype.endswith("CompressedImage"):
        import cv2

        bgr = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetFormatError(where, f"compressed image (format '{msg.format}') cannot be decoded")
        return np.ascontiguousarray(bgr[:, :, ::-1])
    try:
        return raw_image_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)
    except RawImageError as exc:
        raise DatasetFormatError(where, f"image {msg.width}x{msg.height}: {exc}") from None


def chain_pose(edges: dict[tuple[str, str], np.ndarray], source: str, target: str) -> np.ndarray | None:
    """Pose of frame ``target`` in frame ``source`` (4x4) through ``edges[(parent, child)] = T_parent_child``,
    walking edges in either direction; None when the two frames are not connected."""
    graph: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (parent, child), T in edges.items():
        graph.setdefault(parent, []).append((child, T))
        graph.setdefault(child, []).append((parent, np.linalg.inv(T)))
    if source == target:
        return np.eye(4)
    seen = {source: np.eye(4)}
    queue = deque([source])
    while queue:
        frame = queue.popleft()
        for nxt, T in graph.get(frame, []):
            if nxt not in seen:
                seen[nxt] = seen[frame] @ T
                if nxt == target:
                    return seen[nxt]
                queue.append(nxt)
    return None


def _open_reader(path: Path) -> Any:
    """An open ``rosbags`` AnyReader on the bag folder ``path``."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED))
        reader.open()
    except Exception as exc:  # rosbags raises its own error types per storage plugin
        raise DatasetFormatError(path, f"not a readable rosbag2 recording ({type(exc).__name__}: {exc})") from None
    return reader


@contextmanager
def _reader(path: Path) -> Iterator[Any]:
    reader = _open_reader(path)
    try:
        yield reader
    finally:
        reader.close()


class RosbagEpisodes(ClipDataset):
    """Clips from rosbag2 recordings: ``root`` is one bag folder (with ``metadata.yaml``) or a folder of them.

    ``fk``: any object with ``hand21(q[..., 23]) -> (..., 21, 3)`` in ``config.fk_frame``; default: the project's
    Panda + Allegro FK (built on first use).
    """

    source = "rosbag"
    hand_loss = True

    def __init__(self, root: str | os.PathLike, config: RosbagSourceConfig, clip: ClipConfig,
                 transform: Transform | None = None, fk: Hand21FK | None = None) -> None:
        self.config = config
        self._fk = fk
        self._readers: OrderedDict[Path, Any] = OrderedDict()
        self._readers_pid = os.getpid()
        super().__init__(root, clip, transform)

    def __getstate__(self) -> dict:  # open readers stay in their process (DataLoader workers open their own)
        state = dict(self.__dict__)
        state["_readers"] = OrderedDict()
        return state

    def _cached_reader(self, path: Path) -> Any:
        if self._readers_pid != os.getpid():  # forked worker: the parent's handles are not ours to use
            self._readers, self._readers_pid = OrderedDict(), os.getpid()
        reader = self._readers.get(path)
        if reader is None:
            reader = _open_reader(path)
            self._readers[path] = reader
            while len(self._readers) > OPEN_BAGS:
                self._readers.popitem(last=False)[1].close()
        self._readers.move_to_end(path)
        return reader

    def close(self) -> None:
        """Close the bags this process keeps open (they are reopened when needed)."""
        while self._readers:
            self._readers.popitem()[1].close()

    @property
    def fk(self) -> Hand21FK:
        if self._fk is None:
            self._fk = default_fk()
        return self._fk

    def _looked_for(self) -> str:
        return f"no rosbag2 folder (with metadata.yaml) at or under {self.root}"

    def _index(self) -> list[EpisodeEntry]:
        if (self.root / "metadata.yaml").is_file():
            bags = [self.root]
        else:
            bags = sorted(p.parent for p in self.root.rglob("metadata.yaml"))
        entries = []
        for bag in bags:
            info = self._scan(bag)
            name = bag.relative_to(self.root).as_posix() if bag != self.root else bag.name
            entries.append(EpisodeEntry(name=name, path=bag, times=info.pop("times"), info=info))
        return entries

    # --------------------------------------------------------------------------------------------- scanning
    def _connection(self, reader, bag: Path, topic: str, types: tuple[str, ...]):
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            topics = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
            raise DatasetFormatError(bag, f"no messages on topic '{topic}'; topics: {topics}")
        bad = [c.msgtype for c in conns if c.msgtype not in types]
        if bad:
            raise DatasetFormatError(bag, f"topic '{topic}' carries {bad[0]}, expected {' or '.join(types)}")
        return conns

    def _scan(self, bag: Path) -> dict:
        cfg = self.config
        with _reader(bag) as reader:
            img_conns = self._connection(reader, bag, cfg.image_topic, IMAGE_TYPES)
            info_conns = self._connection(reader, bag, cfg.camera_info_topic, ("sensor_msgs/msg/CameraInfo",))
            js_conns = self._connection(reader, bag, cfg.joint_states_topic, ("sensor_msgs/msg/JointState",))
            tf_conns = [c for c in reader.connections if c.topic == cfg.tf_static_topic]

            info_msg = None
            for conn, _, raw in reader.messages(connections=info_conns):
                info_msg = reader.deserialize(raw, conn.msgtype)
                break
            if info_msg is None:
                raise DatasetFormatError(bag, "no CameraInfo message", f"topic '{cfg.camera_info_topic}'")
            K = np.asarray(info_msg.k, dtype=np.float64).reshape(3, 3)
            if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0 and K[2, 2] == 1.0):
                raise DatasetFormatError(bag, f"CameraInfo.k is not a pinhole matrix: {K.tolist()}",
                                         f"topic '{cfg.camera_info_topic}'")
            info_hw = (int(info_msg.height), int(info_msg.width))

            series: dict[str, list[tuple[float, float]]] = {}
            for conn, log_t, raw in reader.messages(connections=js_conns):
                msg = reader.deserialize(raw, conn.msgtype)
                t = _stamp(msg.header) if cfg.stamp == "header" else log_t * 1e-9
                pos = np.asarray(msg.position, dtype=np.float64)
                if len(pos) != len(msg.name):
                    raise DatasetFormatError(bag, f"JointState with {len(msg.name)} names but {len(pos)} positions",
                                             f"topic '{cfg.joint_states_topic}'")
                for name, p in zip(msg.name, pos):
                    series.setdefault(name, []).append((t, float(p)))
            missing = [n for n in ROBOT_JOINT_NAMES if n not in series]
            if missing:
                raise DatasetFormatError(bag, f"joints {missing} never appear; names found: {sorted(series)}",
                                         f"topic '{cfg.joint_states_topic}'")

            edges: dict[tuple[str, str], np.ndarray] = {}
            for conn, _, raw in reader.messages(connections=tf_conns):
                if conn.msgtype != "tf2_msgs/msg/TFMessage":
                    raise DatasetFormatError(bag, f"topic '{cfg.tf_static_topic}' carries {conn.msgtype}, expected "
                                                  "tf2_msgs/msg/TFMessage")
                for tr in reader.deserialize(raw, conn.msgtype).transforms:
                    tt = tr.transform
                    edges[(_frame(tr.header.frame_id), _frame(tr.child_frame_id))] = _transform(tt.translation,
                                                                                                 tt.rotation)

            stamps, logs, ranks = [], [], []  # rank: position among the image messages sharing a receive time
            camera_frame = _frame(info_msg.header.frame_id)
            for conn, log_t, raw in reader.messages(connections=img_conns):
                msg = reader.deserialize(raw, conn.msgtype)
                stamps.append(_stamp(msg.header) if cfg.stamp == "header" else log_t * 1e-9)
                ranks.append(ranks[-1] + 1 if logs and logs[-1] == int(log_t) else 0)
                logs.append(int(log_t))
                if not camera_frame:
                    camera_frame = _frame(msg.header.frame_id)

        camera_pose = chain_pose(edges, _frame(cfg.fk_frame), camera_frame) if camera_frame else None
        if camera_pose is None:
            if cfg.camera_pose is None:
                frames = sorted({f for e in edges for f in e})
                raise DatasetFormatError(bag, f"camera frame '{camera_frame}' is not connected to fk_frame "
                                              f"'{cfg.fk_frame}' on '{cfg.tf_static_topic}' (frames there: {frames}) "
                                              "and rosbag.camera_pose is not set")
            x, y, z, qw, qx, qy, qz = (float(v) for v in cfg.camera_pose)
            camera_pose = np.eye(4)
            camera_pose[:3, :3] = quaternion_matrix(qw, qx, qy, qz)
            camera_pose[:3, 3] = (x, y, z)

        order = np.argsort(np.asarray(stamps), kind="stable")
        stamps_arr = np.asarray(stamps, dtype=np.float64)[order]
        logs_arr = np.asarray(logs, dtype=np.int64)[order]
        keep = np.ones(len(stamps_arr), dtype=bool)
        keep[1:] = np.diff(stamps_arr) > 0  # drop repeated stamps (same frame recorded twice)
        joints = np.zeros((len(stamps_arr), len(ROBOT_JOINT_NAMES)))
        lo, hi = -np.inf, np.inf
        for j, name in enumerate(ROBOT_JOINT_NAMES):
            data = np.asarray(series[name])
            data = data[np.argsort(data[:, 0], kind="stable")]
            if len(data) > 1 and data[-1, 0] == data[0, 0]:
                raise DatasetFormatError(bag, f"every message naming '{name}' has the same time {data[0, 0]} s "
                                              "(unstamped headers? set rosbag.stamp: log)",
                                         f"topic '{cfg.joint_states_topic}'")
            lo, hi = max(lo, data[0, 0]), min(hi, data[-1, 0])
            joints[:, j] = np.interp(stamps_arr, data[:, 0], data[:, 1])
        keep &= (stamps_arr >= lo - 1e-9) & (stamps_arr <= hi + 1e-9)
        rank = np.asarray(ranks, dtype=np.int64)[order]
        t = stamps_arr[keep]
        return {"times": t - (t[0] if len(t) else 0.0), "log_times": logs_arr[keep], "log_rank": rank[keep],
                "joints": joints[keep], "K": K, "info_hw": info_hw, "camera_pose": camera_pose,
                "camera_frame": camera_frame}

    # -------------------------------------------------------------------------------------------- loading
    def _load(self, entry: EpisodeEntry, indices: np.ndarray) -> LoadedClip:
        cfg, info = self.config, entry.info
        wanted = {(int(info["log_times"][i]), int(info["log_rank"][i])): n for n, i in enumerate(indices)}
        frames: list[np.ndarray | None] = [None] * len(indices)
        start, stop = min(k[0] for k in wanted), max(k[0] for k in wanted) + 1
        reader = self._cached_reader(entry.path)
        conns = [c for c in reader.connections if c.topic == cfg.image_topic]
        last_t, rank = None, 0
        for conn, log_t, raw in reader.messages(connections=conns, start=start, stop=stop):  # the clip's range
            rank = rank + 1 if log_t == last_t else 0
            last_t = log_t
            slot = wanted.get((int(log_t), rank))
            if slot is not None:
                frames[slot] = image_to_rgb(reader.deserialize(raw, conn.msgtype), conn.msgtype, entry.path)
        for n, f in enumerate(frames):
            if f is None:
                i = int(indices[n])
                raise DatasetFormatError(entry.path, f"image {i} (receive time {int(info['log_times'][i])} ns) not "
                                                     "found again", f"topic '{cfg.image_topic}'")
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise DatasetFormatError(entry.path, f"images of different sizes {sorted(shapes)}",
                                     f"topic '{cfg.image_topic}'")
        hw = frames[0].shape[:2]
        if info["info_hw"] != (0, 0) and tuple(hw) != tuple(info["info_hw"]):
            raise DatasetFormatError(entry.path, f"images are {hw[1]}x{hw[0]} but CameraInfo says "
                                                 f"{info['info_hw'][1]}x{info['info_hw'][0]}",
                                     f"topic '{cfg.image_topic}'")
        q = info["joints"][np.asarray(indices, dtype=np.int64)]
        try:
            traj = allegro_trajectory(q, info["camera_pose"], self.fk)
        except ValueError as exc:
            raise DatasetFormatError(entry.path, f"forward kinematics failed: {exc}") from None
        kp = traj.keypoints.detach().cpu().numpy()[:, list(HEATMAP_KEYPOINTS_42)]
        uv = project(world_to_camera(kp, info["camera_pose"]), info["K"])
        valid = np.zeros((len(indices), NUM_HEATMAP_KEYPOINTS), dtype=bool)
        valid[:, NUM_HEATMAP_KEYPOINTS // 2:] = True
        px, ok = finalize(uv, valid, hw)
        return LoadedClip(frames=np.stack(frames), trajectory=traj, keypoints_px=px, keypoints_valid=ok)
