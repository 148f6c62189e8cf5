"""``dexwm_description_node``: the robot's URDF on ``/robot_description``, the way robot_state_publisher offers it.

  pub ``/robot_description``   std_msgs/String, QoS reliable + transient local (depth 1): late subscribers such as
                               RViz's RobotModel get the description as soon as they connect
  param ``robot_description``  the same XML (read-only), as robot_state_publisher exposes it

With ``publish_tf`` it also does robot_state_publisher's other job (that package is not installable here):
  sub ``/joint_states``        sensor_msgs/JointState (partial messages, e.g. arm and hand apart, are fine)
  pub ``/tf``                  each movable joint's child link in its parent link, stamped like the joint states
  pub ``/tf_static``           the fixed joints (flange, hand mount, fingertips, hand keypoint frames), latched
Frames in ``tf_skip_frames`` are left to whoever already publishes them (with the simulator: ``panda_link1..7``).

Parameters (defaults in ``config/description.yaml``): ``urdf_file`` (relative names resolve in the project's
``urdf/`` folder; the file is written by ``python -m dexwm_hw.description``), ``publish_tf``, ``tf_skip_frames``.
The URDF is parsed before it is published: a malformed file or one whose movable joints are not the 23 robot
joints stops the node (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from tf2_msgs.msg import TFMessage

from dexwm_hw.description.generate import urdf_path
from dexwm_hw.description.urdf_model import UrdfRobot, axis_angle_matrix, parse_urdf
from dexwm_ros import conversions as conv
from dexwm_robot.joint_names import ALL_JOINT_NAMES
from dexwm_ros.node_runner import run_node
from dexwm_robot.config import ConfigError, from_dict, load_yaml

NODE_NAME = "dexwm_description"
PARAMS_FILE = "description.yaml"
TOPIC = "/robot_description"
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class DescriptionNodeConfig:
    urdf_file: str
    publish_tf: bool


def load_node_config(path: str = PARAMS_FILE) -> DescriptionNodeConfig:
    data = load_yaml(path)
    try:
        section = data[NODE_NAME]["ros__parameters"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: expected '{NODE_NAME}: {{ros__parameters: {{...}}}}'") from exc
    return from_dict(DescriptionNodeConfig, section, f"{path}:{NODE_NAME}")


def read_description(name: str) -> tuple[str, UrdfRobot]:
    """The URDF text of ``name`` and its tree, after checking its movable joints are the robot's 23."""
    path = urdf_path(name)
    if not path.is_file():
        raise ConfigError(f"parameter urdf_file: {path} does not exist (write it: python -m dexwm_hw.description)")
    text = path.read_text()
    try:
        robot = parse_urdf(text)
    except ValueError as exc:
        raise ConfigError(f"parameter urdf_file: {path}: {exc}") from exc
    joints = sorted(j.name for j in robot.movable_joints)
    if joints != sorted(ALL_JOINT_NAMES):
        raise ConfigError(f"parameter urdf_file: {path}: movable joints {joints} are not the robot's "
                          f"{sorted(ALL_JOINT_NAMES)}")
    return text, robot


class DescriptionNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        defaults = load_node_config()
        self.declare_parameter("urdf_file", defaults.urdf_file, ParameterDescriptor(
            description="URDF file; relative names resolve in the project's urdf/ folder", read_only=True))
        self.urdf_file = str(urdf_path(self.get_parameter("urdf_file").value))
        self.xml, self.robot = read_description(self.urdf_file)
        self.declare_parameter("robot_description", self.xml, ParameterDescriptor(
            description="the published URDF (read-only)", read_only=True))
        self.declare_parameter("publish_tf", defaults.publish_tf, ParameterDescriptor(
            description="also publish the URDF's joints on /tf and /tf_static from /joint_states", read_only=True))
        self.declare_parameter("tf_skip_frames", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="child frames not to publish (someone else does); default none", read_only=True))
        self.publisher = self.create_publisher(String, TOPIC, LATCHED)
        self.publisher.publish(String(data=self.xml))
        self.get_logger().info(f"robot description from {self.urdf_file} ({len(self.xml)} characters) "
                               f"on {TOPIC} (latched)")
        if self.get_parameter("publish_tf").value:
            self._start_tf()

    def _start_tf(self) -> None:
        skip = self.get_parameter_or("tf_skip_frames", Parameter("tf_skip_frames", value=[])).value or []
        unknown = sorted(set(skip) - set(self.robot.links))
        if unknown:
            raise ConfigError(f"parameter tf_skip_frames: {unknown} are not links of {self.urdf_file}")
        joints = [j for j in self.robot.joints if j.child not in skip]
        self._moving = {j.name: j for j in joints if j.type != "fixed"}
        for j in self._moving.values():
            if j.type not in ("revolute", "continuous"):
                raise ConfigError(f"{self.urdf_file}: joint {j.name} is {j.type}; only revolute joints are published")
        stamp = self.get_clock().now().to_msg()
        static = [conv.transform_stamped(j.parent, j.child, j.origin[:3, 3], j.origin[:3, :3], stamp)
                  for j in joints if j.type == "fixed"]
        self.pub_tf = self.create_publisher(TFMessage, "/tf", 100)
        self.pub_tf_static = self.create_publisher(TFMessage, "/tf_static", LATCHED)
        self.pub_tf_static.publish(TFMessage(transforms=static))
        self.create_subscription(JointState, "joint_states", self._on_joint_states, 10)
        self.get_logger().info(f"publishing {len(self._moving)} joints on /tf from /joint_states and {len(static)} "
                               f"fixed joints on /tf_static" + (f"; leaving {', '.join(skip)} to others" if skip
                                                                 else ""))

    def _on_joint_states(self, msg: JointState) -> None:
        if len(msg.position) != len(msg.name):
            self.get_logger().error(f"/joint_states with {len(msg.name)} names but {len(msg.position)} positions: "
                                    "ignored")
            return
        transforms = []
        for name, q in zip(msg.name, msg.position):
            j = self._moving.get(name)
            if j is None:
                continue
            R = j.origin[:3, :3] @ axis_angle_matrix(j.axis, float(q))
            transforms.append(conv.transform_stamped(j.parent, j.child, j.origin[:3, 3], R, msg.header.stamp))
        if transforms:
            self.pub_tf.publish(TFMessage(transforms=transforms))


def main(args: list[str] | None = None) -> int:
    return run_node(DescriptionNode, "dexwm_description_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
