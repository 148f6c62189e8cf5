"""``dexwm_recorder``: records the run's topics into a rosbag2 bag (MCAP, zstd chunks) that ``ros2 bag`` reads.

Every configured topic (parameter ``topics``) is subscribed as soon as a publisher appears on the graph (looked for
every ``discovery_period_s``); its type comes from the graph, its subscription QoS is compatible with every
publisher's (transient local when all publishers latch, so ``/tf_static`` and ``/robot_description`` are
recorded even when published before the recorder started). Subscriptions are raw: the CDR bytes are written as
received, stamped with their receive time (ns), never deserialised. The publishers' offered QoS profiles and the
type hash (checked against the one the publisher reports) go into ``metadata.yaml``.

The bag is closed (summary + ``metadata.yaml`` written) on Ctrl-C / SIGTERM / shutdown and after
``max_duration_s``; an output folder that exists is refused (exit 2). Parameters: ``config/recorder_node.yaml``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from dexwm_ros.bags.errors import BagError
from dexwm_ros.bags.replay import message_class
from dexwm_ros.bags.ros_qos import bag_qos, subscription_qos
from dexwm_ros.bags.typestore import UnknownTypeError
from dexwm_ros.bags.writing import COMPRESSIONS, STORAGES, BagWriter
from dexwm_ros.controller_common import float_range, int_range
from dexwm_ros.node_runner import run_node
from dexwm_robot.config import ConfigError, load_yaml

NODE_NAME = "dexwm_recorder"
PARAMS_FILE = "recorder_node.yaml"


def default_output(now: datetime | None = None) -> Path:
    """``bags/dexwm_<UTC date_time>`` under the working directory (as ``ros2 bag record`` names its bags)."""
    now = now or datetime.now(timezone.utc)
    return Path("bags") / f"dexwm_{now.strftime('%Y_%m_%d-%H_%M_%S')}"


def _defaults() -> dict:
    data = load_yaml(PARAMS_FILE)
    try:
        return dict(data[NODE_NAME]["ros__parameters"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{PARAMS_FILE}: expected '{NODE_NAME}: {{ros__parameters: {{...}}}}'") from exc


class RecorderNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        d = _defaults()
        D = ParameterDescriptor
        ro = dict(read_only=True)
        self.declare_parameter("output", str(d["output"]), D(
            description="bag folder to create; it must not exist (recordings are never overwritten); empty: "
                        "bags/dexwm_<UTC date_time> under the working directory",
            additional_constraints="a path that does not exist", **ro))
        self.declare_parameter("storage", str(d["storage"]), D(
            description="rosbag2 storage plugin of the bag", additional_constraints=" | ".join(STORAGES), **ro))
        self.declare_parameter("compression", str(d["compression"]), D(
            description="compression: zstd per MCAP chunk (per message with sqlite3) or none",
            additional_constraints=" | ".join(COMPRESSIONS), **ro))
        self.declare_parameter("topics", [str(t) for t in d["topics"]], D(
            description="topics to record once a publisher appears (type discovered from the graph)",
            additional_constraints="at least one absolute or relative topic name", **ro))
        self.declare_parameter("queue_depth", int(d["queue_depth"]), D(
            description="keep-last depth of each subscription", integer_range=int_range(1, 10000), **ro))
        self.declare_parameter("discovery_period_s", float(d["discovery_period_s"]), D(
            description="s between looks at the graph for publishers of topics not recorded yet",
            floating_point_range=float_range(0.01, 10.0), **ro))
        self.declare_parameter("max_duration_s", float(d["max_duration_s"]), D(
            description="s of recording, then the bag is closed and the node exits; 0: until stopped",
            floating_point_range=float_range(0.0, 1e7), **ro))
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        storage, compression = str(p("storage")), str(p("compression"))
        if storage not in STORAGES:
            raise ConfigError(f"parameter storage: expected one of {list(STORAGES)}, found {storage!r}")
        if compression not in COMPRESSIONS:
            raise ConfigError(f"parameter compression: expected one of {list(COMPRESSIONS)}, found {compression!r}")
        topics = [t for t in p("topics") if str(t).strip()]
        if not topics:
            raise ConfigError("parameter topics: give at least one topic to record")
        self.wanted = {self.resolve_topic_name(str(t)) for t in topics}
        self.depth = int(p("queue_depth"))
        output = Path(str(p("output")).strip() or default_output()).expanduser()
        try:
            self.bag = BagWriter(output, storage, compression,
                                 custom_data={"dexwm.recorder": self.get_fully_qualified_name(),
                                              "dexwm.topics": " ".join(sorted(self.wanted))}).open()
        except BagError as exc:
            raise ConfigError(f"parameter output: {exc}") from None
        self._skipped: dict[str, str] = {}  # topic -> why it is not recorded
        self._recording = {}  # topic -> its raw subscription
        self._started = time.monotonic()
        self._max_duration = float(p("max_duration_s"))
        try:
            self._discover()
            self.create_timer(float(p("discovery_period_s")), self._discover)
            if self._max_duration > 0:
                self.create_timer(min(0.1, self._max_duration), self._check_duration)
        except BaseException:
            self.bag.close()  # a bag that was opened is always left readable
            raise
        self.get_logger().info(f"recording {len(self.wanted)} topic(s) into {self.bag.path} ({storage}, "
                               f"compression {compression}); topics appear as their publishers do")

    # ------------------------------------------------------------------------------------------ discovery
    def _discover(self) -> None:
        if not self.bag.is_open:
            return
        types = dict(self.get_topic_names_and_types())
        for topic in sorted(self.wanted - set(self._recording) - set(self._skipped)):
            if topic not in types:
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue  # only subscribers so far: nothing to record, and no QoS to match
            if len(types[topic]) != 1:
                self._skip(topic, f"published with several types {types[topic]}")
                continue
            msgtype = types[topic][0]
            reported = {str(info.topic_type_hash) for info in publishers}
            try:
                self.bag.add_topic(topic, msgtype, [bag_qos(info.qos_profile) for info in publishers],
                                   publisher_hash=sorted(reported)[0] if len(reported) == 1 else None)
            except (UnknownTypeError, BagError) as exc:
                self._skip(topic, str(exc).strip("'\""))
                continue
            qos = subscription_qos([info.qos_profile for info in publishers], self.depth)
            try:
                msg_class = message_class(msgtype)
            except (ImportError, AttributeError, ValueError):
                self._skip(topic, f"message type {msgtype} has no Python package installed here")
                continue
            self._recording[topic] = self.create_subscription(
                msg_class, topic, lambda data, t=topic: self._on_message(t, data), qos, raw=True)
            self.get_logger().info(f"recording {topic} ({msgtype}, {qos.reliability.name.lower()}, "
                                   f"{qos.durability.name.lower()})")

    def _skip(self, topic: str, reason: str) -> None:
        self._skipped[topic] = reason
        self.get_logger().error(f"not recording {topic}: {reason}")

    # ------------------------------------------------------------------------------------------ recording
    def _on_message(self, topic: str, data: bytes) -> None:
        if self.bag.is_open:
            self.bag.write(topic, self.get_clock().now().nanoseconds, data)

    def _check_duration(self) -> None:
        if time.monotonic() - self._started >= self._max_duration and self.bag.is_open:
            self.get_logger().info(f"max_duration_s {self._max_duration:g} s reached")
            self.close()
            rclpy.try_shutdown(context=self.context)

    def close(self) -> None:
        """Close the bag (index and metadata.yaml written) and say what was recorded; safe to call twice."""
        if not self.bag.is_open:
            return
        self.bag.close()
        counts = ", ".join(f"{t} {r.count}" for t, r in sorted(self.bag.topics.items())) or "nothing"
        never = sorted(self.wanted - set(self.bag.topics) - set(self._skipped))
        self.get_logger().info(f"bag {self.bag.path} closed: {counts}"
                               + (f"; never published: {never}" if never else ""))


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, "dexwm_recorder_node", args)


if __name__ == "__main__":
    raise SystemExit(main())
