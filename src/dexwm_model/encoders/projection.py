"""Learned linear adaptation of encoder tokens to the predictor's width."""

from __future__ import annotations

import torch
from torch import nn


class TokenProjection(nn.Module):
    """``(..., in_dim)`` tokens -> ``(..., out_dim)``: a learned linear map when the widths differ, else identity
    (no parameters). Unlike the encoder, this layer trains with the predictor."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        if int(in_dim) <= 0 or int(out_dim) <= 0:
            raise ValueError(f"TokenProjection: widths must be positive, found in_dim={in_dim}, out_dim={out_dim}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.linear = nn.Linear(self.in_dim, self.out_dim, bias=bias) if self.in_dim != self.out_dim else None

    @property
    def is_identity(self) -> bool:
        return self.linear is None

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}" + (", identity" if self.linear is None else "")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] != self.in_dim:
            raise ValueError(f"TokenProjection: expected tokens of width {self.in_dim}, found shape "
                             f"{tuple(tokens.shape)}")
        return tokens if self.linear is None else self.linear(tokens)
