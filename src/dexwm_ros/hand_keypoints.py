"""``dexwm_interfaces/HandKeypoints`` <-> numpy, and the mapping of model-crop pixels back to camera pixels.

The message carries the 21-point layout of :mod:`dexwm_robot.hand_layout` (wrist, then thumb, index,
middle, ring, little, four points each). Pixels in the message use the camera image's convention of the message
definition: pixel centres at integer coordinates (u right, v down).
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from std_msgs.msg import Header

from dexwm_interfaces.msg import HandKeypoints
from dexwm_robot.hand_layout import HEATMAP_KEYPOINTS_21, NUM_HAND_KEYPOINTS

# indices of the wrist and the four Allegro fingertips (thumb, index, middle, ring) in the 21-point layout: the
# points the reach success test compares (dexwm_planner.tasks.success.REACH_SITES order)
REACH_POINTS_21 = (0, 4, 8, 12, 16)


def hand_keypoints_message(positions: np.ndarray | None, pixels: np.ndarray | None, image_hw: Sequence[int] | None,
                           confidence: np.ndarray, stamp: Time | None, frame_id: str,
                           side: int = HandKeypoints.SIDE_RIGHT) -> HandKeypoints:
    """A HandKeypoints message. ``positions`` (21, 3) metres in ``frame_id`` (None: unknown, sent as NaN);
    ``pixels`` (21, 2) in an image of ``image_hw`` = (height, width) (None: no camera, sent empty);
    ``confidence`` (21,) in [0, 1]."""
    n = NUM_HAND_KEYPOINTS
    conf = np.asarray(confidence, dtype=np.float64)
    if conf.shape != (n,):
        raise ValueError(f"confidence: expected {n} values, found shape {conf.shape}")
    pos = np.full((n, 3), np.nan) if positions is None else np.asarray(positions, dtype=np.float64)
    if pos.shape != (n, 3):
        raise ValueError(f"positions: expected shape ({n}, 3), found {pos.shape}")
    msg = HandKeypoints(header=Header(stamp=stamp if stamp is not None else Time(), frame_id=frame_id), side=side)
    msg.positions = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in pos]
    if pixels is not None:
        px = np.asarray(pixels, dtype=np.float64)
        if px.shape != (n, 2):
            raise ValueError(f"pixels: expected shape ({n}, 2), found {px.shape}")
        if image_hw is None or len(image_hw) != 2:
            raise ValueError(f"image_hw: (height, width) of the image the pixels refer to is required, found "
                             f"{image_hw!r}")
        msg.pixels = array.array("f", px.astype(np.float32).reshape(-1).tobytes())
        msg.image_height, msg.image_width = int(image_hw[0]), int(image_hw[1])
    msg.confidence = array.array("f", np.clip(conf, 0.0, 1.0).astype(np.float32).tobytes())
    return msg


def keypoints_from_message(msg: HandKeypoints, what: str = "HandKeypoints") -> np.ndarray:
    """Positions (21, 3) of a HandKeypoints message; ``ValueError`` naming the field when malformed."""
    n = NUM_HAND_KEYPOINTS
    if len(msg.positions) != n:
        raise ValueError(f"{what}.positions: expected {n} points (the 21-keypoint hand layout), found "
                         f"{len(msg.positions)}")
    pos = np.array([[p.x, p.y, p.z] for p in msg.positions], dtype=np.float64)
    bad = [i for i in REACH_POINTS_21 if not np.all(np.isfinite(pos[i]))]
    if bad:
        raise ValueError(f"{what}.positions: the wrist and fingertips (indices {list(REACH_POINTS_21)}) must be "
                         f"finite; index(es) {bad} are NaN or inf")
    return pos


def heatmap_pixels_to_hand21(uv6: np.ndarray, conf6: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hand head's wrist + 5 tips (6, 2) / (6,) spread into the 21-point layout (others NaN, confidence 0)."""
    uv = np.full((NUM_HAND_KEYPOINTS, 2), np.nan)
    conf = np.zeros(NUM_HAND_KEYPOINTS)
    idx = list(HEATMAP_KEYPOINTS_21)
    uv[idx] = np.asarray(uv6, dtype=np.float64)
    conf[idx] = np.asarray(conf6, dtype=np.float64)
    return uv, conf


def crop_pixels_to_image(uv: np.ndarray, preprocess, image_hw: Sequence[int]) -> np.ndarray:
    """Pixels (..., 2) of the encoder's crop, in the projection convention the model's keypoints use (pixel ``i``
    covers ``[i, i + 1)``, as the camera intrinsics), -> the same points in the full camera image of ``image_hw``
    (inverse of the resize + centre crop) in the message convention (pixel centres at integers)."""
    g = preprocess.geometry(image_hw)
    sx, sy = g.scale_xy
    uv = np.asarray(uv, dtype=np.float64)
    return continuous_to_message_pixels((uv + np.array([g.left, g.top])) / np.array([sx, sy]))


def continuous_to_message_pixels(uv: np.ndarray) -> np.ndarray:
    """Pixel coordinates where pixel ``i`` covers ``[i, i + 1)`` (camera projection through K) -> the message's
    convention (pixel centres at integer coordinates)."""
    return np.asarray(uv, dtype=np.float64) - 0.5
