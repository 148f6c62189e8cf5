"""``dexwm_planner_node``: goal-image MPC (CEM / MPPI in the world model) as the RunTask action server.

  action ``dexwm/run_task``            dexwm_interfaces/action/RunTask (one task at a time; a new valid goal
                                       pre-empts the running one: result PREEMPTED)
  srv    ``dexwm/set_goal_from_camera`` dexwm_interfaces/srv/SetGoalFromCamera: store the camera's current view as
                                       the goal used by goals with an empty goal_image
  sub    ``camera/color/image_raw``     sensor_msgs/Image (+ ``camera/color/camera_info`` for the feedback's pixels)
  sub    ``/joint_states``              sensor_msgs/JointState, the 23 joints
  sub    ``dexwm/safety/status``        the safety layer's JSON status (acknowledgements, e-stop, watchdogs)
  sub    ``dexwm/sim/object_poses`` + ``object_names``   object positions for the grasp / place success tests
  pub    ``dexwm/joint_waypoint``       trajectory_msgs/JointTrajectory: one 23-joint point per waypoint, stamped,
                                       time_from_start = the waypoint duration (the safety layer decides)
  pub    ``dexwm/plan_status``          dexwm_interfaces/PlanStatus on every state change and replan
  pub    ``dexwm/plan_markers``         visualization_msgs/MarkerArray: wrist + fingertips of every plan waypoint
                                       (forward kinematics) and their paths, in ``panda_link0``

The MPC loop of an accepted goal: wait for a camera frame that arrived after the last move ended, with the
joints -> ``GoalImageMPC.observe`` -> ``plan`` -> publish the waypoint(s) one at a time, each acknowledged by the
safety layer and executed (joints within ``position_tolerance`` of it, or its duration over — with
``wait_settled`` also the joints settled — or ``execute_timeout`` past it) -> repeat. Feedback after every replan and every executed waypoint.

Ends (RunTask.Result.reason): SUCCEEDED (the task's success test held for ``success.hold_ticks`` consecutive
control ticks of ``config/tasks.yaml``, see :mod:`dexwm_ros.monitor`; goals without ground truth: the
observation cost below ``success_cost`` for that many consecutive replans), TIMEOUT (max_steps / max_duration),
CANCELED, PREEMPTED, CAMERA_STALE (no frame for ``image_timeout`` s, or the safety layer's camera watchdog),
CONTROLLER_TIMEOUT (no /joint_states for ``joint_states_timeout`` s, a waypoint not acknowledged within
``ack_timeout`` s, ``max_unfollowed`` accepted waypoints in a row that the arm did not follow, or the safety
layer's controller watchdog), ESTOP, ERROR, and REJECTED for invalid goals (accepted, then ended at once with the
reason, so the client gets it in the result). Every ending except ESTOP publishes a hold, a waypoint at the measured
joints, unless the safety layer refuses waypoints (it holds the robot itself then).

With parameter ``task`` set, the node also runs that one task at start-up (goal image from the file
``goal_image``) through its own action server and exits when it ends: 0 on success, 3 when the task did not
succeed (the launch graph's "ends the run" node). A missing or damaged checkpoint: the node says why and exits 1;
bad parameters: 2 (``dexwm_ros.exit_codes``).

The camera pose used for the feedback's keypoints is the simulated scene's (``config/sim.yaml``), as in the
planner's cost. Parameters: ``config/planner_node.yaml``; the search: ``config/planner.yaml`` (+ ``profile`` of
``config/mpc.yaml``); the loop: ``config/mpc.yaml`` section ``mpc``; success thresholds: ``config/tasks.yaml``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
import torch
from geometry_msgs.msg import Point, PoseArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.task import Future
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import ColorRGBA, Header, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from dexwm_ros import conversions as conv
from dexwm_ros.controller_common import STATUS_QOS, STATUS_TOPIC, WAYPOINT_TOPIC, float_range, int_range
from dexwm_ros.exit_codes import EXIT_CANNOT_RUN, EXIT_TASK_FAILED
from dexwm_robot.joint_names import ALL_JOINT_NAMES, ARM_BASE_FRAME, ARM_JOINT_NAMES, CAMERA_OPTICAL_FRAME, WORLD_FRAME
from dexwm_ros.node_runner import run_node
from dexwm_interfaces.action import RunTask
from dexwm_interfaces.msg import HandKeypoints, PlanStatus
from dexwm_interfaces.srv import SetGoalFromCamera
from dexwm_robot.config import ConfigError, from_dict, load_yaml
from dexwm_ros.hand_keypoints import (
    REACH_POINTS_21,
    continuous_to_message_pixels,
    hand_keypoints_message,
    keypoints_from_message,
)
from dexwm_ros.images import image_to_rgb
from dexwm_ros.topics import (
    CAMERA_INFO_TOPIC,
    IMAGE_TOPIC,
    PLAN_MARKERS_TOPIC,
    PLAN_STATUS_TOPIC,
    RUN_TASK_ACTION,
    SET_GOAL_SERVICE,
)
from dexwm_ros.world_model_node import CheckpointLoadError, load_world_model, resolve_device

NODE_NAME = "dexwm_planner"
PARAMS_FILE = "planner_node.yaml"
TASKS = (RunTask.Goal.TASK_REACH, RunTask.Goal.TASK_GRASP, RunTask.Goal.TASK_PLACE)
METHODS = (RunTask.Goal.PLANNER_CEM, RunTask.Goal.PLANNER_MPPI)
OBJECT_POSES_TOPIC = "dexwm/sim/object_poses"  # the simulator's extras (dexwm_ros.sim_node)
OBJECT_NAMES_TOPIC = "dexwm/sim/object_names"
KNOWN_FRAMES = (WORLD_FRAME, ARM_BASE_FRAME, CAMERA_OPTICAL_FRAME)
R = RunTask.Result
SETTLED_SPEED = 0.05  # rad/s: joints slower than this after a move's duration count as arrived
FOLLOWED_FRACTION = 0.2  # an arm move counts as followed when the arm moved at least this part of the command
_LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class PlannerNodeConfig:
    """The node's parameters (defaults: ``config/planner_node.yaml``, section ``dexwm_planner.ros__parameters``)."""

    checkpoint: str
    device: str
    planner: str
    profile: str
    seed: int
    image_topic: str
    camera_name: str
    image_timeout: float
    joint_states_timeout: float
    ack_timeout: float
    execute_timeout: float
    position_tolerance: float
    wait_settled: bool
    hold_duration: float
    max_steps_limit: int
    max_duration: float
    max_duration_limit: float
    max_rejections: int
    max_unfollowed: int
    success_cost: float
    goal_max_age: float
    goal_timeout: float
    torch_threads: int
    task: str
    goal_image: str
    episode_file: str
    result_file: str
    startup_timeout: float
    recording_dir: str
    decoder: str


