"""The ROS robot behind the task runner (:mod:`dexwm_planner.tasks.runner`): :class:`RosPort` waits on the
planner node's latest messages and publishes through it, and :func:`run_goal` runs one accepted RunTask goal with
:func:`~dexwm_planner.tasks.runner.run_task` and turns the run into the RunTask result.

The port, per replan: a camera frame that arrived after the last move ended, with the joints (observe); the
PlanStatus, markers, feedback and the recording of each plan; each waypoint published to the safety layer,
acknowledged (accepted or rejected) within ``ack_timeout`` and executed: the joints within ``position_tolerance``
of it, or its duration over (with ``wait_settled`` also the joints settled), or ``execute_timeout`` past it; then
whether the arm followed it. Its own stops (checked by the runner and while it waits): cancel, pre-emption,
shutdown, the safety layer's e-stop and watchdogs, no camera frame for ``image_timeout`` s, no /joint_states for
``joint_states_timeout`` s; inside a wait also the task's success and ``max_duration`` (not ``max_steps``: the last
replan's waypoints are executed in full, as in ``dexwm bench tasks``). Success: the ground-truth test of
:mod:`dexwm_ros.monitor` on the measured joints, or for goals without ground truth the observation cost below
``success_cost`` for ``success.hold_ticks`` replans.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import rclpy

from dexwm_interfaces.action import RunTask
from dexwm_interfaces.msg import HandKeypoints, PlanStatus
from dexwm_planner.tasks.runner import Executed, Observation, Replan, Stop, run_task
from dexwm_robot.config import ConfigError
from dexwm_robot.joint_names import ARM_JOINT_NAMES
from dexwm_ros.images import image_to_rgb

R = RunTask.Result
SETTLED_SPEED = 0.05  # rad/s: joints slower than this after a move's duration count as arrived
FOLLOWED_FRACTION = 0.2  # an arm move counts as followed when the arm moved at least this part of the command


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
    replan_cpu_times: list = field(default_factory=list)  # CPU s of the planning thread per replan (wall / CPU > 1:
    # the thread waited for a core or the GIL)
    latencies: list = field(default_factory=list)  # image arrival -> first waypoint published, s
    frame_waits: list = field(default_factory=list)  # s waiting for a fresh frame after a move
    executions: list = field(default_factory=list)  # s from publishing a waypoint to its arrival
    phase: str = RunTask.Feedback.PHASE_OBSERVING
    predicted: HandKeypoints | None = None


class RosPort:
    """One goal's robot port on the planner ``node`` (its inputs, lock, parameters and publishers)."""

    def __init__(self, node, handle, run, prog: _Progress, t0: float, monitor, cost_monitor, mpc,
                 recording) -> None:
        self.node, self.handle, self.run, self.spec = node, handle, run, run.spec
        self.prog, self.t0 = prog, t0
        self.monitor, self.cost_monitor, self.mpc, self.recording = monitor, cost_monitor, mpc, recording
        with node._lock:
            self.seen = node._image_count

    # ------------------------------------------------------------------------------------------ checks
    def clock(self) -> float:
        return time.monotonic()

    def stop_reason(self) -> Stop | None:
        node, p = self.node, self.node._param
        if self.handle.is_cancel_requested:
            return Stop(R.REASON_CANCELED, "canceled by the client")
        if self.run.preempted.is_set():
            return Stop(R.REASON_PREEMPTED, "pre-empted by a newer goal")
        if node._closing.is_set() or not rclpy.ok(context=node.context):
            return Stop(R.REASON_ERROR, "the planner node is shutting down")
        now = time.monotonic()
        with node._lock:
            safety, image, joints = node._safety, node._image, node._joints
        state = (safety or {}).get("state")
        if state == "ESTOP" or ((safety or {}).get("estop") or {}).get("engaged"):
            return Stop(R.REASON_ESTOP, f"safety layer: {(safety or {}).get('reason', 'e-stop engaged')}")
        if state == "CONTROLLER_TIMEOUT":
            return Stop(R.REASON_CONTROLLER_TIMEOUT, f"safety layer: {safety.get('reason', '')}")
        if state == "CAMERA_TIMEOUT":
            return Stop(R.REASON_CAMERA_STALE, f"safety layer: {safety.get('reason', '')}")
        image_age = now - max(self.t0, image[1] if image is not None else -math.inf)
        if image_age > p("image_timeout"):
            return Stop(R.REASON_CAMERA_STALE, f"no camera frame on {node.resolve_topic_name(p('image_topic'))} for "
                                               f"{image_age:.2f} s (> image_timeout {p('image_timeout'):g} s)")
        joints_age = now - max(self.t0, joints[1] if joints is not None else -math.inf)
        if joints_age > p("joint_states_timeout"):
            return Stop(R.REASON_CONTROLLER_TIMEOUT, f"no /joint_states for {joints_age:.2f} s (> "
                                                     f"joint_states_timeout {p('joint_states_timeout'):g} s)")
        return None

    def succeeded(self) -> bool:
        return (self.monitor is not None and self.monitor.success) or self.cost_monitor.success

    # ------------------------------------------------------------------------------------------ observe / plan
    def observe(self, interrupt) -> Observation | Stop:
        node, prog, seen = self.node, self.prog, self.seen
        prog.phase = RunTask.Feedback.PHASE_OBSERVING
        node._set_state(PlanStatus.STATE_OBSERVING, self.spec, prog)
        waited = time.monotonic()

        def fresh():
            if node._image is None or node._image_count <= seen or node._joints is None:
                return None
            return node._image[0], node._image[1], node._joints[0].copy(), node._image_count

        frame, stop = node._wait(fresh, math.inf, interrupt)
        if stop is not None:
            return stop
        prog.frame_waits.append(time.monotonic() - waited)
        msg, arrival, q, self.seen = frame
        rgb = image_to_rgb(msg, "camera image")
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        return Observation(image=rgb, joints=q, t=stamp if stamp > 0 else arrival, wait_s=prog.frame_waits[-1],
                           extra={"arrival": arrival})

    def planning(self, loop) -> None:
        self.prog.phase = RunTask.Feedback.PHASE_PLANNING
        self.node._set_state(PlanStatus.STATE_PLANNING, self.spec, self.prog)

    def planned(self, replan: Replan, loop) -> None:
        prog, step, q = self.prog, replan.step, replan.observation.joints
        prog.replans += 1
        prog.best_cost = float(step.cost)
        prog.cost = self.mpc.observation_cost()
        prog.planning_time = float(step.planning_time_s)
        prog.replan_times.append(prog.planning_time)
        cpu = ((step.info or {}).get("timing") or {}).get("thread_cpu_s")
        if cpu is not None:
            prog.replan_cpu_times.append(float(cpu))
        self.cost_monitor.update(prog.cost)
        prog.predicted = self.node._predicted_keypoints(step.plan[-1])
        self.node._publish_plan(self.spec, prog, step, q)
        if self.recording is not None:
            self.recording.log_step(replan.index, replan.observation.image, q, step, t=replan.observation.t)

    # ------------------------------------------------------------------------------------------ execute
    def executing(self, replan: Replan, loop) -> None:
        self.prog.phase = RunTask.Feedback.PHASE_EXECUTING
        self.node._set_state(PlanStatus.STATE_EXECUTING, self.spec, self.prog)
        self._feedback()

    def execute(self, waypoint: np.ndarray, duration: float, replan: Replan, i: int, interrupt) -> Executed:
        started, steps = time.monotonic(), self.prog.steps
        stop = self._execute_waypoint(waypoint, duration, replan.observation.extra["arrival"] if i == 0 else None,
                                      interrupt)
        self.prog.executions.append(time.monotonic() - started)
        self._feedback()
        return Executed(executed=self.prog.steps > steps, ticks=0, stop=stop)

    def executed(self, replan: Replan, loop) -> None:
        with self.node._lock:
            self.seen = self.node._image_count

    def _feedback(self) -> None:
        self.node._feedback(self.handle, self.prog, self.monitor, self.cost_monitor)

    def _execute_waypoint(self, waypoint: np.ndarray, duration: float, image_arrival: float | None,
                          stop_check) -> Stop | None:
        node, prog, p = self.node, self.prog, self.node._param
        with node._lock:
            counts = dict((node._safety or {}).get("counts") or {})
        before = (counts.get("accepted", 0), counts.get("rejected", 0))
        node._publish_waypoint(waypoint, duration)
        if image_arrival is not None:
            prog.latencies.append(time.monotonic() - image_arrival)

        def acknowledged():
            c = (node._safety or {}).get("counts") or {}
            now = (c.get("accepted", 0), c.get("rejected", 0))
            return (now, dict(node._safety)) if now != before else None

        ack, stop = node._wait(acknowledged, time.monotonic() + p("ack_timeout"), stop_check)
        if stop is not None:
            return stop
        if ack is None:
            return Stop(R.REASON_CONTROLLER_TIMEOUT, f"the safety layer did not acknowledge a waypoint within "
                                                     f"{p('ack_timeout'):g} s (ack_timeout)")
        (accepted, _), status = ack
        if accepted == before[0]:
            reason = (status.get("last_rejection") or {}).get("reason", "no reason given")
            prog.rejections += 1
            node.get_logger().warning(f"waypoint rejected by the safety layer ({prog.rejections} in a row): {reason}")
            stop = stop_check()  # a refusal because of the e-stop / a watchdog ends the task with that reason
            if stop is not None:
                return stop
            if prog.rejections >= p("max_rejections"):
                return Stop(R.REASON_ERROR, f"the safety layer rejected {prog.rejections} waypoints in a row; last: "
                                            f"{reason}")
            return None
        prog.rejections = 0
        prog.steps += 1
        planned = float((status.get("last_accepted") or {}).get("duration", duration))
        started = time.monotonic()
        tolerance = p("position_tolerance")
        wait_settled = bool(p("wait_settled"))

        def arrived():
            if node._joints is None:
                return None
            q, t = node._joints
            if np.abs(q - waypoint).max() <= tolerance:
                return True
            if t - started >= planned:  # a joint state from after the move's end
                if not wait_settled:
                    return True
                if node._joints_prev is not None:
                    q0, t_prev = node._joints_prev
                    speed = np.abs(q - q0).max() / max(t - t_prev, 1e-6)
                    if speed < SETTLED_SPEED:
                        return True
            return None

        with node._lock:
            q_start = None if node._joints is None else node._joints[0].copy()
        _, stop = node._wait(arrived, started + planned + p("execute_timeout"), stop_check)
        if stop is not None or q_start is None:
            return stop
        return self._check_followed(waypoint, q_start, tolerance)

    def _check_followed(self, waypoint: np.ndarray, q_start: np.ndarray, tolerance: float) -> Stop | None:
        """A controller that is up but not executing (e.g. the arm in a reflex error) leaves /joint_states flowing
        while the arm stands still: after ``max_unfollowed`` such waypoints in a row the task ends."""
        node, prog = self.node, self.prog
        with node._lock:
            q_end = node._joints[0].copy()
        arm = slice(0, len(ARM_JOINT_NAMES))
        commanded = float(np.abs(waypoint[arm] - q_start[arm]).max())
        moved = float(np.abs(q_end[arm] - q_start[arm]).max())
        if commanded <= tolerance or moved >= FOLLOWED_FRACTION * commanded:
            prog.unfollowed = 0
            return None
        prog.unfollowed += 1
        node.get_logger().warning(f"the arm did not follow a waypoint ({prog.unfollowed} in a row): commanded "
                                  f"{commanded:.3f} rad, moved {moved:.3f} rad")
        if prog.unfollowed >= node._param("max_unfollowed"):
            return Stop(R.REASON_CONTROLLER_TIMEOUT, (
                f"the arm did not follow {prog.unfollowed} waypoints in a row (last: commanded {commanded:.3f} rad, "
                f"moved {moved:.3f} rad): its controller is not executing"))
        return None


