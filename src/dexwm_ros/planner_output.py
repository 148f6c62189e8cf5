"""What the planner node publishes besides the RunTask result: waypoints and holds (through the safety layer),
feedback, PlanStatus and the plan's markers (wrist + fingertips of every waypoint, forward kinematics). A part of
:class:`dexwm_ros.planner_node.PlannerNode`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

from dexwm_interfaces.action import RunTask
from dexwm_interfaces.msg import HandKeypoints, PlanStatus
from dexwm_robot.joint_names import ALL_JOINT_NAMES, ARM_BASE_FRAME, CAMERA_OPTICAL_FRAME
from dexwm_ros import conversions as conv
from dexwm_ros.hand_keypoints import continuous_to_message_pixels, hand_keypoints_message

if TYPE_CHECKING:
    from dexwm_ros.planner_goals import GoalSpec
    from dexwm_ros.planner_port import _Progress


class PlannerOutputs:
    """The node's publishers' messages (mixed into the node)."""

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


def _f32(value: float) -> float:
    v = float(value)
    return v if math.isfinite(v) else math.nan
