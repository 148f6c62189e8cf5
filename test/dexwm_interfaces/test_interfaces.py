"""Our ROS 2 interface packages (dexwm_interfaces, tf2_msgs), built by scripts/setup.sh with rosidl into the venv.

Real rclpy over Fast DDS: CDR round trips, a cross-process publish/subscribe, an action round trip with feedback and
a cancel, and the RIHS01 type hashes checked three ways (rosidl's build output, the hash DDS discovery reports,
and the hash `rosbags` computes from the same definitions) so that bags written with rosbags carry correct hashes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PointStamped, Transform, TransformStamped, Vector3, Quaternion
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from sensor_msgs.msg import Image
from std_msgs.msg import Header

try:
    from dexwm_interfaces.action import RunTask
    from dexwm_interfaces.msg import HandKeypoints, PlanStatus
    from dexwm_interfaces.srv import EStop, SetGoalFromCamera
    from tf2_msgs.msg import TFMessage
except ImportError as exc:
    raise ImportError(f"the ROS interface packages dexwm_interfaces / tf2_msgs are not built into {sys.prefix} "
                      f"(run scripts/setup.sh): {exc}") from exc

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
SHARE = Path(sys.prefix) / "share"  # where setup.sh installs the packages (the venv)
WAIT_S = 20.0  # generous upper bound for DDS discovery / delivery on a loaded 2-core machine


# ----------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def ros(monkeypatch):
    """rclpy initialised on a domain of its own (inherited by subprocesses), shut down after the test."""
    domain = int(os.environ.get("ROS_DOMAIN_ID") or 1 + os.getpid() % 100)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init(domain_id=domain)
    try:
        yield domain
    finally:
        rclpy.shutdown()


@contextlib.contextmanager
def spinning(*nodes):
    """Spin the nodes in a background thread; always shut the executor down and join the thread (the caller
    destroys its action clients/servers and then the nodes afterwards)."""
    executor = MultiThreadedExecutor(num_threads=4)
    for node in nodes:
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield executor
    finally:
        executor.shutdown()
        thread.join()


def wait_until(predicate, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_future(future, what: str, timeout: float = WAIT_S):
    wait_until(future.done, what, timeout)
    return future.result()


def split_sections(path: Path, expected: int) -> list[str]:
    sections = re.split(r"^---[ \t]*$", path.read_text(), flags=re.M)
    assert len(sections) == expected, f"{path}: expected {expected} sections separated by '---', found {len(sections)}"
    return sections


def rosbags_types(pkg_dir: Path) -> dict:
    """Parse every .msg/.srv/.action of an interface package with rosbags, under rosidl's type names."""
    pkg = pkg_dir.name
    types: dict = {}

    def add(text: str, name: str) -> None:
        # rosbags files every non-msg, non-action name under '<pkg>/<kind>/msg/'; rosidl names them '<pkg>/<kind>/X'
        for key, value in get_types_from_msg(text, name).items():
            types[key.replace("/srv/msg/", "/srv/")] = value

    for f in sorted((pkg_dir / "msg").glob("*.msg")):
        add(f.read_text(), f"{pkg}/msg/{f.stem}")
    for f in sorted((pkg_dir / "srv").glob("*.srv")):
        for part, text in zip(("Request", "Response"), split_sections(f, 2)):
            add(text, f"{pkg}/srv/{f.stem}_{part}")
    for f in sorted((pkg_dir / "action").glob("*.action")):
        for part, text in zip(("Goal", "Result", "Feedback"), split_sections(f, 3)):
            add(text, f"{pkg}/action/{f.stem}_{part}")
        # the message rosidl derives for the action's feedback topic
        add(f"unique_identifier_msgs/UUID goal_id\n{pkg}/action/{f.stem}_Feedback feedback\n",
            f"{pkg}/action/{f.stem}_FeedbackMessage")
    return types


