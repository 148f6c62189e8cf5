"""Write the robot description (plain URDF, no xacro) from the composed MuJoCo scene the simulator runs.

Every kinematic number comes from the compiled ``MjModel`` of :func:`dexwm_hw.sim.scene.build_spec` (body
offsets and orientations, joint axes and ranges, actuator effort limits, inertias) and ``config/sim.yaml``
(joint speed limits); visual and collision geometry comes from the same ``MjSpec`` (authoring-time geom poses,
before MuJoCo recentres meshes). Names follow the ROS drivers:

* Panda: links ``panda_link0..8`` and joints ``panda_joint1..7`` as in ``franka_description``; ``panda_link8`` is
  the flange, 0.107 m along ``panda_link7``'s z without rotation (franka_description's ``panda_joint8``), so the
  MuJoCo attachment frame's extra turn goes into the fixed hand mount joint ``panda_allegro_mount``.
* Allegro: the joints carry the project's driver names (``dexwm_hw.ros.joint_names``: ``ah_joint00..33``, the
  names on ``/joint_states``), each joint's child link is ``ah_link_<fj>``, the fixed fingertip bodies
  ``ah_link_<f>4``, the palm ``ah_palm_link`` (allegro_hand_ros2's scheme). Hand keypoint sites that are not at a
  link origin (wrist, palm centre, fingertips) become fixed frames ``ah_kp_<site>``.

Meshes are referenced the ROS way (``package://franka_description/meshes/visual/link0.dae``,
``package://allegro_hand_description/meshes/link_0.0.STL``); the mesh files themselves are not part of this
project. Run ``python -m dexwm_hw.description`` to (re)write ``urdf/panda_allegro.urdf``.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dexwm_hw.description.urdf_model import matrix_to_rpy
from dexwm_hw.ros.joint_names import ALL_JOINT_NAMES

URDF_FILE = "panda_allegro.urdf"
ROBOT_NAME = "panda_allegro"
FRANKA_MESHES = "package://franka_description/meshes"
ALLEGRO_MESHES = "package://allegro_hand_description/meshes"
MOUNT_JOINT = "panda_allegro_mount"
FLANGE_LINK = "panda_link8"
PALM_LINK = "ah_palm_link"
KEYPOINT_LINK_PREFIX = "ah_kp_"
_ATTACHMENT_BODY = "panda/attachment"
_VISUAL_GROUP, _COLLISION_GROUP = 2, 3


def urdf_dir() -> Path:
    """``$DEXWM_URDF_DIR``, else the source checkout's ``urdf/``, else the installed ``share/dexwm/urdf``."""
    env = os.environ.get("DEXWM_URDF_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[3] / "urdf", Path(sys.prefix) / "share" / "dexwm" / "urdf"]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(f"no urdf folder found (looked in {', '.join(map(str, candidates))})")


def urdf_path(name: str = URDF_FILE) -> Path:
    p = Path(name)
    return p if p.is_absolute() else urdf_dir() / p


# ------------------------------------------------------------------------------------------- numbers
def _num(v: float) -> str:
    s = f"{float(v):.10g}"
    return "0" if s in ("-0", "0") else s


def _vec(v) -> str:
    return " ".join(_num(x) for x in v)


def _quat_matrix(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _pose(pos, quat) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = _quat_matrix(quat)
    T[:3, 3] = pos
    return T


def _origin(parent: ET.Element, T: np.ndarray) -> None:
    rpy = matrix_to_rpy(T[:3, :3])
    ET.SubElement(parent, "origin", xyz=_vec(T[:3, 3]), rpy=_vec(rpy))


# ----------------------------------------------------------------------------------------- structure
@dataclass
class _Link:
    name: str
    body: int | None  # MuJoCo body id (None for frames that are not bodies)
    element: ET.Element
    frame_in_link: np.ndarray = field(default_factory=lambda: np.eye(4))  # MuJoCo body frame in this link


def _joint_name_map() -> dict[str, str]:
    from dexwm_hw.sim.scene import ROBOT_JOINTS

    return dict(zip(ROBOT_JOINTS, ALL_JOINT_NAMES))


def build_urdf(model=None, spec=None) -> str:
    """URDF text of the composed Panda + Allegro (defaults: the scene of ``config/sim.yaml``)."""
    import mujoco

    from dexwm_hw.sim.scene import build_spec, load_sim_config

    scene, camera = load_sim_config()
    if spec is None:
        spec = build_spec(scene, camera)
    if model is None:
        model = spec.compile()
    names = _joint_name_map()
    max_velocity = dict(zip(names, scene.max_joint_velocity))
    effort = {}
    for a in range(model.nu):
        jname = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, int(model.actuator_trnid[a, 0]))
        lo, hi = model.actuator_forcerange[a]
        effort[jname] = float(max(abs(lo), abs(hi))) if model.actuator_forcelimited[a] else 0.0

    robot = ET.Element("robot", name=ROBOT_NAME)
    robot.append(ET.Comment(
        " Generated by `python -m dexwm_hw.description` from the composed MuJoCo scene (config/sim.yaml). "
        "Do not edit: regenerate. "))
    body_name = lambda b: mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b)  # noqa: E731
    robot_bodies = [b for b in range(1, model.nbody) if body_name(b).startswith(("panda/", "allegro/"))]
    geoms_of: dict[str, list] = {}
    for g in spec.geoms:
        geoms_of.setdefault(g.parent.name, []).append(g)

    links: dict[int, _Link] = {}
    for b in robot_bodies:
        bname = body_name(b)
        parent = int(model.body_parentid[b])
        njnt = int(model.body_jntnum[b])
        if njnt > 1:
            raise ValueError(f"body {bname} has {njnt} joints: a URDF link takes at most one")
        T_parent_body = _pose(model.body_pos[b], model.body_quat[b])
        if bname == _ATTACHMENT_BODY:
            # franka_description's flange: translation along link7's z only; the rotation goes into the mount
            parent_link = links[parent]
            T_flange = np.eye(4)
            T_flange[:3, 3] = T_parent_body[:3, 3]
            link = _new_link(robot, FLANGE_LINK, b)
            link.frame_in_link = np.linalg.inv(T_flange) @ T_parent_body
            links[b] = link
            _fixed_joint(robot, "panda_joint8", parent_link.name, FLANGE_LINK,
                         parent_link.frame_in_link @ T_flange)
            continue
        if parent == 0:
            link = _new_link(robot, _link_name(bname, None, None), b)
            links[b] = link
        else:
            parent_link = links.get(parent)
            if parent_link is None:
                raise ValueError(f"body {bname}: its parent {body_name(parent)} is not part of the robot")
            origin = parent_link.frame_in_link @ T_parent_body
            if njnt == 1:
                j = int(model.body_jntadr[b])
                jname = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
                if jname not in names:
                    raise ValueError(f"joint {jname} is not one of the project's 23 robot joints")
                if int(model.jnt_type[j]) != int(mujoco.mjtJoint.mjJNT_HINGE):
                    raise ValueError(f"joint {jname}: only hinge joints are expected on the robot")
                if np.linalg.norm(model.jnt_pos[j]) > 1e-9:
                    raise ValueError(f"joint {jname}: hinge anchor {model.jnt_pos[j]} is off the body origin; "
                                     "a URDF joint turns about its frame origin")
                urdf_joint = names[jname]
                link = _new_link(robot, _link_name(bname, urdf_joint, parent_link.name), b)
                links[b] = link
                el = ET.SubElement(robot, "joint", name=urdf_joint, type="revolute")
                ET.SubElement(el, "parent", link=parent_link.name)
                ET.SubElement(el, "child", link=link.name)
                _origin(el, origin)
                ET.SubElement(el, "axis", xyz=_vec(model.jnt_axis[j]))
                lo, hi = model.jnt_range[j]
                ET.SubElement(el, "limit", lower=_num(lo), upper=_num(hi), effort=_num(effort.get(jname, 0.0)),
                              velocity=_num(max_velocity[jname]))
            else:
                name = MOUNT_JOINT if bname == "allegro/palm" else None
                link = _new_link(robot, _link_name(bname, None, parent_link.name), b)
                links[b] = link
                _fixed_joint(robot, name or f"{link.name}_fixed", parent_link.name, link.name, origin)
        _inertial(link, model, b)
        _geometry(link, bname, geoms_of.get(bname, []), spec)

    # keypoint sites that are not at a link origin get a fixed frame of their own
    for s in range(model.nsite):
        sname = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_SITE, s)
        b = int(model.site_bodyid[s])
        if not sname.startswith("allegro/") or b not in links or np.linalg.norm(model.site_pos[s]) < 1e-12:
            continue
        link = links[b]
        kp = KEYPOINT_LINK_PREFIX + sname.split("/", 1)[1]
        _new_link(robot, kp, None)
        _fixed_joint(robot, f"{kp}_joint", link.name, kp,
                     link.frame_in_link @ _pose(model.site_pos[s], model.site_quat[s]))
    ET.indent(robot, space="  ")
    return '<?xml version="1.0"?>\n' + ET.tostring(robot, encoding="unicode") + "\n"


