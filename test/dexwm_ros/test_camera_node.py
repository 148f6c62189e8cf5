"""Camera sources (image folder, video file, RealSense through librealsense's software device) and the camera
node: what it publishes (Image + CameraInfo, shared stamps, frame id, intrinsics), and what it does when the
camera stops delivering (logs an error, publishes nothing stale) or is absent (exits non-zero)."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dexwm_hw.cameras import (
    NO_DEVICE,
    CameraError,
    CameraNotFound,
    EndOfStream,
    ImageFolderSource,
    RealSenseSource,
    VideoFileSource,
    make_source,
)
from dexwm_hw.sim.camera import intrinsics

ROOT = Path(__file__).resolve().parents[2]
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
W, H = 64, 48
WAIT = 30.0  # s; generous bound on a loaded machine, never a timing assertion


def _write_folder(folder: Path, colours=COLOURS, size=(H, W)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(colours):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), np.full((*size, 3), rgb[::-1], np.uint8))
    return folder


def _read_all(source, limit=50):
    frames = []
    while len(frames) < limit:
        try:
            frame = source.read(timeout=5.0)
        except EndOfStream:
            break
        if frame is not None:
            frames.append(frame)
    return frames


# ------------------------------------------------------------------------------------------- file sources
def test_image_folder_in_name_order_then_end_of_stream(tmp_path):
    folder = _write_folder(tmp_path / "imgs")
    (folder / "notes.txt").write_text("not an image")
    with ImageFolderSource(folder, fps=200.0) as src:
        frames = _read_all(src)
        assert [tuple(f.rgb[5, 5]) for f in frames] == COLOURS
        assert [f.index for f in frames] == [0, 1, 2, 3]
        assert src.intrinsics.width == W and src.intrinsics.height == H
        assert np.allclose(src.intrinsics.K, intrinsics(60.0, W, H))
        with pytest.raises(EndOfStream, match="all 4 images delivered"):
            src.read(1.0)


def test_image_folder_loops_and_takes_a_camera_matrix(tmp_path):
    folder = _write_folder(tmp_path / "imgs")
    with ImageFolderSource(folder, fps=200.0, loop=True, camera_matrix=[50.0, 51.0, 31.5, 23.5]) as src:
        frames = [src.read(5.0) for _ in range(6)]
        assert [tuple(f.rgb[0, 0]) for f in frames] == COLOURS + COLOURS[:2]
        assert src.intrinsics.K.tolist() == [[50.0, 0.0, 31.5], [0.0, 51.0, 23.5], [0.0, 0.0, 1.0]]


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="needs a positive frame rate"):
        ImageFolderSource(tmp_path, fps=0.0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraError, match="holds no image"):
        ImageFolderSource(empty, fps=5.0).open()
    mixed = _write_folder(tmp_path / "mixed", COLOURS[:1])
    cv2.imwrite(str(mixed / "frame_999.png"), np.zeros((10, 10, 3), np.uint8))
    with ImageFolderSource(mixed, fps=200.0) as src:
        src.read(5.0)
        with pytest.raises(CameraError, match="frame_999.png: image is 10x10, the source's first image was 64x48"):
            src.read(5.0)
    with pytest.raises(ValueError, match="source: expected one of"):
        make_source("webcam")
    with pytest.raises(ValueError, match="path: the video source needs a video file"):
        make_source("video")


def test_video_file_at_its_own_rate_then_loop(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (W, H))
    assert writer.isOpened()
    for rgb in COLOURS:
        writer.write(np.full((H, W, 3), rgb[::-1], np.uint8))
    writer.release()
    with VideoFileSource(path, fps=0.0) as src:
        assert src.rate_hz == pytest.approx(12.0)
        frames = _read_all(src)
        assert len(frames) == len(COLOURS)
        for frame, rgb in zip(frames, COLOURS):
            assert np.abs(frame.rgb[H // 2, W // 2].astype(int) - rgb).max() < 12  # lossy codec
    with VideoFileSource(path, fps=500.0, loop=True) as src:
        assert src.rate_hz == 500.0
        assert len([src.read(5.0) for _ in range(len(COLOURS) + 3)]) == len(COLOURS) + 3
    with pytest.raises(CameraError, match="video file not found"):
        VideoFileSource(tmp_path / "missing.mp4").open()


# ------------------------------------------------------------------------------------ RealSense (software)
# rclpy before pyrealsense2 (see dexwm_hw.cameras.realsense._rs: their Fast DDS copies clash otherwise)
rclpy = pytest.importorskip("rclpy")
rs = pytest.importorskip("pyrealsense2")


class SoftwareRealSense:
    """librealsense's own software device with one colour sensor, fed frames by the test."""

    def __init__(self, fps=30, coeffs=(0.11, -0.05, 0.001, 0.002, 0.01)):
        self.device = rs.software_device()
        self.sensor = self.device.add_sensor("RGB Camera")
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = W, H, 52.5, 53.0, 31.0, 24.5
        intr.model = rs.distortion.brown_conrady
        intr.coeffs = list(coeffs)
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, 1
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = W, H, fps, 3, rs.format.rgb8
        stream.intrinsics = intr
        self.profile = self.sensor.add_video_stream(stream).as_video_stream_profile()
        self.device.register_info(rs.camera_info.serial_number, "0123")
        self.count = 0

    def push(self, rgb, stamp_ms=None):
        frame = rs.software_video_frame()
        frame.pixels = np.ascontiguousarray(rgb, dtype=np.uint8)
        frame.bpp, frame.stride = 3, W * 3
        frame.timestamp = time.time() * 1000.0 if stamp_ms is None else stamp_ms
        frame.domain = rs.timestamp_domain.system_time
        frame.frame_number = self.count
        frame.profile = self.profile
        self.sensor.on_video_frame(frame)
        self.count += 1