@pytest.fixture(scope="module")
def typestore():
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(rosbags_types(SRC / "dexwm_interfaces"))
    return store


def installed_hashes(pkg: str) -> dict[str, str]:
    """RIHS01 hashes rosidl computed at build time, from the type-description JSON files installed in share/."""
    files = sorted((SHARE / pkg).glob("*/*.json"))
    assert files, f"no type descriptions under {SHARE / pkg}: run scripts/setup.sh to build the {pkg} package"
    hashes: dict[str, str] = {}
    for f in files:
        for entry in json.loads(f.read_text())["type_hashes"]:
            hashes[entry["type_name"]] = entry["hash_string"]
    return hashes


def endpoint_hashes(node, topic: str, count: int = 1) -> set[str]:
    """The type hashes DDS discovery reports for the publishers of a topic (as rmw sees them)."""
    infos = wait_until(lambda: (lambda i: i if len(i) >= count else None)(node.get_publishers_info_by_topic(topic)),
                       f"{count} publisher(s) on {topic} in the ROS graph")
    return {str(info.topic_type_hash) for info in infos}


# ----------------------------------------------------------------------------------------------- sample messages
def sample_keypoints(seed: int = 0, stamp_sec: int = 12) -> HandKeypoints:
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-0.5, 0.5, size=(HandKeypoints.NUM_KEYPOINTS, 3))
    msg = HandKeypoints()
    msg.header = Header(stamp=Time(sec=stamp_sec, nanosec=345_000_000), frame_id="ego_camera_optical_frame")
    msg.side = HandKeypoints.SIDE_RIGHT
    msg.positions = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in pos]
    msg.pixels = rng.uniform(0.0, 223.0, size=2 * HandKeypoints.NUM_KEYPOINTS).astype(np.float32)
    msg.image_width, msg.image_height = 224, 224
    msg.confidence = rng.uniform(0.0, 1.0, size=HandKeypoints.NUM_KEYPOINTS).astype(np.float32)
    return msg


def sample_image(width: int = 3, height: int = 2) -> Image:
    return Image(header=Header(stamp=Time(sec=5, nanosec=7), frame_id="ego_camera_optical_frame"),
                 height=height, width=width, encoding="rgb8", is_bigendian=0, step=3 * width,
                 data=bytes((7 * i) % 256 for i in range(3 * width * height)))


