"""The safety layer's parameters: the ``dexwm_safety`` node's section of ``config/controllers.yaml``.

The same values are the ROS parameters of the safety node (``ros__parameters``), so the YAML file is the one place
they live; :func:`load_safety_config` reads them without ROS for tests and tools. Joint arrays follow the project's
23-joint order (``dexwm_robot.joint_names.ALL_JOINT_NAMES``: panda_joint1..7, then ah_joint00..33).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from dexwm_robot.config import ConfigError, from_dict, load_yaml

PARAMS_FILE = "controllers.yaml"
SAFETY_NODE_NAME = "dexwm_safety"
NUM_JOINTS = 23


@dataclass
class SafetyConfig:
    joint_position_lower: list[float]     # rad, 23
    joint_position_upper: list[float]     # rad, 23
    position_tolerance: float             # rad; a target this far outside a limit is clipped, further is rejected
    joint_velocity_limit: list[float]     # rad/s, 23
    min_move_duration: float              # s; no move is shorter than this
    workspace_min: list[float]            # m, (x, y, z) in the robot base frame (panda_link0)
    workspace_max: list[float]            # m
    workspace_points: list[str]           # FK sites that must stay inside the box
    workspace_path_samples: int           # points checked along the joint-space path (>= 1: the target alone)
    workspace_tip_points: list[str]       # of workspace_points: the fingertip sites, whose floor is ...
    workspace_tip_min_z: float            # m: ... this instead of workspace_min's z (fingertips may touch the table)
    joint_states_timeout: float           # s; /joint_states older than this -> CONTROLLER_TIMEOUT
    image_timeout: float                  # s; 0 disables the camera watchdog
    image_topic: str
    waypoint_timeout: float               # s; 0 disables the dead-man's switch on the waypoint stream
    max_waypoint_age: float               # s; 0 disables the stamp check
    hold_duration: float                  # s; time given to the controllers to come to rest on a hold
    watchdog_rate: float                  # Hz
    status_rate: float                    # Hz

    def validate(self, where: str = "safety config") -> "SafetyConfig":
        """Check shapes and orderings that a ROS parameter range cannot express; raises ``ConfigError``."""
        for name in ("joint_position_lower", "joint_position_upper", "joint_velocity_limit"):
            value = getattr(self, name)
            if len(value) != NUM_JOINTS:
                raise ConfigError(f"{where}: {name} needs {NUM_JOINTS} values (panda_joint1..7, ah_joint00..33), "
                                  f"got {len(value)}")
            if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
                raise ConfigError(f"{where}: {name} contains NaN or inf")
        lower, upper = np.asarray(self.joint_position_lower), np.asarray(self.joint_position_upper)
        bad = np.flatnonzero(lower >= upper)
        if bad.size:
            raise ConfigError(f"{where}: joint_position_lower must be below joint_position_upper; not so for joint "
                              f"index(es) {bad.tolist()}")
        vel = np.asarray(self.joint_velocity_limit, dtype=np.float64)
        if np.any(vel <= 0):
            raise ConfigError(f"{where}: joint_velocity_limit must be positive, got {vel.tolist()}")
        for name in ("workspace_min", "workspace_max"):
            if len(getattr(self, name)) != 3:
                raise ConfigError(f"{where}: {name} needs 3 values (x, y, z in metres), got {len(getattr(self, name))}")
        if np.any(np.asarray(self.workspace_min) >= np.asarray(self.workspace_max)):
            raise ConfigError(f"{where}: workspace_min {list(self.workspace_min)} must be below workspace_max "
                              f"{list(self.workspace_max)} on every axis")
        if not self.workspace_points:
            raise ConfigError(f"{where}: workspace_points must name at least one FK site")
        if self.workspace_path_samples < 1:
            raise ConfigError(f"{where}: workspace_path_samples must be >= 1, got {self.workspace_path_samples}")
        stray = [n for n in self.workspace_tip_points if n not in self.workspace_points]
        if stray:
            raise ConfigError(f"{where}: workspace_tip_points {stray} are not among workspace_points "
                              f"{list(self.workspace_points)}")
        if not np.isfinite(self.workspace_tip_min_z) or self.workspace_tip_min_z >= self.workspace_max[2]:
            raise ConfigError(f"{where}: workspace_tip_min_z must be finite and below workspace_max's z "
                              f"({self.workspace_max[2]}), got {self.workspace_tip_min_z}")
        for name in ("position_tolerance", "min_move_duration", "image_timeout", "waypoint_timeout",
                     "max_waypoint_age"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}: {name} must be >= 0, got {getattr(self, name)}")
        for name in ("joint_states_timeout", "hold_duration", "watchdog_rate", "status_rate"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}: {name} must be > 0, got {getattr(self, name)}")
        return self

    def point_lower(self) -> np.ndarray:
        """``(P, 3)`` lower bounds of each workspace point: ``workspace_min``, with ``workspace_tip_min_z`` as the
        floor of the fingertip sites."""
        lower = np.tile(np.asarray(self.workspace_min, dtype=np.float64), (len(self.workspace_points), 1))
        for i, name in enumerate(self.workspace_points):
            if name in self.workspace_tip_points:
                lower[i, 2] = float(self.workspace_tip_min_z)
        return lower


def node_section(node_name: str, path: str = PARAMS_FILE) -> dict:
    """``<node_name>.ros__parameters`` of a ROS parameter file (``ConfigError`` naming what is missing)."""
    data = load_yaml(path)
    try:
        section = data[node_name]["ros__parameters"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: expected '{node_name}: {{ros__parameters: {{...}}}}'") from exc
    if not isinstance(section, dict):
        raise ConfigError(f"{path}:{node_name}.ros__parameters must be a mapping")
    return section


def load_safety_config(path: str = PARAMS_FILE) -> SafetyConfig:
    cfg = from_dict(SafetyConfig, node_section(SAFETY_NODE_NAME, path), f"{path}:{SAFETY_NODE_NAME}")
    return cfg.validate(f"{path}:{SAFETY_NODE_NAME}")


def config_from_values(values: dict, where: str) -> SafetyConfig:
    """A validated config from a mapping with exactly the dataclass's fields (e.g. the node's parameter values)."""
    names = {f.name for f in fields(SafetyConfig)}
    cfg = from_dict(SafetyConfig, {k: v for k, v in values.items() if k in names}, where)
    return cfg.validate(where)
