"""An Intel RealSense colour stream through ``pyrealsense2`` (librealsense's sensor API, as realsense-ros uses it).

The source finds the device (the first one, or the one with ``serial``), picks the sensor offering a colour
profile of the requested size, rate and ``rgb8`` format, opens it and queues its frames. Intrinsics (and the
distortion model) come from the device's stream profile. Frames stamped in the host's clock domain
(``global_time`` / ``system_time``) keep their capture time; others are stamped on arrival.

Any ``pyrealsense2.device`` can be given instead of searching, e.g. a ``pyrealsense2.software_device`` whose
sensor is fed frames by a test.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np

from dexwm_hw.cameras.base import CameraError, CameraNotFound, Frame, FrameSource, Intrinsics

NO_DEVICE = "No RealSense device connected"


def _rs():
    # pyrealsense2 carries its own Fast DDS: loaded before ROS 2's (rclpy's rmw), the two clash and the process
    # crashes at exit. Loading rclpy first (when it is installed) keeps ROS 2's libraries in charge.
    if "rclpy" not in sys.modules and importlib.util.find_spec("rclpy") is not None:
        import rclpy  # noqa: F401
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        raise CameraError(f"pyrealsense2 is not usable ({exc}); install it (pip install pyrealsense2) and, on "
                          "Debian, libusb-1.0-0") from exc
    return rs


def intrinsics_from_profile(profile) -> Intrinsics:
    """``Intrinsics`` (ROS distortion naming) of a ``pyrealsense2.video_stream_profile``."""
    rs = _rs()
    i = profile.get_intrinsics()
    K = np.array([[i.fx, 0.0, i.ppx], [0.0, i.fy, i.ppy], [0.0, 0.0, 1.0]])
    coeffs = tuple(float(c) for c in i.coeffs)
    plumb_bob = (rs.distortion.none, rs.distortion.brown_conrady, rs.distortion.inverse_brown_conrady,
                 rs.distortion.modified_brown_conrady)
    if i.model in plumb_bob:
        return Intrinsics(i.width, i.height, K, "plumb_bob", coeffs[:5])
    if i.model == rs.distortion.kannala_brandt4:
        return Intrinsics(i.width, i.height, K, "equidistant", coeffs[:4])
    raise CameraError(f"RealSense colour stream has distortion model {i.model}, which has no ROS CameraInfo name")


class RealSenseSource(FrameSource):
    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, serial: str = "",
                 device=None, queue_size: int = 2) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"width/height: expected a positive stream size, got {width}x{height}")
        if not fps > 0:
            raise ValueError(f"fps: a RealSense stream needs a positive frame rate, got {fps}")
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.serial = str(serial)
        self.device = device
        self.queue_size = int(queue_size)
        self.description = f"RealSense {serial or '(first device)'} colour {width}x{height}@{fps:g}"
        self._sensor = None
        self._queue = None
        self._intrinsics: Intrinsics | None = None
        self._rate = self.fps

    @property
    def intrinsics(self) -> Intrinsics:
        if self._intrinsics is None:
            raise CameraError(f"{self.description}: not open")
        return self._intrinsics

    @property
    def rate_hz(self) -> float:
        return self._rate

    def _find_device(self):
        rs = _rs()
        devices = list(rs.context().query_devices())
        if not devices:
            raise CameraNotFound(NO_DEVICE)
        if not self.serial:
            return devices[0]
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
        if self.serial not in serials:
            raise CameraNotFound(f"No RealSense device with serial number {self.serial} connected "
                                 f"(connected: {', '.join(serials)})")
        return devices[serials.index(self.serial)]

    def open(self) -> None:
        rs = _rs()
        device = self.device if self.device is not None else self._find_device()
        offered = []
        for sensor in device.query_sensors():
            for p in sensor.get_stream_profiles():
                if p.stream_type() != rs.stream.color or not p.is_video_stream_profile():
                    continue
                v = p.as_video_stream_profile()
                offered.append(f"{v.width()}x{v.height()}@{v.fps()} {v.format()}")
                if (v.width(), v.height(), v.format()) == (self.width, self.height, rs.format.rgb8) \
                        and abs(v.fps() - self.fps) < 1e-6:
                    self._start(sensor, v)
                    return
        raise CameraError(f"{self.description}: the device offers no colour stream {self.width}x{self.height}"
                          f"@{self.fps:g} rgb8; it offers: {', '.join(sorted(set(offered))) or 'none'}")

    def _start(self, sensor, profile) -> None:
        rs = _rs()
        self._intrinsics = intrinsics_from_profile(profile)
        self._rate = float(profile.fps())
        self._queue = rs.frame_queue(self.queue_size, keep_frames=True)
        sensor.open(profile)
        try:
            sensor.start(self._queue)
        except Exception:
            sensor.close()
            raise
        self._sensor = sensor

    def read(self, timeout: float) -> Frame | None:
        rs = _rs()
        if self._queue is None:
            raise CameraError(f"{self.description}: not open")
        ok, frame = self._queue.try_wait_for_frame(max(1, int(timeout * 1000)))
        if not ok:
            return None
        video = frame.as_video_frame()
        if video.get_profile().format() != rs.format.rgb8:
            raise CameraError(f"{self.description}: frame in format {video.get_profile().format()}, expected rgb8")
        rgb = np.array(np.asanyarray(video.get_data()), dtype=np.uint8, copy=True)
        if rgb.shape != (self.intrinsics.height, self.intrinsics.width, 3):
            raise CameraError(f"{self.description}: frame of shape {rgb.shape}, expected "
                              f"({self.intrinsics.height}, {self.intrinsics.width}, 3)")
        domain = video.get_frame_timestamp_domain()
        stamp_ns = None
        if domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time):
            ms = float(video.get_timestamp())  # ms since the epoch; split to keep ns precision past 2**53
            whole = int(ms)
            stamp_ns = whole * 1_000_000 + int(round((ms - whole) * 1e6))
        return Frame(rgb=rgb, index=int(video.get_frame_number()), stamp_ns=stamp_ns,
                     info={"timestamp_domain": str(domain)})

    def close(self) -> None:
        if self._sensor is not None:
            try:
                self._sensor.stop()
            finally:
                self._sensor.close()
            self._sensor = None
        self._queue = None
