"""Joint and frame names of the real drivers, mapped onto the simulator's 23-joint order.

Arm: franka_ros2 names the Panda joints ``panda_joint1..7``. Hand: Wonik's ``allegro_hand_ros2`` names the Allegro
joints ``ah_joint<finger><joint>`` thumb first: finger 0 = thumb, 1 = index, 2 = middle, 3 = ring (its home posture
puts ``ah_joint00`` at the thumb's opposition range). Its position controller's ``commands`` array lists the fingers
index, middle, ring, thumb, which is also the simulator's ``ff, mf, rf, th`` order. The 23-vector used everywhere
in the project is the arm followed by the hand in that order, so ``ALL_JOINT_NAMES[i]`` names entry ``i`` of
``PandaAllegroSim.joints`` and ``HAND_JOINT_NAMES`` is the order of the 16 values on the ``commands`` topic.
"""

from __future__ import annotations

ARM_JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8))
HAND_JOINT_NAMES = tuple(f"ah_joint{finger}{joint}" for finger in (1, 2, 3, 0) for joint in range(4))
ALL_JOINT_NAMES = ARM_JOINT_NAMES + HAND_JOINT_NAMES
NUM_ARM_JOINTS = len(ARM_JOINT_NAMES)
NUM_HAND_JOINTS = len(HAND_JOINT_NAMES)

# TF frames (REP 103/105 and the RealSense driver's naming)
WORLD_FRAME = "world"
ARM_BASE_FRAME = "panda_link0"
ARM_LINK_FRAMES = tuple(f"panda_link{i}" for i in range(8))  # link0 (base) .. link7
CAMERA_OPTICAL_FRAME = "camera_color_optical_frame"
HAND_KEYPOINT_FRAME_PREFIX = "allegro_"  # + a keypoint site name, e.g. allegro_ff_tip


def arm_indices(names: list[str] | tuple[str, ...]) -> list[int]:
    """Positions in ``ARM_JOINT_NAMES`` of the given joint names (any order, no repeats).

    Raises ``ValueError`` naming every unknown or repeated joint.
    """
    unknown = [n for n in names if n not in ARM_JOINT_NAMES]
    if unknown:
        raise ValueError(f"unknown arm joint name(s) {unknown}; expected names from {list(ARM_JOINT_NAMES)}")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ValueError(f"joint name(s) {repeated} appear more than once in joint_names")
    return [ARM_JOINT_NAMES.index(n) for n in names]
