"""Goal-image MPC planners (CEM, MPPI) over the Panda + Allegro joints in the latent world model (no ROS).

``Planner(model).plan(PlanObservation(...)) -> PlanResult``; configuration in ``config/planner.yaml``;
``dexwm bench plan`` measures it against the reference compute pattern (:mod:`.reference`).
"""

from dexwm_planner.planners.config import (
    CEMConfig,
    CostConfig,
    MPPIConfig,
    PlannerConfig,
    RuntimeConfig,
    SearchConfig,
    load_planner_config,
)
from dexwm_planner.planners.kinematics import CameraSetup, PlanKinematics, sim_camera, sim_joint_limits
from dexwm_planner.planners.optimizer import IterationStats, OptimizerResult, SamplingOptimizer
from dexwm_planner.planners.planner import CostDetails, PlanObservation, Planner, PlanResult, ReplanState
from dexwm_planner.planners.rollout import CachedRollout, RolloutPlan

__all__ = [
    "CEMConfig", "CachedRollout", "CameraSetup", "CostConfig", "CostDetails", "IterationStats", "MPPIConfig",
    "OptimizerResult", "PlanKinematics", "PlanObservation", "PlanResult", "Planner", "PlannerConfig",
    "ReplanState", "RolloutPlan", "RuntimeConfig", "SamplingOptimizer", "SearchConfig", "load_planner_config",
    "sim_camera", "sim_joint_limits",
]
