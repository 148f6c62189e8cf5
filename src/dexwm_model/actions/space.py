"""The 132-number keypoint action of DexWM: layout, dimensions, names.

An action describes what happened between two frames k1 and k2 of a video (or what a planner wants to happen):

====================  =========  ==========================================================================
part                  indices    meaning
====================  =========  ==========================================================================
left-hand keypoints   0 .. 62    21 keypoints x (dx, dy, dz), keypoint-major: [kp0 xyz, kp1 xyz, ...]
right-hand keypoints  63 .. 125  the same for the right hand
camera translation    126 .. 128 camera position at k2 minus at k1
camera rotation       129 .. 131 Euler angles of ``R_k1^T R_k2`` (intrinsic X-Y-Z, radians, see rotations.py)
====================  =========  ==========================================================================

Every 3-vector is expressed in the **camera frame at k1** (optical convention: +x right, +y down, +z forward;
camera poses are camera-to-world 4x4 matrices, like ``dexwm_hw.sim.camera.CameraModel.T_wc``). A keypoint
displacement is ``R_k1^T (p_k2 - p_k1)`` for world positions ``p``, i.e. the difference of both positions
expressed in that one frame. The 21 keypoints of a hand follow :mod:`dexwm_robot.hand_layout`
(wrist, then thumb, index, middle, ring, little: knuckle, intermediate base, intermediate tip, tip).
Values are in metres and radians and are not normalised (as in the reference method).
"""

from __future__ import annotations

from dexwm_robot.hand_layout import FINGER_PARTS, HAND_FINGERS_21, NUM_HAND_KEYPOINTS, NUM_KEYPOINTS

HANDS = ("left", "right")
AXES = ("x", "y", "z")

NUM_KEYPOINT_DIMS = 3 * NUM_KEYPOINTS  # 126
ACTION_DIM = NUM_KEYPOINT_DIMS + 3 + 3  # 132

LEFT_HAND = slice(0, 3 * NUM_HAND_KEYPOINTS)  # 0:63
RIGHT_HAND = slice(3 * NUM_HAND_KEYPOINTS, NUM_KEYPOINT_DIMS)  # 63:126
KEYPOINTS = slice(0, NUM_KEYPOINT_DIMS)  # 0:126
CAMERA_TRANSLATION = slice(NUM_KEYPOINT_DIMS, NUM_KEYPOINT_DIMS + 3)  # 126:129
CAMERA_ROTATION = slice(NUM_KEYPOINT_DIMS + 3, ACTION_DIM)  # 129:132
CAMERA = slice(NUM_KEYPOINT_DIMS, ACTION_DIM)  # 126:132

# names of the 21 points of one hand, e.g. "wrist", "thumb_knuckle", ..., "little_tip"
HAND_KEYPOINT_NAMES = ("wrist",) + tuple(f"{finger}_{part}" for finger in HAND_FINGERS_21 for part in FINGER_PARTS)
# names of the 42 keypoints, left hand first: "left_wrist", ..., "right_little_tip"
KEYPOINT_NAMES = tuple(f"{hand}_{kp}" for hand in HANDS for kp in HAND_KEYPOINT_NAMES)
# one name per action number: "left_wrist_dx", ..., "cam_dx", "cam_dy", "cam_dz", "cam_rx", "cam_ry", "cam_rz"
NAMES = tuple(f"{kp}_d{a}" for kp in KEYPOINT_NAMES for a in AXES) + tuple(f"cam_d{a}" for a in AXES) + tuple(
    f"cam_r{a}" for a in AXES
)

# the rotation part's convention, spelled out for readers of saved data
EULER_CONVENTION = "intrinsic XYZ: R = Rx(rx) @ Ry(ry) @ Rz(rz), radians"


def keypoint_index(hand: str, name: str) -> int:
    """Position (0..41) of keypoint ``name`` (e.g. ``"index_tip"``) of ``hand`` (``"left"``/``"right"``)."""
    if hand not in HANDS:
        raise ValueError(f"hand must be one of {HANDS}, found {hand!r}")
    if name not in HAND_KEYPOINT_NAMES:
        raise ValueError(f"keypoint name must be one of {HAND_KEYPOINT_NAMES}, found {name!r}")
    return HANDS.index(hand) * NUM_HAND_KEYPOINTS + HAND_KEYPOINT_NAMES.index(name)


class ActionSpace:
    """Namespace of the action layout (dimension, slices, names); see the module docstring."""

    DIM = ACTION_DIM
    NUM_KEYPOINTS = NUM_KEYPOINTS
    NUM_HAND_KEYPOINTS = NUM_HAND_KEYPOINTS
    LEFT_HAND = LEFT_HAND
    RIGHT_HAND = RIGHT_HAND
    KEYPOINTS = KEYPOINTS
    CAMERA = CAMERA
    CAMERA_TRANSLATION = CAMERA_TRANSLATION
    CAMERA_ROTATION = CAMERA_ROTATION
    NAMES = NAMES
    KEYPOINT_NAMES = KEYPOINT_NAMES
    EULER_CONVENTION = EULER_CONVENTION
    keypoint_index = staticmethod(keypoint_index)