def sample_messages() -> dict[str, object]:
    joints = [f"panda_joint{i}" for i in range(1, 8)] + [f"ah_joint{f}{j}" for f in range(4) for j in range(4)]
    # float32 fields get values a float32 holds exactly, so the round trip compares equal
    status = PlanStatus(header=Header(stamp=Time(sec=3, nanosec=9), frame_id=""), state=PlanStatus.STATE_PLANNING,
                        planner="mppi", step=17, cost=0.75, best_cost=0.5, elite_count=10, elite_cost_mean=0.625,
                        elite_cost_std=0.0625, elite_cost_min=0.5, elite_cost_max=0.6875, iterations=10, samples=512,
                        joint_names=joints, waypoints=np.linspace(-1.0, 1.0, 3 * 23).tolist(), num_waypoints=3,
                        num_joints=23, replan_time=0.125)
    goal = RunTask.Goal(task=RunTask.Goal.TASK_PLACE, goal_image=sample_image(), target_object="red_cube",
                        target_position=PointStamped(header=Header(frame_id="world"), point=Point(x=0.5, y=0.1, z=0.03)),
                        goal_keypoints=sample_keypoints(1), max_steps=60, max_duration=90.0,
                        planner=RunTask.Goal.PLANNER_CEM)
    result = RunTask.Result(success=False, reason=RunTask.Result.REASON_CAMERA_STALE, message="no frame for 2.0 s",
                            steps=12, duration=33.5, final_cost=1.25, metrics=[0.12, 0.5],
                            metric_names=["object_distance_m", "mean_replan_time_s"])
    feedback = RunTask.Feedback(step=4, phase=RunTask.Feedback.PHASE_EXECUTING, cost=2.0, best_plan_cost=1.5,
                                predicted=sample_keypoints(2), held_success_steps=3, planning_time=0.25)
    tf = TFMessage(transforms=[
        TransformStamped(header=Header(stamp=Time(sec=1), frame_id="world"), child_frame_id=f"link{i}",
                         transform=Transform(translation=Vector3(x=0.1 * i, y=-0.2, z=0.3),
                                             rotation=Quaternion(x=0.0, y=0.0, z=math.sin(0.1 * i), w=math.cos(0.1 * i))))
        for i in range(3)])
    return {
        "dexwm_interfaces/msg/HandKeypoints": sample_keypoints(),
        "dexwm_interfaces/msg/PlanStatus": status,
        "dexwm_interfaces/action/RunTask_Goal": goal,
        "dexwm_interfaces/action/RunTask_Result": result,
        "dexwm_interfaces/action/RunTask_Feedback": feedback,
        "dexwm_interfaces/srv/SetGoalFromCamera_Request": SetGoalFromCamera.Request(camera="ego", max_age=0.5,
                                                                                     timeout=2.0),
        "dexwm_interfaces/srv/SetGoalFromCamera_Response": SetGoalFromCamera.Response(
            success=True, message="captured", image=sample_image(4, 4), stamp=Time(sec=5, nanosec=7)),
        "dexwm_interfaces/srv/EStop_Request": EStop.Request(engage=True, reason="operator pressed stop"),
        "dexwm_interfaces/srv/EStop_Response": EStop.Response(accepted=True, engaged=True, message="engaged"),
        "tf2_msgs/msg/TFMessage": tf,
    }


# ----------------------------------------------------------------------------------------------- tests
def test_constants_and_field_checks():
    assert (RunTask.Goal.TASK_REACH, RunTask.Goal.TASK_GRASP, RunTask.Goal.TASK_PLACE) == ("reach", "grasp", "place")
    assert (RunTask.Goal.PLANNER_CEM, RunTask.Goal.PLANNER_MPPI) == ("cem", "mppi")
    reasons = [getattr(RunTask.Result, f"REASON_{r}") for r in (
        "SUCCEEDED", "TIMEOUT", "CANCELED", "PREEMPTED", "REJECTED", "CAMERA_STALE", "CONTROLLER_TIMEOUT", "ESTOP",
        "ERROR")]
    assert reasons == ["SUCCEEDED", "TIMEOUT", "CANCELED", "PREEMPTED", "REJECTED", "CAMERA_STALE",
                       "CONTROLLER_TIMEOUT", "ESTOP", "ERROR"]
    assert [getattr(RunTask.Feedback, f"PHASE_{p}") for p in ("OBSERVING", "PLANNING", "EXECUTING", "HOLDING")] == [
        "OBSERVING", "PLANNING", "EXECUTING", "HOLDING"]
    assert HandKeypoints.NUM_KEYPOINTS == 21
    assert (HandKeypoints.SIDE_UNKNOWN, HandKeypoints.SIDE_LEFT, HandKeypoints.SIDE_RIGHT) == (0, 1, 2)
    # sequences, empty by default: a publisher fills NUM_KEYPOINTS positions / confidences (pixels may stay empty)
    empty = HandKeypoints()
    assert (len(empty.positions), len(empty.pixels), len(empty.confidence)) == (0, 0, 0)
    full = sample_keypoints()
    assert (len(full.positions), len(full.pixels), len(full.confidence)) == (21, 42, 21)
    assert PlanStatus.STATE_IDLE == "IDLE" and PlanStatus.STATE_DONE == "DONE"


