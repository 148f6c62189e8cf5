"""RunTask goal validation: a goal becomes a :class:`GoalSpec` (task, optimiser, goal image, success-test inputs
in the world frame, limits) or :class:`GoalRejected` naming the field and the problem. A part of
:class:`dexwm_ros.planner_node.PlannerNode` (it reads the node's parameters and latest inputs)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from dexwm_interfaces.action import RunTask
from dexwm_robot.joint_names import ARM_BASE_FRAME, CAMERA_OPTICAL_FRAME, WORLD_FRAME
from dexwm_ros.controller_common import STATUS_TOPIC
from dexwm_ros.hand_keypoints import REACH_POINTS_21, keypoints_from_message
from dexwm_ros.images import image_to_rgb
from dexwm_ros.planner_params import METHODS, TASKS
from dexwm_ros.topics import SET_GOAL_SERVICE

KNOWN_FRAMES = (WORLD_FRAME, ARM_BASE_FRAME, CAMERA_OPTICAL_FRAME)


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


class GoalValidation:
    """Turns RunTask goals into GoalSpecs (mixed into the node)."""

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
