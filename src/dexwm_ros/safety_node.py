"""``dexwm_safety``: the one place that decides whether a waypoint reaches the robot.

  sub /dexwm/joint_waypoint     trajectory_msgs/JointTrajectory: the 23 joints (any order), exactly one point whose
                                time_from_start is the requested duration; header.stamp is checked for staleness
                                (a zero stamp skips that check)
  sub /joint_states             sensor_msgs/JointState (the arm's and the hand's, together or in separate messages)
  sub <image_topic>             sensor_msgs/Image (only its arrival is used: camera watchdog)
  pub /dexwm/safety/command     approved moves and holds for the arm and hand controller nodes
  pub /dexwm/safety/status      std_msgs/String, JSON (state, reason, e-stop, last rejection, counts); latched,
                                published on every change and at status_rate
  srv /dexwm/estop              dexwm_interfaces/srv/EStop: engage (always accepted, latched) / release

The decisions are :class:`dexwm_hw.safety.supervisor.SafetySupervisor`'s (position and velocity limits, workspace
box by forward kinematics, watchdog, e-stop); this node only feeds it and publishes what it decides. Every
parameter is read-only: limits cannot be loosened while the robot runs.
"""

from __future__ import annotations

import json

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from dexwm_ros.controller_common import (
    COMMAND_QOS,
    COMMAND_TOPIC,
    ESTOP_SERVICE,
    STATUS_QOS,
    STATUS_TOPIC,
    WAYPOINT_TOPIC,
    command_message,
    float_range,
    int_range,
)
from dexwm_ros.conversions import duration_to_seconds
from dexwm_robot.joint_names import ALL_JOINT_NAMES
from dexwm_ros.node_runner import run_node
from dexwm_hw.safety.config import SAFETY_NODE_NAME, config_from_values, load_safety_config
from dexwm_hw.safety.limits import JointLimits
from dexwm_hw.safety.supervisor import Command, SafetySupervisor
from dexwm_hw.safety.workspace import WorkspaceBox
from dexwm_interfaces.srv import EStop
from dexwm_robot.config import ConfigError

_JOINTS = "23 values in the order panda_joint1..7, ah_joint10..13, 20..23, 30..33, 00..03"


class SafetyNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(SAFETY_NODE_NAME, **node_kwargs)
        self._names: list[str] = []
        d = self._declare
        cfg = load_safety_config()
        d("joint_position_lower", cfg.joint_position_lower, "lower joint position limits, rad", _JOINTS)
        d("joint_position_upper", cfg.joint_position_upper, "upper joint position limits, rad", _JOINTS)
        d("position_tolerance", cfg.position_tolerance, "a target up to this far (rad) outside a limit is clipped, "
          "further out it is rejected", rng=(0.0, 0.5))
        d("joint_velocity_limit", cfg.joint_velocity_limit, "joint speed limits of the executed minimum-jerk moves, "
          "rad/s; shorter requested durations are stretched", _JOINTS + ", each > 0")
        d("min_move_duration", cfg.min_move_duration, "shortest move, s", rng=(0.0, 5.0))
        d("workspace_min", cfg.workspace_min, "lower corner of the hand's workspace box in panda_link0, m",
          "3 values x, y, z below workspace_max")
        d("workspace_max", cfg.workspace_max, "upper corner of the hand's workspace box in panda_link0, m",
          "3 values x, y, z above workspace_min")
        d("workspace_points", cfg.workspace_points, "FK sites (dexwm_model.kinematics.PandaAllegroFK) that must stay "
          "inside the workspace box", "at least one site name, e.g. allegro/palm_center")
        d("workspace_tip_points", cfg.workspace_tip_points, "the fingertip sites among workspace_points, whose floor "
          "is workspace_tip_min_z instead of workspace_min's z", "names listed in workspace_points")
        d("workspace_tip_min_z", cfg.workspace_tip_min_z, "floor of the fingertip sites in panda_link0, m (a grasp "
          "presses the fingertip pads on the table)", "below workspace_max's z")
        d("workspace_path_samples", cfg.workspace_path_samples, "points checked along the joint-space path to the "
          "target (1 = the target alone)", irng=(1, 100))
        d("joint_states_timeout", cfg.joint_states_timeout, "s without /joint_states for any joint before the robot "
          "is held (CONTROLLER_TIMEOUT)", rng=(0.01, 10.0))
        d("image_timeout", cfg.image_timeout, "s without a camera image before the robot is held (CAMERA_TIMEOUT); "
          "0 disables the camera watchdog", rng=(0.0, 60.0))
        d("image_topic", cfg.image_topic, "camera image topic watched by the camera watchdog", "a valid ROS topic name")
        d("waypoint_timeout", cfg.waypoint_timeout, "dead-man's switch: s without a new waypoint while a move runs "
          "before the robot is held (STALE_WAYPOINTS); 0 disables it", rng=(0.0, 60.0))
        d("max_waypoint_age", cfg.max_waypoint_age, "waypoints stamped longer ago (or further in the future) are "
          "stale: rejected and the robot is held; 0 disables the check", rng=(0.0, 60.0))
        d("hold_duration", cfg.hold_duration, "s given to the controllers to come to rest on a hold", rng=(0.01, 5.0))
        d("watchdog_rate", cfg.watchdog_rate, "watchdog checks per second, Hz", rng=(1.0, 1000.0))
        d("status_rate", cfg.status_rate, "periodic status messages per second, Hz", rng=(0.1, 100.0))
        values = {name: self.get_parameter(name).value for name in self._names}
        self.cfg = config_from_values(values, f"parameters of {SAFETY_NODE_NAME}")

        limits = JointLimits(ALL_JOINT_NAMES, self.cfg.joint_position_lower, self.cfg.joint_position_upper,
                             self.cfg.joint_velocity_limit, self.cfg.position_tolerance, self.cfg.min_move_duration)
        from dexwm_model.kinematics.panda_allegro import PandaAllegroFK  # torch + the scene: only when needed

        try:
            workspace = WorkspaceBox.from_fk(PandaAllegroFK.default(), self.cfg.point_lower(), self.cfg.workspace_max,
                                             self.cfg.workspace_points, self.cfg.workspace_path_samples)
        except ValueError as exc:
            raise ConfigError(f"parameter {exc}") from exc
        self.supervisor = SafetySupervisor(
            ALL_JOINT_NAMES, limits, workspace, joint_states_timeout=self.cfg.joint_states_timeout,
            image_timeout=self.cfg.image_timeout, waypoint_timeout=self.cfg.waypoint_timeout,
            max_waypoint_age=self.cfg.max_waypoint_age, hold_duration=self.cfg.hold_duration)

        self.pub_command = self.create_publisher(JointTrajectory, COMMAND_TOPIC, COMMAND_QOS)
        self.pub_status = self.create_publisher(String, STATUS_TOPIC, STATUS_QOS)
        self.create_subscription(JointState, "joint_states", self._on_joint_state, 50)
        if self.cfg.image_timeout > 0:
            self.create_subscription(Image, self.cfg.image_topic, self._on_image, 5, raw=True)
        self.create_subscription(JointTrajectory, WAYPOINT_TOPIC, self._on_waypoint, 10)
        self.create_service(EStop, ESTOP_SERVICE, self._on_estop)
        self._last_state = None
        self.create_timer(1.0 / self.cfg.watchdog_rate, self._on_watchdog)
        self.create_timer(1.0 / self.cfg.status_rate, self._publish_status)
        self._publish_status()
        self.get_logger().info(
            f"safety layer up: waypoints on {self.resolve_topic_name(WAYPOINT_TOPIC)}, commands on "
            f"{self.resolve_topic_name(COMMAND_TOPIC)}, e-stop {self.resolve_service_name(ESTOP_SERVICE)}; "
            f"joint_states timeout {self.cfg.joint_states_timeout:g} s, camera timeout {self.cfg.image_timeout:g} s "
            f"({self.resolve_topic_name(self.cfg.image_topic)}), waypoint timeout {self.cfg.waypoint_timeout:g} s")

    # ------------------------------------------------------------------------------------------- parameters
    def _declare(self, name: str, default, description: str, constraints: str = "", rng=None, irng=None) -> None:
        if isinstance(default, list) and default and isinstance(default[0], (int, float)):
            default = [float(x) for x in default]
        elif isinstance(default, float) or (rng is not None and isinstance(default, int)):
            default = float(default)
        descriptor = ParameterDescriptor(description=description, read_only=True,
                                         additional_constraints=constraints)
        if rng is not None:
            descriptor.floating_point_range = float_range(*rng)
        if irng is not None:
            descriptor.integer_range = int_range(*irng)
        self.declare_parameter(name, default, descriptor)
        self._names.append(name)

    # --------------------------------------------------------------------------------------------- helpers
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _send(self, command: Command) -> None:
        self.pub_command.publish(command_message(ALL_JOINT_NAMES, command.positions, command.duration, command.hold,
                                                 self.get_clock().now().to_msg()))
        if command.hold:
            self.get_logger().warning(f"holding the robot: {command.reason}")

    def _publish_status(self) -> None:
        status = self.supervisor.status(self._now())
        if status["state"] != self._last_state:
            self.get_logger().info(f"state {self._last_state or 'START'} -> {status['state']}"
                                   + (f": {status['reason']}" if status["reason"] else ""))
        self.pub_status.publish(String(data=json.dumps(status)))
        self._last_state = status["state"]

    # ------------------------------------------------------------------------------------------- callbacks
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self.supervisor.on_joint_state(msg.name, msg.position, self._now())
        except ValueError as exc:
            self.get_logger().error(f"ignored /joint_states message: {exc}", throttle_duration_sec=5.0)

    def _on_image(self, _raw: bytes) -> None:
        self.supervisor.on_image(self._now())

    def _on_watchdog(self) -> None:
        hold = self.supervisor.tick(self._now())
        if hold is not None:
            self._send(hold)
        if self.supervisor.state != self._last_state:
            self._publish_status()

    def _on_waypoint(self, msg: JointTrajectory) -> None:
        now = self._now()
        stamp = msg.header.stamp
        stamp_s = None if stamp.sec == 0 and stamp.nanosec == 0 else stamp.sec + 1e-9 * stamp.nanosec
        if len(msg.points) != 1:
            decision = self.supervisor.reject(f"malformed waypoint: expected exactly 1 point (one 23-joint waypoint "
                                              f"with its time_from_start), got {len(msg.points)}", now)
        else:
            point = msg.points[0]
            decision = self.supervisor.on_waypoint(list(msg.joint_names), list(point.positions),
                                                   duration_to_seconds(point.time_from_start), stamp_s, now)
            if decision.command is not None:
                self._send(decision.command)
        if not decision.accepted:
            self.get_logger().warning(f"waypoint rejected: {decision.reason}")
        elif decision.reason:
            self.get_logger().info(f"waypoint accepted: {decision.reason}")
        self._publish_status()

    def _on_estop(self, request: EStop.Request, response: EStop.Response) -> EStop.Response:
        now = self._now()
        if request.engage:
            message, hold = self.supervisor.engage_estop(request.reason, now)
            if hold is not None:
                self._send(hold)
            response.accepted = True
            self.get_logger().error(message)
        else:
            response.accepted, message = self.supervisor.release_estop(request.reason, now)
            if response.accepted:
                self.get_logger().info(message)
            else:
                self.get_logger().warning(message)
        response.engaged = self.supervisor.estop_engaged
        response.message = message
        self._publish_status()
        return response


def main(args: list[str] | None = None) -> int:
    return run_node(SafetyNode, "dexwm_safety_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
