"""``dexwm_hand_controller``: executes the safety layer's commands on the Allegro hand.

  sub /dexwm/safety/command             the safety node's approved moves and holds (23 joints; the 16 hand joints)
  sub /joint_states                     the hand's measured joints (ah_joint00..33)
  pub /<hand_controller_name>/commands  std_msgs/Float64MultiArray, 16 positions (allegro_hand_ros2 position
                                        controller), streamed at command_rate along the minimum-jerk move from the
                                        measured joints to the target over the approved duration

The Allegro position controller jumps to each command, so the move is streamed rather than sent as its end point.
This node decides nothing: what reaches it has been approved by ``dexwm_safety``.
"""

from __future__ import annotations


import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from dexwm_ros.controller_common import COMMAND_QOS, COMMAND_TOPIC, float_range, joint_positions, parse_command
from dexwm_robot.joint_names import HAND_JOINT_NAMES
from dexwm_ros.node_runner import run_node
from dexwm_hw.safety.config import node_section
from dexwm_hw.safety.motion import QuinticMove
from dexwm_robot.config import ConfigError

NODE_NAME = "dexwm_hand_controller"


class HandControllerNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        defaults = node_section(NODE_NAME)
        extra = sorted(set(defaults) - {"hand_controller_name", "command_rate"})
        if extra:
            raise ConfigError(f"controllers.yaml:{NODE_NAME}: unknown parameter(s) {extra}")
        d = ParameterDescriptor
        self.declare_parameter("hand_controller_name", str(defaults["hand_controller_name"]), d(
            description="Allegro position controller: 16 positions go to /<name>/commands", read_only=True,
            additional_constraints="a valid ROS name"))
        self.declare_parameter("command_rate", float(defaults["command_rate"]), d(
            description="Hz of the position stream along a move", read_only=True,
            floating_point_range=float_range(1.0, 500.0)))
        self.hand_topic = f"{self.get_parameter('hand_controller_name').value}/commands"
        self.pub_command = self.create_publisher(Float64MultiArray, self.hand_topic, 10)
        self.create_subscription(JointState, "joint_states", self._on_joint_state, 50)
        self.create_subscription(JointTrajectory, COMMAND_TOPIC, self._on_command, COMMAND_QOS)
        self._measured: np.ndarray | None = None
        self._move: QuinticMove | None = None
        self._move_start = 0.0
        self.create_timer(1.0 / float(self.get_parameter("command_rate").value), self._stream)
        self.get_logger().info(f"hand controller up: commands from {self.resolve_topic_name(COMMAND_TOPIC)} -> "
                               f"{self.resolve_topic_name(self.hand_topic)}")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg: JointState) -> None:
        q = joint_positions(msg.name, msg.position, HAND_JOINT_NAMES)
        if q is not None and np.all(np.isfinite(q)):
            self._measured = q

    def _on_command(self, msg: JointTrajectory) -> None:
        try:
            target, duration, hold = parse_command(msg, HAND_JOINT_NAMES)
        except ValueError as exc:
            self.get_logger().error(f"ignored command on {COMMAND_TOPIC}: {exc}")
            return
        if hold:  # stop streaming and command the held position at once
            self._move = None
            self.pub_command.publish(Float64MultiArray(data=target.tolist()))
            self.get_logger().warning("holding the hand at its last measured position")
            return
        if self._measured is None:
            self.get_logger().error("ignored command: no hand joint state received yet on /joint_states")
            return
        self._move = QuinticMove(self._measured, target, duration)
        self._move_start = self._now()
        self._stream()

    def _stream(self) -> None:
        if self._move is None:
            return
        elapsed = self._now() - self._move_start
        self.pub_command.publish(Float64MultiArray(data=self._move.position(elapsed).tolist()))
        if self._move.done(elapsed):
            self._move = None


def main(args: list[str] | None = None) -> int:
    return run_node(HandControllerNode, "dexwm_hand_controller_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
