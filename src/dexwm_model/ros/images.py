"""``sensor_msgs/Image`` -> the (H, W, 3) uint8 RGB array the world model encodes."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from dexwm_hw.ros.conversions import image_to_numpy

RGB_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
MIN_SIZE = 8  # pixels: anything smaller is not a camera frame


def image_to_rgb(msg: Image, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of an image message in one of ``RGB_ENCODINGS``.

    Raises ``ValueError`` naming the problem: empty image, too small, unsupported encoding, short data."""
    if msg.width == 0 or msg.height == 0:
        raise ValueError(f"{what}: empty image ({msg.width} x {msg.height})")
    if msg.width < MIN_SIZE or msg.height < MIN_SIZE:
        raise ValueError(f"{what}: {msg.width} x {msg.height} pixels is too small (at least {MIN_SIZE} x {MIN_SIZE})")
    if msg.encoding not in RGB_ENCODINGS:
        raise ValueError(f"{what}.encoding: expected one of {list(RGB_ENCODINGS)}, found {msg.encoding!r}")
    try:
        pixels = image_to_numpy(msg)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if msg.encoding == "mono8":
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if msg.encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])
