"""The DexWM ROS 2 graph, defined once as data (no ROS import): which nodes run for a task and a backend.

``describe(task, backend, **arguments) -> Graph`` is the single definition both starters use:
``launch/<task>.launch.py`` turns it into ``launch_ros`` actions for users with a full ROS 2 install, and
``dexwm launch <task>`` (:mod:`dexwm_ros.launch_graph.cli`) starts the same nodes as processes here.

Backends:
  sim   ``dexwm_sim_node`` stands in for the robot drivers and the camera (same topics as the real ones).
  real  the drivers are brought up outside this graph (``Graph.external``: franka_ros2, allegro_hand_ros2 with
        their topics); this graph adds our controllers and the RealSense camera node ``dexwm_camera_node``.
Both: the robot description, the safety layer and arm/hand controller nodes, the world model and the planner,
RViz (argument ``rviz``) and a recorder (argument ``record``).

Only installed executables are part of a graph: a node whose console script (or ROS executable) is not found is
listed in ``Graph.missing`` instead, and the starters report it. Parameters are the node's section of its
parameter file under ``config/`` (files that do not exist yet are left out) plus per-argument overrides.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dexwm_ros.exit_codes import EXIT_TASK_FAILED
from dexwm_robot.config import config_dir

PACKAGE = "dexwm"
TASKS = ("reach", "grasp", "place")
BACKENDS = ("sim", "real")
RVIZ_CONFIG = "dexwm.rviz"
RESULT_FILE = "result.json"  # written by the planner's start-up task beside the episode file
NEEDS_CHECKPOINT = ("dexwm_world_model_node", "dexwm_planner_node")  # not started without a checkpoint


@dataclass(frozen=True)
class ArgumentSpec:
    """A launch argument (``DeclareLaunchArgument``); values travel as strings in ROS launch."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None


ARGUMENTS: tuple[ArgumentSpec, ...] = (
    ArgumentSpec("backend", "sim", "sim: the MuJoCo robot behind the drivers' topics; real: franka_ros2 + "
                 "allegro_hand_ros2 brought up separately, RealSense camera", BACKENDS),
    ArgumentSpec("goal_image", "", "goal image file: the planner runs the task with it and its exit ends the run "
                 "(empty: the planner serves RunTask goals on /dexwm/run_task)"),
    ArgumentSpec("checkpoint", "", "world-model checkpoint folder of the world model and planner nodes (empty: those "
                 "two nodes are not started)"),
    ArgumentSpec("rviz", "false", "start RViz with config/dexwm.rviz", ("true", "false")),
    ArgumentSpec("record", "false", "record the run's topics with the recorder node", ("true", "false")),
    ArgumentSpec("seed", "0", "random seed (simulated object layout, planner sampling)"),
    ArgumentSpec("episode", "0", "task suite episode to run on the simulator when a checkpoint is given without a "
                 "goal image (its start state, goal image and goal state are written to an episode file)"),
    ArgumentSpec("episode_file", "", "episode.json of a suite episode: the simulator starts from its scene seed and "
                 "start joints, the planner runs its task with its goal image, scores it with its goal state and "
                 "writes result.json and a rerun recording (.rrd) beside it (empty: none)"),
    ArgumentSpec("serve", "false", "the planner serves RunTask goals on /dexwm/run_task instead of running a suite "
                 "episode", ("true", "false")),
)
ARGUMENT_NAMES = tuple(a.name for a in ARGUMENTS)


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph, as ``launch_ros.actions.Node`` takes it.

    ``parameters``: parameter files (absolute paths) and dicts of overrides, applied in order.
    ``condition``: the name of a boolean launch argument; the node runs only when it is true.
    ``ends_run``: the node finishes the task; its clean exit ends the whole run successfully.
    ``task_failed_code``: with ``ends_run``, the exit code by which the node reports that its task failed.
    """

    package: str
    executable: str
    name: str
    parameters: tuple[str | dict[str, Any], ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()
    condition: str | None = None
    ends_run: bool = False
    task_failed_code: int | None = None
    description: str = ""

    @property
    def parameter_files(self) -> list[str]:
        return [p for p in self.parameters if isinstance(p, str)]

    @property
    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.parameters:
            if isinstance(p, dict):
                out.update(p)
        return out


@dataclass(frozen=True)
class Topic:
    name: str
    type: str
    direction: str  # "pub" or "sub", seen from the external bring-up


@dataclass(frozen=True)
class ExternalBringup:
    """Something the real backend needs that this graph does not start (documented, checked by its topics)."""

    name: str
    command: str
    topics: tuple[Topic, ...]
    note: str = ""


@dataclass(frozen=True)
class MissingNode:
    node: NodeSpec
    reason: str


@dataclass
class Graph:
    task: str
    backend: str
    arguments: dict[str, str]  # every argument of ARGUMENTS, as a launch-style string
    nodes: list[NodeSpec]  # installed nodes (conditional ones included; see active_nodes)
    missing: list[MissingNode] = field(default_factory=list)
    external: list[ExternalBringup] = field(default_factory=list)

    def condition_true(self, node: NodeSpec) -> bool:
        return node.condition is None or _as_bool(self.arguments[node.condition], node.condition)

    def active_nodes(self) -> list[NodeSpec]:
        """The nodes that run with this graph's argument values."""
        return [n for n in self.nodes if self.condition_true(n)]

    def active_missing(self) -> list[MissingNode]:
        return [m for m in self.missing if self.condition_true(m.node)]

    def ends_on_its_own(self) -> bool:
        return any(n.ends_run for n in self.active_nodes())


