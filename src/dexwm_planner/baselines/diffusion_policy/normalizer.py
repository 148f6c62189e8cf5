"""Per-joint min/max normalisation to [-1, 1], the range the diffusion model's samples are clipped to.

Each joint ``j`` maps its data range ``[low_j, high_j]`` linearly onto ``[-1, 1]``. A joint that (nearly) never moved
in the data gets the half-range ``min_half_range`` instead of its tiny one, so any sample in [-1, 1] decodes to
within ``min_half_range`` of the value seen, instead of dividing by ~0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MinMaxNormalizer(nn.Module):
    """``normalize(x) = (x - centre) / half_range``; the statistics are buffers, saved with the model."""

    def __init__(self, dim: int, min_half_range: float = 1e-3) -> None:
        super().__init__()
        if not min_half_range > 0:
            raise ValueError(f"min_half_range: expected > 0, found {min_half_range}")
        self.min_half_range = float(min_half_range)
        self.register_buffer("centre", torch.zeros(dim))
        self.register_buffer("half_range", torch.ones(dim))

    @property
    def dim(self) -> int:
        return int(self.centre.numel())

    def fit(self, data: Tensor) -> "MinMaxNormalizer":
        """Set the statistics from ``data`` (..., dim): its per-column minimum and maximum."""
        data = torch.as_tensor(data, dtype=torch.float64).reshape(-1, self.dim)
        if data.shape[0] == 0:
            raise ValueError("MinMaxNormalizer.fit: no data rows")
        if not torch.isfinite(data).all():
            raise ValueError("MinMaxNormalizer.fit: data holds NaN or infinite values")
        low, high = data.min(0).values, data.max(0).values
        self.centre.copy_(((low + high) / 2).to(self.centre.dtype))
        self.half_range.copy_(((high - low) / 2).clamp_min(self.min_half_range).to(self.half_range.dtype))
        return self

    def _check(self, x: Tensor, name: str) -> None:
        if x.shape[-1] != self.dim:
            raise ValueError(f"MinMaxNormalizer.{name}: expected a last dimension of {self.dim}, found shape "
                             f"{tuple(x.shape)}")

    def normalize(self, x: Tensor) -> Tensor:
        self._check(x, "normalize")
        return (x - self.centre.to(x.dtype)) / self.half_range.to(x.dtype)

    def unnormalize(self, y: Tensor) -> Tensor:
        self._check(y, "unnormalize")
        return y * self.half_range.to(y.dtype) + self.centre.to(y.dtype)
