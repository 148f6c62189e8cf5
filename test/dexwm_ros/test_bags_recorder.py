"""dexwm_recorder_node over DDS (started through its console script / ``dexwm record``): messages of several types,
one of ours, recorded raw with their receive times, types, rosidl's type hashes and QoS; a latched message
published before the recorder started is recorded; Ctrl-C leaves a readable bag; an existing folder is refused."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("dexwm_interfaces.msg")

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from dexwm_ros.bags.reading import BagReader  # noqa: E402
from dexwm_ros.graph_probe import GraphProbe  # noqa: E402
from dexwm_ros.node_process import NodeProcess  # noqa: E402
from dexwm_interfaces.action import RunTask  # noqa: E402
from dexwm_interfaces.msg import HandKeypoints  # noqa: E402

DOMAIN_ID = 153
ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0  # s wall: generous bound on a loaded 2-core machine (never a timing assertion)
N = 6
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
TOPICS = {"/rt/image": Image, "/rt/keypoints": HandKeypoints, "/rt/feedback": RunTask.Impl.FeedbackMessage}


def _env() -> dict:
    return dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                ROS_LOG_DIR=str(ROOT / "log" / "ros"))


def _recorder(out: Path, log: Path, *overrides: str) -> NodeProcess:
    return NodeProcess("dexwm_recorder_node", log, domain_id=DOMAIN_ID, params="recorder_node.yaml",
                       overrides=[f"output:={out}", "discovery_period_s:=0.05",
                                  "topics:=[" + ",".join([*TOPICS, "/rt/latched"]) + "]", *overrides],
                       ros_log_dir=ROOT / "log" / "ros")


def _messages(k: int) -> dict:
    image = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(range(k, k + 18)))
    image.header.stamp.sec, image.header.frame_id = k, "cam"
    kp = HandKeypoints(side=HandKeypoints.SIDE_RIGHT, image_width=224, image_height=224)
    kp.pixels = [float(k)] * 42
    kp.confidence = [0.25] * 21
    fb = RunTask.Impl.FeedbackMessage()
    fb.feedback.step, fb.feedback.phase = k, "PLANNING"
    return {"/rt/image": image, "/rt/keypoints": kp, "/rt/feedback": fb}


def _probe() -> GraphProbe:
    return GraphProbe("bags_recorder_probe", DOMAIN_ID, wait_s=WAIT)


def test_round_trip_over_dds_and_sigint(tmp_path):
    probe = _probe()
    out, log = tmp_path / "bag", tmp_path / "recorder.log"
    proc = None
    try:
        latched = probe.node.create_publisher(String, "/rt/latched", LATCHED)
        latched.publish(String(data="published before the recorder started"))
        pubs = {t: probe.node.create_publisher(cls, t, RELIABLE) for t, cls in TOPICS.items()}
        proc = _recorder(out, log)
        probe.processes.append(proc)  # a wait fails at once if the recorder exits
        probe.wait_connected([(topic, 1, 1) for topic in [*TOPICS, "/rt/latched"]])
        t0 = time.time_ns()
        sent = {t: [] for t in TOPICS}
        for k in range(N):
            for topic, msg in _messages(k).items():
                pubs[topic].publish(msg)
                sent[topic].append(msg)
        for topic, pub in pubs.items():
            assert pub.wait_for_all_acked(rclpy.duration.Duration(seconds=WAIT)), topic
        hashes = {t: str(probe.node.get_publishers_info_by_topic(t)[0].topic_type_hash) for t in TOPICS}
        time.sleep(0.5)  # acknowledged by the recorder's reader; give its executor the moment to take them
        t1 = time.time_ns()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 0, log.read_text()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        probe.close()
    with BagReader(out) as bag:
        assert set(bag.topics) == {*TOPICS, "/rt/latched"}
        for topic, cls in TOPICS.items():
            info = bag.topics[topic]
            assert info.msgtype == {"/rt/image": "sensor_msgs/msg/Image", "/rt/keypoints":
                                    "dexwm_interfaces/msg/HandKeypoints", "/rt/feedback":
                                    "dexwm_interfaces/action/RunTask_FeedbackMessage"}[topic]
            assert info.type_hash == hashes[topic]
            assert info.count == N
            # as DDS discovery reports it (history and depth are not part of what a publisher announces)
            assert info.offered_qos[0].reliability.name == "RELIABLE"
            assert info.offered_qos[0].durability.name == "VOLATILE"
            got = list(bag.messages([topic]))
            stamps = [m.timestamp_ns for m in got]
            assert stamps == sorted(stamps) and t0 <= stamps[0] and stamps[-1] <= t1
            decoded = [deserialize_message(m.data, cls) for m in got]
            assert decoded == sent[topic]
        (latched_msg,) = list(bag.messages(["/rt/latched"]))
        assert bag.deserialize(latched_msg).data == "published before the recorder started"
        assert bag.topics["/rt/latched"].offered_qos[0].durability.name == "TRANSIENT_LOCAL"


def test_existing_output_is_refused(tmp_path):
    out = tmp_path / "bag"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    proc = _recorder(out, tmp_path / "recorder.log")
    assert proc.wait(WAIT) == 2
    text = (tmp_path / "recorder.log").read_text()
    assert "exists already; recordings are never overwritten" in text and str(out) in text
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_dexwm_record_cli_with_duration(tmp_path):
    probe = _probe()
    out = tmp_path / "cli_bag"
    try:
        pub = probe.node.create_publisher(String, "/rt/cli", LATCHED)
        pub.publish(String(data="hello"))
        proc = subprocess.run([str(Path(sys.executable).with_name("dexwm")), "record", "--out", str(out),
                               "--topics", "/rt/cli", "--duration", "10", "--compression", "none"],
                              env=_env(), capture_output=True, text=True, timeout=120)
    finally:
        probe.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with BagReader(out) as bag:
        assert list(bag.topics) == ["/rt/cli"]
        assert [bag.deserialize(m).data for m in bag.messages()] == ["hello"]
    assert np.isclose(len(list(out.glob("*.mcap"))), 1)
