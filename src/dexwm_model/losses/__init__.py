"""Training losses of the DexWM world model and the hand-keypoint metrics."""

from dexwm_model.losses.hand_consistency import (
    gaussian_heatmaps,
    hand_consistency_loss,
    heatmap_keypoints,
    keypoint_mask,
    pck,
)
from dexwm_model.losses.world_model import WorldModelLoss, latent_loss, world_model_loss

__all__ = [
    "WorldModelLoss",
    "gaussian_heatmaps",
    "hand_consistency_loss",
    "heatmap_keypoints",
    "keypoint_mask",
    "latent_loss",
    "pck",
    "world_model_loss",
]
