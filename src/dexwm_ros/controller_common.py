"""Topics, messages and parameter helpers shared by the safety node and the arm / hand controller nodes.

Graph:
  planner ── /dexwm/joint_waypoint (JointTrajectory, 23 joints, 1 point) ──▶ dexwm_safety
  dexwm_safety ── /dexwm/safety/command (JointTrajectory, 23 joints, 1 point) ──▶ arm + hand controller nodes
  dexwm_safety ── /dexwm/safety/status (std_msgs/String, JSON; latched) and srv /dexwm/estop (EStop)
  arm controller ── /<arm_controller_name>/joint_trajectory ──▶ ros2_control JointTrajectoryController
  hand controller ── /<hand_controller_name>/commands ──▶ allegro_hand_ros2 position controller
Only the safety node publishes ``/dexwm/safety/command``; the controllers execute nothing else. A command's point
is reached at its ``time_from_start`` (already within the velocity limits); ``header.frame_id == "hold"`` marks a
hold (stop at the given, last measured, positions).
"""

from __future__ import annotations

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dexwm_ros.conversions import duration_to_seconds, seconds_to_duration

WAYPOINT_TOPIC = "dexwm/joint_waypoint"
COMMAND_TOPIC = "dexwm/safety/command"
STATUS_TOPIC = "dexwm/safety/status"
ESTOP_SERVICE = "dexwm/estop"
HOLD_FRAME = "hold"

COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
STATUS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def float_range(lo: float, hi: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]


def int_range(lo: int, hi: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]


def command_message(names, positions: np.ndarray, duration: float, hold: bool, stamp) -> JointTrajectory:
    msg = JointTrajectory(header=Header(stamp=stamp, frame_id=HOLD_FRAME if hold else ""), joint_names=list(names))
    msg.points = [JointTrajectoryPoint(positions=[float(x) for x in positions],
                                       time_from_start=seconds_to_duration(duration))]
    return msg


def parse_command(msg: JointTrajectory, wanted: tuple[str, ...]) -> tuple[np.ndarray, float, bool]:
    """(positions of ``wanted`` joints, duration, hold) of a safety command; ``ValueError`` when malformed."""
    if len(msg.points) != 1:
        raise ValueError(f"expected exactly 1 point, got {len(msg.points)}")
    point = msg.points[0]
    names = list(msg.joint_names)
    if len(point.positions) != len(names):
        raise ValueError(f"{len(names)} joint names but {len(point.positions)} positions")
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"missing joint(s) {missing}")
    index = {n: i for i, n in enumerate(names)}
    positions = np.array([point.positions[index[n]] for n in wanted], dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or inf")
    duration = duration_to_seconds(point.time_from_start)
    if duration < 0:
        raise ValueError(f"time_from_start must be >= 0, got {duration}")
    return positions, duration, msg.header.frame_id == HOLD_FRAME


def joint_positions(names, positions, wanted: tuple[str, ...]) -> np.ndarray | None:
    """Positions of the ``wanted`` joints from a JointState's name/position lists; None if any is absent."""
    index = {n: i for i, n in enumerate(names)}
    if any(n not in index for n in wanted) or len(positions) < len(names):
        return None
    return np.array([positions[index[n]] for n in wanted], dtype=np.float64)
