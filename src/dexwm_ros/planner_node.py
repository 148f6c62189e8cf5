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

The MPC loop of an accepted goal is the task runner of ``dexwm bench tasks`` (:mod:`dexwm_planner.tasks.runner`)
with the ROS robot port (:mod:`dexwm_ros.planner_port`): wait for a camera frame that arrived after the last move
ended, with the joints -> ``GoalImageMPC.observe`` -> ``plan`` -> publish the waypoint(s) one at a time, each
acknowledged by the safety layer and executed (joints within ``position_tolerance`` of it, or its duration over —
with ``wait_settled`` also the joints settled — or ``execute_timeout`` past it) -> repeat. Feedback after every
replan and every executed waypoint. ``max_steps`` counts replans whose waypoints were executed (as the benchmark's
``mpc.max_steps``), and the last one's waypoints are executed in full before the task ends with TIMEOUT.

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

import numpy as np
import torch
from geometry_msgs.msg import PoseArray
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from dexwm_interfaces.action import RunTask
from dexwm_interfaces.msg import PlanStatus
from dexwm_interfaces.srv import SetGoalFromCamera
from dexwm_robot.config import ConfigError
from dexwm_robot.joint_names import ALL_JOINT_NAMES
from dexwm_ros.controller_common import STATUS_QOS, STATUS_TOPIC, WAYPOINT_TOPIC
from dexwm_ros.exit_codes import EXIT_CANNOT_RUN
from dexwm_ros.hybrid_executor import HybridExecutor
from dexwm_ros.images import image_to_rgb
from dexwm_ros.node_runner import run_node
from dexwm_ros.planner_autorun import StartupTask
from dexwm_ros.planner_goals import GoalRejected, GoalSpec, GoalValidation
from dexwm_ros.planner_output import PlannerOutputs
from dexwm_ros.planner_params import (  # noqa: F401  (re-exported: the node's parameters and goal vocabulary)
    METHODS,
    NODE_NAME,
    PARAMS_FILE,
    TASKS,
    PlannerNodeConfig,
    PlannerParameters,
    load_node_config,
)
from dexwm_ros.planner_port import run_goal
from dexwm_ros.topics import (
    CAMERA_INFO_TOPIC,
    PLAN_MARKERS_TOPIC,
    PLAN_STATUS_TOPIC,
    RUN_TASK_ACTION,
    SET_GOAL_SERVICE,
)
from dexwm_ros.world_model_node import CheckpointLoadError, load_world_model, resolve_device

OBJECT_POSES_TOPIC = "dexwm/sim/object_poses"  # the simulator's extras (dexwm_ros.sim_node)
OBJECT_NAMES_TOPIC = "dexwm/sim/object_names"
R = RunTask.Result
_LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
# the plan status keeps its last 50 messages for subscribers that join late (a monitor, rviz, a test probe started
# just before the node): a volatile subscriber gets only new ones, a transient-local one the history too
PLAN_STATUS_QOS = QoSProfile(depth=50, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class _Run:
    handle: object
    spec: GoalSpec | None
    error: str | None
    preempted: threading.Event = field(default_factory=threading.Event)



class PlannerNode(PlannerParameters, GoalValidation, PlannerOutputs, StartupTask, Node):
    """The node: parameters, inputs (the newest message of each topic), the action server, the goal-capture service;
    a goal runs in :func:`dexwm_ros.planner_port.run_goal`."""

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

        self.cb = ReentrantCallbackGroup()  # callbacks that may block: on the executor's worker threads
        self.messages_cb = MutuallyExclusiveCallbackGroup()  # subscriptions: inline (HybridExecutor)
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

        cb = self.cb  # may block (a goal's execution, the goal-capture service): worker threads
        msgs = self.messages_cb  # store the newest message and notify: inline in the spinning thread
        self.pub_waypoint = self.create_publisher(JointTrajectory, WAYPOINT_TOPIC, 10)
        self.pub_status = self.create_publisher(PlanStatus, PLAN_STATUS_TOPIC, PLAN_STATUS_QOS)
        self.pub_markers = self.create_publisher(MarkerArray, PLAN_MARKERS_TOPIC, 5)
        self.create_subscription(Image, p("image_topic"), self._on_image, 2, callback_group=msgs)
        self.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, self._on_camera_info, 2, callback_group=msgs)
        self.create_subscription(JointState, "joint_states", self._on_joints, 20, callback_group=msgs)
        self.create_subscription(String, STATUS_TOPIC, self._on_safety, STATUS_QOS, callback_group=msgs)
        self.create_subscription(PoseArray, OBJECT_POSES_TOPIC, self._on_object_poses, 5, callback_group=msgs)
        self.create_subscription(String, OBJECT_NAMES_TOPIC, self._on_object_names, _LATCHED, callback_group=msgs)
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
                return run_goal(self, handle, run)
            finally:
                with self._lock:
                    if self._active is run:
                        self._active = None


    def _open_recording(self, handle, spec: GoalSpec, mpc):
        """A rerun recording of this goal in ``recording_dir`` (None when the parameter is empty)."""
        folder = str(self._param("recording_dir")).strip()
        if not folder:
            return None
        from dexwm_planner.recording.goal_recording import open_goal_recording

        return open_goal_recording(folder, spec.task, bytes(handle.goal_id.uuid).hex()[:8], mpc,
                                   str(self._param("decoder")), str(self._param("checkpoint")), spec.image)

    # --------------------------------------------------------------------------------------- waiting on messages
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

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            self._lock.notify_all()




def main(args: list[str] | None = None) -> int:
    return run_node(PlannerNode, "dexwm_planner_node", args,
                    executor_factory=lambda node: HybridExecutor(threaded_groups=[node.cb], num_threads=6),
                    fatal={CheckpointLoadError: EXIT_CANNOT_RUN},
                    until=lambda node: node.finished.done(),  # done only after a start-up task
                    exit_code=lambda node: node.exit_code)


if __name__ == "__main__":
    raise SystemExit(main())