def _new_link(robot: ET.Element, name: str, body: int | None) -> _Link:
    return _Link(name=name, body=body, element=ET.SubElement(robot, "link", name=name))


def _fixed_joint(robot: ET.Element, name: str, parent: str, child: str, T: np.ndarray) -> None:
    el = ET.SubElement(robot, "joint", name=name, type="fixed")
    ET.SubElement(el, "parent", link=parent)
    ET.SubElement(el, "child", link=child)
    _origin(el, T)


def _link_name(body: str, joint: str | None, parent_link: str | None) -> str:
    if body.startswith("panda/link"):
        return "panda_" + body.split("/", 1)[1]
    if body == "allegro/palm":
        return PALM_LINK
    if joint is not None and joint.startswith("ah_joint"):
        return "ah_link_" + joint[len("ah_joint"):]
    if joint is None and parent_link is not None and parent_link.startswith("ah_link_"):
        digits = parent_link[len("ah_link_"):]
        return f"ah_link_{digits[0]}{int(digits[1:]) + 1}"  # the fixed fingertip after joint <f>3
    raise ValueError(f"body {body}: no ROS link name rule for it (joint {joint}, parent link {parent_link})")


def _inertial(link: _Link, model, b: int) -> None:
    mass = float(model.body_mass[b])
    if mass <= 0.0:
        return
    el = ET.SubElement(link.element, "inertial")
    _origin(el, link.frame_in_link @ _pose(model.body_ipos[b], model.body_iquat[b]))
    ET.SubElement(el, "mass", value=_num(mass))
    ixx, iyy, izz = (float(v) for v in model.body_inertia[b])
    ET.SubElement(el, "inertia", ixx=_num(ixx), ixy="0", ixz="0", iyy=_num(iyy), iyz="0", izz=_num(izz))