@pytest.mark.parametrize("name", list(sample_messages()))
def test_serialization_round_trip_and_rosbags_wire_compatibility(name, typestore):
    msg = sample_messages()[name]
    raw = serialize_message(msg)
    back = deserialize_message(raw, type(msg))
    assert back == msg, f"{name} changed in a CDR round trip"

    # rosbags parses rclpy's CDR bytes, and what it writes back rclpy reads as the same message (same layout
    # and length; the bytes themselves may differ only in alignment padding, which Fast CDR leaves unset)
    rb = typestore.deserialize_cdr(raw, name)
    again = bytes(typestore.serialize_cdr(rb, name))
    assert len(again) == len(raw)
    assert deserialize_message(again, type(msg)) == msg


def test_rosbags_reads_field_values():
    typestore = get_typestore(Stores.ROS2_KILTED)
    typestore.register(rosbags_types(SRC / "dexwm_interfaces"))
    msg = sample_keypoints(5)
    rb = typestore.deserialize_cdr(serialize_message(msg), "dexwm_interfaces/msg/HandKeypoints")
    assert rb.header.frame_id == "ego_camera_optical_frame" and rb.header.stamp.sec == 12
    assert rb.side == HandKeypoints.SIDE_RIGHT and (rb.image_width, rb.image_height) == (224, 224)
    np.testing.assert_array_equal([[p.x, p.y, p.z] for p in rb.positions],
                                  [[p.x, p.y, p.z] for p in msg.positions])
    np.testing.assert_array_equal(rb.pixels, msg.pixels)
    np.testing.assert_array_equal(rb.confidence, msg.confidence)

    goal = sample_messages()["dexwm_interfaces/action/RunTask_Goal"]
    rg = typestore.deserialize_cdr(serialize_message(goal), "dexwm_interfaces/action/RunTask_Goal")
    assert (rg.task, rg.target_object, rg.max_steps, rg.max_duration, rg.planner) == ("place", "red_cube", 60, 90.0, "cem")
    assert (rg.goal_image.width, rg.goal_image.height, rg.goal_image.encoding) == (3, 2, "rgb8")
    assert bytes(rg.goal_image.data) == bytes(goal.goal_image.data)


def test_type_hashes_match_rosidl_and_rosbags(typestore):
    # tf2_msgs: our build has the hash of ROS's own TFMessage (rosbags ships the real definition)
    ours = installed_hashes("tf2_msgs")["tf2_msgs/msg/TFMessage"]
    for store in (Stores.ROS2_JAZZY, Stores.ROS2_KILTED):
        assert get_typestore(store).hash_rihs01("tf2_msgs/msg/TFMessage") == ours, f"TFMessage hash differs ({store})"

    # dexwm_interfaces: every message, request/response and action part hashes the same in rosidl and rosbags
    built = installed_hashes("dexwm_interfaces")
    names = sorted(rosbags_types(SRC / "dexwm_interfaces"))
    assert {"dexwm_interfaces/msg/HandKeypoints", "dexwm_interfaces/msg/PlanStatus",
            "dexwm_interfaces/srv/EStop_Request", "dexwm_interfaces/srv/SetGoalFromCamera_Response",
            "dexwm_interfaces/action/RunTask_Goal", "dexwm_interfaces/action/RunTask_FeedbackMessage"} <= set(names)
    mismatched = {n: (built.get(n), typestore.hash_rihs01(n)) for n in names if built.get(n) != typestore.hash_rihs01(n)}
    assert not mismatched, f"rosidl vs rosbags type hashes differ: {mismatched}"
    # the hash covers the definition: changing one field type changes it
    other = get_typestore(Stores.ROS2_KILTED)
    other.register(get_types_from_msg(
        (SRC / "dexwm_interfaces/msg/HandKeypoints.msg").read_text().replace("uint8 side", "uint16 side"),
        "dexwm_interfaces/msg/HandKeypoints"))
    assert other.hash_rihs01("dexwm_interfaces/msg/HandKeypoints") != built["dexwm_interfaces/msg/HandKeypoints"]


