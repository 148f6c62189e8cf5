"""The pixels of a raw ``sensor_msgs/Image``, checked by the message's own rules (no ROS import).

One place for the rule every image reader follows — the ROS nodes (``dexwm_ros.conversions``) and the rosbag
dataset reader alike: ``encoding`` is a known name, ``step`` (the row length in bytes) is at least ``width x
channels x bytes per channel``, and ``data`` holds exactly ``step x height`` bytes. An image with too few or too many
bytes is refused, never reinterpreted (three times the bytes of a ``mono8`` image are an RGB image mislabelled).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# encoding -> (numpy dtype, channels), the sensor_msgs/image_encodings names
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "rgb16": (np.dtype(np.uint16), 3),
    "bgr16": (np.dtype(np.uint16), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
# 8-bit encodings -> channel order giving RGB (None: already RGB; mono repeated)
RGB_ORDER: dict[str, list[int] | None] = {"rgb8": None, "bgr8": [2, 1, 0], "rgba8": [0, 1, 2], "bgra8": [2, 1, 0],
                                          "mono8": [0, 0, 0], "8UC1": [0, 0, 0]}


class RawImageError(ValueError):
    """An image whose encoding, step or data size breaks the ``sensor_msgs/Image`` rules."""


def raw_image_pixels(encoding: str, height: int, width: int, step: int, is_bigendian: bool | int,
                     data: Any) -> np.ndarray:
    """(H, W, C) array of the image's pixels (C = 1 kept), in native byte order; raises :class:`RawImageError`."""
    if encoding not in IMAGE_ENCODINGS:
        raise RawImageError(f"encoding: unsupported '{encoding}'; supported: {sorted(IMAGE_ENCODINGS)}")
    height, width, step = int(height), int(width), int(step)
    if height < 0 or width < 0 or step < 0:
        raise RawImageError(f"negative size: {width} x {height}, step {step}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    dtype = dtype.newbyteorder(">" if is_bigendian else "<")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise RawImageError(f"step: {step} is smaller than width * channels * bytes per channel = {width} * "
                            f"{channels} * {dtype.itemsize} = {row_bytes} for '{encoding}'")
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) \
        else np.asarray(data, dtype=np.uint8).reshape(-1)
    if buf.size != step * height:
        raise RawImageError(f"data: {buf.size} bytes, expected step * height = {step * height} (exactly: {step} * "
                            f"{height}) for a {width} x {height} '{encoding}' image")
    rows = buf.reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    return pixels.astype(dtype.newbyteorder("="), copy=False)


def raw_image_rgb(encoding: str, height: int, width: int, step: int, is_bigendian: bool | int,
                  data: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of an 8-bit colour or grey image (encodings of :data:`RGB_ORDER`)."""
    if encoding not in RGB_ORDER:
        raise RawImageError(f"encoding: expected one of {list(RGB_ORDER)} for an RGB frame, found {encoding!r}")
    pixels = raw_image_pixels(encoding, height, width, step, is_bigendian, data)
    order = RGB_ORDER[encoding]
    return np.ascontiguousarray(pixels if order is None else pixels[:, :, order])