# ---------------------------------------------------------------------------------------------- values
def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"argument {name}: expected true or false, got {value!r}")


def _as_nonneg_int(value: Any, name: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"argument {name}: expected a non-negative integer, got {value!r}") from None
    if number < 0 or number > 2**31 - 1:
        raise ValueError(f"argument {name}: expected an integer in 0..2147483647, got {number}")
    return number


def normalise_arguments(backend: str, arguments: dict[str, Any]) -> dict[str, str]:
    """Every argument as a launch-style string, validated; unknown names are an error."""
    unknown = sorted(set(arguments) - set(ARGUMENT_NAMES))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {unknown}; known: {list(ARGUMENT_NAMES)}")
    values = {a.name: a.default for a in ARGUMENTS}
    values.update({k: v for k, v in arguments.items() if v is not None})
    values["backend"] = backend
    if backend not in BACKENDS:
        raise ValueError(f"argument backend: expected one of {list(BACKENDS)}, got {backend!r}")
    for name in ("rviz", "record", "serve"):
        values[name] = "true" if _as_bool(values[name], name) else "false"
    for name in ("seed", "episode"):
        values[name] = str(_as_nonneg_int(values[name], name))
    for name in ("goal_image", "checkpoint", "episode_file"):
        values[name] = "" if values[name] is None else str(values[name])
    return values


# ----------------------------------------------------------------------------------------- executables
def find_executable(package: str, executable: str) -> str | None:
    """Path of an installed node executable, or None.

    Our console scripts are looked up beside the running interpreter (the venv's ``bin``), then on ``PATH``;
    any package's executables also in the ROS layout ``<prefix>/lib/<package>/<executable>`` of every prefix
    in ``AMENT_PREFIX_PATH`` (how ``ros2 run`` finds them).
    """
    candidates = []
    if package == PACKAGE:
        candidates.append(Path(sys.executable).parent / executable)
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates += [Path(p) / "lib" / package / executable for p in prefixes]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return shutil.which(executable)


def _params_files(node_name: str, *names: str) -> list[str]:
    """The files among ``config/<names>`` that are ROS parameter files with a section for ``node_name``
    (``<node_name>: {ros__parameters: ...}`` or the wildcard ``/**``); other YAML files are not for ``--params-file``.
    """
    found = []
    for name in names:
        path = config_dir() / name
        if not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {exc}") from exc
        if isinstance(data, dict) and any(isinstance(data.get(key), dict) and "ros__parameters" in data[key]
                                          for key in (node_name, "/" + node_name, "/**")):
            found.append(str(path))
    return found