def _geometry(link: _Link, body: str, geoms: list, spec) -> None:
    import mujoco

    if body.startswith("panda/"):
        # franka_description ships one visual (.dae) and one collision (.stl) mesh per link, in the link frame;
        # MuJoCo Menagerie splits the same meshes into parts placed at the body origin
        kinds = {int(g.group) for g in geoms if g.type == mujoco.mjtGeom.mjGEOM_MESH}
        for g in geoms:
            if np.linalg.norm(np.asarray(g.pos)) > 1e-9 or abs(abs(float(g.quat[0])) - 1.0) > 1e-9:
                raise ValueError(f"Panda mesh geom on {body} is not at the body origin: franka_description's "
                                 "per-link meshes would be misplaced")
        stem = body.split("/", 1)[1]
        if _VISUAL_GROUP in kinds:
            _mesh_element(link, "visual", f"{FRANKA_MESHES}/visual/{stem}.dae", np.eye(4))
        if _COLLISION_GROUP in kinds:
            _mesh_element(link, "collision", f"{FRANKA_MESHES}/collision/{stem}.stl", np.eye(4))
        return
    for g in geoms:
        T = link.frame_in_link @ _pose(g.pos, g.quat)
        if g.type == mujoco.mjtGeom.mjGEOM_MESH and int(g.group) == _VISUAL_GROUP:
            mesh = spec.mesh(g.meshname)
            stem = Path(mesh.file).stem
            scale = np.asarray(mesh.scale, dtype=np.float64)
            el = _mesh_element(link, "visual", f"{ALLEGRO_MESHES}/{stem}.STL", T,
                               None if np.allclose(scale, 1.0) else scale)
            if g.material:
                rgba = spec.material(g.material).rgba
                mat = ET.SubElement(el, "material", name=g.material.replace("/", "_"))
                ET.SubElement(mat, "color", rgba=_vec(rgba))
        elif int(g.group) == _COLLISION_GROUP:
            size = np.asarray(g.size, dtype=np.float64)
            if g.type == mujoco.mjtGeom.mjGEOM_BOX:
                _primitive(link, T, "box", size=_vec(2 * size))
            elif g.type == mujoco.mjtGeom.mjGEOM_CAPSULE:
                # a capsule is a cylinder with a sphere at each end
                _primitive(link, T, "cylinder", radius=_num(size[0]), length=_num(2 * size[1]))
                for sign in (-1.0, 1.0):
                    end = np.eye(4)
                    end[2, 3] = sign * size[1]
                    _primitive(link, T @ end, "sphere", radius=_num(size[0]))
            elif g.type == mujoco.mjtGeom.mjGEOM_SPHERE:
                _primitive(link, T, "sphere", radius=_num(size[0]))
            else:
                raise ValueError(f"collision geom of type {g.type} on {body}: no URDF equivalent written")


def _mesh_element(link: _Link, kind: str, filename: str, T: np.ndarray, scale=None) -> ET.Element:
    el = ET.SubElement(link.element, kind)
    _origin(el, T)
    geometry = ET.SubElement(el, "geometry")
    attrs = {"filename": filename}
    if scale is not None:
        attrs["scale"] = _vec(scale)
    ET.SubElement(geometry, "mesh", attrs)
    return el


def _primitive(link: _Link, T: np.ndarray, shape: str, **attrs: str) -> None:
    el = ET.SubElement(link.element, "collision")
    _origin(el, T)
    ET.SubElement(ET.SubElement(el, "geometry"), shape, attrs)


def write_urdf(path: str | Path | None = None) -> Path:
    out = Path(path) if path is not None else Path(__file__).resolve().parents[3] / "urdf" / URDF_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_urdf())
    return out

