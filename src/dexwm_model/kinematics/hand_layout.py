"""Re-export of :mod:`dexwm_robot.hand_layout` (the 21-point hand layout), kept under its earlier name."""

from dexwm_robot.hand_layout import (  # noqa: F401
    ALLEGRO_FINGER_OF,
    ALLEGRO_KEYPOINT_SITES,
    ALLEGRO_TO_HAND21,
    FINGER_PARTS,
    HAND_FINGERS_21,
    HEATMAP_KEYPOINTS_21,
    NUM_HAND_KEYPOINTS,
    NUM_KEYPOINTS,
    WRIST_AND_TIPS_ALLEGRO,
)
