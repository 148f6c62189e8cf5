"""Grasp synthesis for the Allegro hand on the Panda: enumerate, rank cheaply, verify in simulation.

A grasp candidate is a palm-down hand pose relative to the object (approach yaw about the vertical, palm height
above the object centre -- fixed heights and "palm face just above the object's top" --, the object's offset
ahead of / beside the palm centre) plus a closing posture (finger knuckle/distal flexion, thumb rotation, twist
and flexion). Ranking is geometric and cheap (no arm, no physics): the hand is a set of spheres placed at the
candidate pose and the object an exact signed distance field, so thousands of candidates are checked at once.
The open hand must clear the object, its neighbours and the table at the grasp pose and half-way down; along
the closing motion (a straight line in joint space, as the controller executes it) we find where each finger
and the thumb first touch, their surface normals, and how deep their final targets lie inside the object (a
stopped position servo squeezes in proportion). A weighted sum of those terms (weights in tasks.yaml, fitted
to simulated outcomes by :mod:`dexwm_planner.tasks.calibrate`) ranks the candidates. The best are solved with
IK and *verified*: the whole lift is simulated from a saved state (pre-grasp above -> descend -> close ->
lift -> hold) and the first that keeps the object up is accepted; failed attempts push similar candidates back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mujoco
import numpy as np

from dexwm_planner.tasks.config import TasksConfig, load_tasks_config
from dexwm_planner.tasks.geometry import GROUPS, HandSpheres, ShapeInstance, hand_spheres
from dexwm_planner.tasks.ik import ArmIK

PALM_SITE = "allegro/palm_center"


def palm_down_rotation(yaw: float) -> np.ndarray:
    """Palm-site rotation with the palm normal (site x) pointing down and the fingers (site z) along ``yaw``."""
    z = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    x = np.array([0.0, 0.0, -1.0])
    return np.stack([x, np.cross(z, x), z], axis=1)


def palm_down_seed(joints: np.ndarray, position: np.ndarray, yaw: float, home_wrist: float) -> np.ndarray:
    """An IK seed for a palm-down pose: base turned toward the target, wrist turned to the requested yaw.

    With the palm down, the finger direction turns with ``joint1 - joint7``; ``home_wrist`` is joint7 at which
    the fingers point radially outward. The wrist angle is wrapped into the joint's range when possible.
    """
    seed = np.asarray(joints, dtype=np.float64).copy()
    q1 = math.atan2(position[1], position[0])
    q7 = home_wrist + q1 - yaw
    q7 = (q7 + math.pi) % (2 * math.pi) - math.pi
    if q7 > 2.85:
        q7 -= 2 * math.pi
    elif q7 < -2.85:
        q7 += 2 * math.pi
    seed[0], seed[6] = q1, float(np.clip(q7, -2.85, 2.85))
    return seed


def object_extent(model: mujoco.MjModel, data: mujoco.MjData, geom: int, direction: np.ndarray) -> float:
    """Support distance of the geom along a unit world ``direction`` (half its extent that way)."""
    size, R, t = model.geom_size[geom], data.geom_xmat[geom].reshape(3, 3), int(model.geom_type[geom])
    u = np.asarray(direction, dtype=np.float64) @ R  # direction in the geom frame
    if t == mujoco.mjtGeom.mjGEOM_SPHERE:
        return float(size[0])
    if t == mujoco.mjtGeom.mjGEOM_BOX:
        return float(np.abs(u) @ size)
    if t == mujoco.mjtGeom.mjGEOM_ELLIPSOID:
        return float(np.sqrt(np.sum((u * size) ** 2)))
    if t == mujoco.mjtGeom.mjGEOM_CYLINDER:
        c = abs(u[2])
        return float(c * size[1] + size[0] * math.sqrt(max(0.0, 1 - c * c)))
    if t == mujoco.mjtGeom.mjGEOM_CAPSULE:
        return float(abs(u[2]) * size[1] + size[0])
    return float(model.geom_rbound[geom])


def object_vertical_extent(model: mujoco.MjModel, data: mujoco.MjData, geom: int) -> float:
    """Half of the geom's vertical extent in its current orientation."""
    return object_extent(model, data, geom, np.array([0.0, 0.0, 1.0]))


