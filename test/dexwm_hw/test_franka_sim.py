"""The direct libfranka path against franka-sim: pylibfranka speaks the real Franka network protocol (FCI) to a MuJoCo
server on 127.0.0.1 simulating the project's Panda model. franka-sim lives in its own venv (numpy 1.26), set up by
scripts/setup_franka_sim.sh, which these tests run; they skip, saying why, where it cannot be installed."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dexwm_hw.scheduling import normal_scheduling
from dexwm_hw.franka.sim import FCI_PORT, FrankaSimProcess, FrankaSimUnavailable, ensure_installed, port_in_use
from dexwm_robot.assets import RobotModelsMissing, robot_model_paths

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ID = 179
WAIT = 30.0  # s wall, an upper bound for a loaded machine (never a timing assertion)


@pytest.fixture(scope="module")
def franka_sim(tmp_path_factory):
    try:
        robot_model_paths()
    except RobotModelsMissing as exc:
        pytest.skip(f"no Panda model for franka-sim: {exc}")
    try:
        python = ensure_installed()
    except FrankaSimUnavailable as exc:
        pytest.skip(f"franka-sim could not be set up here: {exc}")
    pytest.importorskip("pylibfranka", reason="scripts/setup_franka_sim.sh did not make pylibfranka importable")
    if port_in_use("127.0.0.1"):
        pytest.skip(f"127.0.0.1:{FCI_PORT} is taken by another process: cannot start franka-sim")
    log = tmp_path_factory.mktemp("franka_sim") / "franka_sim.log"
    sim = FrankaSimProcess(python, log_path=log).start()
    yield sim
    rc = sim.stop(timeout=3 * WAIT)  # an overloaded machine slows franka-sim's shutdown (seen: > 20 s)
    assert rc == 0, f"franka-sim exited with {rc}:\n{log.read_text()[-3000:]}"


def wait_until(predicate, what: str, timeout: float = WAIT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value is not None and not (isinstance(value, (bool, np.bool_)) and not value):
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def settled(arm, what: str) -> np.ndarray:
    def still():
        a = arm.state().q
        time.sleep(0.2)
        b = arm.state().q
        return b if np.abs(b - a).max() < 2e-4 else None

    return wait_until(still, what)


def test_joint_position_loop_moves_franka_sims_arm(franka_sim):
    from dexwm_hw.franka.arm import FrankaArm

    arm = FrankaArm("127.0.0.1", realtime="ignore")
    try:
        q0 = arm.state().q
        arm.start()
        target = q0 + np.array([0.3, 0.2, -0.2, -0.3, 0.2, 0.3, 0.4])
        assert arm.move(target, 1.0) == pytest.approx(1.0)
        state = wait_until(lambda: s if np.abs((s := arm.state()).q_d - target).max() < 1e-9 else None,
                           "the set-point at the target")
        q = settled(arm, "the arm at rest")
        np.testing.assert_allclose(q, target, atol=0.03)  # franka-sim's joint servo: within a few centiradians
        assert state.control_time > 0.9 and arm.error is None
        # a move that asks too much is stretched to the hardware speed limits
        far = target.copy()
        far[0] += 1.2
        assert arm.move(far, 0.1) > 1.875 * 1.2 / 2.175  # the minimum-jerk peak speed at the datasheet limit
        arm.hold(0.2)  # ... and stopped at once: the arm comes to rest short of it
        q = settled(arm, "the arm held")
        assert q[0] < far[0] - 0.5 and arm.error is None
    finally:
        arm.close()
    assert arm.cycles > 500


def test_connection_failure_is_a_clear_error(franka_sim):
    from dexwm_hw.franka.arm import FrankaArm, FrankaArmError

    with pytest.raises(FrankaArmError, match="cannot connect to the Franka robot at 127.0.0.2"):
        FrankaArm("127.0.0.2", realtime="ignore")  # franka-sim is bound to 127.0.0.1 only
    with pytest.raises(ValueError, match="realtime: expected one of"):
        FrankaArm("127.0.0.1", realtime="soft")


def test_arm_controller_node_on_the_libfranka_backend(franka_sim, tmp_path):
    """The arm controller node with backend libfranka: a safety command moves franka-sim's arm, and the node
    publishes the arm's /joint_states itself (there is no ros2_control)."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from dexwm_ros.controller_common import COMMAND_QOS, COMMAND_TOPIC, command_message
    from dexwm_robot.joint_names import ALL_JOINT_NAMES, ARM_JOINT_NAMES

    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=str(ROOT / "log" / "ros"))
    exe = Path(sys.executable).with_name("dexwm_arm_controller_node")
    log = tmp_path / "arm_node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(exe), "--ros-args", "--params-file", str(ROOT / "config" / "controllers.yaml"),
                                 "-p", "backend:=libfranka", "-p", "robot_ip:=127.0.0.1",
                                 "-p", "franka_realtime:=ignore"], env=env, stdout=out, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("franka_probe", context=context)
    latest = {}
    lock = threading.Lock()

    def on_joints(msg):
        with lock:
            latest["q"] = np.array(msg.position)
            latest["names"] = list(msg.name)

    node.create_subscription(JointState, "/joint_states", on_joints, 10)
    pub = node.create_publisher(JointTrajectory, "/" + COMMAND_TOPIC, COMMAND_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        def alive():
            assert proc.poll() is None, f"arm controller node exited ({proc.returncode}):\n{log.read_text()}"

        def joints():
            alive()
            with lock:
                return latest.get("q")

        q0 = wait_until(joints, "the arm's /joint_states from the node")
        assert latest["names"] == list(ARM_JOINT_NAMES)
        wait_until(lambda: pub.get_subscription_count() > 0, "the node's command subscription")
        target = q0 + np.array([-0.2, 0.15, 0.1, 0.2, -0.15, -0.2, 0.3])
        full = np.concatenate([target, np.zeros(len(ALL_JOINT_NAMES) - 7)])
        pub.publish(command_message(ALL_JOINT_NAMES, full, 0.8, False, node.get_clock().now().to_msg()))
        q = wait_until(lambda: (q := joints()) is not None and np.abs(q - target).max() < 0.03 and q,
                       "franka-sim's arm at the commanded joints")
        np.testing.assert_allclose(q, target, atol=0.03)
    finally:
        executor.shutdown()
        thread.join()
        node.destroy_node()
        rclpy.shutdown(context=context)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(20)
    text = log.read_text()
    assert proc.returncode == 0 and "Traceback" not in text, text
    assert "arm controller up (libfranka)" in text


def test_franka_sim_aborts_a_jumping_command_as_the_robot_would(franka_sim):
    """Shows the smooth-motion tests above are meaningful: this franka-sim enforces the FCI's motion limits, so a
    set-point jump (what a naive joint-position loop sends) ends the motion with a reflex error."""
    import pylibfranka as pf

    robot = pf.Robot("127.0.0.1", pf.RealtimeConfig.kIgnore)
    control = robot.start_joint_position_control(pf.ControllerMode.JointImpedance)
    normal_scheduling()  # libfranka made this (pytest's) thread SCHED_FIFO 99: later tests' processes inherit it
    with pytest.raises(pf.ControlException, match="(?i)discontinuity|limit"):
        state, _ = control.readOnce()
        q = list(state.q_d)
        for cycle in range(200):
            if cycle == 20:
                q[0] += 0.05  # 50 mrad in one 1 ms cycle: 50 rad/s
            control.writeOnce(pf.JointPositions(q))
            control.readOnce()
    robot.automatic_error_recovery()
    assert robot.read_once().robot_mode == pf.RobotMode.Idle
