"""Typed parameters of the tasks, the scripted demonstrator and the suites (``config/tasks.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from dexwm_robot.config import ConfigError, load_section

TASKS = ("reach", "grasp", "place")


def _positive(where: str, **values: float) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ConfigError(f"tasks.yaml:{where}.{name} must be positive, got {v}")


def _range(where: str, name: str, pair: list[float]) -> None:
    if len(pair) != 2 or not pair[0] <= pair[1]:
        raise ConfigError(f"tasks.yaml:{where}.{name} must be [low, high] with low <= high, got {pair}")


GRASP_GOALS = ("closed", "lifted")


@dataclass
class SuccessConfig:
    hold_ticks: int
    reach_distance: float
    grasp_wrist_distance: float
    lift_height: float
    place_distance: float

    def __post_init__(self) -> None:
        if int(self.hold_ticks) < 1:
            raise ConfigError(f"tasks.yaml:success.hold_ticks must be >= 1, got {self.hold_ticks}")
        _positive("success", reach_distance=self.reach_distance, grasp_wrist_distance=self.grasp_wrist_distance,
                  lift_height=self.lift_height, place_distance=self.place_distance)


@dataclass
class IKConfig:
    damping: float
    rotation_weight: float
    limit_margin: float
    max_step: float
    nullspace_gain: float
    max_iterations: int
    position_tol: float
    rotation_tol: float

    def __post_init__(self) -> None:
        _positive("ik", damping=self.damping, rotation_weight=self.rotation_weight, max_step=self.max_step,
                  max_iterations=self.max_iterations, position_tol=self.position_tol,
                  rotation_tol=self.rotation_tol)


@dataclass
class GraspConfig:
    yaw_step_deg: float
    palm_depths: list[float]
    palm_top_gaps: list[float]
    forward_offsets: list[float]
    lateral_offsets: list[float]
    finger_closures: list[list[float]]
    thumb_closures: list[list[float]]
    closing_samples: int
    score_weights: dict[str, float]
    preshape_fingers: list[float]
    preshape_thumb: list[float]
    approach_height: float
    pregrasp_height: float
    descend_steps: int
    close_ticks: int
    lift_height: float
    lift_steps: int
    hold_ticks: int
    min_lift: float
    object_clearance: float
    table_clearance: float
    max_verifications: int
    max_ik_failures: int
    retry_penalty: float
    neighbour_radius: float

    def __post_init__(self) -> None:
        for name in ("palm_depths", "forward_offsets", "lateral_offsets", "finger_closures", "thumb_closures"):
            if len(getattr(self, name)) == 0:
                raise ConfigError(f"tasks.yaml:grasp.{name} must list at least one value")
        known = {"thumb", "fingers", "antipodal", "off_axis", "contact_height", "table", "palm_gap", "palm_gap_tall"}
        unknown = sorted(set(self.score_weights) - known)
        if unknown:
            raise ConfigError(f"tasks.yaml:grasp.score_weights: unknown term(s) {unknown}; known: {sorted(known)}")
        for i, fc in enumerate(self.finger_closures):
            if len(fc) != 2:
                raise ConfigError(f"tasks.yaml:grasp.finger_closures[{i}] must be [knuckle, distal], got {fc}")
        for i, tc in enumerate(self.thumb_closures):
            if len(tc) != 3:
                raise ConfigError(f"tasks.yaml:grasp.thumb_closures[{i}] must be [rotation, twist, flexion], got {tc}")
        if len(self.preshape_fingers) != 4 or len(self.preshape_thumb) != 4:
            raise ConfigError("tasks.yaml:grasp.preshape_fingers and preshape_thumb need 4 joint values each, got "
                              f"{len(self.preshape_fingers)} and {len(self.preshape_thumb)}")
        _positive("grasp", yaw_step_deg=self.yaw_step_deg, closing_samples=self.closing_samples,
                  pregrasp_height=self.pregrasp_height, descend_steps=self.descend_steps, lift_height=self.lift_height, lift_steps=self.lift_steps,
                  min_lift=self.min_lift, max_verifications=self.max_verifications,
                  max_ik_failures=self.max_ik_failures, neighbour_radius=self.neighbour_radius)


@dataclass
class PlaceConfig:
    min_displacement: float
    max_displacement: float
    goal_clearance: float
    carry_steps: int
    release_height: float
    lower_steps: int
    open_ticks: int
    release_open: float
    thumb_relax: float
    retreat_height: float
    accept_distance: float
    max_goal_draws: int

    def __post_init__(self) -> None:
        _range("place", "[min_displacement, max_displacement]", [self.min_displacement, self.max_displacement])
        _positive("place", min_displacement=self.min_displacement, carry_steps=self.carry_steps,
                  lower_steps=self.lower_steps, accept_distance=self.accept_distance,
                  max_goal_draws=self.max_goal_draws)


@dataclass
class ReachConfig:
    palm_height: list[float]
    offset_xy: float
    finger_flex: list[float]
    object_clearance: float
    approach_height: float
    steps: int
    settle_ticks: int
    max_goal_draws: int

    def __post_init__(self) -> None:
        _range("reach", "palm_height", self.palm_height)
        _range("reach", "finger_flex", self.finger_flex)
        _positive("reach", steps=self.steps, max_goal_draws=self.max_goal_draws)


@dataclass
class SuiteConfig:
    start_arm_noise: float
    episodes: int
    goal_settle_ticks: int
    grasp_goal: str  # closed: the grasp goal is the hand closed on the resting object; lifted: after the lift

    def __post_init__(self) -> None:
        _positive("suite", episodes=self.episodes)
        if self.grasp_goal not in GRASP_GOALS:
            raise ConfigError(f"tasks.yaml:suite.grasp_goal must be one of {GRASP_GOALS}, got '{self.grasp_goal}'")


@dataclass
class TasksConfig:
    success: SuccessConfig
    ik: IKConfig
    grasp: GraspConfig
    place: PlaceConfig
    reach: ReachConfig
    suite: SuiteConfig


def load_tasks_config(path: str = "tasks.yaml") -> TasksConfig:
    return load_section(TasksConfig, path)
