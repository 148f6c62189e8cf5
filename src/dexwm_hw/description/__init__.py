"""The robot description: a plain URDF of the simulated Panda + Allegro, written from the MuJoCo scene, and a
small URDF reader with forward kinematics. ``python -m dexwm_hw.description`` regenerates ``urdf/``."""

from dexwm_hw.description.urdf_model import UrdfJoint, UrdfRobot, load_urdf, parse_urdf

__all__ = ["UrdfJoint", "UrdfRobot", "load_urdf", "parse_urdf"]
