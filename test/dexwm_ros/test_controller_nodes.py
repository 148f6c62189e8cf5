"""The real graph over DDS: simulator node + safety node + arm and hand controller nodes, each started through its
console script and the params files; the test publishes waypoints as the planner would and watches /joint_states
and the safety status."""

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("dexwm_interfaces.srv")

from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from dexwm_ros.controller_common import COMMAND_TOPIC, ESTOP_SERVICE, STATUS_QOS, STATUS_TOPIC, WAYPOINT_TOPIC  # noqa: E402
from dexwm_ros.conversions import seconds_to_duration  # noqa: E402
from dexwm_ros.graph_probe import GraphProbe  # noqa: E402
from dexwm_robot.joint_names import ALL_JOINT_NAMES  # noqa: E402
from dexwm_ros.node_process import NodeProcess  # noqa: E402
from dexwm_hw.safety.config import load_safety_config  # noqa: E402
from dexwm_robot.scene import load_sim_config  # noqa: E402
from dexwm_interfaces.srv import EStop  # noqa: E402

DOMAIN_ID = 173  # its own DDS domain: other test modules' nodes are invisible
ROOT = Path(__file__).resolve().parents[2]
HOME = np.asarray(load_sim_config()[0].home, dtype=np.float64)
SAFETY = load_safety_config()
WAIT = 30.0  # s wall: generous bound for a loaded 2-core machine (never a timing assertion)
WAYPOINT_TIMEOUT = 1.0  # s, the dead-man's switch used here (the default is longer)
# the hand reaching down through the table: joint values inside their limits, palm/fingertips below the workspace box
THROUGH_TABLE = HOME.copy()
THROUGH_TABLE[[1, 3]] = [1.2, -1.0]


def _launch(script: str, params: str, log_dir: Path, *overrides: str) -> NodeProcess:
    return NodeProcess(script, log_dir / f"{script}.log", domain_id=DOMAIN_ID, params=params, overrides=overrides,
                       ros_log_dir=ROOT / "log" / "ros")


class Graph(GraphProbe):
    """The four nodes plus this probe node standing in for the planner. A wait fails when a node other than the
    simulator exits (one test kills the simulator on purpose)."""

    def __init__(self, log_dir: Path) -> None:
        self.sim = _launch("dexwm_sim_node", "sim_node.yaml", log_dir)
        self.nodes = [
            # watchdog timeouts doubled: a loaded 2-core machine must not trip them by accident
            _launch("dexwm_safety_node", "controllers.yaml", log_dir, f"waypoint_timeout:={WAYPOINT_TIMEOUT}",
                    "joint_states_timeout:=1.0", "image_timeout:=2.0"),
            _launch("dexwm_arm_controller_node", "controllers.yaml", log_dir),
            _launch("dexwm_hand_controller_node", "controllers.yaml", log_dir),
        ]
        super().__init__("controller_nodes_probe", DOMAIN_ID, wait_s=WAIT,
                         describe=lambda: f"last status: {self.status()}")
        self.track_joints()
        self.collect(String, STATUS_TOPIC, STATUS_QOS)
        self.waypoints = self.node.create_publisher(JointTrajectory, WAYPOINT_TOPIC, 10)

    def status(self) -> dict | None:
        msg = self.last(STATUS_TOPIC)
        return None if msg is None else json.loads(msg.data)

    def wait_status(self, condition, what: str) -> dict:
        return self.wait_for(lambda: (s := self.status()) is not None and condition(s) and s, what)

    def send(self, target: np.ndarray, duration: float, stamp_offset: float = 0.0) -> None:
        msg = JointTrajectory(joint_names=list(ALL_JOINT_NAMES))
        now = self.node.get_clock().now().nanoseconds * 1e-9 + stamp_offset
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        msg.points = [JointTrajectoryPoint(positions=[float(x) for x in target],
                                           time_from_start=seconds_to_duration(duration))]
        self.waypoints.publish(msg)

    def reset_home(self) -> np.ndarray:
        response = self.call(Trigger, "/dexwm/sim/reset", Trigger.Request())
        assert response.success, response.message
        self.wait_for(lambda: (q := self.joints()) is not None and np.abs(q - HOME).max() < 0.01 and q,
                      "the home pose after reset")
        self.wait_status(lambda s: s["accepting"], "the safety layer accepting waypoints")
        return self.wait_settled("the robot at rest at home")

    def wait_chain_connected(self) -> None:
        """Every hop of the command chain discovered (safety -> arm/hand controllers -> simulator): a waypoint sent
        before that would be dropped by DDS on a loaded machine, not by the code under test."""
        self.wait_connected([(COMMAND_TOPIC, 1, 2), ("panda_arm_controller/joint_trajectory", 1, 1),
                             ("allegro_hand_position_controller/commands", 1, 1),
                             ("/joint_states", 1, 4)])  # safety, arm and hand controllers, this probe

    def count(self, key: str) -> int:
        return self.status()["counts"][key]

    def watched(self) -> list:
        return self.nodes

    def close(self) -> dict[str, str]:
        super().close()
        return {p.args[0]: p.stop() for p in [*self.nodes, self.sim]}