def run_goal(node, handle, run) -> RunTask.Result:
    """Run one accepted, validated goal (``run.spec``) on ``node`` to its end; hold the robot; the result."""
    from dexwm_ros.monitor import CostMonitor, GroundTruth, TaskMonitor

    spec = run.spec
    t0 = time.monotonic()
    prog = _Progress()
    node.get_logger().info(f"RunTask {spec.task} with {spec.method}: goal from {spec.image_source}, up to "
                           f"{spec.max_steps} steps / {spec.max_duration:g} s"
                           + (f", object {spec.target_object}" if spec.target_object else ""))
    truth = GroundTruth(spec.task, spec.goal_points, spec.target_object, spec.target_position)
    monitor = TaskMonitor(truth, node.success_cfg, node.fk) if truth.available else None
    cost_monitor = CostMonitor(node._param("success_cost"), node.success_cfg.hold_ticks)
    stop: Stop | None = None
    mpc = None
    recording = None
    node._last_status = None
    try:
        mpc = node._mpc_for(spec.task, spec.method)
        mpc.set_goal(spec.image, spec.task)
        recording = node._open_recording(handle, spec, mpc)
    except (ValueError, ConfigError, RuntimeError) as exc:
        stop = Stop(R.REASON_ERROR, f"the planner could not take the goal: {exc}")
    with node._lock:
        node._monitor = monitor
    try:
        if stop is None:
            port = RosPort(node, handle, run, prog, t0, monitor, cost_monitor, mpc, recording)
            stop = run_task(port, mpc, spec.max_steps, spec.max_duration, t0=t0).stop
    except Exception as exc:  # noqa: BLE001 - any failure of the loop ends the task with ERROR, not the node
        node.get_logger().error(f"RunTask failed: {type(exc).__name__}: {exc}")
        stop = Stop(R.REASON_ERROR, f"{type(exc).__name__}: {exc}")
    finally:
        with node._lock:
            node._monitor = None
    reason, message = stop.reason, stop.message
    if recording is not None:
        recording.note(f"RunTask {spec.task} ended: {reason}" + (f": {message}" if message else ""))
        recording.close()
    try:
        if reason != R.REASON_ESTOP:  # a hold the safety layer refuses (it holds already) is not sent
            node._hold(f"task ended: {reason}")
        return finish(node, handle, spec, prog, t0, reason, message, monitor)
    except Exception:  # noqa: BLE001
        if not node._closing.is_set() and rclpy.ok(context=node.context):
            raise
        # shutting down: the context is gone; the safety layer's dead-man's switch holds the robot
        return R(success=False, reason=R.REASON_ERROR, message="the planner node shut down", steps=prog.steps)


