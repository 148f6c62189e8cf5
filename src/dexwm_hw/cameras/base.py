"""What every camera source delivers (no ROS): RGB frames with their intrinsics and, when known, capture time."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


class CameraError(RuntimeError):
    """A camera source cannot be opened or has failed."""


class CameraNotFound(CameraError):
    """No device to open (e.g. no RealSense connected)."""


class EndOfStream(CameraError):
    """A finite source (video file, image folder) has delivered its last frame and does not loop."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in ROS ``CameraInfo`` terms (``distortion_model``: ``plumb_bob`` or ``equidistant``)."""

    width: int
    height: int
    K: np.ndarray  # 3x3
    distortion_model: str = "plumb_bob"
    D: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"intrinsics K: expected a 3x3 matrix with positive fx, fy, got {self.K!r}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"intrinsics: image size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "K", K)


def pinhole(width: int, height: int, camera_matrix: list[float] | tuple[float, ...], fovy_deg: float) -> Intrinsics:
    """``camera_matrix`` = (fx, fy, cx, cy) in pixels, or all zeros for a pinhole of vertical FOV ``fovy_deg``
    centred on the image (the simulator's camera model, :func:`dexwm_hw.sim.camera.intrinsics`)."""
    cm = [float(v) for v in camera_matrix]
    if len(cm) != 4:
        raise ValueError(f"camera_matrix: expected 4 values fx, fy, cx, cy, got {len(cm)}")
    if all(v == 0.0 for v in cm):
        if not 0.0 < fovy_deg < 180.0:
            raise ValueError(f"fovy_deg: expected a field of view in (0, 180) degrees, got {fovy_deg}")
        from dexwm_hw.sim.camera import intrinsics

        return Intrinsics(width, height, intrinsics(fovy_deg, width, height))
    fx, fy, cx, cy = cm
    if fx <= 0 or fy <= 0:
        raise ValueError(f"camera_matrix: fx and fy must be positive, got fx={fx}, fy={fy}")
    return Intrinsics(width, height, np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]))


@dataclass
class Frame:
    rgb: np.ndarray  # (H, W, 3) uint8
    index: int  # frame number from the source
    stamp_ns: int | None = None  # capture time, ns since the Unix epoch, when the source knows it
    info: dict = field(default_factory=dict)


class FrameSource(ABC):
    """A camera: :meth:`open`, then :meth:`read` frames at the source's own rate, then :meth:`close`.

    ``read(timeout)`` blocks until the next frame is due/arrives and returns it, returns ``None`` if none came
    within ``timeout`` seconds, and raises :class:`EndOfStream` once a finite, non-looping source is exhausted.
    ``intrinsics`` and ``rate_hz`` are known once the source is open.
    """

    description = "camera"

    @property
    @abstractmethod
    def intrinsics(self) -> Intrinsics: ...

    @property
    @abstractmethod
    def rate_hz(self) -> float: ...

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def read(self, timeout: float) -> Frame | None: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
