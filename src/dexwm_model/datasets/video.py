"""Reading chosen frames of an MP4 (H.264, AV1, ...) with PyAV: seek near each frame, decode only up to it.

Frames are numbered from the video stream's first presentation time at the stream's frame rate:
frame ``i`` is the one shown at ``start + i / fps``. Requests are served in increasing order; a request more
than ``DECODE_AHEAD_S`` after the last decoded frame (or before it) seeks to the preceding key frame first,
a nearby one just decodes forward.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dexwm_model.datasets.errors import DatasetFormatError

DECODE_AHEAD_S = 1.0  # decode forward instead of seeking when the next frame is at most this far ahead
FPS_TOLERANCE = 0.01  # relative; a stream whose rate differs more than this from the declared rate is refused


def _av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a pinned requirement
        raise ImportError("reading video needs PyAV: pip install av (see requirements.txt)") from exc
    return av


def video_info(path: str | os.PathLike) -> dict:
    """``{"fps", "width", "height", "frames", "codec"}`` of the first video stream (frames: 0 when unknown)."""
    av = _av()
    path = Path(path)
    container = _open(av, path)
    with container:
        stream = _stream(container, path)
        return {"fps": _fps(stream, path), "width": stream.codec_context.width,
                "height": stream.codec_context.height, "frames": int(stream.frames or 0),
                "codec": stream.codec_context.name}


def _open(av, path: Path):
    if not path.is_file():
        raise DatasetFormatError(path, "video file not found")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DatasetFormatError(path, f"unreadable video ({exc})") from None


def _stream(container, path: Path):
    if not container.streams.video:
        raise DatasetFormatError(path, "the file has no video stream")
    return container.streams.video[0]


def _fps(stream, path: Path) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise DatasetFormatError(path, "the video stream declares no frame rate")
    return float(rate)


def read_frames(path: str | os.PathLike, indices: Sequence[int], *, fps: float | None = None,
                offset_s: float = 0.0) -> np.ndarray:
    """Frames ``indices`` of the video at ``path`` as ``(n, H, W, 3)`` uint8 RGB, in the order asked.

    ``fps``: the rate the dataset declares (checked against the stream's); ``offset_s``: where frame 0 of the
    episode sits in the file (LeRobot v3 files hold many episodes). Raises :class:`DatasetFormatError` for a
    missing or unreadable file, a missing frame, or a video that ends early.
    """
    av = _av()
    path = Path(path)
    want = np.asarray(indices, dtype=np.int64).reshape(-1)
    if want.size and want.min() < 0:
        raise DatasetFormatError(path, f"negative frame index requested: {want.tolist()}")
    container = _open(av, path)
    with container:
        stream = _stream(container, path)
        rate = _fps(stream, path)
        if fps is not None and abs(rate - fps) > FPS_TOLERANCE * fps:
            raise DatasetFormatError(path, f"video stream runs at {rate:.3f} fps, the dataset declares {fps:g} fps")
        tb = stream.time_base
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        first = int(round(offset_s * rate))
        targets = sorted({first + int(i) for i in want})
        decoded: dict[int, np.ndarray] = {}
        frames_iter = None
        last = None  # file-frame number of the last decoded frame
        ahead = max(1, int(round(DECODE_AHEAD_S * rate)))
        try:
            for g in targets:
                if frames_iter is None or last is None or g <= last or g - last > ahead:
                    seek_s = start + (g - 0.5) / rate
                    container.seek(max(int(seek_s / tb), stream.start_time or 0), stream=stream, backward=True)
                    frames_iter = container.decode(stream)
                    last = None
                found = False
                for frame in frames_iter:
                    if frame.pts is None:
                        continue
                    num = int(round((float(frame.pts * tb) - start) * rate))
                    last = num
                    if num == g:
                        decoded[g] = frame.to_ndarray(format="rgb24")
                        found = True
                        break
                    if num > g:
                        raise DatasetFormatError(path, f"frame {g - first} (file frame {g}) is missing: decoding went "
                                                       f"from before it straight to file frame {num}")
                if not found:
                    raise DatasetFormatError(
                        path, f"video ends before frame {g - first} (file frame {g}; last decoded file frame "
                              f"{last if last is not None else 'none'})")
        except av.FFmpegError as exc:
            raise DatasetFormatError(path, f"cannot decode the video ({exc})") from None
    return np.stack([decoded[first + int(i)] for i in want]) if want.size else np.zeros((0, 0, 0, 3), np.uint8)