def test_runtime_type_hashes_in_the_ros_graph(ros, typestore):
    node = rclpy.create_node("hash_probe")
    try:
        for name, cls, topic in (("tf2_msgs/msg/TFMessage", TFMessage, "/tf"),
                                 ("dexwm_interfaces/msg/HandKeypoints", HandKeypoints, "/hash_probe/keypoints"),
                                 ("dexwm_interfaces/msg/PlanStatus", PlanStatus, "/hash_probe/plan_status")):
            node.create_publisher(cls, topic, 1)
            expected = (get_typestore(Stores.ROS2_KILTED) if name.startswith("tf2_msgs") else typestore).hash_rihs01(name)
            assert endpoint_hashes(node, topic) == {expected}, f"{topic}: DDS reports another hash for {name}"
    finally:
        node.destroy_node()


PUBLISHER_SCRIPT = textwrap.dedent("""
    import sys, time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    sys.path.insert(0, {test_dir!r})
    from test_interfaces import sample_keypoints
    from dexwm_interfaces.msg import HandKeypoints

    rclpy.init()
    node = rclpy.create_node("keypoint_publisher")
    pub = node.create_publisher(HandKeypoints, "/dexwm_test/hand_keypoints",
                                QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    print("publishing", flush=True)
    for i in range(1200):  # at most 60 s; the test terminates this process once it has its message
        pub.publish(sample_keypoints(seed=7, stamp_sec=1000 + i))
        time.sleep(0.05)
    node.destroy_node()
    rclpy.shutdown()
""")


def test_hand_keypoints_cross_process_over_dds(ros, typestore):
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER_SCRIPT.format(test_dir=str(Path(__file__).parent))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    node = rclpy.create_node("keypoint_listener")
    received: list[HandKeypoints] = []
    node.create_subscription(HandKeypoints, "/dexwm_test/hand_keypoints", received.append,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    try:
        with spinning(node):
            try:
                wait_until(lambda: len(received) >= 2, "HandKeypoints from the publisher subprocess")
            except AssertionError:
                proc.kill()
                raise AssertionError(f"no message; publisher output:\n{proc.communicate(timeout=10)[0]}") from None
            # the hash the remote publisher announced in discovery is the one rosbags computes
            assert endpoint_hashes(node, "/dexwm_test/hand_keypoints") == {
                typestore.hash_rihs01("dexwm_interfaces/msg/HandKeypoints")}
    finally:
        node.destroy_node()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=10)
    msg = received[-1]
    expected = sample_keypoints(seed=7, stamp_sec=msg.header.stamp.sec)
    assert msg.header.stamp.sec >= 1000 and msg == expected
    assert all(b.header.stamp.sec > a.header.stamp.sec for a, b in zip(received, received[1:]))