def load_node_config(path: str = PARAMS_FILE) -> PlannerNodeConfig:
    data = load_yaml(path)
    try:
        section = data[NODE_NAME]["ros__parameters"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: expected '{NODE_NAME}: {{ros__parameters: {{...}}}}'") from exc
    return from_dict(PlannerNodeConfig, section, f"{path}:{NODE_NAME}")


class GoalRejected(ValueError):
    """A RunTask goal that cannot run; the message says which field and why."""


@dataclass
class GoalSpec:
    """A validated RunTask goal."""

    task: str
    method: str
    image: np.ndarray           # (H, W, 3) uint8 RGB
    image_source: str
    target_object: str
    goal_points: np.ndarray | None      # (5, 3) wrist + 4 fingertips, world frame
    target_position: np.ndarray | None  # (3,) world frame
    max_steps: int
    max_duration: float


@dataclass
class _Run:
    handle: object
    spec: GoalSpec | None
    error: str | None
    preempted: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Progress:
    steps: int = 0
    replans: int = 0
    rejections: int = 0
    unfollowed: int = 0  # executed waypoints in a row that the arm did not follow
    cost: float = math.nan
    best_cost: float = math.nan
    planning_time: float = 0.0
    replan_times: list = field(default_factory=list)
    latencies: list = field(default_factory=list)  # image arrival -> first waypoint published, s
    frame_waits: list = field(default_factory=list)  # s waiting for a fresh frame after a move
    executions: list = field(default_factory=list)  # s from publishing a waypoint to its arrival
    phase: str = RunTask.Feedback.PHASE_OBSERVING
    predicted: HandKeypoints | None = None


class PlannerNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._declare_parameters()
        p = self._param
        if int(p("torch_threads")) > 0:
            torch.set_num_threads(int(p("torch_threads")))
        t0 = time.perf_counter()
        self.model = load_world_model(str(p("checkpoint")), torch.device("cpu"))  # first: a bad one fails fast
        from dexwm_model.kinematics.panda_allegro import PandaAllegroFK
        from dexwm_planner.mpc import load_mpc_config, planner_profiles
        from dexwm_planner.planners.kinematics import sim_camera
        from dexwm_planner.tasks.config import load_tasks_config

        self.device_name = str(p("device")).strip()
        device = resolve_device(self.device_name)  # fails early on a bad name or a missing GPU
        self.profile = str(p("profile")).strip()
        if self.profile == "auto":  # the search sized for the device, as `dexwm bench tasks` chooses it
            self.profile = "paper" if device.type == "cuda" else "cpu"
        if self.profile and self.profile not in planner_profiles():
            raise ConfigError(f"parameter profile: expected '' or one of {sorted(planner_profiles())} "
                              f"(config/mpc.yaml planner_profiles), found {self.profile!r}")
        self.mpc_config = load_mpc_config()
        self.success_cfg = load_tasks_config().success
        if self.success_cfg.hold_ticks < 1:
            raise ConfigError("tasks.yaml success.hold_ticks must be >= 1")
        self.fk = PandaAllegroFK.default().double()
        self.camera = sim_camera()  # full-resolution camera (pose, K) of the scene
        # panda_link0 in the world frame (constant: the arm's base does not move)
        with torch.no_grad():
            pos, rot = self.fk.frames(torch.zeros(len(ALL_JOINT_NAMES), dtype=torch.float64), ["body:panda/link0"])
        self._base_t, self._base_R = pos[0].numpy(), rot[0].numpy()

        self._mpcs: dict[tuple[str, str], object] = {}
        self._autorun_task = str(p("task")).strip()
        first_task = self._autorun_task or RunTask.Goal.TASK_REACH
        if first_task not in TASKS:
            raise ConfigError(f"parameter task: expected '' (serve goals only) or one of {list(TASKS)}, found "
                              f"{first_task!r}")
        self._mpc_for(first_task, str(p("planner")))  # builds the planner now: configuration errors surface here
        load_s = time.perf_counter() - t0

        self.cb = ReentrantCallbackGroup()
        self._lock = threading.Condition()
        self._image: tuple[Image, float] | None = None   # newest frame, arrival (monotonic)
        self._image_count = 0
        self._joints: tuple[np.ndarray, float] | None = None
        self._joints_prev: tuple[np.ndarray, float] | None = None
        self._camera_info: tuple[np.ndarray, tuple[int, int]] | None = None
        self._safety: dict | None = None
        self._object_names: list[str] | None = None
        self._object_positions: np.ndarray | None = None
        self._stored_goal: tuple[Image, np.ndarray] | None = None
        self._monitor = None
        self._runs: dict[bytes, _Run] = {}
        self._active: _Run | None = None
        self._run_lock = threading.Lock()
        self._closing = threading.Event()
        self.finished = Future()  # done when the start-up task (parameter task) has ended
        self.exit_code = 0
        self._state = PlanStatus.STATE_IDLE
        self._last_status: PlanStatus | None = None

        cb = self.cb
        self.pub_waypoint = self.create_publisher(JointTrajectory, WAYPOINT_TOPIC, 10)
        self.pub_status = self.create_publisher(PlanStatus, PLAN_STATUS_TOPIC, 10)
        self.pub_markers = self.create_publisher(MarkerArray, PLAN_MARKERS_TOPIC, 5)
        self.create_subscription(Image, p("image_topic"), self._on_image, 2, callback_group=cb)
        self.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, self._on_camera_info, 2, callback_group=cb)
        self.create_subscription(JointState, "joint_states", self._on_joints, 20, callback_group=cb)
        self.create_subscription(String, STATUS_TOPIC, self._on_safety, STATUS_QOS, callback_group=cb)
        self.create_subscription(PoseArray, OBJECT_POSES_TOPIC, self._on_object_poses, 5, callback_group=cb)
        self.create_subscription(String, OBJECT_NAMES_TOPIC, self._on_object_names, _LATCHED, callback_group=cb)
        self.create_service(SetGoalFromCamera, SET_GOAL_SERVICE, self._on_set_goal, callback_group=cb)
        self.action_server = ActionServer(
            self, RunTask, RUN_TASK_ACTION, execute_callback=self._execute, goal_callback=lambda _: GoalResponse.ACCEPT,
            handle_accepted_callback=self._on_accepted, cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=cb)
        self._publish_status()
        self.get_logger().info(
            f"planner up ({load_s:.1f} s): {p('planner')} on {self.device_name}, profile "
            f"{self.profile or 'planner.yaml as is'}, checkpoint {p('checkpoint')}; action "
            f"{self.resolve_topic_name(RUN_TASK_ACTION)}, waypoints on {self.resolve_topic_name(WAYPOINT_TOPIC)}, "
            f"camera {self.resolve_topic_name(p('image_topic'))} (stale after {p('image_timeout'):g} s)")
        if self._autorun_task:
            self._autorun_goal = self._load_autorun_goal()
            threading.Thread(target=self._autorun, name="autorun", daemon=True).start()

    # ------------------------------------------------------------------------------------------- parameters
    def _declare_parameters(self) -> None:
        d = load_node_config()
        D = ParameterDescriptor
        ro = dict(read_only=True)
        dec = self.declare_parameter

        def fl(name, value, text, lo, hi, read_only=False):
            dec(name, float(value), D(description=text, floating_point_range=float_range(lo, hi),
                                      read_only=read_only))

        dec("checkpoint", d.checkpoint, D(description="world-model checkpoint folder (config.yaml + "
                                                      "model.safetensors); required", **ro))
        dec("device", d.device, D(description="torch device of the planner", additional_constraints=
                                  "auto | cpu | cuda | cuda:N", **ro))
        dec("planner", d.planner, D(description="optimiser of goals that do not choose one",
                                    additional_constraints="cem | mppi", **ro))
        dec("profile", d.profile, D(description="planner.yaml changes from config/mpc.yaml planner_profiles "
                                                "(paper, cpu, quick); auto: paper on CUDA, cpu otherwise; empty: "
                                                "planner.yaml as is", **ro))
        dec("seed", d.seed, D(description="sampling seed of the planner (replan r of a task uses seed + r)",
                              integer_range=int_range(0, 2**31 - 1), **ro))
        dec("image_topic", d.image_topic or IMAGE_TOPIC, D(description="task camera image topic", **ro))
        dec("camera_name", d.camera_name, D(description="name of the task camera accepted by SetGoalFromCamera "
                                                        "(besides the empty name)", **ro))
        fl("image_timeout", d.image_timeout, "s without a camera frame before the robot is held and the task "
           "ends with CAMERA_STALE", 0.05, 60.0)
        fl("joint_states_timeout", d.joint_states_timeout, "s without /joint_states before the task ends with "
           "CONTROLLER_TIMEOUT", 0.05, 60.0)
        fl("ack_timeout", d.ack_timeout, "s for the safety layer to accept or reject a waypoint before the task "
           "ends with CONTROLLER_TIMEOUT", 0.05, 60.0)
        fl("execute_timeout", d.execute_timeout, "s past a waypoint's duration after which the next replan starts "
           "even if the joints have not arrived", 0.0, 60.0)
        fl("position_tolerance", d.position_tolerance, "rad: every joint this close to the waypoint = arrived",
           0.0001, 0.5)
        dec("wait_settled", d.wait_settled, D(
            description="false: a waypoint is executed once its duration is over and a joint state from after its "
                        "end arrived (what `dexwm bench tasks` does: the next frame is taken as the move ends); true: "
                        "also wait until the joints slow below 0.05 rad/s"))
        fl("hold_duration", d.hold_duration, "s: time_from_start of the hold waypoint sent when a task ends",
           0.01, 5.0)
        dec("max_steps", int(self._mpc_max_steps()), D(
            description="control steps of goals with max_steps = 0 (default: config/mpc.yaml mpc.max_steps)",
            integer_range=int_range(1, 100000)))
        dec("max_steps_limit", d.max_steps_limit, D(description="goals asking for more control steps are rejected",
                                                    integer_range=int_range(1, 100000)))
        fl("max_duration", d.max_duration, "s: duration of goals with max_duration = 0", 0.1, 86400.0)
        fl("max_duration_limit", d.max_duration_limit, "s: goals asking for longer are rejected", 0.1, 86400.0)
        dec("max_rejections", d.max_rejections, D(description="waypoints rejected by the safety layer in a row "
                                                              "before the task ends with ERROR",
                                                  integer_range=int_range(1, 1000)))
        dec("max_unfollowed", d.max_unfollowed, D(
            description="accepted waypoints in a row that the arm did not follow (commanded more than "
                        "position_tolerance, moved less than a fifth of it) before the robot is held and the task "
                        "ends with CONTROLLER_TIMEOUT: the arm controller is not executing",
            integer_range=int_range(1, 1000)))
        fl("success_cost", d.success_cost, "goals without ground truth succeed when the observation cost stays "
           "below this for success.hold_ticks replans (0: never)", 0.0, 1e9)
        fl("goal_max_age", d.goal_max_age, "s: SetGoalFromCamera default max_age", 0.001, 600.0)
        fl("goal_timeout", d.goal_timeout, "s: SetGoalFromCamera default timeout", 0.0, 600.0)
        dec("torch_threads", d.torch_threads, D(description="CPU threads of PyTorch (0: its default)",
                                                integer_range=int_range(0, 256), **ro))
        dec("task", d.task, D(description="run this task once at start-up and exit (0 on success); empty: serve "
                                          "RunTask goals", additional_constraints="'' | reach | grasp | place", **ro))
        dec("goal_image", d.goal_image, D(description="goal image file (PNG/JPEG) of the start-up task; empty with "
                                                      "episode_file: the episode's goal image", **ro))
        dec("episode_file", d.episode_file, D(description="episode.json of a suite episode (dexwm launch): the "
                                                          "start-up task gets its goal image and the success-test "
                                                          "inputs of its goal state; empty: none", **ro))
        dec("result_file", d.result_file, D(description="JSON file the start-up task's result is written to "
                                                        "(atomically); empty: none", **ro))
        fl("startup_timeout", d.startup_timeout, "s the start-up task waits for the camera, joints and safety layer",
           1.0, 3600.0, read_only=True)
        dec("decoder", d.decoder, D(description="latent decoder folder (`dexwm train decoder`) for the imagined frames "
                                                "of the rerun recordings; it must fit the checkpoint's encoder; empty: "
                                                "the checkpoint's bundled <checkpoint>/decoder if any, else none", **ro))
        dec("recording_dir", d.recording_dir, D(description="folder of one rerun recording (.rrd) per RunTask goal "
                                                            "(camera, goal, plan keypoints, joints, costs); empty: "
                                                            "off", **ro))
        if self._param("planner") not in METHODS:
            raise ConfigError(f"parameter planner: expected one of {list(METHODS)}, found {self._param('planner')!r}")
        if self._param("max_duration") > self._param("max_duration_limit"):
            raise ConfigError(f"parameter max_duration ({self._param('max_duration')}) exceeds max_duration_limit "
                              f"({self._param('max_duration_limit')})")

    @staticmethod
    def _mpc_max_steps() -> int:
        from dexwm_planner.mpc import load_mpc_config

        return load_mpc_config().max_steps

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _mpc_for(self, task: str, method: str):
        """One GoalImageMPC per (task, optimiser), sharing the model; built on first use."""
        key = (task, method)
        if key not in self._mpcs:
            from dexwm_planner.mpc import GoalImageMPC, mpc_planner_config
            from dexwm_planner.planners.planner import Planner

            cfg = mpc_planner_config(task, self.profile or None, method, self.device_name)
            changes = {"seed": int(self._param("seed"))}
            if self.mpc_config.execute_steps is not None:
                changes["execute_steps"] = self.mpc_config.execute_steps
            cfg = cfg.replace(planner=changes)
            self._mpcs[key] = GoalImageMPC(self.model, Planner(self.model, cfg), self.mpc_config)
        return self._mpcs[key]

    # ------------------------------------------------------------------------------------------------ inputs
    def _on_image(self, msg: Image) -> None:
        with self._lock:
            self._image = (msg, time.monotonic())
            self._image_count += 1
            self._lock.notify_all()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        if msg.width > 0 and msg.height > 0 and len(msg.k) == 9:
            with self._lock:
                self._camera_info = (np.asarray(msg.k, dtype=np.float64).reshape(3, 3), (msg.height, msg.width))

    def _on_joints(self, msg: JointState) -> None:
        from dexwm_ros.controller_common import joint_positions

        q = joint_positions(msg.name, msg.position, ALL_JOINT_NAMES)
        if q is None or not np.all(np.isfinite(q)):
            return
        now = time.monotonic()
        with self._lock:
            self._joints_prev, self._joints = self._joints, (q, now)
            monitor = self._monitor
            obj = self._object_position(monitor.truth.object_name) if monitor is not None else None
            self._lock.notify_all()
        if monitor is not None:
            monitor.update(q, obj)

    def _on_safety(self, msg: String) -> None:
        try:
            status = json.loads(msg.data)
        except json.JSONDecodeError:
            self.get_logger().error(f"unreadable safety status on {STATUS_TOPIC}: {msg.data[:200]!r}",
                                    throttle_duration_sec=5.0)
            return
        with self._lock:
            self._safety = status
            self._lock.notify_all()

    def _on_object_names(self, msg: String) -> None:
        try:
            names = json.loads(msg.data)["names"]
        except (json.JSONDecodeError, KeyError, TypeError):
            self.get_logger().error(f"unreadable object names on {OBJECT_NAMES_TOPIC}: {msg.data[:200]!r}")
            return
        with self._lock:
            self._object_names = [str(n) for n in names]

    def _on_object_poses(self, msg: PoseArray) -> None:
        pos = np.array([[p.position.x, p.position.y, p.position.z] for p in msg.poses], dtype=np.float64)
        with self._lock:
            self._object_positions = pos.reshape(-1, 3)

    def _object_position(self, name: str) -> np.ndarray | None:
        """Called with the lock held."""
        names, pos = self._object_names, self._object_positions
        if not name or names is None or pos is None or name not in names or len(names) != len(pos):
            return None
        return pos[names.index(name)].copy()

    # --------------------------------------------------------------------------------------------- frames
    def _to_world(self, points: np.ndarray, frame: str, field_name: str) -> np.ndarray:
        if frame == WORLD_FRAME:
            return points
        if frame == ARM_BASE_FRAME:
            return points @ self._base_R.T + self._base_t
        if frame == CAMERA_OPTICAL_FRAME:
            pose = self.camera.pose
            return points @ pose[:3, :3].T + pose[:3, 3]
        raise GoalRejected(f"{field_name}.header.frame_id: unknown frame {frame!r}; expected one of "
                           f"{list(KNOWN_FRAMES)} (or empty: not given)")

    # ------------------------------------------------------------------------------------------- validation
    def _validate(self, goal: RunTask.Goal) -> GoalSpec:
        """A GoalSpec, or GoalRejected naming the field and the problem."""
        p = self._param
        if goal.task not in TASKS:
            raise GoalRejected(f"task: expected one of {list(TASKS)}, found {goal.task!r}")
        if goal.planner not in ("",) + METHODS:
            raise GoalRejected(f"planner: expected '' (server default) or one of {list(METHODS)}, found "
                               f"{goal.planner!r}")
        if goal.max_steps > p("max_steps_limit"):
            raise GoalRejected(f"max_steps: at most {p('max_steps_limit')} (parameter max_steps_limit), found "
                               f"{goal.max_steps}")
        if not math.isfinite(goal.max_duration) or goal.max_duration < 0:
            raise GoalRejected(f"max_duration: expected a finite number of seconds >= 0, found {goal.max_duration}")
        if goal.max_duration > p("max_duration_limit"):
            raise GoalRejected(f"max_duration: at most {p('max_duration_limit'):g} s (parameter max_duration_limit), "
                               f"found {goal.max_duration:g} s")
        # the latched safety status may still be on its way right after start-up
        self._wait(lambda: self._safety, time.monotonic() + self._param("ack_timeout"), lambda: None)
        if goal.target_object.strip():  # the latched object names, likewise (to check the target object)
            self._wait(lambda: self._object_names, time.monotonic() + self._param("ack_timeout"), lambda: None)
        with self._lock:
            safety, stored, names = self._safety, self._stored_goal, self._object_names
        if safety is None:
            raise GoalRejected(f"no status from the safety layer on {self.resolve_topic_name(STATUS_TOPIC)}: "
                               "waypoints cannot be executed (is dexwm_safety_node running?)")
        estop = safety.get("estop") or {}
        if estop.get("engaged"):
            raise GoalRejected(f"e-stop engaged ({estop.get('reason') or 'no reason given'}): release it with "
                               "the EStop service first")
        img = goal.goal_image
        if img.width == 0 or img.height == 0:
            if stored is None:
                raise GoalRejected(f"goal_image is empty and no goal image was captured with "
                                   f"{self.resolve_service_name(SET_GOAL_SERVICE)}")
            image, source = stored[1], "the image captured by SetGoalFromCamera"
        else:
            try:
                image = image_to_rgb(img, "goal_image")
            except ValueError as exc:
                raise GoalRejected(str(exc)) from None
            source = f"goal_image ({img.width}x{img.height} {img.encoding})"
        target = goal.target_object.strip()
        if goal.task in (RunTask.Goal.TASK_GRASP, RunTask.Goal.TASK_PLACE) and not target:
            raise GoalRejected(f"target_object: required for {goal.task} (its success test needs the object)")
        if target and names is not None and target not in names:
            raise GoalRejected(f"target_object: unknown object {target!r}; the scene has {names}")
        position = None
        if goal.target_position.header.frame_id:
            pt = goal.target_position.point
            position = np.array([pt.x, pt.y, pt.z], dtype=np.float64)
            if not np.all(np.isfinite(position)):
                raise GoalRejected(f"target_position.point: expected finite coordinates, found {position.tolist()}")
            position = self._to_world(position[None], goal.target_position.header.frame_id, "target_position")[0]
        points = None
        if goal.goal_keypoints.header.frame_id:
            try:
                kp = keypoints_from_message(goal.goal_keypoints, "goal_keypoints")
            except ValueError as exc:
                raise GoalRejected(str(exc)) from None
            points = self._to_world(kp[list(REACH_POINTS_21)], goal.goal_keypoints.header.frame_id, "goal_keypoints")
        return GoalSpec(task=goal.task, method=goal.planner or p("planner"), image=image, image_source=source,
                        target_object=target, goal_points=points, target_position=position,
                        max_steps=int(goal.max_steps or p("max_steps")),
                        max_duration=float(goal.max_duration or p("max_duration")))

    # ------------------------------------------------------------------------------------------- the action
    def _on_accepted(self, handle) -> None:
        """Validate; a valid goal pre-empts the running one; every goal then executes (invalid ones end at once
        with REJECTED and the reason)."""
        key = bytes(handle.goal_id.uuid)
        try:
            spec, error = self._validate(handle.request), None
        except GoalRejected as exc:
            spec, error = None, str(exc)
        run = _Run(handle, spec, error)
        with self._lock:
            self._runs[key] = run
            if spec is not None:
                if self._active is not None:
                    self._active.preempted.set()
                self._active = run
        handle.execute()

    def _execute(self, handle) -> RunTask.Result:
        run = self._runs.pop(bytes(handle.goal_id.uuid))
        if run.error is not None:
            self.get_logger().warning(f"RunTask goal rejected: {run.error}")
            handle.abort()
            return R(success=False, reason=R.REASON_REJECTED, message=run.error)
        with self._run_lock:  # one task at a time: a pre-empted task ends quickly and releases it
            try:
                if run.preempted.is_set():
                    handle.abort()
                    return R(success=False, reason=R.REASON_PREEMPTED, message="pre-empted by a newer goal before "
                                                                               "it started")
                return self._run_task(handle, run)
            finally:
                with self._lock:
                    if self._active is run:
                        self._active = None

    def _run_task(self, handle, run: _Run) -> RunTask.Result:
        from dexwm_ros.monitor import CostMonitor, GroundTruth, TaskMonitor

        spec = run.spec
        t0 = time.monotonic()
        prog = _Progress()
        self.get_logger().info(f"RunTask {spec.task} with {spec.method}: goal from {spec.image_source}, up to "
                               f"{spec.max_steps} steps / {spec.max_duration:g} s"
                               + (f", object {spec.target_object}" if spec.target_object else ""))
        truth = GroundTruth(spec.task, spec.goal_points, spec.target_object, spec.target_position)
        monitor = TaskMonitor(truth, self.success_cfg, self.fk) if truth.available else None
        cost_monitor = CostMonitor(self._param("success_cost"), self.success_cfg.hold_ticks)
        stop: tuple[str, str] | None = None
        mpc = None
        recording = None
        self._last_status = None
        try:
            mpc = self._mpc_for(spec.task, spec.method)
            mpc.set_goal(spec.image, spec.task)
            recording = self._open_recording(handle, spec, mpc)
        except (ValueError, ConfigError, RuntimeError) as exc:
            stop = (R.REASON_ERROR, f"the planner could not take the goal: {exc}")
        with self._lock:
            self._monitor = monitor
            seen = self._image_count
        try:
            while stop is None:
                stop = self._stop_reason(handle, run, spec, prog, t0, monitor, cost_monitor)
                if stop is not None:
                    break
                # ---- observe: a frame that arrived after the last move ended
                prog.phase = RunTask.Feedback.PHASE_OBSERVING
                self._set_state(PlanStatus.STATE_OBSERVING, spec, prog)
                waited = time.monotonic()
                frame, stop = self._wait_frame(handle, run, spec, prog, t0, monitor, cost_monitor, seen)
                if stop is not None:
                    break
                prog.frame_waits.append(time.monotonic() - waited)
                msg, arrival, q, seen = frame
                rgb = image_to_rgb(msg, "camera image")
                stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
                mpc.observe(rgb, q, stamp if stamp > 0 else arrival)
                # ---- plan
                prog.phase = RunTask.Feedback.PHASE_PLANNING
                self._set_state(PlanStatus.STATE_PLANNING, spec, prog)
                step = mpc.plan()
                prog.replans += 1
                prog.best_cost = float(step.cost)
                prog.cost = mpc.observation_cost()
                prog.planning_time = float(step.planning_time_s)
                prog.replan_times.append(prog.planning_time)
                cost_monitor.update(prog.cost)
                prog.predicted = self._predicted_keypoints(step.plan[-1])
                self._publish_plan(spec, prog, step, q)
                if recording is not None:
                    recording.log_step(prog.replans - 1, rgb, q, step, t=stamp if stamp > 0 else arrival)
                stop = self._stop_reason(handle, run, spec, prog, t0, monitor, cost_monitor)
                if stop is not None:
                    break
                # ---- execute
                prog.phase = RunTask.Feedback.PHASE_EXECUTING
                self._set_state(PlanStatus.STATE_EXECUTING, spec, prog)
                self._feedback(handle, prog, monitor, cost_monitor)
                for i, waypoint in enumerate(step.waypoints):
                    started = time.monotonic()
                    stop = self._execute_waypoint(handle, run, spec, prog, t0, monitor, cost_monitor, waypoint,
                                                  mpc.waypoint_duration_s, arrival if i == 0 else None)
                    prog.executions.append(time.monotonic() - started)
                    self._feedback(handle, prog, monitor, cost_monitor)
                    if stop is not None:
                        break
                with self._lock:
                    seen = self._image_count
        except Exception as exc:  # noqa: BLE001 - any failure of the loop ends the task with ERROR, not the node
            self.get_logger().error(f"RunTask failed: {type(exc).__name__}: {exc}")
            stop = (R.REASON_ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._monitor = None
        reason, message = stop
        if recording is not None:
            recording.note(f"RunTask {spec.task} ended: {reason}" + (f": {message}" if message else ""))
            recording.close()
        try:
            if reason != R.REASON_ESTOP:  # a hold the safety layer refuses (it holds already) is not sent
                self._hold(f"task ended: {reason}")
            return self._finish(handle, spec, prog, t0, reason, message, monitor)
        except Exception:  # noqa: BLE001
            if not self._closing.is_set() and rclpy.ok(context=self.context):
                raise
            # shutting down: the context is gone; the safety layer's dead-man's switch holds the robot
            return R(success=False, reason=R.REASON_ERROR, message="the planner node shut down", steps=prog.steps)

    def _finish(self, handle, spec: GoalSpec, prog: _Progress, t0: float, reason: str, message: str,
                monitor) -> RunTask.Result:
        duration = time.monotonic() - t0
        metrics = dict(monitor.metrics()) if monitor is not None else {}
        if prog.replan_times:
            metrics["mean_replan_time_s"] = float(np.mean(prog.replan_times))
            metrics["loop_rate_hz"] = prog.replans / duration if duration > 0 else 0.0
        for name, values in (("mean_image_to_command_s", prog.latencies), ("mean_frame_wait_s", prog.frame_waits),
                             ("mean_execute_s", prog.executions)):
            if values:
                metrics[name] = float(np.mean(values))
        metrics["replans"] = float(prog.replans)
        result = R(success=reason == R.REASON_SUCCEEDED, reason=reason,
                   message="" if reason == R.REASON_SUCCEEDED else message, steps=prog.steps, duration=duration,
                   final_cost=prog.cost if math.isfinite(prog.cost) else math.nan,
                   metric_names=list(metrics), metrics=[float(v) for v in metrics.values()])
        if reason == R.REASON_SUCCEEDED:
            handle.succeed()
        elif reason == R.REASON_CANCELED:
            handle.canceled()
        else:
            handle.abort()
        self._set_state(PlanStatus.STATE_DONE, spec, prog)
        rates = (f", {prog.replans} replans ({metrics.get('loop_rate_hz', 0.0):.2f} Hz, mean replan "
                 f"{metrics.get('mean_replan_time_s', 0.0):.3f} s)") if prog.replans else ""
        text = (f"RunTask {spec.task} ended: {reason} after {prog.steps} steps in {duration:.1f} s{rates}"
                + (f": {message}" if message and reason != R.REASON_SUCCEEDED else ""))
        if reason in (R.REASON_SUCCEEDED, R.REASON_CANCELED, R.REASON_PREEMPTED):
            self.get_logger().info(text)  # (rclpy: one severity per call site)
        else:
            self.get_logger().warning(text)
        return result

    def _open_recording(self, handle, spec: GoalSpec, mpc):
        """A rerun recording of this goal in ``recording_dir`` (None when the parameter is empty)."""
        folder = str(self._param("recording_dir")).strip()
        if not folder:
            return None
        from dexwm_model.decoder import decoder_folder
        from dexwm_planner.recording import RunRecording

        name = f"{spec.task}_{time.strftime('%Y%m%d-%H%M%S')}_{bytes(handle.goal_id.uuid).hex()[:8]}"
        try:
            decoder = decoder_folder(str(self._param("decoder")), str(self._param("checkpoint"))) or None
            recording = RunRecording(Path(folder).expanduser() / f"{name}.rrd", mpc, decoder=decoder, name=name)
        except OSError as exc:
            raise ValueError(f"parameter recording_dir: cannot write a recording in {folder}: {exc}") from exc
        recording.log_goal(spec.image)
        return recording

    # ---------------------------------------------------------------------------------------- loop helpers
    def _stop_reason(self, handle, run: _Run, spec: GoalSpec, prog: _Progress, t0: float, monitor,
                     cost_monitor) -> tuple[str, str] | None:
        if handle.is_cancel_requested:
            return R.REASON_CANCELED, "canceled by the client"
        if run.preempted.is_set():
            return R.REASON_PREEMPTED, "pre-empted by a newer goal"
        if self._closing.is_set() or not rclpy.ok(context=self.context):
            return R.REASON_ERROR, "the planner node is shutting down"
        now = time.monotonic()
        with self._lock:
            safety, image, joints = self._safety, self._image, self._joints
        state = (safety or {}).get("state")
        if state == "ESTOP" or ((safety or {}).get("estop") or {}).get("engaged"):
            return R.REASON_ESTOP, f"safety layer: {(safety or {}).get('reason', 'e-stop engaged')}"
        if state == "CONTROLLER_TIMEOUT":
            return R.REASON_CONTROLLER_TIMEOUT, f"safety layer: {safety.get('reason', '')}"
        if state == "CAMERA_TIMEOUT":
            return R.REASON_CAMERA_STALE, f"safety layer: {safety.get('reason', '')}"
        image_age = now - max(t0, image[1] if image is not None else -math.inf)
        if image_age > self._param("image_timeout"):
            return R.REASON_CAMERA_STALE, (f"no camera frame on {self.resolve_topic_name(self._param('image_topic'))}"
                                           f" for {image_age:.2f} s (> image_timeout {self._param('image_timeout'):g}"
                                           " s)")
        joints_age = now - max(t0, joints[1] if joints is not None else -math.inf)
        if joints_age > self._param("joint_states_timeout"):
            return R.REASON_CONTROLLER_TIMEOUT, (f"no /joint_states for {joints_age:.2f} s (> joint_states_timeout "
                                                 f"{self._param('joint_states_timeout'):g} s)")
        if (monitor is not None and monitor.success) or cost_monitor.success:
            return R.REASON_SUCCEEDED, ""
        if prog.steps >= spec.max_steps:
            return R.REASON_TIMEOUT, f"max_steps ({spec.max_steps}) reached"
        if now - t0 > spec.max_duration:
            return R.REASON_TIMEOUT, f"max_duration ({spec.max_duration:g} s) reached"
        return None

    def _wait(self, predicate, deadline: float, stop_check) -> tuple[object, tuple[str, str] | None]:
        """Wait until ``predicate()`` (called with the lock held) returns a value, a stop reason, or the deadline
        (value None)."""
        while True:
            with self._lock:
                value = predicate()
                if value is None and time.monotonic() < deadline:
                    self._lock.wait(0.05)
                    value = predicate()
            if value is not None:
                return value, None
            stop = stop_check()
            if stop is not None:
                return None, stop
            if time.monotonic() >= deadline:
                return None, None

    def _wait_frame(self, handle, run, spec, prog, t0, monitor, cost_monitor, seen: int):
        def fresh():
            if self._image is None or self._image_count <= seen or self._joints is None:
                return None
            return self._image[0], self._image[1], self._joints[0].copy(), self._image_count

        frame, stop = self._wait(fresh, math.inf,
                                 lambda: self._stop_reason(handle, run, spec, prog, t0, monitor, cost_monitor))
        return frame, stop

    def _execute_waypoint(self, handle, run, spec, prog, t0, monitor, cost_monitor, waypoint: np.ndarray,
                          duration: float, image_arrival: float | None) -> tuple[str, str] | None:
        stop_check = lambda: self._stop_reason(handle, run, spec, prog, t0, monitor, cost_monitor)  # noqa: E731
        with self._lock:
            counts = dict((self._safety or {}).get("counts") or {})
        before = (counts.get("accepted", 0), counts.get("rejected", 0))
        self._publish_waypoint(waypoint, duration)
        if image_arrival is not None:
            prog.latencies.append(time.monotonic() - image_arrival)

        def acknowledged():
            c = (self._safety or {}).get("counts") or {}
            now = (c.get("accepted", 0), c.get("rejected", 0))
            return (now, dict(self._safety)) if now != before else None

        ack, stop = self._wait(acknowledged, time.monotonic() + self._param("ack_timeout"), stop_check)
        if stop is not None:
            return stop
        if ack is None:
            return R.REASON_CONTROLLER_TIMEOUT, (f"the safety layer did not acknowledge a waypoint within "
                                                 f"{self._param('ack_timeout'):g} s (ack_timeout)")
        (accepted, _), status = ack
        if accepted == before[0]:
            reason = (status.get("last_rejection") or {}).get("reason", "no reason given")
            prog.rejections += 1
            self.get_logger().warning(f"waypoint rejected by the safety layer ({prog.rejections} in a row): {reason}")
            stop = stop_check()  # a refusal because of the e-stop / a watchdog ends the task with that reason
            if stop is not None:
                return stop
            if prog.rejections >= self._param("max_rejections"):
                return R.REASON_ERROR, (f"the safety layer rejected {prog.rejections} waypoints in a row; last: "
                                        f"{reason}")
            return None
        prog.rejections = 0
        prog.steps += 1
        planned = float((status.get("last_accepted") or {}).get("duration", duration))
        started = time.monotonic()
        tolerance = self._param("position_tolerance")

        wait_settled = bool(self._param("wait_settled"))

        def arrived():
            if self._joints is None:
                return None
            q, t = self._joints
            if np.abs(q - waypoint).max() <= tolerance:
                return True
            if t - started >= planned:  # a joint state from after the move's end
                if not wait_settled:
                    return True
                if self._joints_prev is not None:
                    q0, t_prev = self._joints_prev
                    speed = np.abs(q - q0).max() / max(t - t_prev, 1e-6)
                    if speed < SETTLED_SPEED:
                        return True
            return None

        with self._lock:
            q_start = None if self._joints is None else self._joints[0].copy()
        _, stop = self._wait(arrived, started + planned + self._param("execute_timeout"), stop_check)
        if stop is not None or q_start is None:
            return stop
        return self._check_followed(prog, waypoint, q_start, tolerance)

    def _check_followed(self, prog: _Progress, waypoint: np.ndarray, q_start: np.ndarray,
                        tolerance: float) -> tuple[str, str] | None:
        """A controller that is up but not executing (e.g. the arm in a reflex error) leaves /joint_states flowing
        while the arm stands still: after ``max_unfollowed`` such waypoints in a row the task ends."""
        with self._lock:
            q_end = self._joints[0].copy()
        arm = slice(0, len(ARM_JOINT_NAMES))
        commanded = float(np.abs(waypoint[arm] - q_start[arm]).max())
        moved = float(np.abs(q_end[arm] - q_start[arm]).max())
        if commanded <= tolerance or moved >= FOLLOWED_FRACTION * commanded:
            prog.unfollowed = 0
            return None
        prog.unfollowed += 1
        self.get_logger().warning(f"the arm did not follow a waypoint ({prog.unfollowed} in a row): commanded "
                                  f"{commanded:.3f} rad, moved {moved:.3f} rad")
        if prog.unfollowed >= self._param("max_unfollowed"):
            return R.REASON_CONTROLLER_TIMEOUT, (
                f"the arm did not follow {prog.unfollowed} waypoints in a row (last: commanded {commanded:.3f} rad, "
                f"moved {moved:.3f} rad): its controller is not executing")
        return None

    # ---------------------------------------------------------------------------------------------- output
    def _publish_waypoint(self, positions: np.ndarray, duration: float) -> None:
        msg = JointTrajectory(header=Header(stamp=self.get_clock().now().to_msg()), joint_names=list(ALL_JOINT_NAMES))
        msg.points = [JointTrajectoryPoint(positions=[float(x) for x in positions],
                                           time_from_start=conv.seconds_to_duration(duration))]
        self.pub_waypoint.publish(msg)

    def _hold(self, why: str) -> None:
        with self._lock:
            joints, safety = self._joints, self._safety
        if joints is None:
            return
        if safety is not None and not safety.get("accepting", True):
            return  # the safety layer holds the robot itself and refuses waypoints
        self._publish_waypoint(joints[0], float(self._param("hold_duration")))
        self.get_logger().info(f"hold published ({why})")

    def _feedback(self, handle, prog: _Progress, monitor, cost_monitor) -> None:
        held = monitor.held if monitor is not None else cost_monitor.held
        phase = RunTask.Feedback.PHASE_HOLDING if held > 0 else prog.phase
        fb = RunTask.Feedback(step=prog.steps, phase=phase, cost=_f32(prog.cost),
                              best_plan_cost=_f32(prog.best_cost), held_success_steps=int(held),
                              planning_time=float(prog.planning_time))
        if prog.predicted is not None:
            fb.predicted = prog.predicted
        handle.publish_feedback(fb)

    def _set_state(self, state: str, spec: GoalSpec | None, prog: _Progress | None) -> None:
        self._state = state
        status = self._last_status or PlanStatus(joint_names=list(ALL_JOINT_NAMES), num_joints=len(ALL_JOINT_NAMES))
        status.state = state
        if spec is not None:
            status.planner = spec.method
        if prog is not None:
            status.step = prog.steps
        self._last_status = status
        self._publish_status()

    def _publish_status(self) -> None:
        status = self._last_status or PlanStatus(state=self._state, planner=str(self._param("planner")),
                                                 joint_names=list(ALL_JOINT_NAMES), num_joints=len(ALL_JOINT_NAMES))
        status.header = Header(stamp=self.get_clock().now().to_msg())
        self.pub_status.publish(status)

    def _publish_plan(self, spec: GoalSpec, prog: _Progress, step, q: np.ndarray) -> None:
        info = step.info
        iters = info.get("iterations") or []
        last = iters[-1] if iters else {}
        elite = np.asarray(last.get("elite_costs") or [], dtype=np.float64)
        mpc = self._mpc_for(spec.task, spec.method)
        status = PlanStatus(state=PlanStatus.STATE_PLANNING, planner=info.get("method", spec.method), step=prog.steps,
                            cost=_f32(prog.cost), best_cost=_f32(step.cost), iterations=len(iters),
                            samples=int(mpc.planner.config.planner.samples), joint_names=list(ALL_JOINT_NAMES),
                            num_waypoints=int(step.plan.shape[0]), num_joints=int(step.plan.shape[1]),
                            replan_time=float(step.planning_time_s))
        ess = last.get("effective_samples")
        status.elite_count = int(math.floor(ess)) if ess is not None and math.isfinite(ess) else int(elite.size)
        if elite.size:
            status.elite_cost_mean, status.elite_cost_std = _f32(elite.mean()), _f32(elite.std())
            status.elite_cost_min, status.elite_cost_max = _f32(elite.min()), _f32(elite.max())
        status.waypoints = [float(v) for v in np.asarray(step.plan, dtype=np.float64).reshape(-1)]
        self._last_status = status
        self._publish_status()
        self.pub_markers.publish(self._plan_markers(q, step.plan))

    def _predicted_keypoints(self, joints: np.ndarray) -> HandKeypoints:
        """FK of a waypoint: 21 keypoints in the camera's optical frame and their pixels in the task camera."""
        with torch.no_grad():
            world = self.fk.hand21(torch.as_tensor(joints, dtype=torch.float64)).numpy()
        pose = self.camera.pose
        cam = (world - pose[:3, 3]) @ pose[:3, :3]
        with self._lock:
            info = self._camera_info
        K, hw = info if info is not None else (self.camera.intrinsics, self.camera.image_hw)
        z = cam[:, 2:3]
        uv = np.where(z > 1e-6, (cam @ K.T)[:, :2] / np.where(z > 1e-6, z, 1.0), np.nan)
        return hand_keypoints_message(cam, continuous_to_message_pixels(uv), hw, np.ones(len(cam)),
                                      self.get_clock().now().to_msg(), CAMERA_OPTICAL_FRAME)

    def _plan_markers(self, q: np.ndarray, plan: np.ndarray) -> MarkerArray:
        """Wrist + fingertips (FK) of every waypoint (spheres) and each point's path from now (lines), in
        panda_link0."""
        from dexwm_ros.monitor import REACH_SITE_NAMES

        seq = np.concatenate([q[None], np.asarray(plan, dtype=np.float64)])
        with torch.no_grad():
            world = self.fk.positions(torch.as_tensor(seq, dtype=torch.float64), REACH_SITE_NAMES).numpy()
        base = (world - self._base_t) @ self._base_R  # (T + 1, 5, 3) in panda_link0
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=ARM_BASE_FRAME)
        markers = [Marker(header=header, action=Marker.DELETEALL)]
        n = base.shape[0]
        for t in range(1, n):
            a = 0.35 + 0.65 * t / (n - 1)
            m = Marker(header=header, ns="plan_keypoints", id=t, type=Marker.SPHERE_LIST, action=Marker.ADD)
            m.scale.x = m.scale.y = m.scale.z = 0.02
            m.color = ColorRGBA(r=0.1, g=0.6, b=1.0, a=float(a))
            m.pose.orientation.w = 1.0
            m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in base[t]]
            markers.append(m)
        for k in range(base.shape[1]):
            m = Marker(header=header, ns="plan_paths", id=k, type=Marker.LINE_STRIP, action=Marker.ADD)
            m.scale.x = 0.005
            m.color = ColorRGBA(r=1.0, g=0.55, b=0.0, a=0.9)
            m.pose.orientation.w = 1.0
            m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in base[:, k]]
            markers.append(m)
        return MarkerArray(markers=markers)

    # --------------------------------------------------------------------------------------- goal capture
    def _on_set_goal(self, request: SetGoalFromCamera.Request, response: SetGoalFromCamera.Response):
        name = str(self._param("camera_name"))
        if request.camera not in ("", name):
            response.success = False
            response.message = (f"unknown camera {request.camera!r}: this server captures from {name!r} "
                                f"({self.resolve_topic_name(self._param('image_topic'))})")
            return response
        max_age = request.max_age or self._param("goal_max_age")
        timeout = request.timeout or self._param("goal_timeout")
        if not (math.isfinite(max_age) and max_age > 0 and math.isfinite(timeout) and timeout >= 0):
            response.success = False
            response.message = (f"max_age must be > 0 and timeout >= 0 (finite seconds), found max_age {max_age}, "
                                f"timeout {timeout}")
            return response

        def fresh():
            if self._image is None or time.monotonic() - self._image[1] > max_age:
                return None
            return self._image[0]

        msg, _ = self._wait(fresh, time.monotonic() + timeout, lambda: None)
        if msg is None:
            with self._lock:
                image = self._image
            response.success = False
            response.message = ("no frame received from the camera" if image is None else
                                f"the newest frame is {time.monotonic() - image[1]:.2f} s old (> max_age {max_age:g} "
                                f"s) and no newer one arrived within {timeout:g} s")
            return response
        try:
            rgb = image_to_rgb(msg, "camera frame")
        except ValueError as exc:
            response.success, response.message = False, str(exc)
            return response
        with self._lock:
            self._stored_goal = (msg, rgb)
        response.success = True
        response.message = f"stored a {msg.width}x{msg.height} {msg.encoding} frame as the goal image"
        response.image = msg
        response.stamp = msg.header.stamp
        self.get_logger().info(response.message)
        return response

    # --------------------------------------------------------------------------------------- start-up task
    def _load_autorun_goal(self) -> RunTask.Goal:
        from dexwm_planner.tasks.episode_file import EpisodeFileError, read_episode_file

        path = str(self._param("goal_image")).strip()
        episode = None
        if str(self._param("episode_file")).strip():
            try:
                episode = read_episode_file(Path(str(self._param("episode_file")).strip()).expanduser())
            except EpisodeFileError as exc:
                raise ConfigError(f"parameter episode_file: {exc}") from None
            if episode["task"] != self._autorun_task:
                raise ConfigError(f"parameter episode_file: a {episode['task']} episode, but the start-up task is "
                                  f"{self._autorun_task!r}")
            path = path or str(episode["goal_image"])
        if not path:
            raise ConfigError(f"parameter goal_image: a goal image file is required to run the start-up task "
                              f"{self._autorun_task!r} (parameter task); give `-p goal_image:=FILE` or "
                              "`dexwm launch <task> --goal-image FILE`")
        file = Path(path).expanduser()
        try:
            from PIL import Image as PILImage

            with PILImage.open(file) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"parameter goal_image: cannot read {file} as an image: {exc}") from exc
        goal = RunTask.Goal(task=self._autorun_task, goal_image=conv.numpy_to_image(rgb, "rgb8"))
        if episode is not None:
            self._fill_episode_goal(goal, episode)
        return goal

    def _fill_episode_goal(self, goal: RunTask.Goal, episode: dict) -> None:
        """The success-test inputs of a suite episode's goal state, in the world frame (as the benchmark scores)."""
        goal.target_object = str(episode["object"]) if goal.task != RunTask.Goal.TASK_REACH else ""
        if goal.task == RunTask.Goal.TASK_PLACE:
            goal.target_position.header.frame_id = WORLD_FRAME
            x, y, z = (float(v) for v in episode["goal_object_position"])
            goal.target_position.point.x, goal.target_position.point.y, goal.target_position.point.z = x, y, z
        if goal.task == RunTask.Goal.TASK_REACH:
            with torch.no_grad():
                world = self.fk.hand21(torch.as_tensor(episode["goal_joints"], dtype=torch.float64)).numpy()
            world[list(REACH_POINTS_21)] = episode["goal_keypoints"]  # the demonstration's measured end state
            goal.goal_keypoints = hand_keypoints_message(world, None, None, np.ones(len(world)), None, WORLD_FRAME)

    def _write_result(self, result: RunTask.Result) -> None:
        path = str(self._param("result_file")).strip()
        if not path:
            return
        out = Path(path).expanduser()
        data = {"task": self._autorun_task, "success": bool(result.success), "reason": result.reason,
                "message": result.message, "steps": int(result.steps), "duration_s": round(result.duration, 3),
                "final_cost": None if not math.isfinite(result.final_cost) else round(float(result.final_cost), 6),
                "metrics": {n: float(v) for n, v in zip(result.metric_names, result.metrics)}}
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            tmp.replace(out)
        except OSError as exc:
            self.get_logger().error(f"cannot write the result file {out}: {exc}")

    def _autorun(self) -> None:
        log = self.get_logger()
        deadline = time.monotonic() + float(self._param("startup_timeout"))
        client = ActionClient(self, RunTask, RUN_TASK_ACTION, callback_group=self.cb)

        def ready():
            s = self._safety
            return True if (self._image is not None and self._joints is not None and s is not None
                            and s.get("state") == "READY") else None

        ok, _ = self._wait(ready, deadline, lambda: None)
        if not ok or not client.wait_for_server(timeout_sec=max(0.0, deadline - time.monotonic())):
            with self._lock:
                have = {"camera": self._image is not None, "joint_states": self._joints is not None,
                        "safety READY": (self._safety or {}).get("state") == "READY"}
            log.error(f"start-up task {self._autorun_task}: inputs not ready within startup_timeout "
                      f"{self._param('startup_timeout'):g} s: {have}")
            self.exit_code = EXIT_TASK_FAILED
            self.finished.set_result(self.exit_code)
            return
        done = threading.Event()
        outcome: dict = {}

        def on_result(future) -> None:
            outcome["result"] = future.result().result
            done.set()

        def on_goal(future) -> None:
            future.result().get_result_async().add_done_callback(on_result)

        client.send_goal_async(self._autorun_goal).add_done_callback(on_goal)
        while not done.wait(0.2):
            if self._closing.is_set():
                return
        result = outcome["result"]
        log.info(f"start-up task {self._autorun_task}: {result.reason} after {result.steps} steps "
                 f"({result.duration:.1f} s){': ' + result.message if result.message else ''}")
        self._write_result(result)
        self.exit_code = 0 if result.success else EXIT_TASK_FAILED
        self.finished.set_result(self.exit_code)

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            self._lock.notify_all()


def _f32(value: float) -> float:
    v = float(value)
    return v if math.isfinite(v) else math.nan


def main(args: list[str] | None = None) -> int:
    return run_node(PlannerNode, "dexwm_planner_node", args,
                    executor_factory=lambda: MultiThreadedExecutor(num_threads=6),
                    fatal={CheckpointLoadError: EXIT_CANNOT_RUN},
                    until=lambda node: node.finished.done(),  # done only after a start-up task
                    exit_code=lambda node: node.exit_code)


if __name__ == "__main__":
    raise SystemExit(main())
