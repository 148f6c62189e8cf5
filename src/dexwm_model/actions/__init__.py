"""The 132-number keypoint action space of DexWM and converters from EgoDex, DROID and the Panda + Allegro.

Layout and names: :mod:`.space` (:class:`ActionSpace`). Computing / inverting actions: :mod:`.keypoint_action`.
Rotation convention (intrinsic XYZ Euler angles): :mod:`.rotations`. Data sources: :mod:`.egodex`,
:mod:`.droid`, :mod:`.allegro`, each giving a :class:`KeypointTrajectory`.
"""

from dexwm_model.actions.keypoint_action import (
    apply_action,
    compose_action,
    fixed_camera_action,
    keypoint_action,
    split_action,
    trajectory_actions,
    world_to_camera,
)
from dexwm_model.actions.rotations import euler_xyz_to_matrix, invert_transform, make_transform, matrix_to_euler_xyz
from dexwm_model.actions.space import ACTION_DIM, ActionSpace
from dexwm_model.actions.trajectory import KeypointTrajectory

__all__ = [
    "ACTION_DIM",
    "ActionSpace",
    "KeypointTrajectory",
    "apply_action",
    "compose_action",
    "euler_xyz_to_matrix",
    "fixed_camera_action",
    "invert_transform",
    "keypoint_action",
    "make_transform",
    "matrix_to_euler_xyz",
    "split_action",
    "trajectory_actions",
    "world_to_camera",
]