def test_run_task_action_round_trip_with_feedback_and_cancel(ros, typestore):
    server_node = rclpy.create_node("run_task_server")
    client_node = rclpy.create_node("run_task_client")
    goals_seen: list[RunTask.Goal] = []

    def on_goal(goal: RunTask.Goal) -> GoalResponse:
        valid = goal.task in (RunTask.Goal.TASK_REACH, RunTask.Goal.TASK_GRASP, RunTask.Goal.TASK_PLACE)
        return GoalResponse.ACCEPT if valid else GoalResponse.REJECT

    def execute(goal_handle) -> RunTask.Result:
        goal = goal_handle.request
        goals_seen.append(goal)
        for step in range(goal.max_steps):
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                return RunTask.Result(success=False, reason=RunTask.Result.REASON_CANCELED, steps=step,
                                      message="canceled by the client")
            predicted = sample_keypoints(seed=step)
            goal_handle.publish_feedback(RunTask.Feedback(
                step=step, phase=RunTask.Feedback.PHASE_EXECUTING, cost=10.0 - step, best_plan_cost=9.0 - step,
                predicted=predicted, held_success_steps=step, planning_time=0.01 * step))
            time.sleep(0.05)
        goal_handle.succeed()
        return RunTask.Result(success=True, reason=RunTask.Result.REASON_SUCCEEDED, steps=goal.max_steps,
                              duration=0.05 * goal.max_steps, final_cost=10.0 - goal.max_steps,
                              metrics=[0.02, 0.01], metric_names=["keypoint_distance_m", "mean_replan_time_s"])

    group = ReentrantCallbackGroup()
    server = ActionServer(server_node, RunTask, "run_task", execute_callback=execute, goal_callback=on_goal,
                          cancel_callback=lambda _handle: CancelResponse.ACCEPT, callback_group=group)
    client = ActionClient(client_node, RunTask, "run_task", callback_group=group)
    feedback: dict[bytes, list[RunTask.Feedback]] = {}

    def on_feedback(message) -> None:  # RunTask_FeedbackMessage: goal_id + feedback
        feedback.setdefault(bytes(message.goal_id.uuid), []).append(message.feedback)

    try:
        with spinning(server_node, client_node):
            assert client.wait_for_server(timeout_sec=WAIT_S), "RunTask action server not discovered"

            # 1. an invalid task kind is rejected
            bad = wait_future(client.send_goal_async(RunTask.Goal(task="juggle", max_steps=3)), "goal response")
            assert not bad.accepted

            # 2. a goal runs to completion with feedback
            goal = RunTask.Goal(task=RunTask.Goal.TASK_REACH, goal_image=sample_image(5, 4), max_steps=8,
                                max_duration=30.0, planner=RunTask.Goal.PLANNER_MPPI)
            handle = wait_future(client.send_goal_async(goal, feedback_callback=on_feedback), "goal response")
            assert handle.accepted
            response = wait_future(handle.get_result_async(), "RunTask result")
            assert response.status == GoalStatus.STATUS_SUCCEEDED
            result = response.result
            assert (result.success, result.reason, result.steps) == (True, "SUCCEEDED", 8)
            assert list(result.metric_names) == ["keypoint_distance_m", "mean_replan_time_s"]
            np.testing.assert_allclose(result.metrics, [0.02, 0.01])
            assert goals_seen[0] == goal  # the goal (image bytes included) arrived intact
            uuid = bytes(handle.goal_id.uuid)
            steps = [f.step for f in wait_until(lambda: feedback.get(uuid), "feedback of the first goal")]
            assert steps == sorted(set(steps)) and set(steps) <= set(range(8))
            last = feedback[uuid][-1]
            assert last.phase == "EXECUTING" and last.predicted == sample_keypoints(seed=last.step)

            # 3. a long goal is canceled after its first feedback
            long_goal = RunTask.Goal(task=RunTask.Goal.TASK_GRASP, target_object="blue_ball", max_steps=1000)
            handle2 = wait_future(client.send_goal_async(long_goal, feedback_callback=on_feedback), "goal response")
            assert handle2.accepted
            wait_until(lambda: feedback.get(bytes(handle2.goal_id.uuid)), "feedback of the goal to cancel")
            cancel = wait_future(handle2.cancel_goal_async(), "cancel response")
            assert [bytes(g.goal_id.uuid) for g in cancel.goals_canceling] == [bytes(handle2.goal_id.uuid)]
            response2 = wait_future(handle2.get_result_async(), "result of the canceled goal")
            assert response2.status == GoalStatus.STATUS_CANCELED
            assert (response2.result.success, response2.result.reason) == (False, "CANCELED")
            assert 1 <= response2.result.steps < 1000

            # the action's feedback topic carries the hash rosbags computes for RunTask_FeedbackMessage
            assert endpoint_hashes(client_node, "/run_task/_action/feedback") == {
                typestore.hash_rihs01("dexwm_interfaces/action/RunTask_FeedbackMessage")}
    finally:
        client.destroy()
        server.destroy()
        client_node.destroy_node()
        server_node.destroy_node()