@dataclass
class GraspCandidate:
    yaw: float  # finger direction about the vertical, rad
    depth: float  # palm centre height above the object centre, m
    forward: float  # object centre ahead of the palm centre along the fingers, m
    lateral: float  # object centre beside the palm centre, toward the thumb, m
    fingers: tuple[float, float]  # closing target: knuckle flexion, distal flexion (rad)
    thumb: tuple[float, float, float]  # closing target: rotation, twist, flexion (rad)
    score: float = -math.inf
    detail: dict = field(default_factory=dict)

    def palm_pose(self, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        R = palm_down_rotation(self.yaw)
        p = np.asarray(center) + np.array([0.0, 0.0, self.depth]) - self.forward * R[:, 2] - self.lateral * R[:, 1]
        return p, R

    def as_dict(self) -> dict:
        return {"yaw": self.yaw, "depth": self.depth, "forward": self.forward, "lateral": self.lateral,
                "fingers": list(self.fingers), "thumb": list(self.thumb), "score": self.score}


@dataclass
class LiftPlan:
    """A verified lift: the waypoints, the candidate that produced them and what the verification saw."""

    waypoints: list[np.ndarray]
    candidate: GraspCandidate
    object_name: str
    lift: float  # m the object rose during verification
    verifications: int  # simulated attempts, this one included
    candidates_ranked: int
    grasp_index: int  # index in ``waypoints`` of the first closing waypoint
    lift_end_index: int  # index of the last lifting waypoint (holding repeats follow)


def execute(sim, waypoints: list[np.ndarray], on_tick=None) -> int:
    """Replay waypoints the way the demonstrator verifies them: each at the controller's own pace.

    ``sim.move_to(wp)`` per waypoint (fastest minimum-jerk move within the joint speed limits; a repeated
    waypoint holds for one control tick). Returns the number of control ticks taken.
    """
    ticks = 0
    for wp in waypoints:
        ticks += sim.move_to(wp, on_tick=on_tick)
    return ticks


class GraspSynthesizer:
    """Enumerates, ranks and verifies grasps on a :class:`PandaAllegroSim` (uses its saved states)."""

    def __init__(self, sim, cfg: TasksConfig | None = None) -> None:
        self.sim = sim
        self.cfg = cfg or load_tasks_config()
        self.g = self.cfg.grasp
        m = sim.model
        self.model = m
        self.ik = ArmIK.for_sim(sim, self.cfg.ik)
        self.home_wrist = float(sim.scene_cfg.home_arm[6])
        self.scratch = mujoco.MjData(m)
        self._palm_site = m.site(PALM_SITE).id
        self.hand_geoms = np.array([g for g in range(m.ngeom)
                                    if m.body(int(m.geom_bodyid[g])).name.startswith("allegro/")
                                    and (m.geom_contype[g] or m.geom_conaffinity[g])])
        self._table_top = float(sim.scene_cfg.table_height)
        self._spheres_cache: dict[tuple, HandSpheres] = {}
        # how far the palm's collision face stands out along the palm normal from the palm site
        d = self.scratch
        mujoco.mj_kinematics(m, d)
        R0 = d.site_xmat[self._palm_site].reshape(3, 3)
        faces = [float((d.geom_xpos[g] - d.site_xpos[self._palm_site]) @ R0[:, 0]
                       + np.abs(R0[:, 0] @ d.geom_xmat[g].reshape(3, 3)) @ m.geom_size[g])
                 for g in self.hand_geoms if m.body(int(m.geom_bodyid[g])).name == "allegro/palm"]
        self.palm_face = max(faces)

    # ------------------------------------------------------------------------------------------- postures
    def preshape(self) -> np.ndarray:
        return np.array(list(self.g.preshape_fingers) * 3 + list(self.g.preshape_thumb), dtype=np.float64)

    @staticmethod
    def closed_hand(fingers, thumb) -> np.ndarray:
        finger = [0.0, fingers[0], fingers[1], fingers[1]]
        th = [thumb[0], thumb[1], thumb[2], thumb[2]]
        return np.array(finger * 3 + th, dtype=np.float64)

    def open_hand(self) -> np.ndarray:
        """The hand opened to release an object (fingers extended, thumb tucked as when approaching)."""
        return self.preshape()

    def spheres(self, hand: np.ndarray) -> HandSpheres:
        """Sphere model of the hand in a 16-joint posture, palm-site frame (cached)."""
        key = tuple(np.round(hand, 6))
        if key not in self._spheres_cache:
            d = self.scratch
            d.qpos[:] = self.sim.data.qpos
            d.qpos[self.ik.robot_qpos_adr[7:]] = hand
            mujoco.mj_kinematics(self.model, d)
            self._spheres_cache[key] = hand_spheres(self.model, d, self.hand_geoms, self._palm_site)
        return self._spheres_cache[key]

    # ---------------------------------------------------------------------------------------------- ranking
    def rank(self, object_name: str, rng: np.random.Generator | None = None) -> list[GraspCandidate]:
        """All candidates for ``object_name`` that pass the geometric checks, best first."""
        sim, g, m = self.sim, self.g, self.model
        d = self.scratch
        d.qpos[:] = sim.data.qpos
        mujoco.mj_kinematics(m, d)
        obj_geom = m.geom(object_name).id
        target = ShapeInstance.of_geom(m, d, obj_geom)
        centre = target.position
        neighbours = [ShapeInstance.of_geom(m, d, m.geom(n).id) for n in sim.object_names if n != object_name
                      and np.linalg.norm(d.geom_xpos[m.geom(n).id][:2] - centre[:2]) < g.neighbour_radius]
        half_height = object_vertical_extent(m, d, obj_geom)
        half_width = min(object_extent(m, d, obj_geom, np.array(u)) for u in ((1.0, 0, 0), (0, 1.0, 0),
                                                                            (0.7071, 0.7071, 0), (0.7071, -0.7071, 0)))
        slender = half_height / max(half_width, 1e-3)
        offset = 0.0 if rng is None else float(rng.uniform(0.0, math.radians(g.yaw_step_deg)))
        yaws = [offset + k * math.radians(g.yaw_step_deg) for k in range(int(round(360 / g.yaw_step_deg)))]
        face = math.atan2(target.rotation[1, 0], target.rotation[0, 0])
        yaws += [face + k * math.pi / 2 for k in range(4)]
        yaws = [_wrap(y) for y in yaws]
        # palm-centre heights above the object centre: fixed ones, and the palm face just above the object's top
        depths = sorted(set(g.palm_depths) | {round(half_height - self.palm_face + gap, 4) for gap in g.palm_top_gaps})
        grid = np.array([(dp, fw, la) for dp in depths for fw in g.forward_offsets for la in g.lateral_offsets
                         if centre[2] + dp - half_height > self._table_top])
        if len(grid) == 0:
            return []
        pre = self.preshape()
        pre_sp = self.spheres(pre)
        f_ids, t_ids = [GROUPS.index(f) for f in ("ff", "mf", "rf")], [GROUPS.index("th")]
        f_paths = {tuple(fc): self.closing_path(fc, g.thumb_closures[0]) for fc in g.finger_closures}
        t_paths = {tuple(tc): self.closing_path(g.finger_closures[0], tc) for tc in g.thumb_closures}
        up = np.array([0.0, 0.0, 1.0])
        out: list[GraspCandidate] = []
        for yaw in yaws:
            R = palm_down_rotation(yaw)
            P = centre + grid[:, :1] * up - grid[:, 1:2] * R[:, 2] - grid[:, 2:3] * R[:, 1]  # (N, 3)
            W = pre_sp.world(P, R)  # (N, S, 3)
            ok = (W[..., 2] - pre_sp.radii).min(axis=1) - self._table_top >= g.table_clearance
            ok &= (target.distance(W) - pre_sp.radii).min(axis=1) >= g.object_clearance
            for nb in neighbours:
                ok &= (nb.distance(W) - pre_sp.radii).min(axis=1) >= g.object_clearance
            ok &= (target.distance(W + 0.5 * g.pregrasp_height * up) - pre_sp.radii).min(axis=1) >= g.object_clearance
            idx = np.flatnonzero(ok)
            if len(idx) == 0:
                continue
            Pk = P[idx]
            fing = {fc: self._contacts(path, f_ids, Pk, R, target) for fc, path in f_paths.items()}
            thum = {tc: self._contacts(path, t_ids, Pk, R, target) for tc, path in t_paths.items()}
            for fc, fres in fing.items():
                for tc, tres in thum.items():
                    feats = self._combine(fres, tres, target, half_height)
                    feats["palm_gap"] = grid[idx, 0] + self.palm_face - half_height
                    feats["slender"] = np.full(len(idx), slender)
                    scores = self.score(feats, self.g.score_weights)
                    for j in np.flatnonzero(np.isfinite(scores)):
                        dp, fw, la = grid[idx[j]]
                        out.append(GraspCandidate(yaw, float(dp), float(fw), float(la), fc, tc, float(scores[j]),
                                                  {k: float(v[j]) for k, v in feats.items()}))
        if rng is not None:  # tie-breaking jitter so repeated calls can differ among equally good grasps
            for c in out:
                c.score += float(rng.uniform(0.0, 1e-4))
        out.sort(key=lambda c: -c.score)
        return out

    def closing_path(self, fingers, thumb) -> list[HandSpheres]:
        """Sphere models sampled along the closing motion (a straight line in joint space, as executed)."""
        pre, closed = self.preshape(), self.closed_hand(fingers, thumb)
        k = self.g.closing_samples
        return [self.spheres(pre + (closed - pre) * (i / k)) for i in range(1, k + 1)]

    def _contacts(self, path: list[HandSpheres], groups: list[int], P: np.ndarray, R: np.ndarray,
                  target: ShapeInstance) -> dict[str, np.ndarray]:
        """Per group: first touch along the closing path (path fraction, point) and final penetration depth."""
        n, rows = len(P), np.arange(len(P))
        first_t = np.full((n, len(groups)), np.inf)
        first_p = np.zeros((n, len(groups), 3))
        depth = np.zeros((n, len(groups)))
        table = np.full(n, np.inf)
        sel = np.flatnonzero(np.isin(path[0].group, groups))
        for step, sp in enumerate(path):
            W = P[:, None, :] + sp.centres[sel] @ R.T
            radii = sp.radii[sel]
            pen = -(target.distance(W) - radii)
            last = step == len(path) - 1
            for j, gi in enumerate(groups):
                cols = np.flatnonzero(sp.group[sel] == gi)
                k = cols[pen[:, cols].argmax(axis=1)]
                hit = (pen[rows, k] > 0) & ~np.isfinite(first_t[:, j])
                first_t[hit, j] = (step + 1) / len(path)
                first_p[hit, j] = W[rows[hit], k[hit]]
                if last:
                    depth[:, j] = pen[rows, k]
            if last:
                table = (W[..., 2] - radii).min(axis=1) - self._table_top
        return {"t": first_t, "p": first_p, "depth": depth, "table": table,
                "normal": _gradient(target, first_p.reshape(-1, 3)).reshape(first_p.shape)}

    def _combine(self, fing: dict, thumb: dict, target: ShapeInstance, half_height: float) -> dict[str, np.ndarray]:
        """Grasp features from the fingers' and the thumb's contacts (see :meth:`rank`)."""
        touch = np.isfinite(fing["t"])
        th_touch = np.isfinite(thumb["t"][:, 0])
        w = touch.astype(np.float64)[..., None]
        count = np.maximum(w.sum(axis=1), 1.0)
        finger_point = (fing["p"] * w).sum(axis=1) / count
        finger_normal = (fing["normal"] * w).sum(axis=1)
        finger_normal /= np.maximum(np.linalg.norm(finger_normal, axis=1, keepdims=True), 1e-9)
        th_p, th_n = thumb["p"][:, 0], thumb["normal"][:, 0]
        antipodal = -(th_n * finger_normal).sum(axis=1)
        axis = finger_point - th_p
        axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-9)
        off_axis = np.linalg.norm(np.cross(target.position - th_p, axis), axis=1)
        contact_z = 0.5 * (th_p[:, 2] + finger_point[:, 2])
        both = th_touch & touch.any(axis=1)
        return {
            "thumb_depth": thumb["depth"][:, 0],
            "finger_depth": np.clip(fing["depth"], 0.0, 0.015).sum(axis=1),
            "fingers_touching": (fing["depth"] >= 0.002).sum(axis=1).astype(np.float64),
            "antipodal": np.where(both, antipodal, -1.0),
            "off_axis": np.where(both, off_axis, 0.1),
            "contact_height": np.where(both, (contact_z - target.position[2]) / max(half_height, 1e-3), -1.0),
            "table": np.minimum(fing["table"], thumb["table"]),
        }

    @staticmethod
    def score_terms(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Normalised score terms from the grasp features of :meth:`rank` (each roughly in [-1, 1])."""
        gap = np.clip(f["palm_gap"], 0.0, 0.1) / 0.05
        return {
            "thumb": np.clip(f["thumb_depth"], 0.0, 0.015) / 0.015,  # thumb's closing target inside the object
            "fingers": f["finger_depth"] / 0.045,  # fingers' closing targets inside the object (sum, capped)
            "antipodal": f["antipodal"],  # thumb pushes against the fingers (1) rather than sideways
            "off_axis": np.clip(f["off_axis"], 0.0, 0.06) / 0.03,  # thumb-to-fingers line misses the centre
            "contact_height": np.clip(f["contact_height"], -1.0, 1.0),  # contacts above (+) / below the centre
            "table": np.clip(f["table"], -0.02, 0.03) / 0.03,  # closed fingers' clearance to the table
            "palm_gap": gap,  # palm face above the object's top
            "palm_gap_tall": gap * f["slender"],  # ... for tall objects (an open gap lets them tip over)
        }

    @classmethod
    def score(cls, f: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
        """Weighted sum of the score terms (``grasp.score_weights`` in tasks.yaml); -inf when no finger would
        press on the object."""
        terms = cls.score_terms(f)
        s = sum(float(weights.get(k, 0.0)) * v for k, v in terms.items())
        return np.where(f["fingers_touching"] >= 1, s, -np.inf)

    # --------------------------------------------------------------------------------------------- waypoints
    def _solve(self, seed: np.ndarray, position: np.ndarray, R: np.ndarray) -> np.ndarray | None:
        res = self.ik.solve(seed, position, R)
        return res.joints if res.converged else None

    def lift_waypoints(self, cand: GraspCandidate, object_name: str) -> tuple[list[np.ndarray], int, int] | None:
        """The 23-joint waypoints of a lift with ``cand`` from the sim's current joints (None if IK fails)."""
        sim, g = self.sim, self.g
        centre = sim.object_pose(object_name).position
        p, R = cand.palm_pose(centre)
        start = sim.joints
        pre, closed = self.preshape(), self.closed_hand(cand.fingers, cand.thumb)
        up = np.array([0.0, 0.0, 1.0])
        targets = []
        z_pre = p[2] + g.pregrasp_height
        z_app = max(self.sim.scene_cfg.table_height + g.approach_height, z_pre)
        if z_app > z_pre + 1e-6:
            targets.append((np.array([p[0], p[1], z_app]), pre))
        for k in range(g.descend_steps + 1):
            targets.append((p + up * g.pregrasp_height * (1 - k / g.descend_steps), pre))
        seed = palm_down_seed(start, targets[0][0], cand.yaw, self.home_wrist)
        arm_path = []
        for pos, _ in targets:
            q = self._solve(seed, pos, R)
            if q is None:
                return None
            arm_path.append(q)
            seed = q
        waypoints = []
        for q, (_, hand) in zip(arm_path, targets):
            w = q.copy()
            w[7:] = hand
            waypoints.append(w)
        grasp_arm = arm_path[-1]
        w = grasp_arm.copy()
        w[7:] = closed
        grasp_index = len(waypoints)
        waypoints += [w.copy() for _ in range(1 + g.close_ticks)]
        seed = grasp_arm
        for k in range(1, g.lift_steps + 1):
            q = self._solve(seed, p + up * g.lift_height * k / g.lift_steps, R)
            if q is None:
                return None
            w = q.copy()
            w[7:] = closed
            waypoints.append(w)
            seed = q
        lift_end = len(waypoints) - 1
        waypoints += [waypoints[-1].copy() for _ in range(g.hold_ticks)]
        return waypoints, grasp_index, lift_end

    # ------------------------------------------------------------------------------------------ verification
    def verify_lift(self, waypoints: list[np.ndarray], object_name: str, lift_end: int) -> tuple[bool, float]:
        """Simulate the lift from the current state; restores the state. Returns (kept up, rise in m)."""
        sim = self.sim
        state, t0 = sim.get_state(), sim.time
        z0 = float(sim.object_pose(object_name).position[2])
        try:
            execute(sim, waypoints[: lift_end + 1])
            held = True

            def watch(s):
                nonlocal held
                up = s.object_pose(object_name).position[2] - z0 >= self.cfg.success.lift_height
                held = held and up and s.hand_contacts(object_name) > 0

            execute(sim, waypoints[lift_end + 1:], on_tick=watch)
            rise = float(sim.object_pose(object_name).position[2] - z0)
            ok = held and rise >= self.g.min_lift and sim.hand_contacts(object_name) > 0
        finally:
            sim.set_state(state)
            sim.time = t0
        return bool(ok), rise

    def plan_lift(self, object_name: str, rng: np.random.Generator, accept=None) -> LiftPlan | None:
        """Rank candidates, verify them in simulation, return the first verified lift (or None).

        ``accept(plan) -> bool``, when given, is an extra verification run on a plan whose lift succeeded (the
        place task uses it to verify the whole carry and release); the sim state is restored either way.
        """
        if object_name not in self.sim.object_names:
            raise ValueError(f"unknown object '{object_name}'; the scene has {self.sim.object_names}")
        ranked = self.rank(object_name, rng)
        if not ranked:
            return None
        g = self.g
        score = np.array([c.score for c in ranked])
        yaw = np.array([c.yaw for c in ranked])
        f_index = {tuple(fc): k for k, fc in enumerate(g.finger_closures)}
        t_index = {tuple(tc): k for k, tc in enumerate(g.thumb_closures)}
        params = np.array([(c.depth, c.forward, c.lateral, f_index[c.fingers], t_index[c.thumb]) for c in ranked])
        available = np.ones(len(ranked), dtype=bool)
        penalty = np.zeros(len(ranked))
        tried = ik_failures = 0
        while available.any() and tried < g.max_verifications and ik_failures < g.max_ik_failures:
            i = int(np.argmax(np.where(available, score - penalty, -np.inf)))
            available[i] = False
            cand = ranked[i]
            built = self.lift_waypoints(cand, object_name)
            if built is None:
                ik_failures += 1
                continue
            waypoints, grasp_index, lift_end = built
            tried += 1
            ok, rise = self.verify_lift(waypoints, object_name, lift_end)
            if ok:
                plan = LiftPlan(waypoints, cand, object_name, rise, tried, len(ranked), grasp_index, lift_end)
                if accept is None or accept(plan):
                    return plan
            # a failed attempt pushes back the candidates that resemble it (diversity among attempts)
            same = (params == params[i]).mean(axis=1)
            near_yaw = np.abs(np.angle(np.exp(1j * (yaw - cand.yaw)))) < math.radians(g.yaw_step_deg) / 2
            penalty += g.retry_penalty * (0.5 * same + 0.5 * near_yaw)
        return None


def _gradient(shape: ShapeInstance, points: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Unit outward normals of the shape's distance field at world points (central differences)."""
    grads = []
    for axis in range(3):
        e = np.zeros(3)
        e[axis] = eps
        grads.append(shape.distance(points + e) - shape.distance(points - e))
    g = np.stack(grads, axis=-1)
    return g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi
