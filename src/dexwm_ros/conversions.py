"""ROS message <-> numpy conversions used by the ROS adapters (no cv_bridge: it is not installable here).

Images respect ``step`` (row stride, possibly padded) and ``is_bigendian``; every builder takes the stamp from the
caller (the node clock), so messages published together can share one stamp.
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Pose, PoseArray, TransformStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory

from dexwm_model.data.raw_image import IMAGE_ENCODINGS, RawImageError, raw_image_pixels


def _header(stamp: Time | None, frame_id: str) -> Header:
    return Header(stamp=stamp if stamp is not None else Time(), frame_id=frame_id)


# ---------------------------------------------------------------------------------------------------- images
def numpy_to_image(image: np.ndarray, encoding: str, stamp: Time | None = None, frame_id: str = "",
                   step: int | None = None) -> Image:
    """``sensor_msgs/Image`` from an (H, W) or (H, W, C) array; ``step`` > W * C * itemsize pads every row."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"encoding: unsupported '{encoding}'; supported: {sorted(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise ValueError(f"image: encoding '{encoding}' needs shape (H, W, {channels})"
                         f"{' or (H, W)' if channels == 1 else ''}, got {np.asarray(image).shape}")
    if arr.dtype != dtype:
        raise ValueError(f"image: encoding '{encoding}' needs dtype {dtype}, got {arr.dtype}")
    height, width = arr.shape[:2]
    row_bytes = width * channels * dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ValueError(f"step: must be at least width * channels * itemsize = {row_bytes}, got {step}")
    rows = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<")).view(np.uint8).reshape(height, row_bytes)
    if step != row_bytes:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = rows
        rows = padded
    msg = Image(header=_header(stamp, frame_id), height=height, width=width, encoding=encoding,
                is_bigendian=0, step=step)
    msg.data = array.array("B", rows.tobytes())
    return msg


def image_to_numpy(msg: Image) -> np.ndarray:
    """(H, W, C) array (C = 1 for single-channel encodings is dropped: (H, W)) of the image's pixels; the ROS rules
    (known encoding, ``step >= width * channels * itemsize``, ``len(data) == step * height``) are enforced."""
    try:
        pixels = raw_image_pixels(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)
    except RawImageError as exc:
        raise ValueError(f"Image.{exc}") from None
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


# ------------------------------------------------------------------------------------------------ robot state
def joint_state(names: Sequence[str], position: np.ndarray, velocity: np.ndarray, effort: np.ndarray,
                stamp: Time | None = None) -> JointState:
    n = len(names)
    for field, values in (("position", position), ("velocity", velocity), ("effort", effort)):
        if np.shape(values) != (n,):
            raise ValueError(f"JointState.{field}: expected {n} values (one per name), got shape {np.shape(values)}")
    msg = JointState(header=_header(stamp, ""), name=list(names))
    msg.position = array.array("d", np.asarray(position, dtype=np.float64).tobytes())
    msg.velocity = array.array("d", np.asarray(velocity, dtype=np.float64).tobytes())
    msg.effort = array.array("d", np.asarray(effort, dtype=np.float64).tobytes())
    return msg


def camera_info(K: np.ndarray, width: int, height: int, stamp: Time | None = None, frame_id: str = "") -> CameraInfo:
    """Pinhole ``CameraInfo``: plumb_bob with zero distortion, R = I, P = [K | 0] (a monocular camera)."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K: expected a 3x3 intrinsic matrix, got shape {K.shape}")
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg = CameraInfo(header=_header(stamp, frame_id), width=int(width), height=int(height),
                     distortion_model="plumb_bob")
    msg.d = [0.0] * 5
    msg.k = K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    msg.p = P.reshape(-1).tolist()
    return msg


# -------------------------------------------------------------------------------------------------- geometry
def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), w >= 0, of a 3x3 rotation matrix (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"rotation: expected a 3x3 matrix, got shape {R.shape}")
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = np.array([0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s])
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = np.empty(4)
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a quaternion (w, x, y, z) (normalised first)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _quat(rotation: np.ndarray) -> np.ndarray:
    rotation = np.asarray(rotation, dtype=np.float64)
    if rotation.shape == (3, 3):
        return rotation_to_quaternion(rotation)
    if rotation.shape == (4,):
        return rotation / np.linalg.norm(rotation)
    raise ValueError(f"rotation: expected a 3x3 matrix or a (w, x, y, z) quaternion, got shape {rotation.shape}")


def transform_stamped(parent: str, child: str, translation: np.ndarray, rotation: np.ndarray,
                      stamp: Time | None = None) -> TransformStamped:
    """Pose of ``child`` in ``parent``; ``rotation`` is a 3x3 matrix or a (w, x, y, z) quaternion."""
    msg = TransformStamped(header=_header(stamp, parent), child_frame_id=child)
    set_transform(msg, translation, _quat(rotation), stamp)
    return msg


def set_transform(msg: TransformStamped, translation: np.ndarray, quaternion: np.ndarray,
                  stamp: Time | None = None) -> TransformStamped:
    """Update a ``TransformStamped`` in place (cheaper than building a new one at every control tick)."""
    t = np.asarray(translation, dtype=np.float64)
    if t.shape != (3,):
        raise ValueError(f"translation: expected 3 values, got shape {t.shape}")
    if np.shape(quaternion) != (4,):
        raise ValueError(f"quaternion: expected (w, x, y, z), got shape {np.shape(quaternion)}")
    tr, r = msg.transform.translation, msg.transform.rotation
    tr.x, tr.y, tr.z = float(t[0]), float(t[1]), float(t[2])
    r.w, r.x, r.y, r.z = (float(v) for v in quaternion)
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) quaternions (w, x, y, z), broadcasting over leading axes."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quaternion_conjugate(q: np.ndarray) -> np.ndarray:
    return np.asarray(q, dtype=np.float64) * np.array([1.0, -1.0, -1.0, -1.0])


def pose(position: np.ndarray, rotation: np.ndarray) -> Pose:
    """``geometry_msgs/Pose``; ``rotation`` is a 3x3 matrix or a (w, x, y, z) quaternion (MuJoCo's order)."""
    p = np.asarray(position, dtype=np.float64)
    if p.shape != (3,):
        raise ValueError(f"position: expected 3 values, got shape {p.shape}")
    w, x, y, z = _quat(rotation)
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = map(float, p)
    msg.orientation.w, msg.orientation.x, msg.orientation.y, msg.orientation.z = float(w), float(x), float(y), float(z)
    return msg


def pose_array(poses: Sequence[tuple[np.ndarray, np.ndarray]], stamp: Time | None = None,
               frame_id: str = "world") -> PoseArray:
    return PoseArray(header=_header(stamp, frame_id), poses=[pose(p, r) for p, r in poses])


# -------------------------------------------------------------------------------------------------- commands
def duration_to_seconds(d: Duration) -> float:
    return float(d.sec) + 1e-9 * float(d.nanosec)


def seconds_to_duration(seconds: float) -> Duration:
    ns = int(round(float(seconds) * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def trajectory_arrays(msg: JointTrajectory) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None]:
    """(joint names, times (N,), positions (N, J), velocities (N, J) or None) of a ``JointTrajectory``.

    Velocities are returned only when every point carries them. Raises ``ValueError`` for an empty trajectory,
    points whose ``positions``/``velocities`` length differs from ``joint_names``, or non-finite values.
    """
    names = list(msg.joint_names)
    if not names:
        raise ValueError("JointTrajectory.joint_names is empty")
    if not msg.points:
        raise ValueError("JointTrajectory.points is empty")
    n = len(names)
    times, positions, velocities = [], [], []
    for i, point in enumerate(msg.points):
        if len(point.positions) != n:
            raise ValueError(f"JointTrajectory.points[{i}].positions: expected {n} values (one per joint name), "
                             f"got {len(point.positions)}")
        if len(point.velocities) not in (0, n):
            raise ValueError(f"JointTrajectory.points[{i}].velocities: expected 0 or {n} values, "
                             f"got {len(point.velocities)}")
        times.append(duration_to_seconds(point.time_from_start))
        positions.append(np.asarray(point.positions, dtype=np.float64))
        velocities.append(np.asarray(point.velocities, dtype=np.float64) if len(point.velocities) else None)
    pos = np.stack(positions)
    if not np.all(np.isfinite(pos)):
        raise ValueError("JointTrajectory.points[*].positions contain NaN or inf")
    vel = np.stack(velocities) if all(v is not None for v in velocities) else None
    if vel is not None and not np.all(np.isfinite(vel)):
        raise ValueError("JointTrajectory.points[*].velocities contain NaN or inf")
    return names, np.asarray(times), pos, vel
