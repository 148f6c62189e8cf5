"""The DexWM ROS 2 launch graph as data (:mod:`.graph`, no ROS import) and our own starter for it (:mod:`.cli`)."""

from dexwm_ros.launch_graph.graph import (
    ARGUMENTS,
    BACKENDS,
    TASKS,
    ArgumentSpec,
    ExternalBringup,
    Graph,
    MissingNode,
    NodeSpec,
    Topic,
    describe,
)

__all__ = ["ARGUMENTS", "BACKENDS", "TASKS", "ArgumentSpec", "ExternalBringup", "Graph", "MissingNode", "NodeSpec",
           "Topic", "describe"]
