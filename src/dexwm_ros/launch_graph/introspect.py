"""What the running ROS graph holds, seen through rclpy's graph API (DDS discovery; no spinning needed)."""

from __future__ import annotations

import os


class GraphWatcher:
    """A node in its own context that accumulates every node name and topic (with types) it discovers."""

    def __init__(self, node_name: str | None = None) -> None:
        import rclpy
        from rclpy.signals import SignalHandlerOptions

        self._rclpy = rclpy
        self.context = rclpy.Context()
        # the starter handles SIGINT / SIGTERM itself (it forwards them to the nodes)
        rclpy.init(args=[], context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node_name = node_name or f"dexwm_launch_{os.getpid()}"
        self.node = rclpy.create_node(self.node_name, context=self.context, start_parameter_services=False)
        self.nodes: set[str] = set()
        self.topics: dict[str, set[str]] = {}

    def sample(self) -> None:
        for name, namespace in self.node.get_node_names_and_namespaces():
            if name == self.node_name:
                continue
            self.nodes.add(namespace.rstrip("/") + "/" + name)
        for topic, types in self.node.get_topic_names_and_types():
            self.topics.setdefault(topic, set()).update(types)

    def report(self) -> str:
        lines = [f"nodes seen ({len(self.nodes)}):"]
        lines += [f"  {n}" for n in sorted(self.nodes)]
        lines.append(f"topics seen ({len(self.topics)}):")
        lines += [f"  {t}  [{', '.join(sorted(types))}]" for t, types in sorted(self.topics.items())]
        return "\n".join(lines)

    def close(self) -> None:
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
