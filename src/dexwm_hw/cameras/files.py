"""Recorded cameras: a video file (OpenCV's FFmpeg reader) or a folder of images, paced at the source's rate."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from dexwm_hw.cameras.base import CameraError, EndOfStream, Frame, FrameSource, Intrinsics, pinhole

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class _Paced(FrameSource):
    """Shared pacing: frame ``n`` is released at ``start + n / rate`` (late frames are not made up for)."""

    def __init__(self, rate_hz: float, loop: bool, camera_matrix, fovy_deg: float) -> None:
        self._rate = float(rate_hz)
        self.loop = bool(loop)
        self._camera_matrix = list(camera_matrix)
        self._fovy = float(fovy_deg)
        self._intrinsics: Intrinsics | None = None
        self._next_due: float | None = None
        self._count = 0
        self._closed = threading.Event()

    @property
    def rate_hz(self) -> float:
        return self._rate

    @property
    def intrinsics(self) -> Intrinsics:
        if self._intrinsics is None:
            raise CameraError(f"{self.description}: not open")
        return self._intrinsics

    def _set_size(self, width: int, height: int) -> None:
        self._intrinsics = pinhole(width, height, self._camera_matrix, self._fovy)

    def _wait_turn(self, timeout: float) -> bool:
        """Sleep until the next frame is due; False if that is more than ``timeout`` away (nothing released)."""
        now = time.monotonic()
        if self._next_due is None:
            self._next_due = now
        delay = self._next_due - now
        if delay > timeout:
            self._closed.wait(timeout)
            return False
        if delay > 0:
            self._closed.wait(delay)
        self._next_due = max(self._next_due + 1.0 / self._rate, time.monotonic() - 0.5 / self._rate)
        return True

    def _check_size(self, rgb: np.ndarray, where: str) -> np.ndarray:
        info = self.intrinsics
        if rgb.shape[:2] != (info.height, info.width):
            raise CameraError(f"{where}: image is {rgb.shape[1]}x{rgb.shape[0]}, the source's first image was "
                              f"{info.width}x{info.height} (all frames of one camera must have one size)")
        return rgb

    def close(self) -> None:
        self._closed.set()


class VideoFileSource(_Paced):
    """Frames of a video file at its own frame rate (``fps`` = 0) or at ``fps``; ``loop`` restarts at the end."""

    def __init__(self, path: str | Path, fps: float = 0.0, loop: bool = False,
                 camera_matrix=(0.0, 0.0, 0.0, 0.0), fovy_deg: float = 60.0) -> None:
        if fps < 0 or not math.isfinite(fps):
            raise ValueError(f"fps: expected 0 (the video's own rate) or a positive rate, got {fps}")
        super().__init__(fps, loop, camera_matrix, fovy_deg)
        self.path = Path(path)
        self.description = f"video {self.path}"
        self._cap: cv2.VideoCapture | None = None
        self._pending: np.ndarray | None = None  # decoded, not yet due

    def open(self) -> None:
        if not self.path.is_file():
            raise CameraError(f"video file not found: {self.path}")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise CameraError(f"cannot open video {self.path} (not a video OpenCV can decode?)")
        if self._rate == 0.0:
            native = float(cap.get(cv2.CAP_PROP_FPS))
            if not (math.isfinite(native) and native > 0):
                cap.release()
                raise CameraError(f"video {self.path} does not state its frame rate: set the fps parameter")
            self._rate = native
        ok, bgr = cap.read()
        if not ok:
            cap.release()
            raise CameraError(f"video {self.path} holds no decodable frame")
        self._set_size(bgr.shape[1], bgr.shape[0])
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._cap = cap

    def _decode_next(self) -> np.ndarray:
        ok, bgr = self._cap.read()
        if not ok:
            if not self.loop:
                raise EndOfStream(f"{self.description}: end of the video after {self._count} frames (loop is off)")
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
            if not ok:
                raise CameraError(f"{self.description}: cannot rewind the video to loop it")
        return self._check_size(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), f"{self.description} frame {self._count}")

    def read(self, timeout: float) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"{self.description}: not open")
        if self._pending is None:
            self._pending = self._decode_next()
        if not self._wait_turn(timeout):
            return None
        frame = Frame(rgb=self._pending, index=self._count)
        self._pending = None
        self._count += 1
        return frame

    def close(self) -> None:
        super().close()
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource(_Paced):
    """The images of a folder in file-name order, at ``fps`` frames per second; ``loop`` starts over."""

    def __init__(self, path: str | Path, fps: float, loop: bool = False,
                 camera_matrix=(0.0, 0.0, 0.0, 0.0), fovy_deg: float = 60.0) -> None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps: an image folder needs a positive frame rate, got {fps}")
        super().__init__(fps, loop, camera_matrix, fovy_deg)
        self.path = Path(path)
        self.description = f"image folder {self.path}"
        self.files: list[Path] = []
        self._position = 0

    def open(self) -> None:
        if not self.path.is_dir():
            raise CameraError(f"image folder not found: {self.path}")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise CameraError(f"image folder {self.path} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        first = self._load(self.files[0])
        self._set_size(first.shape[1], first.shape[0])
        self._position = 0

    def _load(self, path: Path) -> np.ndarray:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CameraError(f"cannot decode image {path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def read(self, timeout: float) -> Frame | None:
        if not self.files:
            raise CameraError(f"{self.description}: not open")
        if self._position >= len(self.files):
            if not self.loop:
                raise EndOfStream(f"{self.description}: all {len(self.files)} images delivered (loop is off)")
            self._position = 0
        if not self._wait_turn(timeout):
            return None
        path = self.files[self._position]
        rgb = self._check_size(self._load(path), str(path))
        frame = Frame(rgb=rgb, index=self._count, info={"file": path.name})
        self._position += 1
        self._count += 1
        return frame
