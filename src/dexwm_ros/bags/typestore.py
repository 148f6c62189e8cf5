"""The message types a bag of ours can hold: ROS 2 Kilted's standard types plus our own ``dexwm_interfaces``.

``rosbags`` ships the standard types (``sensor_msgs``, ``tf2_msgs``, ...); our interfaces are parsed from their
``.msg`` / ``.action`` files in ``src/dexwm_interfaces`` (the same files rosidl builds), so the type hashes
(RIHS01) written into a bag are the ones rclpy reports for those types on the wire. An action contributes the
types rosidl derives from it: ``<Name>_Goal``, ``_Result``, ``_Feedback`` and the ``_FeedbackMessage`` published
on ``<action>/_action/feedback``. No ROS import here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from dexwm_robot.config import installed_prefix, source_root

INTERFACES_PACKAGE = "dexwm_interfaces"
INTERFACES_DIR = source_root() / "src" / INTERFACES_PACKAGE  # the checkout's src/dexwm_interfaces


class UnknownTypeError(KeyError):
    """A message type this typestore cannot describe (so it cannot be written to a bag correctly)."""


def _split_action(text: str, path: Path) -> tuple[str, str, str]:
    parts, current = [], []
    for line in text.splitlines():
        if line.strip() == "---":
            parts.append("\n".join(current))
            current = []
        else:
            current.append(line)
    parts.append("\n".join(current))
    if len(parts) != 3:
        raise ValueError(f"{path}: an action needs goal, result and feedback separated by two '---' lines, "
                         f"found {len(parts)} part(s)")
    return parts[0], parts[1], parts[2]


def interfaces_dir() -> Path:
    """The ``.msg`` / ``.action`` definitions of our interface package: the checkout's ``src/dexwm_interfaces``,
    else the installed ``share/dexwm_interfaces`` (rosidl installs them there)."""
    candidates = [INTERFACES_DIR]
    prefix = installed_prefix(INTERFACES_PACKAGE)
    if prefix is not None:
        candidates.append(prefix / "share" / INTERFACES_PACKAGE)
    for c in candidates:
        if (c / "msg").is_dir():
            return c
    raise FileNotFoundError(f"interface package {INTERFACES_PACKAGE} not found (looked in "
                            f"{', '.join(map(str, candidates))})")


def interface_types(folder: Path | None = None) -> dict:
    """``rosbags`` type definitions of every message (and action-derived message) of our interface package."""
    folder = interfaces_dir() if folder is None else folder
    if not folder.is_dir():
        raise FileNotFoundError(f"interface package {folder} not found (expected src/{INTERFACES_PACKAGE})")
    package = folder.name
    types: dict = {}
    for path in sorted((folder / "msg").glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    for path in sorted((folder / "action").glob("*.action")):
        name = f"{package}/action/{path.stem}"
        goal, result, feedback = _split_action(path.read_text(), path)
        types.update(get_types_from_msg(goal, f"{name}_Goal"))
        types.update(get_types_from_msg(result, f"{name}_Result"))
        types.update(get_types_from_msg(feedback, f"{name}_Feedback"))
        types.update(get_types_from_msg(f"unique_identifier_msgs/UUID goal_id\n{name}_Feedback feedback",
                                        f"{name}_FeedbackMessage"))
    return types


@lru_cache(maxsize=1)
def bag_typestore() -> Typestore:
    """Kilted's standard types + ``dexwm_interfaces`` (built once per process)."""
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(interface_types())
    return store


def _short(name: str) -> str:
    """``pkg/msg/Name`` as message definitions name it (``pkg/Name``); action-derived types keep ``/action/``."""
    package, kind, leaf = name.split("/")
    return f"{package}/{leaf}" if kind == "msg" else name


def _field_type(node) -> str:
    kind, detail = node
    if kind.name == "BASE":
        base, bound = detail
        return f"{base}<={bound}" if bound else base
    if kind.name == "NAME":
        return _short(detail)
    inner, size = detail
    if kind.name == "ARRAY":
        return f"{_field_type(inner)}[{size}]"
    return f"{_field_type(inner)}[<={size}]" if size else f"{_field_type(inner)}[]"


def message_definition(msgtype: str, store: Typestore | None = None) -> str:
    """The ``ros2msg`` definition text stored with a topic: its fields, then ``MSG: pkg/Name`` sections of every
    nested type (the layout rosbag2 writes; ``rosbags``' own generator refuses action-derived type names)."""
    store = store or bag_typestore()
    if msgtype not in store.fielddefs:
        raise UnknownTypeError(f"message type {msgtype} is not known to the bag typestore")
    sections: dict[str, str] = {}
    order: list[str] = []

    def visit(name: str) -> None:  # depth first, each type once, as rosbag2 and rosbags order them
        if name in sections:
            return
        consts, fields = store.fielddefs[name]
        lines = [f"{ctype} {cname}={value}" for cname, ctype, value in consts]
        nested = []
        for fname, node in fields:
            if fname == "structure_needs_at_least_one_member":
                continue  # the placeholder member of an empty message is not part of its definition
            lines.append(f"{_field_type(node)} {fname}")
            inner = node
            while inner[0].name in ("ARRAY", "SEQUENCE"):
                inner = inner[1][0]
            if inner[0].name == "NAME":
                nested.append(inner[1])
        sections[name] = "\n".join(lines) + "\n"
        order.append(name)
        for sub in nested:
            visit(sub)

    visit(msgtype)
    parts = [sections[msgtype]] + [f"{'=' * 80}\nMSG: {_short(n)}\n{sections[n]}" for n in order[1:]]
    return "".join(parts)


def type_hash(msgtype: str, store: Typestore | None = None) -> str:
    """The RIHS01 hash of ``msgtype`` (``pkg/msg/Name``); :class:`UnknownTypeError` when the store lacks it."""
    store = store or bag_typestore()
    if msgtype not in store.fielddefs:
        raise UnknownTypeError(f"message type {msgtype} is not known to the bag typestore (ROS 2 Kilted standard "
                               f"types + {INTERFACES_PACKAGE})")
    return store.hash_rihs01(msgtype)
