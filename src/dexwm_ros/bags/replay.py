"""ROS side of the bag library (imports rclpy): republish a bag's raw CDR messages with their recorded timing.

:class:`BagReplayer` creates one publisher per replayed topic (type and QoS as recorded: latched topics stay
latched), then :meth:`BagReplayer.play` publishes every message's serialised bytes unchanged
(``publisher.publish(raw_bytes)``: no deserialisation, so what the subscribers get is byte-identical to what was
recorded) at its receive time relative to the first replayed message, divided by ``rate``. With ``clock=True`` it
also publishes ``/clock`` (the recorded receive time of each message before it), so nodes running with
``use_sim_time`` see the recording's time, as with ``ros2 bag play --clock``.

Publishing needs no spinning: ``play`` can run in any thread while the node is (or is not) spun elsewhere.
A bag that turns out damaged part-way stops the replay with a :class:`~dexwm_ros.bags.errors.BagError`.
"""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path
from typing import Iterable

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from dexwm_ros.bags.errors import BagError
from dexwm_ros.bags.reading import BagReader
from dexwm_ros.bags.ros_qos import replay_qos

CLOCK_TOPIC = "/clock"


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name`` (also ``pkg/action/Name_FeedbackMessage``)."""
    package, kind, name = msgtype.split("/")
    module = importlib.import_module(f"{package}.{kind}")
    if kind == "action" and "_" in name:
        action, _, part = name.partition("_")
        return getattr(getattr(module, action).Impl, part)
    return getattr(module, name)


class BagReplayer:
    """Replays ``topics`` (default: all) of the bag at ``path`` through ``node``'s publishers.

    ``start_s`` / ``duration_s`` select a window of the recording (seconds after its first message).
    """

    def __init__(self, node: Node, path: str | Path, topics: Iterable[str] | None = None, rate: float = 1.0,
                 clock: bool = False, start_s: float = 0.0, duration_s: float | None = None,
                 depth: int = 100) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if start_s < 0 or (duration_s is not None and duration_s <= 0):
            raise ValueError(f"start_s must be >= 0 and duration_s > 0, got {start_s} and {duration_s}")
        self.node = node
        self.rate = float(rate)
        self.bag = BagReader(path)
        try:
            names = list(self.bag.topics) if topics is None else list(topics)
            unknown = [t for t in names if t not in self.bag.topics]
            if unknown:
                raise BagError(self.bag.path, f"topic(s) {unknown} not recorded; the bag has {sorted(self.bag.topics)}")
            self.topics = names
            self.start_ns = self.bag.start_ns + int(start_s * 1e9)
            self.stop_ns = None if duration_s is None else self.start_ns + int(duration_s * 1e9)
            self.publishers = {}
            for name in names:
                info = self.bag.topics[name]
                try:
                    cls = message_class(info.msgtype)
                except (ImportError, AttributeError, ValueError):
                    raise BagError(self.bag.path, f"topic {name}: no Python package for {info.msgtype} is installed "
                                                  "here, so it cannot be published") from None
                self.publishers[name] = node.create_publisher(cls, name, replay_qos(info.offered_qos, depth))
            self.clock = (node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(
                depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE))
                if clock else None)
        except BaseException:
            self.bag.close()
            raise
        self.published: dict[str, int] = {name: 0 for name in names}

    def wait_for_subscribers(self, wanted: dict[str, int], timeout: float) -> bool:
        """Wait (up to ``timeout`` s) until each topic has at least the given number of matched subscribers."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(self.publishers[t].get_subscription_count() >= n for t, n in wanted.items()):
                return True
            time.sleep(0.02)
        return False

    def play(self, stop: threading.Event | None = None) -> dict[str, int]:
        """Publish the selected messages with the recorded timing (divided by ``rate``); messages per topic."""
        t0_wall, t0_bag = None, None
        for message in self.bag.messages(self.topics, self.start_ns, self.stop_ns):
            if stop is not None and stop.is_set():
                break
            if t0_wall is None:
                t0_wall, t0_bag = time.monotonic(), message.timestamp_ns
            due = t0_wall + (message.timestamp_ns - t0_bag) * 1e-9 / self.rate
            while (left := due - time.monotonic()) > 0:
                if stop is not None and stop.wait(min(left, 0.05)):
                    return dict(self.published)
                if stop is None:
                    time.sleep(min(left, 0.05))
            if self.clock is not None:
                msg = Clock()
                msg.clock.sec, msg.clock.nanosec = divmod(message.timestamp_ns, 1_000_000_000)
                self.clock.publish(msg)
            self.publishers[message.topic].publish(message.data)
            self.published[message.topic] += 1
        return dict(self.published)

    def close(self) -> None:
        for publisher in self.publishers.values():
            self.node.destroy_publisher(publisher)
        if self.clock is not None:
            self.node.destroy_publisher(self.clock)
        self.publishers = {}
        self.clock = None
        self.bag.close()