@pytest.mark.parametrize("script, override, message", [
    ("dexwm_safety_node", "position_tolerance:=5.0", "position_tolerance out of range"),
    ("dexwm_safety_node", "joint_velocity_limit:=[1.0, 2.0]", "joint_velocity_limit needs 23 values"),
    ("dexwm_arm_controller_node", "backend:=can_bus", "parameter backend: expected one of"),
    ("dexwm_hand_controller_node", "command_rate:=0.0", "command_rate out of range"),
])
def test_bad_parameters_stop_the_node_with_a_clear_message(tmp_path, script, override, message):
    proc = _launch(script, "controllers.yaml", tmp_path, override)
    try:
        rc = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{script} kept running with {override}")
    out = proc.log()
    assert rc == 2 and message in out, out


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    g = Graph(tmp_path_factory.mktemp("controller_nodes"))
    try:
        g.wait_status(lambda s: s["state"] == "READY", "the safety node READY (joint states and camera flowing)")
        g.wait_for(lambda: g.waypoints.get_subscription_count() > 0, "the safety node's waypoint subscription")
        g.wait_chain_connected()
        yield g
    finally:
        logs = g.close()
    for exe, out in logs.items():
        assert "Traceback" not in out, f"{exe}:\n{out}"


def assert_still(g: Graph, t0: float, q0: np.ndarray, what: str) -> None:
    """Every joint state since t0 stayed at q0 (the robot did not move)."""
    n0 = len(g.joints_since(t0))
    g.wait_for(lambda: len(g.joints_since(t0)) > n0 + 15, "15 more joint states")
    drift = max(np.abs(q - q0).max() for q in g.joints_since(t0))
    assert drift < 0.01, f"{what}: the robot moved ({drift:.4f} rad)"


def test_waypoint_within_limits_reaches_the_arm_and_the_hand(graph):
    graph.reset_home()
    accepted = graph.count("accepted")
    target = HOME.copy()
    target[[0, 3, 5]] += [0.3, 0.25, -0.2]  # arm
    target[[8, 9, 12, 20]] += [0.5, 0.4, 0.6, 0.3]  # index, middle, thumb curl
    graph.send(target, 0.8)
    q = graph.wait_for(lambda: (q := graph.joints()) is not None and np.abs(q[:7] - target[:7]).max() < 0.01
                       and np.abs(q[7:] - target[7:]).max() < 0.03 and q,
                       "arm and hand at the waypoint", detail=lambda: f"error per joint {graph.joints() - target}")
    np.testing.assert_allclose(q, target, atol=0.03)
    status = graph.wait_status(lambda s: s["counts"]["accepted"] > accepted, "the acceptance in the status")
    assert status["state"] == "READY" and status["last_accepted"]["duration"] == pytest.approx(0.8)


def test_too_fast_waypoint_is_slowed_down_not_rejected(graph):
    graph.reset_home()
    target = HOME.copy()
    target[0] += 0.6
    graph.send(target, 0.05)
    status = graph.wait_status(lambda s: s["last_accepted"] and s["last_accepted"]["stretched"]
                               and s["last_accepted"]["requested"] == pytest.approx(0.05), "a stretched acceptance")
    assert status["last_accepted"]["duration"] == pytest.approx(1.875 * 0.6 / SAFETY.joint_velocity_limit[0])
    graph.wait_for(lambda: np.abs(graph.joints()[:7] - target[:7]).max() < 0.01, "the arm at the target")


def test_out_of_limit_waypoint_is_rejected_and_the_robot_does_not_move(graph):
    q0 = graph.reset_home()
    rejected = graph.count("rejected")
    bad = HOME.copy()
    bad[[0, 3]] += [0.3, 2.3]  # panda_joint4 = +0.1 rad: beyond its upper limit (-0.09) by far more than 0.05
    t0 = time.monotonic()
    graph.send(bad, 1.0)
    status = graph.wait_status(lambda s: s["counts"]["rejected"] > rejected, "the rejection in the status")
    reason = status["last_rejection"]["reason"]
    assert "joint position limit" in reason and "panda_joint4" in reason and "above its upper limit" in reason
    assert status["state"] == "READY"
    assert_still(graph, t0, q0, "out-of-limit waypoint")


