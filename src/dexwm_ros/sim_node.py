"""The simulated Panda + Allegro as a ROS 2 node behind exactly the real drivers' interfaces.

Arm (ros2_control JointTrajectoryController, franka_ros2 names):
  sub ``/<arm_controller_name>/joint_trajectory``   trajectory_msgs/JointTrajectory, joints panda_joint1..7
Hand (allegro_hand_ros2 position controller):
  sub ``/<hand_controller_name>/commands``          std_msgs/Float64MultiArray, 16 positions ah_joint00..33
State, camera (RealSense naming), TF:
  pub ``/joint_states``                             sensor_msgs/JointState, 23 joints, at the control rate
  pub ``/camera/color/image_raw``, ``/camera/color/camera_info``   rgb8 + pinhole info, same stamp
  pub ``/tf`` (arm links, hand keypoint frames), ``/tf_static`` (world->panda_link0, camera optical frame; latched)
Simulator extras:
  pub ``/dexwm/sim/object_poses`` geometry_msgs/PoseArray (frame ``world``), ``/dexwm/sim/object_names`` (latched
  JSON), srv ``/dexwm/sim/reset`` std_srvs/Trigger (uses the ``seed`` and ``start_joints`` parameters).

A timer at the control rate (scaled by ``real_time_factor``) advances the simulator one tick; a camera frame is
rendered only on the ticks where one is due (``camera_rate_hz`` of simulated time). All callbacks run on one
single-threaded executor, so the simulator is never touched concurrently.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # must precede the first mujoco import (offscreen rendering)

import json  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from geometry_msgs.msg import PoseArray, TransformStamped  # noqa: E402
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, Header, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from dexwm_ros import conversions as conv  # noqa: E402
from dexwm_robot.joint_names import (  # noqa: E402
    ALL_JOINT_NAMES,
    ARM_BASE_FRAME,
    ARM_LINK_FRAMES,
    CAMERA_OPTICAL_FRAME,
    HAND_KEYPOINT_FRAME_PREFIX,
    NUM_ARM_JOINTS,
    NUM_HAND_JOINTS,
    WORLD_FRAME,
    arm_indices,
)
from dexwm_ros.trajectory import CombinedSetpoint, HermiteTrajectory, plan_trajectory  # noqa: E402
from dexwm_ros.node_runner import run_node
from dexwm_hw.sim.robot import PandaAllegroSim  # noqa: E402
from dexwm_robot.scene import KEYPOINT_SITES, load_sim_config  # noqa: E402
from dexwm_robot.config import ConfigError, from_dict, load_yaml  # noqa: E402

NODE_NAME = "dexwm_sim"
PARAMS_FILE = "sim_node.yaml"
IMAGE_TOPIC = "camera/color/image_raw"
CAMERA_INFO_TOPIC = "camera/color/camera_info"
OBJECT_POSES_TOPIC = "dexwm/sim/object_poses"
OBJECT_NAMES_TOPIC = "dexwm/sim/object_names"
RESET_SERVICE = "dexwm/sim/reset"
# MuJoCo bodies behind the TF frames panda_link0..7
_ARM_BODIES = tuple(f"panda/link{i}" for i in range(8))


@dataclass
class SimNodeConfig:
    """The node's parameters (defaults: ``config/sim_node.yaml``, section ``dexwm_sim.ros__parameters``)."""

    seed: int
    camera_rate_hz: float
    real_time_factor: float
    arm_controller_name: str
    hand_controller_name: str
    sim_config: str
    publish_keypoint_frames: bool


def load_node_config(path: str = PARAMS_FILE) -> SimNodeConfig:
    data = load_yaml(path)
    try:
        section = data[NODE_NAME]["ros__parameters"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: expected '{NODE_NAME}: {{ros__parameters: {{...}}}}'") from exc
    return from_dict(SimNodeConfig, section, f"{path}:{NODE_NAME}")


def _float_range(lo: float, hi: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]


def _int_range(lo: int, hi: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=lo, to_value=hi, step=1)]


class SimNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        defaults = load_node_config()
        d = ParameterDescriptor
        self.declare_parameter("seed", defaults.seed, d(
            description="object layout seed of every reset (/dexwm/sim/reset); settable at run time",
            integer_range=_int_range(0, 2**31 - 1)))
        self.declare_parameter("camera_rate_hz", defaults.camera_rate_hz, d(
            description="camera frames per second of simulated time (rendered only when due)",
            floating_point_range=_float_range(0.1, 60.0)))
        self.declare_parameter("real_time_factor", defaults.real_time_factor, d(
            description="simulated seconds per wall-clock second: 1.0 = real time, larger = faster",
            floating_point_range=_float_range(0.05, 50.0)))
        self.declare_parameter("arm_controller_name", defaults.arm_controller_name, d(
            description="JointTrajectoryController name: commands arrive on /<name>/joint_trajectory",
            read_only=True, additional_constraints="a valid ROS name"))
        self.declare_parameter("hand_controller_name", defaults.hand_controller_name, d(
            description="Allegro position controller name: commands arrive on /<name>/commands (16 values)",
            read_only=True, additional_constraints="a valid ROS name"))
        self.declare_parameter("sim_config", defaults.sim_config, d(
            description="simulator parameter file (config/sim.yaml); relative names resolve in the config folder",
            read_only=True))
        self.declare_parameter("publish_keypoint_frames", defaults.publish_keypoint_frames, d(
            description="also publish the 17 Allegro keypoint frames (allegro_<site>) on /tf"))

        scene, camera = load_sim_config(self._param("sim_config"))
        self.declare_parameter("control_rate", float(scene.control_rate_hz), d(
            description="controller ticks per second of simulated time (from config/sim.yaml, read-only)",
            read_only=True, floating_point_range=_float_range(1.0, 1000.0)))
        if abs(self._param("control_rate") - scene.control_rate_hz) > 1e-9:
            raise ConfigError(f"parameter control_rate: read-only, comes from {self._param('sim_config')} "
                              f"(scene.control_rate_hz = {scene.control_rate_hz}); got {self._param('control_rate')}")

        self.sim = PandaAllegroSim(scene, camera)
        self.declare_parameter("start_joints", [float(x) for x in scene.home], d(
            description="the 23 joint positions (panda_joint1..7, ah_joint00..33) every reset starts from; "
                        "default: the home pose of the simulator config; settable at run time",
            additional_constraints="23 finite values inside the joint limits"))
        self._start_joints()  # a bad value stops the node here, with the reason
        self.declare_parameter("object_names", self.sim.object_names, d(
            description="order of the poses on /dexwm/sim/object_poses (from the simulator, read-only)",
            read_only=True))
        self._link_bodies = [self.sim.model.body(b).id for b in _ARM_BODIES]
        self._link0 = self._link_bodies[0]
        self._keypoint_sites = [(self.sim.model.site(f"allegro/{s}").id, HAND_KEYPOINT_FRAME_PREFIX + s)
                                for s in KEYPOINT_SITES]
        # /tf messages are built once and updated in place at every tick
        self._tf_links = [TransformStamped(header=Header(frame_id=ARM_LINK_FRAMES[i - 1]),
                                           child_frame_id=ARM_LINK_FRAMES[i]) for i in range(1, len(_ARM_BODIES))]
        self._tf_keypoints = [TransformStamped(header=Header(frame_id=ARM_BASE_FRAME), child_frame_id=frame)
                              for _, frame in self._keypoint_sites]

        # publishers
        qos_latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                 reliability=ReliabilityPolicy.RELIABLE)
        self.pub_joints = self.create_publisher(JointState, "joint_states", 10)
        self.pub_image = self.create_publisher(Image, IMAGE_TOPIC, 5)
        self.pub_info = self.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, 5)
        self.pub_tf = self.create_publisher(TFMessage, "/tf", 100)
        self.pub_tf_static = self.create_publisher(TFMessage, "/tf_static", qos_latched)
        self.pub_objects = self.create_publisher(PoseArray, OBJECT_POSES_TOPIC, 10)
        self.pub_object_names = self.create_publisher(String, OBJECT_NAMES_TOPIC, qos_latched)

        # driver command interfaces
        arm_name, hand_name = self._param("arm_controller_name"), self._param("hand_controller_name")
        self.arm_topic = f"{arm_name}/joint_trajectory"
        self.hand_topic = f"{hand_name}/commands"
        self.create_subscription(JointTrajectory, self.arm_topic, self._on_arm_trajectory, 10)
        self.create_subscription(Float64MultiArray, self.hand_topic, self._on_hand_command, 10)
        self.create_service(Trigger, RESET_SERVICE, self._on_reset)

        self._profile: CombinedSetpoint | None = None
        self._arm_curve: tuple[HermiteTrajectory, float] | None = None
        self._hand_curve: tuple[HermiteTrajectory, float] | None = None
        self._next_frame_time = 0.0
        self.stats = {"ticks": 0, "frames": 0, "started": time.perf_counter()}
        self._reset(int(self._param("seed")))

        self.add_post_set_parameters_callback(self._apply_parameters)
        self._timer = None
        self._restart_timer()
        self.get_logger().info(
            f"simulated Panda + Allegro up: control {scene.control_rate_hz:g} Hz, camera "
            f"{self._param('camera_rate_hz'):g} Hz, real-time factor {self._param('real_time_factor'):g}; "
            f"arm on {self.resolve_topic_name(self.arm_topic)}, hand on {self.resolve_topic_name(self.hand_topic)}")

    # ------------------------------------------------------------------------------------------ parameters
    def _param(self, name: str):
        return self.get_parameter(name).value

    def _apply_parameters(self, params: list[Parameter]) -> None:
        """Re-time the node after a run-time change (rclpy has already enforced the ranges and static types)."""
        names = {p.name for p in params}
        if "real_time_factor" in names:
            self._restart_timer()
        if "camera_rate_hz" in names:
            self._next_frame_time = self.sim.time

    def _restart_timer(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
        period = self.sim.control_dt / float(self._param("real_time_factor"))
        self._timer = self.create_timer(period, self._tick)

    # ------------------------------------------------------------------------------------------- commands
    def _setpoint_now(self) -> tuple[np.ndarray, np.ndarray]:
        """Current 23-joint set-point and set-point velocity (what the servos are tracking now)."""
        if self._profile is None:
            return self.sim.commanded, np.zeros(len(ALL_JOINT_NAMES))
        return self._profile.at(self.sim.time), self._profile.velocity_at(self.sim.time)

    def _follow(self) -> None:
        q, _ = self._setpoint_now()
        now = self.sim.time
        hold = lambda v: (HermiteTrajectory([0.0], v[None], np.zeros((1, v.size))), now)  # noqa: E731
        arm = self._arm_curve or hold(q[:NUM_ARM_JOINTS])
        hand = self._hand_curve or hold(q[NUM_ARM_JOINTS:])
        self._arm_curve, self._hand_curve = arm, hand
        self._profile = CombinedSetpoint(now, arm[0], arm[1], hand[0], hand[1])
        self.sim.follow(self._profile)

    def _on_arm_trajectory(self, msg: JointTrajectory) -> None:
        try:
            names, times, positions, velocities = conv.trajectory_arrays(msg)
            idx = arm_indices(names)
        except ValueError as exc:
            self.get_logger().error(f"rejected arm trajectory on {self.arm_topic}: {exc}")
            return
        q, v = self._setpoint_now()
        arm = slice(0, NUM_ARM_JOINTS)
        full = np.tile(q[arm], (len(times), 1))
        full[:, idx] = positions
        full_vel = None
        if velocities is not None:
            full_vel = np.zeros_like(full)
            full_vel[:, idx] = velocities
        low, high = self.sim.joint_low[arm], self.sim.joint_high[arm]
        if np.any(full < low - 1e-9) or np.any(full > high + 1e-9):
            self.get_logger().warning(f"arm trajectory on {self.arm_topic} leaves the joint limits: clipped")
        try:
            planned = plan_trajectory(q[arm], v[arm], times, full, full_vel, self.sim.max_velocity[arm], low, high)
        except ValueError as exc:
            self.get_logger().error(f"rejected arm trajectory on {self.arm_topic}: {exc}")
            return
        if planned.time_scale > 1.001:
            self.get_logger().warning(f"arm trajectory slowed down {planned.time_scale:.2f}x to respect the "
                                      f"joint speed limits")
        self._arm_curve = (planned.curve, self.sim.time)
        self._follow()

    def _on_hand_command(self, msg: Float64MultiArray) -> None:
        target = np.asarray(msg.data, dtype=np.float64)
        if target.shape != (NUM_HAND_JOINTS,):
            self.get_logger().error(f"rejected hand command on {self.hand_topic}: data must hold {NUM_HAND_JOINTS} "
                                    f"positions (ah_joint00..33), got {target.size}")
            return
        if not np.all(np.isfinite(target)):
            self.get_logger().error(f"rejected hand command on {self.hand_topic}: data contains NaN or inf")
            return
        q, v = self._setpoint_now()
        hand = slice(NUM_ARM_JOINTS, None)
        planned = plan_trajectory(q[hand], v[hand], np.zeros(1), target[None], None, self.sim.max_velocity[hand],
                                  self.sim.joint_low[hand], self.sim.joint_high[hand])
        self._hand_curve = (planned.curve, self.sim.time)
        self._follow()

    def _start_joints(self) -> np.ndarray:
        """The ``start_joints`` parameter, checked (ConfigError naming the problem)."""
        q = np.asarray(self._param("start_joints"), dtype=np.float64)
        if q.shape != (len(ALL_JOINT_NAMES),) or not np.all(np.isfinite(q)):
            raise ConfigError(f"parameter start_joints: expected {len(ALL_JOINT_NAMES)} finite values, found "
                              f"{q.size} value(s)")
        outside = [f"{n} = {v:.3f} (limits {lo:.3f}..{hi:.3f})" for n, v, lo, hi in
                   zip(ALL_JOINT_NAMES, q, self.sim.joint_low, self.sim.joint_high) if not lo - 1e-6 <= v <= hi + 1e-6]
        if outside:
            raise ConfigError(f"parameter start_joints: outside the joint limits: {'; '.join(outside)}")
        return q

    def _reset(self, seed: int) -> None:
        self.sim.reset(seed, joints=self._start_joints())
        self._profile = self._arm_curve = self._hand_curve = None
        self._next_frame_time = 0.0
        self._publish_static()
        self._publish_object_names()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        seed = int(self._param("seed"))
        try:
            self._reset(seed)
        except ConfigError as exc:
            response.success, response.message = False, f"not reset: {exc}"
            self.get_logger().error(response.message)
            return response
        self._publish_state(self.get_clock().now().to_msg())
        response.success = True
        response.message = f"reset to start_joints with object layout seed {seed}"
        self.get_logger().info(response.message)
        return response

    # --------------------------------------------------------------------------------------------- output
    def _tick(self) -> None:
        self.sim.step()
        self.stats["ticks"] += 1
        stamp = self.get_clock().now().to_msg()
        self._publish_state(stamp)
        if self.sim.time + 1e-9 >= self._next_frame_time:
            self._publish_camera(stamp)
            period = 1.0 / float(self._param("camera_rate_hz"))
            self._next_frame_time = max(self._next_frame_time + period, self.sim.time + 0.5 * period)

    def _publish_state(self, stamp) -> None:
        sim = self.sim
        self.pub_joints.publish(conv.joint_state(ALL_JOINT_NAMES, sim.joints, sim.joint_velocities,
                                                 sim.data.actuator_force, stamp))
        poses = [(p.position, p.quaternion) for p in (sim.object_pose(n) for n in sim.object_names)]
        self.pub_objects.publish(conv.pose_array(poses, stamp, WORLD_FRAME))
        self.pub_tf.publish(TFMessage(transforms=self._dynamic_transforms(stamp)))

    def _dynamic_transforms(self, stamp) -> list:
        """Arm links (each in its parent link) and, if enabled, the hand keypoint frames (in panda_link0)."""
        data = self.sim.data
        parents, children = self._link_bodies[:-1], self._link_bodies[1:]
        R_parent = data.xmat[parents].reshape(-1, 3, 3)
        t_links = np.einsum("nji,nj->ni", R_parent, data.xpos[children] - data.xpos[parents])
        q_links = conv.quaternion_multiply(conv.quaternion_conjugate(data.xquat[parents]), data.xquat[children])
        out = [conv.set_transform(msg, t, q, stamp) for msg, t, q in zip(self._tf_links, t_links, q_links)]
        if self._param("publish_keypoint_frames"):
            R0, p0 = data.xmat[self._link0].reshape(3, 3), data.xpos[self._link0]
            sites = [s for s, _ in self._keypoint_sites]
            t_sites = (data.site_xpos[sites] - p0) @ R0
            R_sites = np.einsum("ji,njk->nik", R0, data.site_xmat[sites].reshape(-1, 3, 3))
            quat = np.empty(4)
            for msg, t, R in zip(self._tf_keypoints, t_sites, R_sites):
                mujoco.mju_mat2Quat(quat, R.reshape(-1))
                out.append(conv.set_transform(msg, t, quat, stamp))
        return out

    def _publish_static(self) -> None:
        stamp = self.get_clock().now().to_msg()
        data = self.sim.data
        cam = self.sim.camera()
        self.pub_tf_static.publish(TFMessage(transforms=[
            conv.transform_stamped(WORLD_FRAME, ARM_BASE_FRAME, data.xpos[self._link0],
                                   data.xmat[self._link0].reshape(3, 3), stamp),
            conv.transform_stamped(WORLD_FRAME, CAMERA_OPTICAL_FRAME, cam.t_wc, cam.R_wc, stamp),
        ]))

    def _publish_object_names(self) -> None:
        self.pub_object_names.publish(String(data=json.dumps({"frame_id": WORLD_FRAME,
                                                              "names": self.sim.object_names})))

    def _publish_camera(self, stamp) -> None:
        cam = self.sim.camera()
        rgb = self.sim.render()
        self.pub_image.publish(conv.numpy_to_image(rgb, "rgb8", stamp, CAMERA_OPTICAL_FRAME))
        self.pub_info.publish(conv.camera_info(cam.K, cam.width, cam.height, stamp, CAMERA_OPTICAL_FRAME))
        self.stats["frames"] += 1

    def close(self) -> None:
        wall = time.perf_counter() - self.stats["started"]
        self.get_logger().info(f"stopping after {self.stats['ticks']} control ticks "
                               f"({self.stats['ticks'] / wall:.1f}/s) and {self.stats['frames']} camera frames "
                               f"({self.stats['frames'] / wall:.1f}/s) in {wall:.1f} s")
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        self.sim.close()


def main(args: list[str] | None = None) -> int:
    return run_node(SimNode, "dexwm_sim_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
