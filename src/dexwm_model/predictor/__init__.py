"""The DexWM world model's predictor (CDiT-style next-latent regressor) and its hand-consistency head."""

from dexwm_model.predictor.cdit import CDiTPredictor, ContextCache, build_predictor, count_parameters
from dexwm_model.predictor.config import (
    HandHeadConfig,
    PredictorConfig,
    load_hand_head_config,
    load_predictor_config,
    predictor_sizes,
)
from dexwm_model.predictor.hand_head import HandHeatmapHead

__all__ = [
    "CDiTPredictor",
    "ContextCache",
    "HandHeadConfig",
    "HandHeatmapHead",
    "PredictorConfig",
    "build_predictor",
    "count_parameters",
    "load_hand_head_config",
    "load_predictor_config",
    "predictor_sizes",
]