def test_out_of_workspace_waypoint_is_rejected_and_the_robot_does_not_move(graph):
    q0 = graph.reset_home()
    rejected = graph.count("rejected")
    t0 = time.monotonic()
    graph.send(THROUGH_TABLE, 2.0)
    status = graph.wait_status(lambda s: s["counts"]["rejected"] > rejected, "the rejection in the status")
    assert status["last_rejection"]["reason"].startswith("workspace bounds:")
    assert " z = " in status["last_rejection"]["reason"]
    assert_still(graph, t0, q0, "out-of-workspace waypoint")


def test_stale_waypoint_holds_the_robot_mid_move(graph):
    graph.reset_home()
    target = HOME.copy()
    target[0] += 0.8
    graph.send(target, 2.5)
    graph.wait_for(lambda: graph.joints()[0] > HOME[0] + 0.1, "the arm under way")
    graph.send(target, 2.5, stamp_offset=-5.0)  # a waypoint produced 5 s ago (a stuck planner's backlog)
    status = graph.wait_status(lambda s: s["state"] == "STALE_WAYPOINTS", "STALE_WAYPOINTS")
    assert "stale waypoint: stamped" in status["reason"] and status["accepting"]
    q = graph.wait_settled("the arm held")
    assert q[0] < target[0] - 0.1, "the hold did not stop the arm short of the waypoint"
    graph.send(target, 0.8)  # a fresh waypoint resumes
    graph.wait_status(lambda s: s["state"] == "READY", "READY after a fresh waypoint")
    graph.wait_for(lambda: abs(graph.joints()[0] - target[0]) < 0.01, "the arm at the waypoint")


def test_silent_waypoint_stream_stops_a_long_move(graph):
    graph.reset_home()
    target = HOME.copy()
    target[0] += 0.8
    graph.send(target, 3.0)  # and then nothing: the dead-man's switch holds after WAYPOINT_TIMEOUT
    status = graph.wait_status(lambda s: s["state"] == "STALE_WAYPOINTS", "STALE_WAYPOINTS")
    assert "waypoint stream silent" in status["reason"]
    q = graph.wait_settled("the arm held")
    assert q[0] < target[0] - 0.1, "the arm went on to the waypoint although the stream had stopped"


def test_estop_stops_refuses_until_released(graph):
    graph.reset_home()
    target = HOME.copy()
    target[0] += 0.8
    graph.send(target, 2.5)
    graph.wait_for(lambda: graph.joints()[0] > HOME[0] + 0.1, "the arm under way")
    response = graph.call(EStop, f"/{ESTOP_SERVICE}", EStop.Request(engage=True, reason="test: operator stop"))
    try:
        assert response.accepted and response.engaged and "operator stop" in response.message
        status = graph.wait_status(lambda s: s["state"] == "ESTOP", "ESTOP")
        assert status["estop"] == {"engaged": True, "reason": "test: operator stop"} and not status["accepting"]
        q_held = graph.wait_settled("the arm stopped")
        assert q_held[0] < target[0] - 0.1
        rejected = graph.count("rejected")
        t0 = time.monotonic()
        graph.send(HOME, 1.0)
        status = graph.wait_status(lambda s: s["counts"]["rejected"] > rejected, "the refusal")
        assert status["last_rejection"]["reason"] == "refused: e-stop engaged: test: operator stop"
        assert_still(graph, t0, q_held, "waypoint during e-stop")
    finally:
        response = graph.call(EStop, f"/{ESTOP_SERVICE}", EStop.Request(engage=False, reason="test done"))
    assert response.accepted and not response.engaged
    graph.wait_status(lambda s: s["state"] == "READY", "READY after release")
    graph.send(HOME, 1.0)
    graph.wait_for(lambda: np.abs(graph.joints()[:7] - HOME[:7]).max() < 0.01, "the arm back home after release")


def test_silent_controller_holds_and_refuses(graph):
    """Last: stops the simulator node (the robot's controller goes silent)."""
    graph.reset_home()
    graph.sim.send_signal(signal.SIGKILL)
    graph.sim.wait(10)
    status = graph.wait_status(lambda s: s["state"] == "CONTROLLER_TIMEOUT", "CONTROLLER_TIMEOUT")
    assert "/joint_states silent" in status["reason"] and not status["accepting"]
    assert status["last_hold"] is not None and "/joint_states silent" in status["last_hold"]["reason"]
    rejected = graph.count("rejected")
    graph.send(HOME, 1.0)
    status = graph.wait_status(lambda s: s["counts"]["rejected"] > rejected, "the refusal")
    assert status["last_rejection"]["reason"].startswith("refused: /joint_states silent")
    response = graph.call(EStop, f"/{ESTOP_SERVICE}", EStop.Request(engage=True, reason="test"))
    assert response.engaged
    response = graph.call(EStop, f"/{ESTOP_SERVICE}", EStop.Request(engage=False, reason="test"))
    assert not response.accepted and response.engaged and "release refused" in response.message