def finish(node, handle, spec, prog: _Progress, t0: float, reason: str, message: str, monitor) -> RunTask.Result:
    """The RunTask result (metrics: the success test's distances, loop rates and latencies), the goal's end state,
    the log line."""
    duration = time.monotonic() - t0
    metrics = dict(monitor.metrics()) if monitor is not None else {}
    if prog.replan_times:
        metrics["mean_replan_time_s"] = float(np.mean(prog.replan_times))
        if prog.replan_cpu_times:
            metrics["mean_replan_cpu_s"] = float(np.mean(prog.replan_cpu_times))
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
    node._set_state(PlanStatus.STATE_DONE, spec, prog)
    rates = (f", {prog.replans} replans ({metrics.get('loop_rate_hz', 0.0):.2f} Hz, mean replan "
             f"{metrics.get('mean_replan_time_s', 0.0):.3f} s)") if prog.replans else ""
    text = (f"RunTask {spec.task} ended: {reason} after {prog.steps} steps in {duration:.1f} s{rates}"
            + (f": {message}" if message and reason != R.REASON_SUCCEEDED else ""))
    if reason in (R.REASON_SUCCEEDED, R.REASON_CANCELED, R.REASON_PREEMPTED):
        node.get_logger().info(text)  # (rclpy: one severity per call site)
    else:
        node.get_logger().warning(text)
    return result
