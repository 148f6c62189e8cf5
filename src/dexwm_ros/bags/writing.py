"""Writing rosbag2 recordings (format version 9, MCAP or sqlite3 storage) of raw CDR messages with ``rosbags``.

What ``ros2 bag info`` / ``ros2 bag play`` need is written: ``metadata.yaml`` with every topic's type, its RIHS01
type hash and the publishers' offered QoS profiles, and the storage file with the message definitions. MCAP chunks
can be zstd-compressed (storage-level compression, read natively by rosbag2's MCAP plugin). Messages are written as
received (serialised CDR bytes, never deserialised) with their receive time in nanoseconds.

A bag folder that exists already is an error (:class:`BagExistsError`): recordings are never overwritten. A bag is
complete only after :meth:`BagWriter.close` (the MCAP summary and ``metadata.yaml`` are written then).
No ROS import here: the recorder node converts rclpy's QoS profiles to ``rosbags.interfaces.Qos``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rosbags.interfaces import Connection, Qos
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.rosbag2.errors import WriterError

from dexwm_ros.bags.errors import BagError, BagExistsError
from dexwm_ros.bags.typestore import UnknownTypeError, message_definition, type_hash

BAG_VERSION = 9  # the rosbag2 metadata version written by Jazzy / Kilted
# rclpy's major version -> the ROS 2 distribution it belongs to (the ROS wheels carry no distro name)
RCLPY_DISTROS = {3: "humble", 7: "jazzy", 9: "kilted", 10: "rolling"}


def ros_distro() -> str:
    """The distribution the recorder runs on: ``$ROS_DISTRO`` (set by a ROS install's setup.bash), else from the
    installed rclpy's version, else ``unknown``."""
    env = os.environ.get("ROS_DISTRO", "").strip()
    if env:
        return env
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("ros-rclpy", "rclpy"):
        try:
            major = int(version(dist).split(".")[0])
        except (PackageNotFoundError, ValueError):
            continue
        return RCLPY_DISTROS.get(major, "unknown")
    return "unknown"


def stamp_ros_distro(metadata: Path, distro: str) -> None:
    """Replace the ``ros_distro`` the bag library wrote (``rosbags``) with ``distro``; the file is otherwise kept."""
    text = metadata.read_text()
    lines = [f"{line.split(':', 1)[0]}: {distro}" if line.strip().startswith("ros_distro:") else line
             for line in text.splitlines()]
    tmp = metadata.with_name(metadata.name + ".tmp")
    tmp.write_text("\n".join(lines) + ("\n" if text.endswith("\n") else ""))
    os.replace(tmp, metadata)
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
COMPRESSIONS = ("none", "zstd")


@dataclass
class TopicRecord:
    """One recorded topic: its connection in the bag and the number of messages written."""

    topic: str
    msgtype: str
    type_hash: str
    connection: Connection
    count: int = 0
    first_ns: int | None = None
    last_ns: int | None = None


@dataclass
class BagWriter:
    """A new bag at ``path`` (a folder that must not exist); topics are added as they are discovered.

    ``storage``: ``mcap`` (default) or ``sqlite3``; ``compression``: ``zstd`` (per MCAP chunk / sqlite3 message) or
    ``none``. ``custom_data``: strings stored in ``metadata.yaml``'s ``custom_data``.
    """

    path: Path
    storage: str = "mcap"
    compression: str = "zstd"
    custom_data: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()
        if self.storage not in STORAGES:
            raise BagError(self.path, f"storage {self.storage!r} not supported; expected one of {list(STORAGES)}")
        if self.compression not in COMPRESSIONS:
            raise BagError(self.path, f"compression {self.compression!r} not supported; expected one of "
                                      f"{list(COMPRESSIONS)}")
        if self.path.exists():
            raise BagExistsError(self.path, "exists already; recordings are never overwritten: choose a new output "
                                            "folder or remove this one")
        self.topics: dict[str, TopicRecord] = {}
        self._writer: Writer | None = None

    def open(self) -> "BagWriter":
        if self._writer is not None:
            raise BagError(self.path, "already open")
        writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[self.storage])
        if self.compression == "zstd":
            # MCAP: zstd per chunk inside the file; sqlite3: zstd per message (rosbag2's "message" mode)
            mode = CompressionMode.STORAGE if self.storage == "mcap" else CompressionMode.MESSAGE
            writer.set_compression(mode, CompressionFormat.ZSTD)
        for key, value in self.custom_data.items():
            writer.set_custom_data(key, str(value))
        try:
            writer.open()
        except WriterError as exc:
            if self.path.exists():
                raise BagExistsError(self.path, "exists already; recordings are never overwritten") from None
            raise BagError(self.path, f"cannot be created: {exc}") from exc
        except OSError as exc:
            raise BagError(self.path, f"cannot be created: {exc}") from exc
        self._writer = writer
        return self

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def add_topic(self, topic: str, msgtype: str, offered_qos: Sequence[Qos] = (),
                  publisher_hash: str | None = None) -> TopicRecord:
        """Register ``topic`` of ``msgtype``; ``publisher_hash`` (RIHS01 reported on the wire) must match ours.

        :class:`UnknownTypeError` when the type is not in the bag typestore; ``BagError`` on a hash mismatch (the
        publisher's definition differs from ours, so the bag's definition would be wrong).
        """
        if self._writer is None:
            raise BagError(self.path, "not open")
        if topic in self.topics:
            raise BagError(self.path, f"topic {topic} added twice")
        ours = type_hash(msgtype)
        if publisher_hash and publisher_hash != ours:
            raise BagError(self.path, f"topic {topic}: the publisher's {msgtype} has type hash {publisher_hash}, "
                                      f"but the definition available here hashes to {ours} (different message "
                                      "definitions); not recorded")
        connection = self._writer.add_connection(topic, msgtype, msgdef=message_definition(msgtype), rihs01=ours,
                                                 offered_qos_profiles=list(offered_qos))
        record = TopicRecord(topic, msgtype, ours, connection)
        self.topics[topic] = record
        return record

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Append one serialised message received at ``timestamp_ns`` on a registered topic."""
        if self._writer is None:
            raise BagError(self.path, "not open")
        record = self.topics[topic]
        self._writer.write(record.connection, int(timestamp_ns), data)
        record.count += 1
        record.first_ns = timestamp_ns if record.first_ns is None else record.first_ns
        record.last_ns = timestamp_ns

    def close(self) -> None:
        """Write the index and ``metadata.yaml``; the bag is readable afterwards. A second call does nothing."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            stamp_ros_distro(self.path / "metadata.yaml", ros_distro())

    def __enter__(self) -> "BagWriter":
        return self.open()

    def __exit__(self, *_exc) -> None:
        self.close()


__all__ = ["BAG_VERSION", "COMPRESSIONS", "STORAGES", "BagWriter", "TopicRecord", "UnknownTypeError"]
