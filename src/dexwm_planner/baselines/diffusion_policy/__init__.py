"""Goal-image-conditioned Diffusion Policy, the paper's baseline: plain PyTorch + diffusers schedulers, trained on
the same exploratory episodes as the world model (hindsight goals) and run in the same task harness.

``model`` (the policy and its checkpoint), ``unet1d`` (the FiLM-conditioned temporal U-Net), ``normalizer``,
``dataset`` (hindsight-goal batches from encoded episodes), ``train`` (``dexwm train diffusion-policy``),
``controller`` (the harness adapter), ``config`` (``config/diffusion_policy.yaml``).
"""

from dexwm_planner.baselines.diffusion_policy.config import (ClosedLoopConfig, PolicyModelConfig, PolicyTrainConfig,
                                                             SchedulerConfig, load_closed_loop_config,
                                                             load_model_config, load_scheduler_config,
                                                             load_train_config)
from dexwm_planner.baselines.diffusion_policy.controller import DiffusionPolicyController
from dexwm_planner.baselines.diffusion_policy.model import DiffusionPolicy, PolicyCheckpointError
from dexwm_planner.baselines.diffusion_policy.normalizer import MinMaxNormalizer

__all__ = ["ClosedLoopConfig", "PolicyModelConfig", "PolicyTrainConfig", "SchedulerConfig", "DiffusionPolicy",
           "DiffusionPolicyController", "MinMaxNormalizer", "PolicyCheckpointError", "load_closed_loop_config",
           "load_model_config", "load_scheduler_config", "load_train_config"]
