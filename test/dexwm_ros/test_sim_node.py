"""The simulated robot node over real DDS: started as a subprocess through its console script and params file,
observed and commanded only through its ROS interfaces (the real drivers' topics)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg")

from geometry_msgs.msg import PoseArray  # noqa: E402
from rcl_interfaces.msg import Log, Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from dexwm_ros.conversions import image_to_numpy, quaternion_to_rotation, seconds_to_duration  # noqa: E402
from dexwm_ros.graph_probe import GraphProbe  # noqa: E402
from dexwm_ros.sim_node import load_node_config  # noqa: E402
from dexwm_robot.joint_names import ALL_JOINT_NAMES, ARM_JOINT_NAMES  # noqa: E402
from dexwm_hw.sim.camera import intrinsics  # noqa: E402
from dexwm_robot.scene import load_sim_config  # noqa: E402

DOMAIN_ID = 187  # unusual, so parallel jobs and other test modules do not see this node
ROOT = Path(__file__).resolve().parents[2]
SCENE, CAMERA = load_sim_config()
HOME = SCENE.home
WAIT = 30.0  # s wall; generous upper bound for a loaded 2-core machine (never a timing assertion)
LATCHED = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def _node_command(*overrides: str) -> tuple[list[str], dict]:
    exe = Path(sys.executable).with_name("dexwm_sim_node")
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), ROS_LOG_DIR=str(ROOT / "log" / "ros"))
    cmd = [str(exe), "--ros-args", "--params-file", str(ROOT / "config" / "sim_node.yaml")]
    for o in overrides:
        cmd += ["-p", o]
    return cmd, env


def test_overriding_the_read_only_control_rate_fails_clearly():
    cmd, env = _node_command("control_rate:=50.0")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "control_rate: read-only" in done.stderr and "scene.control_rate_hz = 20" in done.stderr


@pytest.mark.parametrize("value, message", [
    ("[0.0, 0.1]", "start_joints: expected 23 finite values, found 2"),
    ("[" + ", ".join(["0.0"] * 3 + ["0.5"] + ["0.0"] * 19) + "]", "outside the joint limits: panda_joint4 = 0.500"),
])
def test_bad_start_joints_stop_the_node_with_the_reason(value, message):
    cmd, env = _node_command(f"start_joints:={value}")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.fixture(scope="module")
def sim_node():
    cmd, env = _node_command("real_time_factor:=2.0")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"sim node did not stop on SIGINT; output:\n{out}")
    assert proc.returncode == 0, f"sim node exited with {proc.returncode}:\n{out}"
    assert "Traceback" not in out, out


class Probe(GraphProbe):
    """A client node in its own context, spun in a thread; keeps every message it receives per topic."""

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__("sim_node_probe", DOMAIN_ID, [proc], wait_s=WAIT)
        self.proc = proc


@pytest.fixture
def probe(sim_node):
    p = Probe(sim_node)
    p.collect(JointState, "/joint_states")
    yield p
    p.close()


def joints(p: Probe) -> np.ndarray | None:
    msg = p.last("/joint_states")
    if msg is None:
        return None
    index = {n: i for i, n in enumerate(msg.name)}
    return np.array([msg.position[index[n]] for n in ALL_JOINT_NAMES])


def wait_joints(p: Probe, condition, what: str) -> np.ndarray:
    return p.wait_for(lambda: q if (q := joints(p)) is not None and condition(q) else None, what)


def reset_home(p: Probe) -> np.ndarray:
    response = p.call(Trigger, "/dexwm/sim/reset", Trigger.Request())
    assert response.success, response.message
    return wait_joints(p, lambda q: np.abs(q - HOME).max() < 0.01, "the home pose after reset")


def arm_trajectory(names, points) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(names))
    msg.points = [JointTrajectoryPoint(positions=[float(x) for x in q], time_from_start=seconds_to_duration(t))
                  for t, q in points]
    return msg


def test_joint_states_carry_all_23_driver_joints(probe):
    msg = probe.wait_for(lambda: probe.last("/joint_states"), "/joint_states")
    assert list(msg.name) == list(ALL_JOINT_NAMES)
    assert len(msg.position) == len(msg.velocity) == len(msg.effort) == 23
    assert msg.header.stamp.sec > 0  # ROS time of the node clock, not simulated time from zero
    q = reset_home(probe)
    np.testing.assert_allclose(q[:7], HOME[:7], atol=3e-3)


def test_camera_image_and_matching_camera_info(probe):
    probe.collect(Image, "/camera/color/image_raw")
    probe.collect(CameraInfo, "/camera/color/camera_info")

    def pair():
        infos = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in probe.got("/camera/color/camera_info")}
        for img in probe.got("/camera/color/image_raw"):
            key = (img.header.stamp.sec, img.header.stamp.nanosec)
            if key in infos:
                return img, infos[key]
        return None

    img, info = probe.wait_for(pair, "an image and a CameraInfo with the same stamp")
    assert (img.encoding, img.width, img.height) == ("rgb8", CAMERA.width, CAMERA.height)
    assert img.header.frame_id == info.header.frame_id == "camera_color_optical_frame"
    rgb = image_to_numpy(img)
    assert rgb.shape == (CAMERA.height, CAMERA.width, 3) and rgb.std() > 5  # a rendered scene, not a blank
    assert (info.width, info.height, info.distortion_model) == (CAMERA.width, CAMERA.height, "plumb_bob")
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), intrinsics(CAMERA.fovy_deg, CAMERA.width, CAMERA.height))
    assert list(info.d) == [0.0] * 5 and np.reshape(info.p, (3, 4))[2, 2] == 1.0


def test_static_frames_object_poses_and_names(probe):
    probe.collect(TFMessage, "/tf_static", LATCHED)
    probe.collect(TFMessage, "/tf", 100)
    probe.collect(PoseArray, "/dexwm/sim/object_poses")
    probe.collect(String, "/dexwm/sim/object_names", LATCHED)
    static = probe.wait_for(lambda: probe.last("/tf_static"), "latched /tf_static")
    frames = {t.child_frame_id: t for t in static.transforms}
    assert frames["panda_link0"].header.frame_id == "world"
    cam = frames["camera_color_optical_frame"].transform
    np.testing.assert_allclose([cam.translation.x, cam.translation.y, cam.translation.z], CAMERA.position, atol=1e-9)
    R = quaternion_to_rotation([cam.rotation.w, cam.rotation.x, cam.rotation.y, cam.rotation.z])
    assert R[2, 2] < -0.5  # optical z (viewing direction) points down at the table
    dynamic = probe.wait_for(lambda: probe.last("/tf"), "/tf")
    children = {t.child_frame_id for t in dynamic.transforms}
    assert {f"panda_link{i}" for i in range(1, 8)} <= children and "allegro_ff_tip" in children
    import json

    names = json.loads(probe.wait_for(lambda: probe.last("/dexwm/sim/object_names"), "object names").data)
    assert names["names"] == [o.name for o in SCENE.objects] and names["frame_id"] == "world"
    poses = probe.wait_for(lambda: probe.last("/dexwm/sim/object_poses"), "object poses")
    assert poses.header.frame_id == "world" and len(poses.poses) == len(SCENE.objects)
    for p in poses.poses:
        assert SCENE.object_region_x[0] - 0.05 < p.position.x < SCENE.object_region_x[1] + 0.05
        assert SCENE.table_height < p.position.z < SCENE.table_height + 0.1


def test_arm_trajectory_moves_the_arm_through_its_points(probe):
    reset_home(probe)
    pub = probe.node.create_publisher(JointTrajectory, "/panda_arm_controller/joint_trajectory", 10)
    via, goal = HOME[:7].copy(), HOME[:7].copy()
    via[[0, 3, 5]] += [0.4, 0.3, -0.2]
    goal[[0, 3, 5]] += [0.15, 0.25, -0.3]
    order = [6, 4, 2, 0, 1, 3, 5]  # any order of the names is accepted
    probe.wait_for(lambda: pub.get_subscription_count() > 0, "the arm controller subscription")
    pub.publish(arm_trajectory([ARM_JOINT_NAMES[i] for i in order], [(0.8, via[order]), (1.6, goal[order])]))
    peak = [0.0]

    def arrived(q):
        peak[0] = max(peak[0], q[0])
        return np.abs(q[:7] - goal).max() < 0.01

    q = wait_joints(probe, arrived, "the arm at the trajectory's last point")
    assert peak[0] > HOME[0] + 0.3  # it went through the via point (joint1 +0.4), not straight to the goal (+0.15)
    np.testing.assert_allclose(q[7:], HOME[7:], atol=0.03)  # the hand was not moved


def test_hand_command_moves_the_fingers(probe):
    reset_home(probe)
    pub = probe.node.create_publisher(Float64MultiArray, "/allegro_hand_position_controller/commands", 10)
    target = HOME[7:].copy()
    target[[1, 2, 5, 6, 13]] += [0.5, 0.4, 0.6, 0.3, 0.3]  # curl index, middle, thumb joints
    probe.wait_for(lambda: pub.get_subscription_count() > 0, "the hand controller subscription")
    pub.publish(Float64MultiArray(data=target.tolist()))
    q = wait_joints(probe, lambda q: np.abs(q[7:] - target).max() < 0.03, "the fingers at the commanded positions")
    np.testing.assert_allclose(q[:7], HOME[:7], atol=3e-3)  # the arm held still


def test_unknown_joints_and_wrong_length_hand_commands_are_rejected(probe):
    probe.collect(Log, "/rosout", 100)
    reset_home(probe)
    arm = probe.node.create_publisher(JointTrajectory, "/panda_arm_controller/joint_trajectory", 10)
    hand = probe.node.create_publisher(Float64MultiArray, "/allegro_hand_position_controller/commands", 10)
    probe.wait_for(lambda: arm.get_subscription_count() > 0 and hand.get_subscription_count() > 0, "subscriptions")
    bad = HOME[:7].copy()
    bad[0] += 0.5
    arm.publish(arm_trajectory(list(ARM_JOINT_NAMES[:6]) + ["fr3_joint7"], [(0.5, bad)]))
    hand.publish(Float64MultiArray(data=(HOME[7:22] + 0.4).tolist()))  # 15 values

    def errors():
        logs = [m for m in probe.got("/rosout") if m.name == "dexwm_sim" and m.level == Log.ERROR]
        arm_err = [m.msg for m in logs if "fr3_joint7" in m.msg]
        hand_err = [m.msg for m in logs if "got 15" in m.msg]
        return arm_err and hand_err and (arm_err[0], hand_err[0])

    arm_msg, hand_msg = probe.wait_for(errors, "error logs naming the bad joint and the bad length")
    assert "unknown arm joint name" in arm_msg and "16 positions" in hand_msg
    n0 = len(probe.got("/joint_states"))
    probe.wait_for(lambda: len(probe.got("/joint_states")) > n0 + 20, "20 more joint states")
    for msg in probe.got("/joint_states")[n0:]:
        np.testing.assert_allclose(np.asarray(msg.position), HOME, atol=0.01)


def _set_parameter(probe: Probe, name: str, value: ParameterValue):
    request = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
    return probe.call(SetParameters, "/dexwm_sim/set_parameters", request).results[0]


def test_reset_restores_home_with_the_seed_set_at_run_time(probe):
    probe.collect(PoseArray, "/dexwm/sim/object_poses")
    reset_home(probe)
    layout = np.array([[p.position.x, p.position.y] for p in
                       probe.wait_for(lambda: probe.last("/dexwm/sim/object_poses"), "object poses").poses])
    pub = probe.node.create_publisher(JointTrajectory, "/panda_arm_controller/joint_trajectory", 10)
    probe.wait_for(lambda: pub.get_subscription_count() > 0, "the arm controller subscription")
    moved = HOME[:7] + np.array([0.3, 0.2, 0, 0.2, 0, -0.2, 0.3])
    pub.publish(arm_trajectory(ARM_JOINT_NAMES, [(0.0, moved)]))  # time 0: minimum safe duration
    wait_joints(probe, lambda q: np.abs(q[:7] - moved).max() < 0.01, "the moved arm")

    int_value = lambda v: ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)  # noqa: E731
    float_value = lambda v: ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)  # noqa: E731
    assert _set_parameter(probe, "seed", int_value(7)).successful
    assert not _set_parameter(probe, "camera_rate_hz", float_value(1000.0)).successful  # out of range
    assert not _set_parameter(probe, "control_rate", float_value(50.0)).successful  # read-only
    assert not _set_parameter(probe, "seed", float_value(3.0)).successful  # wrong type
    start = HOME.copy()
    start[[0, 3, 8]] += [0.2, 0.15, 0.3]
    float_array = lambda v: ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY,  # noqa: E731
                                           double_array_value=[float(x) for x in v])
    assert _set_parameter(probe, "start_joints", float_array(start)).successful
    try:
        response = probe.call(Trigger, "/dexwm/sim/reset", Trigger.Request())
        assert response.success, response.message
        wait_joints(probe, lambda q: np.abs(q - start).max() < 0.01, "the start_joints pose after reset")
    finally:
        assert _set_parameter(probe, "start_joints", float_array(HOME)).successful
    try:
        q = reset_home(probe)
        np.testing.assert_allclose(q, HOME, atol=0.01)

        def new_layout():
            m = probe.last("/dexwm/sim/object_poses")
            xy = np.array([[p.position.x, p.position.y] for p in m.poses])
            return xy if np.abs(xy - layout).max() > 0.02 else None

        probe.wait_for(new_layout, "another object layout under seed 7")
    finally:
        assert _set_parameter(probe, "seed", int_value(0)).successful


def test_camera_rate_and_real_time_factor_change_at_run_time(probe):
    probe.collect(Image, "/camera/color/image_raw")
    float_value = lambda v: ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)  # noqa: E731
    try:
        assert _set_parameter(probe, "camera_rate_hz", float_value(20.0)).successful
        assert _set_parameter(probe, "real_time_factor", float_value(3.0)).successful
        n_js, n_img = len(probe.got("/joint_states")), len(probe.got("/camera/color/image_raw"))
        probe.wait_for(lambda: len(probe.got("/joint_states")) > n_js + 10
                       and len(probe.got("/camera/color/image_raw")) > n_img + 2,
                       "joint states and images after re-timing the node")
    finally:
        assert _set_parameter(probe, "camera_rate_hz", float_value(load_node_config().camera_rate_hz)).successful
        assert _set_parameter(probe, "real_time_factor", float_value(2.0)).successful
