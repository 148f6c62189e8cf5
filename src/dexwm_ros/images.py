"""``sensor_msgs/Image`` -> the (H, W, 3) uint8 RGB array the world model encodes."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from dexwm_model.data.raw_image import RGB_ORDER, RawImageError, raw_image_rgb

RGB_ENCODINGS = tuple(RGB_ORDER)
MIN_SIZE = 8  # pixels: anything smaller is not a camera frame


def image_to_rgb(msg: Image, what: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of an image message in one of ``RGB_ENCODINGS``.

    Raises ``ValueError`` naming the problem: empty image, too small, unsupported encoding, a step shorter than a
    row, data that is not exactly ``step * height`` bytes (:mod:`dexwm_model.data.raw_image`)."""
    if msg.width == 0 or msg.height == 0:
        raise ValueError(f"{what}: empty image ({msg.width} x {msg.height})")
    if msg.width < MIN_SIZE or msg.height < MIN_SIZE:
        raise ValueError(f"{what}: {msg.width} x {msg.height} pixels is too small (at least {MIN_SIZE} x {MIN_SIZE})")
    try:
        return raw_image_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)
    except RawImageError as exc:
        raise ValueError(f"{what}: Image.{exc}") from None
