"""Forward kinematics of the project's Panda + right Allegro: the 23-vector of joints to hand keypoints and frames.

Joint order: the composed scene's actuator order (``dexwm_robot.scene.ROBOT_JOINTS``): Panda ``joint1..7``,
then the Allegro's ``ff, mf, rf, th`` joints 0..3. Positions are in the world frame of the scene (metres).

MuJoCo is needed only to read the chain (:meth:`PandaAllegroFK.from_mujoco`, :meth:`PandaAllegroFK.default`);
a chain written with :meth:`save` runs anywhere torch does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from dexwm_robot.config import load_section
from dexwm_model.kinematics.chain import ChainSpec, KinematicChain
from dexwm_robot.hand_layout import ALLEGRO_KEYPOINT_SITES, ALLEGRO_TO_HAND21

if TYPE_CHECKING:  # pragma: no cover
    import mujoco
    import numpy as np

NUM_ROBOT_JOINTS = 23
HAND_PREFIX = "allegro/"
KEYPOINT_SITE_NAMES = tuple(HAND_PREFIX + s for s in ALLEGRO_KEYPOINT_SITES)
PALM_CENTER = "allegro/palm_center"
FLANGE = "panda/attachment_site"


@dataclass
class FKConfig:
    cpu_chunk: int  # on CPU, batches larger than this run in pieces of this many joint vectors (0 = never split)


def load_fk_config(path: str = "kinematics.yaml") -> FKConfig:
    return load_section(FKConfig, path, "fk")


class PandaAllegroFK(KinematicChain):
    """Batched, differentiable FK: ``q[..., 23]`` -> keypoints / frames, on any device, in ``q``'s dtype.

    ``config``: the ``fk`` section of ``config/kinematics.yaml`` unless given.
    """

    def __init__(self, spec: ChainSpec, config: FKConfig | None = None) -> None:
        if len(spec.joint_names) != NUM_ROBOT_JOINTS:
            raise ValueError(f"the Panda + Allegro chain needs {NUM_ROBOT_JOINTS} joints, the description has "
                             f"{len(spec.joint_names)}: {spec.joint_names}")
        have = {s.name for s in spec.sites}
        missing = [s for s in KEYPOINT_SITE_NAMES if s not in have]
        if missing:
            raise ValueError(f"the chain lacks the hand keypoint sites {missing}")
        config = load_fk_config() if config is None else config
        super().__init__(spec, cpu_chunk=config.cpu_chunk)
        self.register_buffer("_hand21", torch.tensor(ALLEGRO_TO_HAND21, dtype=torch.long), persistent=False)

    @classmethod
    def from_mujoco(cls, model: "mujoco.MjModel") -> "PandaAllegroFK":
        """Read the robot chain (every body and site of the robot; not the free objects) from the composed scene."""
        return cls(_robot_spec(model))

    @classmethod
    def default(cls) -> "PandaAllegroFK":
        """The chain of the default scene (``config/sim.yaml``); the scene is built once per process."""
        return cls(_default_spec())

    def sites(self, q: Any) -> torch.Tensor:
        """World positions ``[..., 17, 3]`` of the hand keypoint sites, in ``ALLEGRO_KEYPOINT_SITES`` order."""
        return self.positions(q, KEYPOINT_SITE_NAMES)

    def hand21(self, q: Any) -> torch.Tensor:
        """The paper's 21-keypoint hand layout ``[..., 21, 3]`` (wrist, then thumb..little; ring as little)."""
        p = self.sites(q)
        return p.index_select(-2, self._hand21.to(p.device))

    def frames(self, q: Any, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """World pose (positions ``[..., n, 3]``, rotations ``[..., n, 3, 3]``) of named sites/bodies, e.g.
        ``"allegro/palm_center"``, ``"panda/attachment_site"``, ``"body:allegro/palm"``."""
        return super().frames(q, names)


def _robot_spec(model: "mujoco.MjModel") -> ChainSpec:
    from dexwm_robot.scene import ROBOT_JOINTS

    spec = ChainSpec.from_mujoco(model)
    if tuple(spec.joint_names) != tuple(ROBOT_JOINTS):
        raise ValueError(f"actuator order {spec.joint_names} is not the project's joint order {list(ROBOT_JOINTS)}")
    return spec


@functools.lru_cache(maxsize=1)
def _scene_model() -> "mujoco.MjModel":
    from dexwm_robot.scene import build_model

    return build_model()


@functools.lru_cache(maxsize=1)
def _default_spec() -> ChainSpec:
    return _robot_spec(_scene_model())


def robot_joint_names() -> tuple[str, ...]:
    """The robot's 23 joints in the project's order (the names recordings and the simulator use)."""
    from dexwm_robot.scene import ROBOT_JOINTS

    return tuple(ROBOT_JOINTS)


@functools.lru_cache(maxsize=1)
def robot_joint_limits() -> tuple["np.ndarray", "np.ndarray"]:
    """(low, high) position limits (rad) of the 23 joints in the project's order: the actuator ranges of the robot
    model (Panda datasheet limits; the Allegro model's ranges). Read-only arrays."""
    model = _scene_model()
    low, high = model.actuator_ctrlrange[:, 0].copy(), model.actuator_ctrlrange[:, 1].copy()
    low.setflags(write=False)
    high.setflags(write=False)
    return low, high
