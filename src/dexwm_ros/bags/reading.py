"""Reading our rosbag2 recordings with ``rosbags``: topics with their types, hashes and recorded QoS, and the raw
CDR messages in time order (for replay) or deserialised (for checks and analysis). No ROS import here.

Every failure (no ``metadata.yaml``, a truncated or corrupt storage file, an unknown message type) is a
:class:`BagError` naming the bag and the problem; messages are checked while they are read, so a bag that is
damaged part-way fails there with the offset in time where it broke.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from rosbags.interfaces import Qos
from rosbags.rosbag2 import Reader

from dexwm_ros.bags.errors import BagError
from dexwm_ros.bags.typestore import bag_typestore


@dataclass(frozen=True)
class BagTopic:
    """A topic as the bag records it."""

    name: str
    msgtype: str
    type_hash: str
    count: int
    offered_qos: tuple[Qos, ...]


@dataclass(frozen=True)
class RawMessage:
    """One recorded message: topic, type, receive time (ns) and the serialised CDR bytes."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


class BagReader:
    """An open bag folder (``with BagReader(path) as bag: ...``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise BagError(self.path, "no such bag folder")
        if not (self.path / "metadata.yaml").is_file():
            raise BagError(self.path, "not a rosbag2 folder (no metadata.yaml; was the recording stopped before it "
                                      "was closed?)")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises its own error type per storage plugin and file problem
            raise BagError(self.path, f"cannot be opened ({type(exc).__name__}: {exc})") from None
        store = bag_typestore()
        self.topics: dict[str, BagTopic] = {}
        for conn in self._reader.connections:
            if conn.topic in self.topics:
                continue
            if conn.msgtype not in store.fielddefs:
                self.close()
                raise BagError(self.path, f"topic {conn.topic}: message type {conn.msgtype} is unknown here")
            qos = tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
            count = sum(c.msgcount for c in self._reader.connections if c.topic == conn.topic)
            self.topics[conn.topic] = BagTopic(conn.topic, conn.msgtype, conn.digest, count, qos)

    @property
    def start_ns(self) -> int:
        return self._reader.start_time

    @property
    def end_ns(self) -> int:
        return self._reader.end_time

    @property
    def message_count(self) -> int:
        return self._reader.message_count

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[RawMessage]:
        """Raw messages in receive-time order, optionally of some ``topics`` and within [start_ns, stop_ns)."""
        wanted = None if topics is None else list(topics)
        if wanted is not None:
            unknown = [t for t in wanted if t not in self.topics]
            if unknown:
                raise BagError(self.path, f"topic(s) {unknown} not recorded; the bag has {sorted(self.topics)}")
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        last = self.start_ns
        try:
            for conn, timestamp, data in self._reader.messages(conns, start=start_ns, stop=stop_ns):
                last = timestamp
                yield RawMessage(conn.topic, conn.msgtype, timestamp, bytes(data))
        except BagError:
            raise
        except Exception as exc:
            at = (last - self.start_ns) * 1e-9
            raise BagError(self.path, f"damaged after {at:.3f} s of recording ({type(exc).__name__}: {exc})") \
                from None

    def deserialize(self, message: RawMessage) -> Any:
        """The message as a ``rosbags`` object (same field names as the rclpy message)."""
        try:
            return bag_typestore().deserialize_cdr(message.data, message.msgtype)
        except Exception as exc:
            raise BagError(self.path, f"a {message.msgtype} message on {message.topic} at "
                                      f"{message.timestamp_ns} ns cannot be decoded ({type(exc).__name__}: {exc})") \
                from None

    def close(self) -> None:
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            reader.close()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def validate_bag(path: str | Path) -> dict[str, int]:
    """Read every message of the bag once (CDR decoded); message counts per topic, or a :class:`BagError`."""
    counts: dict[str, int] = {}
    with BagReader(path) as bag:
        for message in bag.messages():
            bag.deserialize(message)
            counts[message.topic] = counts.get(message.topic, 0) + 1
        for name, topic in bag.topics.items():
            if counts.get(name, 0) != topic.count:
                raise BagError(bag.path, f"topic {name}: metadata says {topic.count} messages, the storage holds "
                                         f"{counts.get(name, 0)}")
    return counts
