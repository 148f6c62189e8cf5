"""Writers of small files in the real on-disk formats read by dexwm_model.datasets (no tests in this module).

Every video frame is a flat colour that encodes its frame number (robust to lossy compression), so a test can tell
which frame a reader returned.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np

from dexwm_model.actions.egodex import EGODEX_KEYPOINT_JOINTS
from dexwm_model.data.episode import Episode, EpisodeMeta, WriterConfig, write_episode
from dexwm_model.datasets.config import (
    ClipConfig,
    DroidLeRobotSourceConfig,
    DroidRawSourceConfig,
    EgoDexSourceConfig,
    RosbagSourceConfig,
    SimSourceConfig,
)
from dexwm_model.kinematics.panda_allegro import robot_joint_limits, robot_joint_names

_LOW, _HIGH = robot_joint_limits()
MID = (_LOW + _HIGH) / 2  # the middle of every joint's range: a posture inside the robot's limits

VIDEO_HW = (48, 64)


def clip_config(**overrides) -> ClipConfig:
    base = dict(context_frames=3, window_s=2.0, min_gap_s=0.05, clip_stride_s=1.0, short_episodes="error", seed=0)
    base.update(overrides)
    return ClipConfig(**base)


SIM = SimSourceConfig(root=None, pattern="episode_*.h5")
EGODEX = EgoDexSourceConfig(root=None, fps=30.0, confidence_threshold=0.5)
DROID_RAW = DroidRawSourceConfig(root=None, camera="ext1", fps=15.0)
LEROBOT = DroidLeRobotSourceConfig(root=None, camera="exterior_1_left")
ROSBAG = RosbagSourceConfig(root=None, image_topic="/camera/color/image_raw",
                            camera_info_topic="/camera/color/camera_info", joint_states_topic="/joint_states",
                            tf_static_topic="/tf_static", fk_frame="world", camera_pose=None, stamp="header")


# ------------------------------------------------------------------------------------------------------ video
def code_rgb(i: int) -> tuple[int, int, int]:
    return (i % 16) * 16 + 8, (i // 16) * 16 + 8, 128


def frame_code(frame: np.ndarray) -> int:
    """The frame number a flat-colour frame encodes."""
    r, g = (float(np.median(frame[..., c])) for c in (0, 1))
    return int(round((r - 8) / 16)) + 16 * int(round((g - 8) / 16))


def code_frames(first: int, n: int, hw=VIDEO_HW) -> np.ndarray:
    out = np.zeros((n,) + tuple(hw) + (3,), np.uint8)
    for i in range(n):
        out[i] = code_rgb(first + i)
    return out


def write_video(path: Path, n: int, fps: float, first_code: int = 0, codec: str = "libx264", gop: int = 6,
                hw=VIDEO_HW) -> Path:
    import av

    from dexwm_hw.scheduling import normal_scheduling

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        s.width, s.height, s.pix_fmt = hw[1], hw[0], "yuv420p"
        s.codec_context.gop_size = gop
        for i, img in enumerate(code_frames(first_code, n, hw)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1) / Fraction(fps).limit_denominator(1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    normal_scheduling()  # the SVT-AV1 encoder (libsvtav1) raises the calling thread to SCHED_FIFO
    return path


# ------------------------------------------------------------------------------------------------- rotations
def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


# ------------------------------------------------------------------------------------------------ sim format
SIM_K = np.array([[40.0, 0.0, 16.0], [0.0, 40.0, 12.0], [0.0, 0.0, 1.0]])
SIM_HW = (24, 32)


def sim_camera_pose() -> np.ndarray:
    """Camera 1 m above the world origin looking straight down (optical z = world -z)."""
    T = np.eye(4)
    T[:3, :3] = rot_x(math.pi)
    T[:3, 3] = (0.0, 0.0, 1.0)
    return T


def sim_keypoints(t: np.ndarray) -> np.ndarray:
    """World keypoints (T, 21, 3): point j at (0.01 j - 0.1, 0.005 j, 0.2) moving +x by 0.02 per frame; point 20
    (the little tip) far to the side, outside the image."""
    j = np.arange(21)
    base = np.stack((0.01 * j - 0.1, 0.005 * j, np.full(21, 0.2)), -1)
    kw = base[None] + np.asarray(t, float)[:, None, None] * np.array([0.02, 0.0, 0.0])
    kw[:, 20, 0] += 5.0
    return kw


def make_sim_episode(n: int, seed: int = 0, dt: float = 0.2) -> Episode:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    pose = np.tile(sim_camera_pose(), (n, 1, 1))
    kw = sim_keypoints(t)
    R, c = pose[0, :3, :3], pose[0, :3, 3]
    kc = (kw - c) @ R
    kp = kc[..., :2] / kc[..., 2:3] * [SIM_K[0, 0], SIM_K[1, 1]] + SIM_K[:2, 2]
    frames = np.zeros((n,) + SIM_HW + (3,), np.uint8)
    for i in range(n):
        frames[i] = code_rgb(i)
    return Episode(
        meta=EpisodeMeta(robot="panda_allegro_right", scene_seed=seed, episode_kind="reach", object_layout={},
                         fps=1.0 / dt, generator_version="test/1", camera_name="ego"),
        frames=frames, timestamps=np.arange(n) * dt + rng.uniform(0, 0.01, n) * (np.arange(n) > 0),
        joint_positions=MID + 0.1 * rng.normal(size=(n, 23)), commanded_targets=MID + 0.1 * rng.normal(size=(n, 23)),
        keypoints_world=kw, keypoints_camera=kc, keypoints_pixels=kp, camera_intrinsics=SIM_K.copy(),
        camera_pose_world=pose, object_poses=np.zeros((n, 0, 7)), joint_names=robot_joint_names(),
        object_names=(),
    )


def write_sim_folder(root: Path, lengths=(30,)) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, n in enumerate(lengths):
        p = root / f"episode_{i:06d}.h5"
        write_episode(p, make_sim_episode(n, seed=i), WriterConfig("lzf", 1))
        paths.append(p)
    return paths


# --------------------------------------------------------------------------------------------------- EgoDex
EGODEX_K = np.array([[50.0, 0.0, 32.0], [0.0, 50.0, 24.0], [0.0, 0.0, 1.0]])
EGODEX_R = rot_z(math.pi / 2)  # camera orientation (constant); optical axis = world z


def egodex_camera(t: np.ndarray) -> np.ndarray:
    T = np.tile(np.eye(4), (len(t), 1, 1))
    T[:, :3, :3] = EGODEX_R
    T[:, :3, 3] = np.stack((0.002 * t, np.zeros(len(t)), np.zeros(len(t))), -1)
    return T


def egodex_joint_position(joint: int, t: np.ndarray) -> np.ndarray:
    """World position (T, 3) of keypoint ``joint`` (0..41) at frames ``t``: right hand near (0.004 t, 0, 0.5), left
    hand absent (zeros) before frame 20 and then at the mirror place."""
    hand, j = divmod(joint, 21)
    off = np.array([0.004 * j, 0.003 * (j % 5), 0.001 * j])
    p = np.stack((0.004 * t, np.zeros(len(t)), np.full(len(t), 0.5)), -1) + off
    if hand == 0:
        p = p * np.array([1.0, -1.0, 1.0]) + np.array([0.0, -0.05, 0.0])
        p[t < 20] = 0.0
    return p


def write_egodex_episode(root: Path, task: str, index: int, n: int = 40, video_frames: int | None = None,
                         confidences: bool = True, drop: tuple[str, ...] = ()) -> Path:
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{index}.hdf5"
    t = np.arange(n, dtype=float)
    with h5py.File(path, "w") as f:
        f.attrs["description"] = "pick up the cup"
        if "camera/intrinsic" not in drop:
            f["camera/intrinsic"] = EGODEX_K
        f["transforms/camera"] = egodex_camera(t)
        for k, name in enumerate(EGODEX_KEYPOINT_JOINTS):
            if f"transforms/{name}" in drop:
                continue
            T = np.tile(np.eye(4), (n, 1, 1))
            T[:, :3, 3] = egodex_joint_position(k, t)
            f[f"transforms/{name}"] = T
            if confidences:
                conf = np.full(n, 0.9)
                if name == "rightIndexFingerTip":
                    conf[:] = 0.2
                f[f"confidences/{name}"] = conf
        for extra in ("leftIndexFingerMetacarpal", "rightIndexFingerMetacarpal", "leftForearmArm"):
            f[f"transforms/{extra}"] = np.tile(np.eye(4), (n, 1, 1))
    write_video(folder / f"{index}.mp4", n if video_frames is None else video_frames, 30.0)
    return path


# ---------------------------------------------------------------------------------------------------- DROID
def droid_state(n: int) -> tuple[np.ndarray, np.ndarray]:
    """End effector moving +x 0.01 m per frame, gripper closing linearly from 0 to 1."""
    t = np.arange(n, dtype=float)
    cart = np.stack((0.4 + 0.01 * t, 0.1 * np.ones(n), 0.3 * np.ones(n), np.full(n, math.pi), np.zeros(n),
                     np.zeros(n)), -1)
    return cart, t / (n - 1)


DROID_EXT = {"111": [0.5, 0.0, 0.6, 0.0, 0.0, math.pi / 2], "222": [0.2, 0.3, 0.6, 0.0, 0.0, -math.pi / 2]}


def write_droid_episode(root: Path, name: str, n: int = 30, drop_meta_key: str | None = None,
                        drop_extrinsics: bool = False) -> Path:
    ep = root / name
    (ep / "recordings" / "MP4").mkdir(parents=True, exist_ok=True)
    cart, grip = droid_state(n)
    with h5py.File(ep / "trajectory.h5", "w") as f:
        f["observation/robot_state/cartesian_position"] = cart
        f["observation/robot_state/gripper_position"] = grip
        f["observation/robot_state/joint_positions"] = np.zeros((n, 7))
        for serial, pose in DROID_EXT.items():
            if drop_extrinsics and serial == "111":
                continue
            f[f"observation/camera_extrinsics/{serial}_left"] = np.tile(pose, (n, 1))
            f[f"observation/camera_extrinsics/{serial}_right"] = np.tile(pose, (n, 1))
        f["action/cartesian_position"] = cart
    meta = {"uuid": name, "ext1_cam_serial": "111", "ext2_cam_serial": "222", "wrist_cam_serial": "333",
            "ext1_mp4_path": f"{name}/recordings/MP4/111.mp4", "ext2_mp4_path": f"{name}/recordings/MP4/222.mp4",
            "wrist_mp4_path": f"{name}/recordings/MP4/333.mp4", "trajectory_length": n}
    if drop_meta_key:
        meta.pop(drop_meta_key)
    (ep / f"metadata_{name}.json").write_text(json.dumps(meta))
    write_video(ep / "recordings" / "MP4" / "111.mp4", n, 15.0, first_code=0)
    write_video(ep / "recordings" / "MP4" / "222.mp4", n, 15.0, first_code=100)
    return ep


# -------------------------------------------------------------------------------------------- LeRobot DROID
def _features(n_state: int = 8) -> dict:
    vid = {"dtype": "video", "shape": [VIDEO_HW[0], VIDEO_HW[1], 3], "names": ["height", "width", "channels"]}
    f = {"observation.state": {"dtype": "float32", "shape": [n_state]},
         "observation.state.cartesian_position": {"dtype": "float32", "shape": [6]},
         "observation.state.gripper_position": {"dtype": "float32", "shape": [1]},
         "observation.state.joint_position": {"dtype": "float32", "shape": [7]},
         "camera_extrinsics.exterior_1_left": {"dtype": "float32", "shape": [6]},
         "camera_extrinsics.exterior_2_left": {"dtype": "float32", "shape": [6]},
         "observation.images.exterior_1_left": vid, "observation.images.exterior_2_left": vid,
         "observation.images.wrist_left": vid,
         "timestamp": {"dtype": "float32", "shape": [1]}, "frame_index": {"dtype": "int64", "shape": [1]},
         "episode_index": {"dtype": "int64", "shape": [1]}, "index": {"dtype": "int64", "shape": [1]},
         "task_index": {"dtype": "int64", "shape": [1]}}
    return f


def _episode_table(ep: int, n: int, start_index: int, with_cartesian: bool = True, shuffle: bool = False):
    import pyarrow as pa

    cart, grip = droid_state(n)
    rows = np.arange(n)
    if shuffle:
        rows = rows[::-1]
    cols = {
        "observation.state": pa.array([[0.0] * 7 + [float(grip[i])] for i in rows], pa.list_(pa.float32())),
        "observation.state.gripper_position": pa.array([[float(grip[i])] for i in rows], pa.list_(pa.float32())),
        "camera_extrinsics.exterior_1_left": pa.array([DROID_EXT["111"]] * n, pa.list_(pa.float32())),
        "camera_extrinsics.exterior_2_left": pa.array([DROID_EXT["222"]] * n, pa.list_(pa.float32())),
        "timestamp": pa.array(rows / 15.0, pa.float32()),
        "frame_index": pa.array(rows, pa.int64()),
        "episode_index": pa.array([ep] * n, pa.int64()),
        "index": pa.array(start_index + rows, pa.int64()),
        "task_index": pa.array([0] * n, pa.int64()),
    }
    if with_cartesian:
        cols["observation.state.cartesian_position"] = pa.array([cart[i].tolist() for i in rows],
                                                                pa.list_(pa.float32()))
    return pa.table(cols)


def write_lerobot_v2(root: Path, lengths=(30, 24), codec: str = "libsvtav1", with_cartesian: bool = True) -> Path:
    import pyarrow.parquet as pq

    info = {"codebase_version": "v2.1", "robot_type": "Franka", "fps": 15, "chunks_size": 1000,
            "total_episodes": len(lengths),
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": _features()}
    if not with_cartesian:
        del info["features"]["observation.state.cartesian_position"]
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    start = 0
    for ep, n in enumerate(lengths):
        path = root / f"data/chunk-000/episode_{ep:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_episode_table(ep, n, start, with_cartesian, shuffle=(ep == 1)), path)
        for key, first in (("exterior_1_left", 0), ("exterior_2_left", 100)):
            write_video(root / f"videos/chunk-000/observation.images.{key}/episode_{ep:06d}.mp4", n, 15.0,
                        first_code=first + 40 * ep, codec=codec)
        start += n
    return root


def write_lerobot_v3(root: Path, lengths=(30, 24)) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = {"codebase_version": "v3.0", "robot_type": "Franka", "fps": 15, "chunks_size": 1000,
            "total_episodes": len(lengths),
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": _features()}
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    tables, start, rows = [], 0, []
    for ep, n in enumerate(lengths):
        tables.append(_episode_table(ep, n, start))
        rows.append({"episode_index": ep, "length": n, "data/chunk_index": 0, "data/file_index": 0,
                     "dataset_from_index": start, "dataset_to_index": start + n,
                     "videos/observation.images.exterior_1_left/chunk_index": 0,
                     "videos/observation.images.exterior_1_left/file_index": 0,
                     "videos/observation.images.exterior_1_left/from_timestamp": start / 15.0,
                     "videos/observation.images.exterior_1_left/to_timestamp": (start + n) / 15.0})
        start += n
    data = root / "data/chunk-000/file-000.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.concat_tables(tables), data)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    write_video(root / "videos/observation.images.exterior_1_left/chunk-000/file-000.mp4", start, 15.0)
    return root


# ---------------------------------------------------------------------------------------------------- rosbag
# the driver's names in the project's 23-joint order (index, middle, ring, thumb), written out independently
ARM = tuple(f"panda_joint{i}" for i in range(1, 8))
HAND = tuple(f"ah_joint{f}{j}" for f in (1, 2, 3, 0) for j in range(4))
ROS_K = np.array([[60.0, 0.0, 32.0], [0.0, 60.0, 24.0], [0.0, 0.0, 1.0]])
Q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 1.9, -2.356] + [0.0, 0.2, 0.2, 0.2] * 3 + [0.6, 0.2, 0.2, 0.2])
QV = np.array([0.05, 0.04, -0.03, 0.06, 0.02, -0.05, 0.03] + [0.02, 0.05, 0.05, 0.05] * 3 + [0.03, 0.04, 0.04, 0.04])
CAM_IN_BASE = (np.array([0.3, -0.9, 0.7]), 0.5)  # camera optical frame in panda_link0: position, tilt


def joints_at(t) -> np.ndarray:
    """The recorded joints (23, project order) at time t (s since the first frame): linear in time."""
    return Q0 + QV * np.asarray(t, float)[..., None]


def camera_pose_in_base() -> np.ndarray:
    """Optical frame looking along base +y, tilted down: x = base x, z = (0, cos a, -sin a)."""
    pos, a = CAM_IN_BASE
    z = np.array([0.0, math.cos(a), -math.sin(a)])
    x = np.array([1.0, 0.0, 0.0])
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack((x, y, z), axis=1)
    T[:3, 3] = pos
    return T


def _quat(R: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation -> (w, x, y, z) (R has a positive trace here)."""
    w = math.sqrt(max(1e-12, 1.0 + R[0, 0] + R[1, 1] + R[2, 2])) / 2.0
    return w, (R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w)