# ------------------------------------------------------------------------------------------------ graph
def _all_nodes(task: str, backend: str, values: dict[str, str]) -> list[NodeSpec]:
    seed = int(values["seed"])
    episode = _episode(task, backend, values["episode_file"])

    def node(executable: str, name: str, files: tuple[str, ...], overrides: dict | None = None,
             **kwargs: Any) -> NodeSpec:
        params = (*_params_files(name, *files), *([overrides] if overrides else []))
        return NodeSpec(PACKAGE, executable, name, params, **kwargs)

    # with the simulator nobody else publishes the hand's links on /tf (it publishes panda_link1..7 itself); on the
    # real robot the drivers' own robot_state_publishers do
    description_overrides = ({"publish_tf": True, "tf_skip_frames": [f"panda_link{i}" for i in range(1, 8)]}
                             if backend == "sim" else None)
    if backend == "sim":
        sim_overrides = {"seed": seed} if episode is None else {
            "seed": int(episode["seed"]), "start_joints": [float(x) for x in episode["start_joints"]]}
        robot = node("dexwm_sim_node", "dexwm_sim", ("sim_node.yaml",), sim_overrides,
                     description="simulated Panda + Allegro and camera behind the drivers' topics")
    else:
        robot = node("dexwm_camera_node", "dexwm_camera", ("camera.yaml",),
                     description="RealSense colour camera -> /camera/color/image_raw + camera_info")
    return [
        robot,
        node("dexwm_description_node", "dexwm_description", ("description.yaml",), description_overrides,
             description="publishes the URDF on /robot_description (latched)"
                         + (" and the hand's links on /tf" if backend == "sim" else "")),
        node("dexwm_safety_node", "dexwm_safety", ("controllers.yaml",),
             description="limits, workspace, watchdogs, e-stop: approves every waypoint"),
        node("dexwm_arm_controller_node", "dexwm_arm_controller", ("controllers.yaml",),
             description="approved moves -> the arm's JointTrajectoryController"),
        node("dexwm_hand_controller_node", "dexwm_hand_controller", ("controllers.yaml",),
             description="approved moves -> the Allegro position controller"),
        node("dexwm_world_model_node", "dexwm_world_model", ("world_model_node.yaml", "world_model.yaml"),
             {"checkpoint": values["checkpoint"]}, description="latent world model (encoder + predictor)"),
        node("dexwm_planner_node", "dexwm_planner", ("planner_node.yaml", "planner.yaml"),
             {"task": task if values["goal_image"] or episode is not None else "", "goal_image": values["goal_image"],
              "seed": seed, "checkpoint": values["checkpoint"],
              **({} if episode is None else {"episode_file": values["episode_file"],
                                             "result_file": str(Path(values["episode_file"]).parent / RESULT_FILE),
                                             "recording_dir": str(Path(values["episode_file"]).parent)})},
             ends_run=True, task_failed_code=EXIT_TASK_FAILED,
             description=f"plans the {task} task in the world model's latent space"),
        node("dexwm_recorder_node", "dexwm_recorder", ("recorder_node.yaml", "recorder.yaml"), condition="record",
             description="records the run's topics"),
        NodeSpec("rviz2", "rviz2", "rviz2", arguments=("-d", str(config_dir() / RVIZ_CONFIG)), condition="rviz",
                 description="RViz with the robot, TF, camera image and plan markers"),
    ]


def _episode(task: str, backend: str, path: str) -> dict | None:
    """The checked episode file of argument ``episode_file`` (None when empty)."""
    if not path:
        return None
    if backend != "sim":
        raise ValueError("argument episode_file: suite episodes run on the simulator only (backend sim)")
    from dexwm_planner.tasks.episode_file import read_episode_file

    episode = read_episode_file(path)  # EpisodeFileError (a ValueError) says what is wrong
    if episode["task"] != task:
        raise ValueError(f"argument episode_file: {path} is a {episode['task']} episode, not {task}")
    return episode


def _external(backend: str) -> list[ExternalBringup]:
    if backend != "real":
        return []
    return [
        ExternalBringup(
            "franka_ros2 (Panda arm)",
            "ros2 launch franka_bringup franka.launch.py robot_ip:=<robot ip>   # franka_ros2 v0.1.0 for a Panda",
            (Topic("/panda_arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", "sub"),
             Topic("/joint_states", "sensor_msgs/msg/JointState", "pub")),
            "a ros2_control JointTrajectoryController named as arm_controller_name in config/controllers.yaml"),
        ExternalBringup(
            "allegro_hand_ros2 (Allegro hand)",
            "ros2 launch allegro_hand_bringup allegro_hand.launch.py",
            (Topic("/allegro_hand_position_controller/commands", "std_msgs/msg/Float64MultiArray", "sub"),
             Topic("/joint_states", "sensor_msgs/msg/JointState", "pub")),
            "16 positions ah_joint00..33 on the position controller's commands topic"),
    ]


def describe(task: str, backend: str = "sim", **arguments: Any) -> Graph:
    """The graph for ``task`` on ``backend`` with the given launch arguments (see ``ARGUMENTS``)."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {list(TASKS)}, got {task!r}")
    values = normalise_arguments(backend, arguments)
    nodes, missing = [], []
    for node in _all_nodes(task, backend, values):
        if find_executable(node.package, node.executable) is None:
            where = ("console script not installed (not in pyproject.toml [project.scripts] or not re-installed)"
                     if node.package == PACKAGE else f"ROS package {node.package} not installed")
            missing.append(MissingNode(node, f"{node.executable}: {where}"))
        elif node.executable in NEEDS_CHECKPOINT and not values["checkpoint"]:
            missing.append(MissingNode(node, f"{node.executable}: needs a world-model checkpoint (argument "
                                             "checkpoint / --checkpoint DIR)"))
        else:
            nodes.append(node)
    return Graph(task=task, backend=backend, arguments=values, nodes=nodes, missing=missing,
                 external=_external(backend))
