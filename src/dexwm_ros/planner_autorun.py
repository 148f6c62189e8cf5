"""The planner node's start-up task (parameter ``task``): its goal from ``goal_image`` / ``episode_file``, sent to
the node's own action server once the camera, joints and the safety layer are ready; the result written to
``result_file`` and the exit code set (0 on success, 3 otherwise). A part of
:class:`dexwm_ros.planner_node.PlannerNode`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch
from rclpy.action import ActionClient

from dexwm_interfaces.action import RunTask
from dexwm_planner.tasks.result_file import task_result_record, write_result_file
from dexwm_robot.config import ConfigError
from dexwm_robot.joint_names import WORLD_FRAME
from dexwm_ros import conversions as conv
from dexwm_ros.exit_codes import EXIT_TASK_FAILED
from dexwm_ros.hand_keypoints import REACH_POINTS_21, hand_keypoints_message
from dexwm_ros.topics import RUN_TASK_ACTION


class StartupTask:
    """The start-up task (mixed into the node)."""

    def _load_autorun_goal(self) -> RunTask.Goal:
        from dexwm_planner.tasks.episode_file import EpisodeFileError, read_episode_file, read_goal_image

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
            rgb = read_goal_image(file)
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
        record = task_result_record(self._autorun_task, result.success, result.reason, result.message, result.steps,
                                    result.duration, result.final_cost, dict(zip(result.metric_names, result.metrics)))
        try:
            write_result_file(path, record)
        except OSError as exc:
            self.get_logger().error(f"cannot write the result file {Path(path).expanduser()}: {exc}")

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
