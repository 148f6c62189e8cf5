"""A graph's nodes as command lines: ``<exe> [arguments] --ros-args -r __node:=<name> --params-file <f> -p k:=v
-r from:=to`` (what ``ros2 run`` / ``launch_ros`` pass to a node)."""

from __future__ import annotations

from typing import Any

import yaml

from dexwm_ros.launch_graph.graph import Graph, NodeSpec, find_executable
from dexwm_ros.launch_graph.supervisor import ProcessSpec


def parameter_value(value: Any) -> str:
    """A parameter value as ``-p name:=value`` text (rcl reads it as YAML, so strings are quoted when needed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(parameter_value(v) for v in value) + "]"
    text = str(value)
    try:
        reads_back = yaml.safe_load(text) == text
    except yaml.YAMLError:
        reads_back = False
    if text and reads_back and text.strip() == text:
        return text
    return "'" + text.replace("'", "''") + "'"


def node_command(node: NodeSpec, executable: str) -> list[str]:
    cmd = [executable, *node.arguments, "--ros-args", "-r", f"__node:={node.name}"]
    for p in node.parameters:
        if isinstance(p, str):
            cmd += ["--params-file", p]
        else:
            for key, value in p.items():
                cmd += ["-p", f"{key}:={parameter_value(value)}"]
    for src, dst in node.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def process_specs(graph: Graph) -> list[ProcessSpec]:
    """The processes of the graph's active, installed nodes."""
    specs = []
    for node in graph.active_nodes():
        exe = find_executable(node.package, node.executable)
        if exe is None:
            raise FileNotFoundError(f"{node.executable} ({node.package}) was installed when the graph was described "
                                    "but is gone now")
        specs.append(ProcessSpec(node.name, node_command(node, exe), ends_run=node.ends_run,
                                 task_failed_code=node.task_failed_code))
    return specs