def test_realsense_source_reads_injected_frames_and_device_intrinsics():
    cam = SoftwareRealSense()
    src = RealSenseSource(W, H, 30, device=cam.device)
    src.open()
    try:
        info = src.intrinsics
        assert info.K.tolist() == [[52.5, 0.0, 31.0], [0.0, 53.0, 24.5], [0.0, 0.0, 1.0]]
        assert info.distortion_model == "plumb_bob"
        assert info.D == pytest.approx((0.11, -0.05, 0.001, 0.002, 0.01))
        assert src.read(0.05) is None  # nothing delivered yet
        image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
        cam.push(image, stamp_ms=1_700_000_000_123.0)
        frame = src.read(2.0)
        assert frame is not None and np.array_equal(frame.rgb, image)
        assert frame.stamp_ns == 1_700_000_000_123_000_000
    finally:
        src.close()


def test_realsense_source_lists_what_the_device_offers():
    cam = SoftwareRealSense()
    with pytest.raises(CameraError, match=r"no colour stream 64x48@15 rgb8; it offers: 64x48@30"):
        RealSenseSource(W, H, 15, device=cam.device).open()


def test_no_realsense_connected_is_a_clear_error():
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense device is connected to this machine")
    with pytest.raises(CameraNotFound, match=NO_DEVICE):
        RealSenseSource().open()


# ------------------------------------------------------------------------------------------------ the node
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from dexwm_ros.camera_node import CAMERA_INFO_TOPIC, IMAGE_TOPIC, CameraNode  # noqa: E402
from dexwm_ros.conversions import image_to_numpy  # noqa: E402

DOMAIN_ID = 193


class InProcess:
    """The camera node and a probe in one context, spun by one executor in a thread."""

    def __init__(self, source, frame_timeout=0.3):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = CameraNode(source=source, context=self.context,
                               parameter_overrides=[Parameter("frame_timeout_s", value=frame_timeout)])
        self.probe = rclpy.create_node("camera_probe", context=self.context)
        self.lock = threading.Lock()
        self.images, self.infos, self.logs = [], [], []
        self.probe.create_subscription(Image, IMAGE_TOPIC, lambda m: self._keep(self.images, m), 50)
        self.probe.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, lambda m: self._keep(self.infos, m), 50)
        self.probe.create_subscription(Log, "/rosout", lambda m: self._keep(self.logs, m), 50)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.wait(lambda: self.node.pub_image.get_subscription_count() > 0, "probe subscription matched")

    def _keep(self, store, msg):
        with self.lock:
            store.append(msg)

    def count(self, store):
        with self.lock:
            return len(store)

    def error_logs(self, text):
        with self.lock:
            return [m.msg for m in self.logs if m.level == Log.ERROR and text in m.msg]

    def wait(self, predicate, what):
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.01)
        pytest.fail(f"timed out waiting for {what}")

    def close(self):
        self.node.close()
        self.executor.shutdown()
        self.thread.join()
        self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.try_shutdown(context=self.context)


