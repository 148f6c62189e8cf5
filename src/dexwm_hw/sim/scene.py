"""Re-export of :mod:`dexwm_robot.scene` (the composed MuJoCo scene), kept under its earlier name."""

from dexwm_robot.scene import (  # noqa: F401
    ARM_JOINTS,
    FINGERTIP_OFFSET,
    HAND_FINGERS,
    HAND_JOINTS,
    KEYPOINT_SITES,
    NUM_JOINTS,
    PALM_CENTER_POINT,
    ROBOT_JOINTS,
    WRIST_POINT,
    CameraConfig,
    ObjectSpec,
    SceneConfig,
    build_model,
    build_spec,
    camera_quat,
    load_sim_config,
)