WORLD_TO_BASE = np.array([0.05, 0.0, 0.0])  # panda_link0 in world (translation only)


def write_rosbag(path: Path, n_images: int = 12, image_rate: float = 5.0, storage: str = "mcap",
                 encoding: str = "rgb8", tf: bool = True, drop_joint: str | None = None,
                 t0: float = 100.0, joints_from: float = -0.2) -> Path:
    """A rosbag2 recording like our robot's: images, camera info, /joint_states from two publishers (arm, hand) at
    20 Hz starting before the first image and ending after the last, and /tf_static world -> panda_link0 ->
    camera_color_optical_frame."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    M = ts.types
    Header, Time = M["std_msgs/msg/Header"], M["builtin_interfaces/msg/Time"]

    def stamp(t):
        sec = int(math.floor(t))
        return Time(sec=sec, nanosec=int(round((t - sec) * 1e9)))

    def ns(t):
        return int(round(t * 1e9))

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    h, w = VIDEO_HW
    with Writer(path, version=9, storage_plugin=plugin) as bag:
        c_img = bag.add_connection("/camera/color/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        c_info = bag.add_connection("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts)
        c_js = bag.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=ts)
        c_tf = bag.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)
        if tf:
            tfs = []
            for parent, child, T in (("world", "panda_link0", np.block([[np.eye(3), WORLD_TO_BASE[:, None]],
                                                                         [np.zeros((1, 3)), np.ones((1, 1))]])),
                                     ("panda_link0", "camera_color_optical_frame", camera_pose_in_base())):
                qw, qx, qy, qz = _quat(T[:3, :3])
                tfs.append(M["geometry_msgs/msg/TransformStamped"](
                    header=Header(stamp=stamp(t0), frame_id=parent), child_frame_id=child,
                    transform=M["geometry_msgs/msg/Transform"](
                        translation=M["geometry_msgs/msg/Vector3"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                        rotation=M["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))))
            msg = M["tf2_msgs/msg/TFMessage"](transforms=tfs)
            bag.write(c_tf, ns(t0), ts.serialize_cdr(msg, msg.__msgtype__))
        span = (n_images - 1) / image_rate
        for i, t in enumerate(np.arange(joints_from, span + 0.25, 0.05)):
            for names, sl in ((ARM, slice(0, 7)), (HAND, slice(7, 23))):
                keep = [k for k, nme in enumerate(names) if nme != drop_joint]
                q = joints_at(t)[sl]
                msg = M["sensor_msgs/msg/JointState"](
                    header=Header(stamp=stamp(t0 + t), frame_id=""), name=[names[k] for k in keep],
                    position=q[keep], velocity=np.zeros(len(keep)), effort=np.zeros(len(keep)))
                bag.write(c_js, ns(t0 + t) + 1000, ts.serialize_cdr(msg, msg.__msgtype__))
        for i in range(n_images):
            t = i / image_rate
            hdr = Header(stamp=stamp(t0 + t), frame_id="camera_color_optical_frame")
            rgb = code_frames(i, 1)[0]
            channels = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1]}[encoding]
            step = w * 3 + 4  # padded rows
            data = np.zeros((h, step), np.uint8)
            data[:, : w * 3] = channels.reshape(h, w * 3)
            img = M["sensor_msgs/msg/Image"](header=hdr, height=h, width=w, encoding=encoding, is_bigendian=0,
                                             step=step, data=data.reshape(-1))
            info = M["sensor_msgs/msg/CameraInfo"](
                header=hdr, height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5), k=ROS_K.reshape(-1),
                r=np.eye(3).reshape(-1), p=np.hstack((ROS_K, np.zeros((3, 1)))).reshape(-1), binning_x=0,
                binning_y=0, roi=M["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                                       do_rectify=False))
            bag.write(c_img, ns(t0 + t) + 2_000_000, ts.serialize_cdr(img, img.__msgtype__))
            bag.write(c_info, ns(t0 + t) + 2_000_000, ts.serialize_cdr(info, info.__msgtype__))
    return path
