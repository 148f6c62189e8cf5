"""``dexwm_arm_controller``: executes the safety layer's commands on the Franka arm.

  sub /dexwm/safety/command     the safety node's approved moves and holds (23 joints; the 7 arm joints are used)
  sub /joint_states             the arm's measured joints (panda_joint1..7)
Back-end ``ros2_control`` (franka_ros2, or the simulator node):
  pub /<arm_controller_name>/joint_trajectory   trajectory_msgs/JointTrajectory for the JointTrajectoryController:
                                the minimum-jerk move from the measured joints to the target over the approved
                                duration, sampled every point_period s (positions and velocities)
Back-end ``libfranka`` (no ros2_control; :class:`dexwm_hw.franka.arm.FrankaArm` drives the arm at 1 kHz):
  pub /joint_states             the arm's joints, at joint_state_rate

This node decides nothing: what reaches it has been approved by ``dexwm_safety``, the only publisher of
``/dexwm/safety/command``.
"""

from __future__ import annotations

import time

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexwm_ros import conversions as conv
from dexwm_ros.controller_common import (
    COMMAND_QOS,
    COMMAND_TOPIC,
    float_range,
    joint_positions,
    parse_command,
)
from dexwm_robot.joint_names import ARM_JOINT_NAMES
from dexwm_ros.node_runner import run_node
from dexwm_hw.safety.config import node_section
from dexwm_hw.safety.motion import QuinticMove
from dexwm_robot.config import ConfigError

NODE_NAME = "dexwm_arm_controller"
COMMAND_WAIT_S = 0.5  # a command that arrives before the first joint state is executed if one comes this soon
BACKENDS = ("ros2_control", "libfranka")


def sampled_trajectory(start: np.ndarray, goal: np.ndarray, duration: float, period: float) -> JointTrajectory:
    """The rest-to-rest minimum-jerk move as JointTrajectory points every ``period`` s (the last at ``duration``)."""
    move = QuinticMove(start, goal, duration)
    n = max(1, int(np.ceil(duration / period - 1e-9)))
    times = np.minimum(np.arange(1, n + 1) * period, duration) if duration > 0 else np.array([period])
    msg = JointTrajectory(joint_names=list(ARM_JOINT_NAMES))
    msg.points = [JointTrajectoryPoint(positions=[float(x) for x in move.position(t)],
                                       velocities=[float(x) for x in move.velocity(t)],
                                       time_from_start=conv.seconds_to_duration(t)) for t in times]
    return msg


class ArmControllerNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        defaults = node_section(NODE_NAME)
        d = ParameterDescriptor
        self.declare_parameter("arm_controller_name", str(defaults["arm_controller_name"]), d(
            description="ros2_control JointTrajectoryController: trajectories go to /<name>/joint_trajectory",
            read_only=True, additional_constraints="a valid ROS name"))
        self.declare_parameter("point_period", float(defaults["point_period"]), d(
            description="s between the points of a trajectory sent to the controller", read_only=True,
            floating_point_range=float_range(0.005, 0.5)))
        self.declare_parameter("backend", str(defaults["backend"]), d(
            description="ros2_control (franka_ros2 or the simulator node) or libfranka (pylibfranka, 1 kHz loop)",
            read_only=True, additional_constraints=f"one of {BACKENDS}"))
        self.declare_parameter("robot_ip", str(defaults["robot_ip"]), d(
            description="libfranka back-end: the robot's FCI address", read_only=True))
        self.declare_parameter("franka_realtime", str(defaults["franka_realtime"]), d(
            description="libfranka back-end: enforce (real robot on a real-time kernel) or ignore (franka-sim)",
            read_only=True, additional_constraints="enforce or ignore"))
        self.declare_parameter("joint_state_rate", float(defaults["joint_state_rate"]), d(
            description="libfranka back-end: Hz of the arm's /joint_states", read_only=True,
            floating_point_range=float_range(1.0, 1000.0)))
        extra = sorted(set(defaults) - {"arm_controller_name", "point_period", "backend", "robot_ip",
                                         "franka_realtime", "joint_state_rate"})
        if extra:
            raise ConfigError(f"controllers.yaml:{NODE_NAME}: unknown parameter(s) {extra}")
        self.backend = self._param("backend")
        if self.backend not in BACKENDS:
            raise ConfigError(f"parameter backend: expected one of {BACKENDS}, got {self.backend!r}")
        self.period = float(self._param("point_period"))
        self._measured: np.ndarray | None = None
        # a command that arrived before the first joint state (start-up): (target, duration, hold, arrival)
        self._waiting: tuple[np.ndarray, float, bool, float] | None = None
        self.arm = None
        if self.backend == "ros2_control":
            self.arm_topic = f"{self._param('arm_controller_name')}/joint_trajectory"
            self.pub_trajectory = self.create_publisher(JointTrajectory, self.arm_topic, 10)
            self.create_subscription(JointState, "joint_states", self._on_joint_state, 50)
            target = self.resolve_topic_name(self.arm_topic)
        else:
            from dexwm_hw.franka.arm import FrankaArm, FrankaArmError

            realtime = self._param("franka_realtime")
            if realtime not in ("enforce", "ignore"):
                raise ConfigError(f"parameter franka_realtime: expected enforce or ignore, got {realtime!r}")
            try:
                self.arm = FrankaArm(self._param("robot_ip"), realtime)
                self.arm.start()
            except FrankaArmError as exc:
                raise ConfigError(f"libfranka back-end: {exc}") from exc
            self.pub_joint_states = self.create_publisher(JointState, "joint_states", 10)
            self.create_timer(1.0 / float(self._param("joint_state_rate")), self._publish_franka_state)
            target = f"libfranka at {self._param('robot_ip')}"
        self.create_subscription(JointTrajectory, COMMAND_TOPIC, self._on_command, COMMAND_QOS)
        self.get_logger().info(f"arm controller up ({self.backend}): commands from "
                               f"{self.resolve_topic_name(COMMAND_TOPIC)} -> {target}")

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _on_joint_state(self, msg: JointState) -> None:
        q = joint_positions(msg.name, msg.position, ARM_JOINT_NAMES)
        if q is not None and np.all(np.isfinite(q)):
            self._measured = q
            if self._waiting is not None:
                target, duration, hold, arrived = self._waiting
                self._waiting = None
                if time.monotonic() - arrived <= COMMAND_WAIT_S:
                    self._send_trajectory(target, duration, hold)
                else:
                    self.get_logger().error(f"dropped a command that waited more than {COMMAND_WAIT_S:g} s for the "
                                            "first arm joint state")

    def _on_command(self, msg: JointTrajectory) -> None:
        try:
            target, duration, hold = parse_command(msg, ARM_JOINT_NAMES)
        except ValueError as exc:
            self.get_logger().error(f"ignored command on {COMMAND_TOPIC}: {exc}")
            return
        if self.arm is not None:
            self._execute_franka(target, duration, hold)
            return
        if self._measured is None:
            self._waiting = (target, duration, hold, time.monotonic())
            self.get_logger().warning(f"command waits for the first arm joint state on /joint_states (dropped "
                                      f"after {COMMAND_WAIT_S:g} s)")
            return
        self._send_trajectory(target, duration, hold)

    def _send_trajectory(self, target: np.ndarray, duration: float, hold: bool) -> None:
        start = target if hold else self._measured
        self.pub_trajectory.publish(sampled_trajectory(start, target, duration, self.period))
        if hold:
            self.get_logger().warning("holding the arm at its last measured position")

    # ----------------------------------------------------------------------------------------- libfranka
    def _execute_franka(self, target: np.ndarray, duration: float, hold: bool) -> None:
        from dexwm_hw.franka.arm import FrankaArmError

        try:
            if not self.arm.running:
                self.arm.start()  # after a robot error: recover and take control again
            if hold:
                self.arm.hold(duration)
            else:
                self.arm.move(target, duration)
        except FrankaArmError as exc:
            self.get_logger().error(f"libfranka: {exc}")

    def _publish_franka_state(self) -> None:
        if self.arm.error is not None:
            self.get_logger().error(f"libfranka control loop stopped: {self.arm.error}", throttle_duration_sec=5.0)
        try:
            state = self.arm.state()
        except Exception as exc:  # the robot is unreachable: publishing nothing lets the safety watchdog fire
            self.get_logger().error(f"libfranka: cannot read the robot state: {exc}", throttle_duration_sec=5.0)
            return
        self.pub_joint_states.publish(conv.joint_state(ARM_JOINT_NAMES, state.q, state.dq, np.zeros(7),
                                                       self.get_clock().now().to_msg()))

    def close(self) -> None:
        if self.arm is not None:
            self.arm.close()


def main(args: list[str] | None = None) -> int:
    return run_node(ArmControllerNode, "dexwm_arm_controller_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