def test_node_publishes_realsense_frames_and_goes_quiet_when_they_stop():
    cam = SoftwareRealSense()
    run = InProcess(RealSenseSource(W, H, 30, device=cam.device))
    try:
        run.node.start()
        sent = []
        for i in range(5):
            image = np.full((H, W, 3), 40 * i, np.uint8)
            sent.append(image)
            cam.push(image)
            time.sleep(1 / 30)
        run.wait(lambda: run.count(run.images) >= 5 and run.count(run.infos) >= 5, "5 images + infos")
        for msg, image in zip(run.images, sent):
            assert msg.header.frame_id == "camera_color_optical_frame"
            assert msg.encoding == "rgb8" and (msg.width, msg.height) == (W, H)
            assert np.array_equal(image_to_numpy(msg), image)
        assert [m.header.stamp for m in run.images[:5]] == [m.header.stamp for m in run.infos[:5]]
        info = run.infos[0]
        assert list(info.k) == [52.5, 0.0, 31.0, 0.0, 53.0, 24.5, 0.0, 0.0, 1.0]
        assert info.distortion_model == "plumb_bob" and list(info.d) == pytest.approx([0.11, -0.05, 0.001, 0.002, 0.01])

        # the camera stops: an error is logged and nothing is published (no repeated old frame)
        run.wait(lambda: run.error_logs("no frame from"), "the no-frame error")
        before = run.count(run.images)
        time.sleep(0.5)
        assert run.count(run.images) == before
        # a frame captured long ago is not published either
        cam.push(np.zeros((H, W, 3), np.uint8), stamp_ms=time.time() * 1000.0 - 10_000.0)
        run.wait(lambda: run.node.stats["dropped_stale"] == 1, "the stale frame dropped")
        assert run.count(run.images) == before
        # frames return: publishing resumes
        cam.push(np.full((H, W, 3), 77, np.uint8))
        run.wait(lambda: run.count(run.images) == before + 1, "publishing resumed")
        assert run.node.stats["outages"] == 1
    finally:
        run.close()


def test_node_stops_publishing_at_the_end_of_a_recording(tmp_path):
    folder = _write_folder(tmp_path / "imgs")
    run = InProcess(ImageFolderSource(folder, fps=50.0, loop=False))
    try:
        run.node.start()
        run.wait(lambda: run.error_logs("camera stopped delivering frames"), "end-of-recording error")
        time.sleep(0.3)
        assert run.count(run.images) == len(COLOURS)
        assert [tuple(image_to_numpy(m)[0, 0]) for m in run.images] == COLOURS
    finally:
        run.close()


def _env():
    return dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID + 1), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")


def test_node_without_a_realsense_exits_nonzero_with_a_clear_message():
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense device is connected to this machine")
    exe = Path(sys.executable).with_name("dexwm_camera_node")
    done = subprocess.run([str(exe), "--ros-args", "--params-file", str(ROOT / "config" / "camera.yaml")],
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert NO_DEVICE in done.stderr


def test_node_rejects_bad_parameters_by_name(tmp_path):
    exe = Path(sys.executable).with_name("dexwm_camera_node")
    done = subprocess.run([str(exe), "--ros-args", "--params-file", str(ROOT / "config" / "camera.yaml"),
                           "-p", "source:=folder", "-p", f"path:={tmp_path}", "-p", "fps:=0.0"],
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "fps: an image folder needs a positive frame rate" in done.stderr
