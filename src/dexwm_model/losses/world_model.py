"""The DexWM training objective: latent MSE + lambda x hand-consistency loss on the *predicted* latent."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dexwm_model.losses.hand_consistency import hand_consistency_loss


@dataclass
class WorldModelLoss:
    total: Tensor
    latent: Tensor
    hand: Tensor


def latent_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between predicted and true latent tokens (any matching shapes)."""
    if pred.shape != target.shape:
        raise ValueError(
            f"latent_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
        )
    work = torch.promote_types(pred.dtype, torch.float32)
    return torch.mean((pred.to(work) - target.to(work)) ** 2)


def world_model_loss(
    pred_latent: Tensor,
    true_latent: Tensor,
    heatmaps: Tensor | None,
    uv: Tensor | None,
    valid: Tensor | None,
    hand_weight: float,
    sigma: float,
) -> WorldModelLoss:
    """``latent MSE + hand_weight * hand loss``. ``heatmaps`` (B, 12, H, W) come from the hand head applied to
    ``pred_latent``; ``uv``/``valid`` (B, 12, 2)/(B, 12) are the true 2-D keypoints (robot samples without
    hand keypoints pass ``valid`` all False, or ``heatmaps=None`` to skip the term)."""
    latent = latent_loss(pred_latent, true_latent)
    if heatmaps is None:
        hand = torch.zeros((), dtype=latent.dtype, device=latent.device)
    else:
        if uv is None or valid is None:
            raise ValueError("world_model_loss: heatmaps given without uv and valid keypoint targets")
        hand = hand_consistency_loss(heatmaps, uv, valid, sigma)
    return WorldModelLoss(total=latent + hand_weight * hand, latent=latent, hand=hand)
