"""Replay regression tests on the committed bag (a real reach episode, test/data/bags/reach_episode0, made by
``python -m dexwm_ros.bags.make_test_bag``): its raw CDR messages are republished into nodes under test.

(a) the safety node (use_sim_time, fed the bag's /clock, /joint_states, camera and waypoints) approves and rejects
    exactly what it approved and rejected while recording: same commands (positions; durations within 50 ms, they
    depend on the joint state just before each waypoint), same accepted / rejected counts;
(b) the world-model node (checkpoints/world_model_sim_cpu, 1 torch thread) fed the bag's images twice publishes
    identical hand keypoints for every frame processed in both replays, equal to the library's own computation on
    the same decoded frames; a damaged bag stops ``dexwm replay`` with a clear message.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("dexwm_interfaces.msg")

from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from dexwm_ros.bags.reading import BagReader  # noqa: E402
from dexwm_ros.bags.replay import BagReplayer  # noqa: E402
from dexwm_ros.controller_common import COMMAND_TOPIC, STATUS_QOS, STATUS_TOPIC, parse_command  # noqa: E402
from dexwm_ros.graph_probe import GraphProbe  # noqa: E402
from dexwm_robot.joint_names import ALL_JOINT_NAMES  # noqa: E402
from dexwm_ros.node_process import NodeProcess  # noqa: E402
from dexwm_interfaces.msg import HandKeypoints  # noqa: E402

DOMAIN_ID = 157
ROOT = Path(__file__).resolve().parents[2]
BAG = ROOT / "test" / "data" / "bags" / "reach_episode0"
CHECKPOINT = ROOT / "checkpoints" / "world_model_sim_cpu"
WAIT = 60.0  # s wall: generous bound on a loaded 2-core machine (never a timing assertion)
SAFETY_INPUTS = ["/joint_states", "/camera/color/image_raw", "/dexwm/joint_waypoint"]
WM_FRAMES_S = 2.0  # s of the recording whose frames the world model gets (10 frames at 5 Hz)
WM_RATE = 0.25  # replay speed for the world model: a frame every 0.8 s, so each one gets processed


def _launch(script: str, params: str, log: Path, *overrides: str) -> NodeProcess:
    return NodeProcess(script, log, domain_id=DOMAIN_ID, params=params, overrides=overrides,
                       ros_log_dir=ROOT / "log" / "ros")


def _recorded(topic: str, cls) -> list:
    with BagReader(BAG) as bag:
        return [deserialize_message(m.data, cls) for m in bag.messages([topic])]


def test_safety_node_decides_as_recorded(tmp_path):
    recorded_commands = [c for c in _recorded("/dexwm/safety/command", JointTrajectory) if c.header.frame_id != "hold"]
    recorded_status = json.loads(_recorded("/dexwm/safety/status", String)[-1].data)
    safety = _launch("dexwm_safety_node", "controllers.yaml", tmp_path / "safety.log", "use_sim_time:=true")
    probe = GraphProbe("bags_replay_probe", DOMAIN_ID, [safety], wait_s=WAIT)
    replayer = None
    try:
        probe.collect(JointTrajectory, "/" + COMMAND_TOPIC)
        probe.collect(String, "/" + STATUS_TOPIC, STATUS_QOS)
        replayer = BagReplayer(probe.node, BAG, SAFETY_INPUTS, rate=2.0, clock=True)
        probe.wait_for(lambda: replayer.wait_for_subscribers({t: 1 for t in SAFETY_INPUTS}, 0.1)
                       and probe.node.count_publishers("/" + COMMAND_TOPIC) >= 1
                       and replayer.clock.get_subscription_count() >= 1, "the safety node's connections")
        played = replayer.play()
        assert played["/dexwm/joint_waypoint"] == recorded_status["counts"]["accepted"] + \
            recorded_status["counts"]["rejected"]
        want = (recorded_status["counts"]["accepted"], recorded_status["counts"]["rejected"])
        probe.wait_for(lambda: (s := probe.got("/" + STATUS_TOPIC)) and (
            (json.loads(s[-1].data)["counts"]["accepted"], json.loads(s[-1].data)["counts"]["rejected"]) == want),
            f"the safety node's accepted/rejected counts {want}")
        replayed = [c for c in probe.got("/" + COMMAND_TOPIC) if c.header.frame_id != "hold"]
    finally:
        if replayer is not None:
            replayer.close()
        probe.close()
        safety.stop()
    assert len(replayed) == len(recorded_commands) == want[0]
    for k, (a, b) in enumerate(zip(replayed, recorded_commands)):
        qa, da, _ = parse_command(a, ALL_JOINT_NAMES)
        qb, db, _ = parse_command(b, ALL_JOINT_NAMES)
        np.testing.assert_allclose(qa, qb, atol=1e-9, err_msg=f"command {k}")
        assert abs(da - db) <= 0.05, f"command {k}: duration {da:.3f} s replayed, {db:.3f} s recorded"
    assert want[1] >= 1  # the bag's rejection (the probe waypoint through the table) was reproduced


def _library_keypoints(frames: dict) -> dict:
    """What the node computes, done here with the library on the same decoded frames: stamp -> (21, 2) pixels."""
    from dexwm_ros.hand_keypoints import crop_pixels_to_image, heatmap_pixels_to_hand21
    from dexwm_ros.images import image_to_rgb
    from dexwm_ros.world_model_node import RIGHT
    from dexwm_model.world_model import WorldModel

    torch.set_num_threads(1)
    model = WorldModel.load(CHECKPOINT, map_location="cpu")
    out = {}
    with torch.no_grad():
        for stamp, msg in frames.items():
            rgb = image_to_rgb(msg, "bag frame")
            uv, conf = model.hand_keypoints(model.encode(torch.from_numpy(rgb)[None]))
            uv6 = crop_pixels_to_image(uv[0, RIGHT].double().numpy(), model.encoder.preprocess, rgb.shape[:2])
            uv21, _ = heatmap_pixels_to_hand21(uv6, conf[0, RIGHT].double().numpy())
            out[stamp] = uv21.astype(np.float32)
    return out


def test_world_model_node_keypoints_deterministic_and_as_library(tmp_path):
    with BagReader(BAG) as bag:
        first_ns = next(bag.messages(["/camera/color/image_raw"])).timestamp_ns
        start_s = (first_ns - bag.start_ns - 1000) * 1e-9  # the camera starts after the recorder (1 µs margin)
        frames = {}
        for m in bag.messages(["/camera/color/image_raw"], first_ns, first_ns + int(WM_FRAMES_S * 1e9)):
            msg = deserialize_message(m.data, Image)
            frames[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
    assert len(frames) >= 5
    runs = []
    wm = _launch("dexwm_world_model_node", "world_model_node.yaml", tmp_path / "wm.log", f"checkpoint:={CHECKPOINT}",
                 "torch_threads:=1", "max_rate_hz:=50.0", "device:=cpu")
    probe = GraphProbe("bags_replay_probe", DOMAIN_ID, [wm], wait_s=WAIT)
    try:
        probe.collect(HandKeypoints, "/dexwm/hand_keypoints")
        for run in range(2):
            replayer = BagReplayer(probe.node, BAG, ["/camera/color/image_raw"], rate=WM_RATE, start_s=start_s,
                                    duration_s=WM_FRAMES_S)
            try:
                probe.wait_for(lambda: replayer.wait_for_subscribers({"/camera/color/image_raw": 1}, 0.1)
                               and probe.node.count_publishers("/dexwm/hand_keypoints") >= 1,
                               "the world-model node's connections")
                before = len(probe.got("/dexwm/hand_keypoints"))
                replayer.play()
                last = max(frames)
                probe.wait_for(lambda: any((k.header.stamp.sec, k.header.stamp.nanosec) == last
                                           for k in probe.got("/dexwm/hand_keypoints")[before:]),
                               "the keypoints of the last replayed frame")
                runs.append({(k.header.stamp.sec, k.header.stamp.nanosec): np.asarray(k.pixels, np.float32)
                             .reshape(21, 2) for k in probe.got("/dexwm/hand_keypoints")[before:]})
            finally:
                replayer.close()
    finally:
        probe.close()
        wm.stop()
    first, second = runs
    assert set(first) <= set(frames) and set(second) <= set(frames)
    common = sorted(set(first) & set(second))
    assert len(common) >= 2, f"frames processed in both replays: {len(common)} of {len(frames)}"
    for stamp in common:
        np.testing.assert_array_equal(first[stamp], second[stamp], err_msg=f"frame {stamp} differs between replays")
    expected = _library_keypoints({s: frames[s] for s in set(first) | set(second)})
    for stamp, pixels in [*first.items(), *second.items()]:
        np.testing.assert_allclose(pixels, expected[stamp], atol=1e-3, equal_nan=True, err_msg=f"frame {stamp}")


def test_replay_cli_rejects_a_damaged_bag(tmp_path):
    bag = tmp_path / "damaged"
    shutil.copytree(BAG, bag)
    mcap = bag / "reach_episode0.mcap"
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 3])
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID + 1), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=str(ROOT / "log" / "ros"))
    proc = subprocess.run([str(Path(sys.executable).with_name("dexwm")), "replay", str(bag), "--delay", "0"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"dexwm replay: bag {bag}:" in proc.stderr
    assert "cannot be opened" in proc.stderr or "damaged after" in proc.stderr
