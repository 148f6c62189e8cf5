"""Damped-least-squares inverse kinematics of the Panda arm for a site on the hand (position + orientation).

Works on a private ``MjData`` so the simulator being planned for is never disturbed: the hand joints and the
objects are copied in, only the seven arm joints move. Each iteration solves
``dq = Jᵀ (J Jᵀ + λ² I)⁻¹ e`` for the stacked position / weighted orientation error ``e``, adds a small pull
toward a rest posture in the Jacobian's null space (keeps the elbow where it was), and clips to the joint
limits shrunk by a margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from dexwm_robot.scene import NUM_JOINTS
from dexwm_planner.tasks.config import IKConfig, load_tasks_config


@dataclass
class IKResult:
    joints: np.ndarray  # the full 23-vector (arm solved, hand copied from the seed)
    position_error: float  # m
    rotation_error: float  # rad
    iterations: int
    converged: bool


def robot_addresses(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray]:
    """qpos and dof addresses of the 23 actuated robot joints, in the project's joint order."""
    joints = [int(model.actuator_trnid[i, 0]) for i in range(NUM_JOINTS)]
    return np.array([model.jnt_qposadr[j] for j in joints]), np.array([model.jnt_dofadr[j] for j in joints])


def rotation_error(R_target: np.ndarray, R_current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector taking ``R_current`` to ``R_target``."""
    q_t, q_c = np.empty(4), np.empty(4)
    mujoco.mju_mat2Quat(q_t, np.ascontiguousarray(R_target, dtype=np.float64).reshape(-1))
    mujoco.mju_mat2Quat(q_c, np.ascontiguousarray(R_current, dtype=np.float64).reshape(-1))
    err = np.empty(3)
    mujoco.mju_subQuat(err, q_t, q_c)  # in the current frame
    return R_current @ err


class ArmIK:
    """DLS IK on the seven arm joints for one site of ``model``."""

    def __init__(self, model: mujoco.MjModel, site: str, qpos_adr: np.ndarray, dof_adr: np.ndarray,
                 joint_low: np.ndarray, joint_high: np.ndarray, damping: float = 0.05,
                 rotation_weight: float = 0.25, limit_margin: float = 0.03, max_step: float = 0.2,
                 nullspace_gain: float = 0.05) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = model.site(site).id
        self.robot_qpos_adr = np.asarray(qpos_adr)
        if self.robot_qpos_adr.shape != (NUM_JOINTS,):
            raise ValueError(f"qpos_adr must list the {NUM_JOINTS} robot joints, got shape {self.robot_qpos_adr.shape}")
        self.qpos_adr = self.robot_qpos_adr[:7]
        self.dof_adr = np.asarray(dof_adr)[:7]
        self.low = np.asarray(joint_low)[:7] + limit_margin
        self.high = np.asarray(joint_high)[:7] - limit_margin
        self.damping = float(damping)
        self.rotation_weight = float(rotation_weight)
        self.max_step = float(max_step)
        self.nullspace_gain = float(nullspace_gain)
        self.max_iterations, self.position_tol, self.rotation_tol = 300, 5e-4, 5e-3
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    @classmethod
    def for_sim(cls, sim, cfg: IKConfig | None = None, site: str = "allegro/palm_center") -> "ArmIK":
        """IK for ``site`` of a :class:`PandaAllegroSim`'s model, parameters from ``config/tasks.yaml:ik``."""
        cfg = cfg or load_tasks_config().ik
        qpos_adr, dof_adr = robot_addresses(sim.model)
        ik = cls(sim.model, site, qpos_adr, dof_adr, sim.joint_low, sim.joint_high,
                 damping=cfg.damping, rotation_weight=cfg.rotation_weight, limit_margin=cfg.limit_margin,
                 max_step=cfg.max_step, nullspace_gain=cfg.nullspace_gain)
        ik.max_iterations, ik.position_tol, ik.rotation_tol = cfg.max_iterations, cfg.position_tol, cfg.rotation_tol
        return ik

    def forward(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Site position and rotation matrix for a 23-joint vector (objects left where they were last put)."""
        self.data.qpos[self.qpos_adr] = np.asarray(joints)[:7]
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    def solve(self, seed: np.ndarray, position: np.ndarray, rotation: np.ndarray | None = None,
              rest: np.ndarray | None = None) -> IKResult:
        """Arm joints putting the site at ``position`` (and ``rotation``, 3x3, if given), starting from ``seed``."""
        seed = np.asarray(seed, dtype=np.float64)
        if seed.shape != (NUM_JOINTS,):
            raise ValueError(f"IK seed must have {NUM_JOINTS} joints, got shape {seed.shape}")
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError(f"IK target position must be 3 finite numbers, got {position!r}")
        if rotation is not None:
            rotation = np.asarray(rotation, dtype=np.float64)
            if rotation.shape != (3, 3):
                raise ValueError(f"IK target rotation must be a 3x3 matrix, got shape {rotation.shape}")
        d = self.data
        d.qpos[self.robot_qpos_adr] = seed
        full = seed.copy()
        q = np.clip(seed[:7], self.low, self.high)
        rest = q.copy() if rest is None else np.clip(np.asarray(rest, dtype=np.float64)[:7], self.low, self.high)
        lam2 = self.damping ** 2
        position_tol, rotation_tol = self.position_tol, self.rotation_tol
        pos_err = rot_err = np.inf
        it = 0
        for it in range(1, int(self.max_iterations) + 1):
            d.qpos[self.qpos_adr] = q
            mujoco.mj_kinematics(self.model, d)
            mujoco.mj_comPos(self.model, d)
            e_p = position - d.site_xpos[self.site_id]
            pos_err = float(np.linalg.norm(e_p))
            if rotation is not None:
                e_r = rotation_error(rotation, d.site_xmat[self.site_id].reshape(3, 3))
                rot_err = float(np.linalg.norm(e_r))
            else:
                e_r, rot_err = np.zeros(3), 0.0
            if pos_err < position_tol and rot_err < rotation_tol:
                break
            mujoco.mj_jacSite(self.model, d, self._jacp, self._jacr, self.site_id)
            Jp = self._jacp[:, self.dof_adr]
            if rotation is not None:
                J = np.vstack([Jp, self.rotation_weight * self._jacr[:, self.dof_adr]])
                e = np.concatenate([e_p, self.rotation_weight * e_r])
            else:
                J, e = Jp, e_p
            # damping fades as the error shrinks (fast final convergence, stable far from the target)
            JJt = J @ J.T + lam2 * min(1.0, float(np.linalg.norm(e)) / 0.05) * np.eye(J.shape[0])
            dq = J.T @ np.linalg.solve(JJt, e)
            # null-space pull toward the rest posture (undamped projector: does not disturb the task)
            N = np.eye(7) - np.linalg.pinv(J, rcond=1e-3) @ J
            dq += N @ (self.nullspace_gain * (rest - q))
            step = np.abs(dq).max()
            if step > self.max_step:
                dq *= self.max_step / step
            q = np.clip(q + dq, self.low, self.high)
        out = full.copy()
        out[:7] = q
        converged = pos_err < 2 * position_tol and rot_err < 2 * rotation_tol
        return IKResult(out, pos_err, rot_err, it, bool(converged))
