"""A plain URDF, read with ``xml.etree`` into a kinematic tree, and its forward kinematics (numpy, no ROS).

Conventions are URDF's: a joint's ``origin`` places the joint frame (= the child link's frame) in the parent
link's frame, ``rpy`` is roll about x, then pitch about y, then yaw about z, all about the fixed axes
(``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``); a revolute/continuous joint then turns by ``q`` about ``axis`` (joint
frame), a prismatic one slides by ``q`` along it. Only what kinematics needs is read; visuals are kept as strings.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MOVABLE = ("revolute", "continuous", "prismatic")
JOINT_TYPES = MOVABLE + ("fixed",)


# --------------------------------------------------------------------------------------------- rotations
def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def matrix_to_rpy(R: np.ndarray) -> np.ndarray:
    """(roll, pitch, yaw) with ``R = Rz(yaw) Ry(pitch) Rx(roll)``; at pitch = +-90 degrees roll is set to 0."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"rotation: expected a 3x3 matrix, got shape {R.shape}")
    s = -R[2, 0]
    if abs(s) >= 1.0 - 1e-12:
        pitch = math.copysign(math.pi / 2, s)
        return np.array([0.0, pitch, math.atan2(-R[0, 1], R[1, 1])])
    return np.array([math.atan2(R[2, 1], R[2, 2]), math.asin(s), math.atan2(R[1, 0], R[0, 0])])


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * (K @ K)


def transform(xyz: np.ndarray, R: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = xyz
    return T


# ------------------------------------------------------------------------------------------------- model
@dataclass
class UrdfJoint:
    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray  # 4x4, child (joint) frame in the parent link frame at q = 0
    axis: np.ndarray  # unit vector in the joint frame
    lower: float | None = None
    upper: float | None = None
    effort: float | None = None
    velocity: float | None = None


@dataclass
class UrdfRobot:
    name: str
    links: list[str]
    joints: list[UrdfJoint]  # in topological order (a joint's parent link is the root or an earlier child)
    root: str
    meshes: dict[str, list[str]] = field(default_factory=dict)  # link -> visual mesh filenames

    @property
    def movable_joints(self) -> list[UrdfJoint]:
        return [j for j in self.joints if j.type in MOVABLE]

    def joint(self, name: str) -> UrdfJoint:
        for j in self.joints:
            if j.name == name:
                return j
        raise KeyError(f"joint '{name}' is not in robot '{self.name}'")

    def fk(self, positions: Mapping[str, float]) -> dict[str, np.ndarray]:
        """4x4 pose of every link in the root link's frame; ``positions`` must name every movable joint."""
        missing = [j.name for j in self.movable_joints if j.name not in positions]
        if missing:
            raise ValueError(f"joint positions missing for {missing}")
        unknown = sorted(set(positions) - {j.name for j in self.movable_joints})
        if unknown:
            raise ValueError(f"unknown joint name(s) {unknown}; movable joints are "
                             f"{[j.name for j in self.movable_joints]}")
        poses = {self.root: np.eye(4)}
        for j in self.joints:
            T = poses[j.parent] @ j.origin
            if j.type in ("revolute", "continuous"):
                T = T @ transform(np.zeros(3), axis_angle_matrix(j.axis, float(positions[j.name])))
            elif j.type == "prismatic":
                T = T @ transform(j.axis * float(positions[j.name]), np.eye(3))
            poses[j.child] = T
        return poses


def _floats(text: str | None, n: int, where: str, default: tuple[float, ...]) -> np.ndarray:
    if text is None:
        return np.array(default, dtype=np.float64)
    try:
        values = [float(v) for v in text.split()]
    except ValueError as exc:
        raise ValueError(f"{where}: expected {n} numbers, found '{text}'") from exc
    if len(values) != n:
        raise ValueError(f"{where}: expected {n} numbers, found {len(values)} in '{text}'")
    return np.array(values)


def _opt_float(el: ET.Element | None, attr: str) -> float | None:
    if el is None or el.get(attr) is None:
        return None
    return float(el.get(attr))


def parse_urdf(text: str) -> UrdfRobot:
    """Parse URDF XML text. Raises ``ValueError`` for a malformed tree (unknown links, cycles, several roots)."""
    try:
        root_el = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"URDF is not well-formed XML: {exc}") from exc
    if root_el.tag != "robot":
        raise ValueError(f"URDF root element must be <robot>, found <{root_el.tag}>")
    links = [el.get("name") for el in root_el.findall("link")]
    if any(n is None for n in links) or len(set(links)) != len(links):
        raise ValueError("every <link> needs a unique name")
    meshes = {el.get("name"): [m.get("filename") for m in el.findall("visual/geometry/mesh")]
              for el in root_el.findall("link")}
    joints: list[UrdfJoint] = []
    for el in root_el.findall("joint"):
        name, jtype = el.get("name"), el.get("type")
        where = f"joint {name}"
        if jtype not in JOINT_TYPES:
            raise ValueError(f"{where}: type must be one of {JOINT_TYPES}, found '{jtype}'")
        parent, child = el.find("parent"), el.find("child")
        if parent is None or child is None:
            raise ValueError(f"{where}: needs <parent link=...> and <child link=...>")
        pname, cname = parent.get("link"), child.get("link")
        for role, lname in (("parent", pname), ("child", cname)):
            if lname not in links:
                raise ValueError(f"{where}: {role} link '{lname}' is not defined")
        origin = el.find("origin")
        xyz = _floats(origin.get("xyz") if origin is not None else None, 3, f"{where} origin xyz", (0, 0, 0))
        rpy = _floats(origin.get("rpy") if origin is not None else None, 3, f"{where} origin rpy", (0, 0, 0))
        axis_el = el.find("axis")
        axis = _floats(axis_el.get("xyz") if axis_el is not None else None, 3, f"{where} axis", (1, 0, 0))
        if jtype in MOVABLE and not np.linalg.norm(axis) > 1e-12:
            raise ValueError(f"{where}: axis must be non-zero")
        limit = el.find("limit")
        if jtype in ("revolute", "prismatic") and (limit is None or limit.get("lower") is None
                                                   or limit.get("upper") is None):
            raise ValueError(f"{where}: a {jtype} joint needs <limit lower=... upper=...>")
        joints.append(UrdfJoint(
            name=name, type=jtype, parent=pname, child=cname, origin=transform(xyz, rpy_to_matrix(rpy)),
            axis=axis / max(np.linalg.norm(axis), 1e-12), lower=_opt_float(limit, "lower"),
            upper=_opt_float(limit, "upper"), effort=_opt_float(limit, "effort"),
            velocity=_opt_float(limit, "velocity")))
    children = [j.child for j in joints]
    repeated = sorted({c for c in children if children.count(c) > 1})
    if repeated:
        raise ValueError(f"link(s) {repeated} are the child of more than one joint")
    roots = [n for n in links if n not in children]
    if len(roots) != 1:
        raise ValueError(f"a URDF tree has exactly one root link, found {roots}")
    ordered: list[UrdfJoint] = []
    reached = {roots[0]}
    pending = list(joints)
    while pending:
        ready = [j for j in pending if j.parent in reached]
        if not ready:
            raise ValueError(f"joints {[j.name for j in pending]} are not connected to the root link '{roots[0]}'")
        for j in ready:
            ordered.append(j)
            reached.add(j.child)
            pending.remove(j)
    return UrdfRobot(name=root_el.get("name", ""), links=links, joints=ordered, root=roots[0], meshes=meshes)


def load_urdf(path: str | Path) -> UrdfRobot:
    return parse_urdf(Path(path).read_text())
