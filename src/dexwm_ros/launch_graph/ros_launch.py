"""The graph as a ROS 2 ``LaunchDescription`` (for ``ros2 launch``; needs the ``launch`` / ``launch_ros`` packages of
a full ROS 2 install, which are imported only here). ``launch/<task>.launch.py`` call :func:`launch_description`.

Every argument of :data:`~dexwm_ros.launch_graph.graph.ARGUMENTS` is declared; the nodes are chosen when the
launch runs (an ``OpaqueFunction`` reads the argument values and calls ``describe``), conditional nodes carry an
``IfCondition`` on their argument, and nodes that are not installed are logged instead of started.
"""

from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dexwm_ros.launch_graph.episode import with_suite_episode
from dexwm_ros.launch_graph.graph import ARGUMENTS, PACKAGE, describe
from dexwm_robot.config import installed_prefix


def _package_for(package: str, executable: str) -> str | None:
    """``launch_ros`` finds ``package``'s executables in ``<prefix>/lib/<package>/`` (a colcon install); pip puts
    our console scripts in ``bin/`` instead, so for those the executable is run by name from ``PATH`` (package
    None)."""
    if package == PACKAGE:
        prefix = installed_prefix()
        if prefix is None or not (prefix / "lib" / PACKAGE / executable).is_file():
            return None
    return package


def nodes_for(task: str, values: dict[str, str]) -> list:
    graph = describe(task, **values)
    actions: list = [LogInfo(msg=f"dexwm {task}: {m.node.name} is not started: {m.reason}")
                     for m in graph.active_missing()]
    for ext in graph.external:
        actions.append(LogInfo(msg=f"dexwm {task}: bring up {ext.name} separately: {ext.command}"))
    for spec in graph.nodes:
        actions.append(Node(
            package=_package_for(spec.package, spec.executable), executable=spec.executable, name=spec.name,
            parameters=list(spec.parameters), remappings=list(spec.remappings), arguments=list(spec.arguments),
            condition=IfCondition(LaunchConfiguration(spec.condition)) if spec.condition else None,
            output="screen"))
    return actions


def launch_description(task: str) -> LaunchDescription:
    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                                      **({"choices": list(a.choices)} if a.choices else {}))
                for a in ARGUMENTS]

    def setup(context, *args, **kwargs):
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
        values = with_suite_episode(task, values["backend"], values)
        return nodes_for(task, values)

    return LaunchDescription([*declared, OpaqueFunction(function=setup)])
