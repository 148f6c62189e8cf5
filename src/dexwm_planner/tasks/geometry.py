"""Vectorised geometry for grasp ranking: signed distances to the object shapes, hands as sphere sets.

The hand's collision geoms (boxes and capsules) are approximated by spheres: each box becomes a grid of
spheres of radius = its smallest half-size filling the box shrunk by that radius (a rounded box), each capsule
a few spheres along its axis. Object shapes get exact signed distance functions (the ellipsoid's is the usual
first-order approximation). Everything works on arrays of points so thousands of candidate hand poses are
ranked in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

_BOX = int(mujoco.mjtGeom.mjGEOM_BOX)
_SPHERE = int(mujoco.mjtGeom.mjGEOM_SPHERE)
_CAPSULE = int(mujoco.mjtGeom.mjGEOM_CAPSULE)
_CYLINDER = int(mujoco.mjtGeom.mjGEOM_CYLINDER)
_ELLIPSOID = int(mujoco.mjtGeom.mjGEOM_ELLIPSOID)


def geom_spheres(gtype: int, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sphere centres (geom frame) and radii covering a box, capsule or sphere geom."""
    size = np.asarray(size, dtype=np.float64)
    if gtype == _SPHERE:
        return np.zeros((1, 3)), np.array([size[0]])
    if gtype == _CAPSULE:
        r, h = size[0], size[1]
        n = max(2, int(np.ceil(2 * h / r)) + 1)
        z = np.linspace(-h, h, n)
        return np.stack([np.zeros(n), np.zeros(n), z], axis=1), np.full(n, r)
    if gtype == _BOX:
        r = float(size.min())
        axes = []
        for s in size:
            inner = s - r
            n = max(1, int(np.ceil(2 * inner / r)) + 1) if inner > 1e-9 else 1
            axes.append(np.linspace(-inner, inner, n) if n > 1 else np.zeros(1))
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        return grid, np.full(len(grid), r)
    raise ValueError(f"hand geom type {gtype} is not supported (box, capsule or sphere expected)")


def signed_distance(gtype: int, size: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Signed distance from points given in the shape's own frame (..., 3) to a MuJoCo primitive."""
    p = np.asarray(points, dtype=np.float64)
    s = np.asarray(size, dtype=np.float64)
    if gtype == _SPHERE:
        return np.linalg.norm(p, axis=-1) - s[0]
    if gtype == _BOX:
        q = np.abs(p) - s[:3]
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
        return outside + np.minimum(q.max(axis=-1), 0.0)
    if gtype == _CYLINDER:
        d = np.stack([np.linalg.norm(p[..., :2], axis=-1) - s[0], np.abs(p[..., 2]) - s[1]], axis=-1)
        return np.minimum(d.max(axis=-1), 0.0) + np.linalg.norm(np.maximum(d, 0.0), axis=-1)
    if gtype == _CAPSULE:
        z = np.clip(p[..., 2], -s[1], s[1])
        q = p.copy()
        q[..., 2] -= z
        return np.linalg.norm(q, axis=-1) - s[0]
    if gtype == _ELLIPSOID:
        k0 = np.linalg.norm(p / s[:3], axis=-1)
        k1 = np.linalg.norm(p / (s[:3] ** 2), axis=-1)
        return np.where(k1 > 1e-12, k0 * (k0 - 1.0) / np.maximum(k1, 1e-12), -s[:3].min())
    raise ValueError(f"object geom type {gtype} is not supported")


@dataclass
class ShapeInstance:
    """An object geom where it lies: type, size, world position and rotation."""

    gtype: int
    size: np.ndarray
    position: np.ndarray
    rotation: np.ndarray

    def distance(self, world_points: np.ndarray) -> np.ndarray:
        return signed_distance(self.gtype, self.size, (world_points - self.position) @ self.rotation)

    @classmethod
    def of_geom(cls, model: mujoco.MjModel, data: mujoco.MjData, geom: int) -> "ShapeInstance":
        return cls(int(model.geom_type[geom]), model.geom_size[geom].copy(), data.geom_xpos[geom].copy(),
                   data.geom_xmat[geom].reshape(3, 3).copy())


@dataclass
class HandSpheres:
    """A hand posture as spheres in the palm-site frame, each labelled with the finger (or palm) it belongs to."""

    centres: np.ndarray  # (S, 3)
    radii: np.ndarray  # (S,)
    group: np.ndarray  # (S,) index into GROUPS

    def world(self, position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        """Sphere centres for palm poses: ``position`` (..., 3) and one rotation (3, 3) -> (..., S, 3)."""
        return np.asarray(position)[..., None, :] + self.centres @ rotation.T


GROUPS = ("palm", "ff", "mf", "rf", "th")
# geoms of each finger that can squeeze an object (medial, distal, tip); base/proximal count as "palm" side
CONTACT_LINKS = ("medial", "distal", "tip")


def hand_spheres(model: mujoco.MjModel, data: mujoco.MjData, hand_geoms: np.ndarray, palm_site: int) -> HandSpheres:
    """Sphere model of the hand in the pose held by ``data`` (after kinematics), in the palm-site frame."""
    p0 = data.site_xpos[palm_site]
    R0 = data.site_xmat[palm_site].reshape(3, 3)
    centres, radii, group = [], [], []
    for g in hand_geoms:
        local, r = geom_spheres(int(model.geom_type[g]), model.geom_size[g])
        Rg = data.geom_xmat[g].reshape(3, 3)
        world = data.geom_xpos[g] + local @ Rg.T
        centres.append((world - p0) @ R0)
        radii.append(r)
        body = model.body(int(model.geom_bodyid[g])).name.split("/", 1)[-1]
        finger, _, link = body.partition("_")
        gi = GROUPS.index(finger) if finger in GROUPS and link in CONTACT_LINKS else 0
        group.append(np.full(len(r), gi))
    return HandSpheres(np.concatenate(centres), np.concatenate(radii), np.concatenate(group))
