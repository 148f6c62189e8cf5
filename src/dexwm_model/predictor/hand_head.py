"""Keypoint heads: latent tokens on their patch grid -> keypoint heat-maps at image resolution.

The hand-consistency head has 12 maps: the wrist and the five fingertips of the left hand, then of the right hand
(:data:`dexwm_model.kinematics.hand_layout.HEATMAP_KEYPOINTS_21` of each hand). The object head has one map per
catalogue object (its centre). A small transformer reads the tokens; a per-token linear layer emits
``patch_h * patch_w * maps`` values that are rearranged into the pixels that token covers ("pixel shuffle"), so the
output has exactly the encoder's input resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dexwm_model.kinematics.hand_layout import HEATMAP_KEYPOINTS_21
from dexwm_model.predictor.config import HandDepthHeadConfig, HandHeadConfig, ObjectHeadConfig
from dexwm_model.predictor.layers import EncoderBlock, init_linear_

NUM_HEATMAPS = 2 * len(HEATMAP_KEYPOINTS_21)  # 12: left wrist + 5 tips, right wrist + 5 tips
RIGHT_HAND_MAPS = slice(len(HEATMAP_KEYPOINTS_21), NUM_HEATMAPS)  # the right hand's wrist + 5 tips among them


class KeypointHeatmapHead(nn.Module):
    """``maps`` heat-maps read out of latent tokens (see the module docstring)."""

    def __init__(self, cfg: HandHeadConfig, input_dim: int, grid: tuple[int, int], image_size: tuple[int, int],
                 maps: int = NUM_HEATMAPS):
        super().__init__()
        if int(maps) < 1:
            raise ValueError(f"{type(self).__name__}: maps must be >= 1, found {maps}")
        self.maps = int(maps)
        hp, wp = (int(g) for g in grid)
        h, w = (int(s) for s in image_size)
        if hp < 1 or wp < 1 or h < 1 or w < 1:
            raise ValueError(f"{type(self).__name__}: grid {grid} and image_size {image_size} must be positive")
        if h % hp or w % wp:
            raise ValueError(
                f"{type(self).__name__}: image_size {image_size} (H, W) must be a whole multiple of the patch grid {grid}"
            )
        self.cfg = cfg
        self.input_dim = input_dim
        self.grid = (hp, wp)
        self.image_size = (h, w)
        self.patch = (h // hp, w // wp)
        self.num_tokens = hp * wp
        width = cfg.width
        self.in_proj = nn.Linear(input_dim, width)
        self.pos_embed = nn.Parameter(torch.zeros(self.num_tokens, width))
        self.blocks = nn.ModuleList(EncoderBlock(width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.out = nn.Linear(width, self.patch[0] * self.patch[1] * self.maps)
        init_linear_(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.zeros_(self.out.weight)  # heat-maps start at exactly 0
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: (B, P, d) with P = Hp * Wp in row-major grid order -> heat-maps (B, maps, H, W)."""
        if tokens.dim() != 3 or tuple(tokens.shape[1:]) != (self.num_tokens, self.input_dim):
            raise ValueError(
                f"tokens: expected shape (B, {self.num_tokens}, {self.input_dim}) for grid {self.grid}, "
                f"found {tuple(tokens.shape)}"
            )
        x = self.in_proj(tokens) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        y = self.out(self.norm(x))  # (B, P, ph * pw * maps)
        b = y.shape[0]
        (hp, wp), (ph, pw) = self.grid, self.patch
        y = y.view(b, hp, wp, ph, pw, self.maps).permute(0, 5, 1, 3, 2, 4)
        return y.reshape(b, self.maps, hp * ph, wp * pw)


class HandHeatmapHead(KeypointHeatmapHead):
    """The hand-consistency head: 12 maps (left wrist + 5 tips, right wrist + 5 tips)."""

    def __init__(self, cfg: HandHeadConfig, input_dim: int, grid: tuple[int, int], image_size: tuple[int, int]):
        super().__init__(cfg, input_dim, grid, image_size, NUM_HEATMAPS)


class ObjectHeatmapHead(KeypointHeatmapHead):
    """The object head: one map per object of ``cfg.objects`` (its centre)."""

    def __init__(self, cfg: ObjectHeadConfig, input_dim: int, grid: tuple[int, int], image_size: tuple[int, int]):
        super().__init__(cfg, input_dim, grid, image_size, len(cfg.objects))


class HandDepthHead(KeypointHeatmapHead):
    """The hand depth head (our addition): 12 depth maps at image resolution, one per heat-map keypoint, in metres
    along the camera's optical axis (``cfg.base_depth_m`` + the map, so a fresh head says ``base_depth_m``);
    :meth:`read` samples map k at keypoint k's pixel. With the hand head's pixels this makes each keypoint a 3-D
    point (the planner's depth term and goal-pose proposals)."""

    def __init__(self, cfg: HandDepthHeadConfig, input_dim: int, grid: tuple[int, int], image_size: tuple[int, int]):
        super().__init__(cfg, input_dim, grid, image_size, NUM_HEATMAPS)  # type: ignore[arg-type]

    def forward(self, tokens: Tensor) -> Tensor:
        return super().forward(tokens) + self.cfg.base_depth_m

    def read(self, maps: Tensor, uv: Tensor) -> Tensor:
        """Depth maps ``(B, K, H, W)`` at pixels ``uv (B, K, 2)`` (continuous, pixel (i, j) covering ``[j, j + 1) x
        [i, i + 1)``; bilinear, clamped at the border) -> ``(B, K)``."""
        b, k, h, w = maps.shape
        if tuple(uv.shape) != (b, k, 2):
            raise ValueError(f"uv: expected shape ({b}, {k}, 2), found {tuple(uv.shape)}")
        scale = torch.tensor([2.0 / w, 2.0 / h], dtype=maps.dtype, device=maps.device)
        grid = (uv.to(maps.dtype) * scale - 1.0).view(b * k, 1, 1, 2)
        out = F.grid_sample(maps.reshape(b * k, 1, h, w), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out.view(b, k)
