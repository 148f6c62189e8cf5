"""Training of the DexWM world model: latent cache, objective, trainer (single process or DDP), checkpoints.

``dexwm train world-model`` (:mod:`dexwm_model.training.cli`) drives :func:`train`; recipes live in
``config/train.yaml`` (:func:`load_train_config`).
"""

from dexwm_model.training.checkpoint import load_training_state, resolve_resume, save_checkpoint
from dexwm_model.training.config import (
    DataConfig,
    EvalConfig,
    ModelSpec,
    OptimConfig,
    TrainConfig,
    default_cache_dir,
    load_eval_config,
    load_train_config,
)
from dexwm_model.training.data import StepBatchSampler, build_clip_data, collate_training, parse_data_specs
from dexwm_model.training.latent_cache import (
    LatentCache,
    LatentCacheError,
    LatentClipDataset,
    encoder_identity,
)
from dexwm_model.training.model import build_world_model, world_model_config
from dexwm_model.training.objective import WorldModelObjective
from dexwm_model.training.trainer import TrainRequest, lr_factor, train

__all__ = [
    "DataConfig",
    "EvalConfig",
    "LatentCache",
    "LatentCacheError",
    "LatentClipDataset",
    "ModelSpec",
    "OptimConfig",
    "StepBatchSampler",
    "TrainConfig",
    "TrainRequest",
    "WorldModelObjective",
    "build_clip_data",
    "build_world_model",
    "collate_training",
    "default_cache_dir",
    "encoder_identity",
    "load_eval_config",
    "load_train_config",
    "load_training_state",
    "lr_factor",
    "parse_data_specs",
    "resolve_resume",
    "save_checkpoint",
    "train",
    "world_model_config",
]
