"""``dexwm_camera_node``: a RealSense colour camera, a video file or an image folder as a ROS 2 camera.

  pub ``camera/color/image_raw``     sensor_msgs/Image (rgb8), at the source's rate
  pub ``camera/color/camera_info``   sensor_msgs/CameraInfo, same stamp and frame id as each image
The topics and the frame id (``camera_color_optical_frame``) are the RealSense driver's, which is also what the
simulator publishes, so the rest of the graph does not care which camera is behind them. Images are stamped with
the capture time when the source knows it in the host clock (RealSense ``global_time`` / ``system_time``), else
with the node clock on arrival.

A camera that stops delivering frames (unplugged, end of a non-looping recording) makes the node log an error and
publish nothing (no repeated old image): the planner's and the safety layer's watchdogs then hold the robot.
Frames older than ``frame_timeout_s`` when they arrive are dropped for the same reason. No RealSense connected:
the node prints ``No RealSense device connected`` and exits 1 (bad parameters: 2).

Parameters (read-only; defaults in ``config/camera.yaml``, section ``dexwm_camera.ros__parameters``): see there.
A frame reader thread blocks on the source and publishes; the executor serves the parameter services.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from builtin_interfaces.msg import Time
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from dexwm_hw.cameras import SOURCES, CameraError, EndOfStream, FrameSource, make_source
from dexwm_ros import conversions as conv
from dexwm_ros.controller_common import float_range, int_range
from dexwm_ros.exit_codes import EXIT_CANNOT_RUN, EXIT_PARAMETERS
from dexwm_robot.joint_names import CAMERA_OPTICAL_FRAME
from dexwm_ros.node_runner import run_node
from dexwm_robot.config import ConfigError, from_dict, load_yaml

NODE_NAME = "dexwm_camera"
PARAMS_FILE = "camera.yaml"
IMAGE_TOPIC = "camera/color/image_raw"
CAMERA_INFO_TOPIC = "camera/color/camera_info"


@dataclass
class CameraNodeConfig:
    source: str
    path: str
    loop: bool
    fps: float
    width: int
    height: int
    serial: str
    camera_matrix: list[float]
    fovy_deg: float
    frame_id: str
    frame_timeout_s: float


def load_node_config(path: str = PARAMS_FILE) -> CameraNodeConfig:
    data = load_yaml(path)
    try:
        section = data[NODE_NAME]["ros__parameters"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: expected '{NODE_NAME}: {{ros__parameters: {{...}}}}'") from exc
    return from_dict(CameraNodeConfig, section, f"{path}:{NODE_NAME}")


class CameraNode(Node):
    def __init__(self, source: FrameSource | None = None, **node_kwargs) -> None:
        """``source``: an already built frame source to publish (else one is made from the parameters)."""
        super().__init__(NODE_NAME, **node_kwargs)
        d = load_node_config()
        ro = dict(read_only=True)
        self.declare_parameter("source", d.source, ParameterDescriptor(
            description=f"camera source: one of {', '.join(SOURCES)}", additional_constraints=" | ".join(SOURCES),
            **ro))
        self.declare_parameter("path", d.path, ParameterDescriptor(
            description="video file (source video) or image folder (source folder)", **ro))
        self.declare_parameter("loop", d.loop, ParameterDescriptor(
            description="video / folder: start over at the end instead of stopping", **ro))
        self.declare_parameter("fps", float(d.fps), ParameterDescriptor(
            description="frames per second (realsense stream rate; video: 0 = the file's own rate)",
            floating_point_range=float_range(0.0, 1000.0), **ro))
        self.declare_parameter("width", d.width, ParameterDescriptor(
            description="realsense: colour stream width, pixels", integer_range=int_range(1, 8192), **ro))
        self.declare_parameter("height", d.height, ParameterDescriptor(
            description="realsense: colour stream height, pixels", integer_range=int_range(1, 8192), **ro))
        self.declare_parameter("serial", d.serial, ParameterDescriptor(
            description="realsense: device serial number (empty: the first device)", **ro))
        self.declare_parameter("camera_matrix", [float(v) for v in d.camera_matrix], ParameterDescriptor(
            description="video / folder: fx, fy, cx, cy in pixels; all zeros: a pinhole of fovy_deg", **ro))
        self.declare_parameter("fovy_deg", float(d.fovy_deg), ParameterDescriptor(
            description="video / folder: vertical field of view when camera_matrix is all zeros, degrees",
            floating_point_range=float_range(1.0, 179.0), **ro))
        self.declare_parameter("frame_id", d.frame_id or CAMERA_OPTICAL_FRAME, ParameterDescriptor(
            description="frame id of the images (the camera's optical frame, z forward, x right, y down)", **ro))
        self.declare_parameter("frame_timeout_s", float(d.frame_timeout_s), ParameterDescriptor(
            description="seconds without a frame before an error is logged (nothing is published meanwhile); "
                        "older frames are dropped", floating_point_range=float_range(0.01, 60.0), **ro))
        p = self._param
        self.frame_id = p("frame_id")
        self.frame_timeout = float(p("frame_timeout_s"))
        if source is None:
            source = make_source(p("source"), path=p("path"), fps=float(p("fps")), loop=bool(p("loop")),
                                 width=int(p("width")), height=int(p("height")), serial=p("serial"),
                                 camera_matrix=list(p("camera_matrix")), fovy_deg=float(p("fovy_deg")))
        self.source = source
        self.source.open()
        intr = self.source.intrinsics
        self._info = conv.camera_info(intr.K, intr.width, intr.height, None, self.frame_id)
        self._info.distortion_model = intr.distortion_model
        self._info.d = [float(v) for v in intr.D]

        self.pub_image = self.create_publisher(Image, IMAGE_TOPIC, 5)
        self.pub_info = self.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, 5)
        self.stats = {"published": 0, "dropped_stale": 0, "outages": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera_reader", daemon=True)
        self.get_logger().info(
            f"camera up: {self.source.description}, {intr.width}x{intr.height} at {self.source.rate_hz:g} Hz, "
            f"fx {intr.K[0, 0]:.1f} fy {intr.K[1, 1]:.1f}; publishing {self.resolve_topic_name(IMAGE_TOPIC)} and "
            f"{self.resolve_topic_name(CAMERA_INFO_TOPIC)} in frame {self.frame_id}")

    def _param(self, name: str):
        return self.get_parameter(name).value

    def start(self) -> None:
        self._thread.start()

    # ------------------------------------------------------------------------------------------- reading
    def _run(self) -> None:
        log = self.get_logger()
        last_frame = time.monotonic()
        in_outage = False
        slice_s = min(0.25, self.frame_timeout)
        while not self._stop.is_set():
            try:
                frame = self.source.read(slice_s)
            except EndOfStream as exc:
                log.error(f"camera stopped delivering frames: {exc}; publishing nothing from now on")
                return
            except CameraError as exc:
                log.error(f"camera failed: {exc}; publishing nothing from now on")
                return
            now = time.monotonic()
            if frame is None:
                if not in_outage and now - last_frame > self.frame_timeout:
                    in_outage = True
                    self.stats["outages"] += 1
                    log.error(f"no frame from {self.source.description} for {now - last_frame:.1f} s "
                              f"(frame_timeout_s {self.frame_timeout:g}): publishing nothing until frames return")
                continue
            stamp = self._stamp(frame.stamp_ns)
            if stamp is None:
                self.stats["dropped_stale"] += 1
                continue
            if in_outage:
                log.info(f"frames are back from {self.source.description} after {now - last_frame:.1f} s")
                in_outage = False
            last_frame = now
            self._publish(frame.rgb, stamp)

    def _stamp(self, stamp_ns: int | None) -> Time | None:
        """The message stamp: the capture time if known and not older than frame_timeout_s, else now;
        None for a stale frame."""
        now = self.get_clock().now()
        if stamp_ns is None:
            return now.to_msg()
        if (now.nanoseconds - stamp_ns) * 1e-9 > self.frame_timeout:
            return None
        return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)

    def _publish(self, rgb, stamp: Time) -> None:
        self._info.header.stamp = stamp
        self.pub_image.publish(conv.numpy_to_image(rgb, "rgb8", stamp, self.frame_id))
        self.pub_info.publish(self._info)
        self.stats["published"] += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self.source.close()
        s = self.stats
        self.get_logger().info(f"camera stopped: {s['published']} frames published, {s['dropped_stale']} stale "
                               f"frames dropped, {s['outages']} outages")


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, "dexwm_camera_node", args, fatal={CameraError: EXIT_CANNOT_RUN, ValueError: EXIT_PARAMETERS})


if __name__ == "__main__":
    raise SystemExit(main())
