"""The noise predictor: a 1-D temporal convolutional U-Net over the action chunk, FiLM-conditioned on the
observation embedding and the diffusion step (the Diffusion Policy recipe).

Input: a noisy action chunk ``(B, H, A)`` (normalised joint targets), the diffusion step ``(B,)`` and the
observation embedding ``(B, C)``. Convolutions run along time (channels = action dimensions at the input); every
residual block modulates its first convolution's output with a per-channel scale and shift computed from the
condition (FiLM), so the observation and the step steer every level of the network. Down-sampling halves the
chunk per level; the up path doubles it again and concatenates the skip connection of the same level.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def step_embedding(steps: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``(B, dim)`` of diffusion steps ``(B,)`` (periods geometric from 2 pi to 10000 x)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=steps.device, dtype=torch.float32) / half)
    angles = steps.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvNormAct(nn.Sequential):
    """Conv1d (same length) -> GroupNorm -> Mish."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, groups: int) -> None:
        super().__init__(nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
                         nn.GroupNorm(groups, out_ch), nn.Mish())


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; between them the features are scaled and shifted per channel by the condition."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.first = ConvNormAct(in_ch, out_ch, kernel_size, groups)
        self.second = ConvNormAct(out_ch, out_ch, kernel_size, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.first(x)
        scale, shift = self.film(cond)[:, :, None].chunk(2, dim=1)
        h = self.second(h * (1 + scale) + shift)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Predicts the noise in a noisy action chunk ``(B, H, action_dim)`` given the step and the observation."""

    def __init__(self, action_dim: int, obs_dim: int, channels: list[int], time_features: int = 128,
                 kernel_size: int = 5, groups: int = 8) -> None:
        super().__init__()
        self.time_features = int(time_features)
        self.levels = len(channels)
        self.step_mlp = nn.Sequential(nn.Linear(time_features, 4 * time_features), nn.Mish(),
                                      nn.Linear(4 * time_features, time_features))
        cond_dim = time_features + obs_dim
        widths = [action_dim] + list(channels)
        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(channels) - 1
            self.down.append(nn.ModuleList([
                FiLMResidualBlock(a, b, cond_dim, kernel_size, groups),
                FiLMResidualBlock(b, b, cond_dim, kernel_size, groups),
                nn.Conv1d(b, b, 3, stride=2, padding=1) if not last else nn.Identity()]))
        mid = channels[-1]
        self.mid = nn.ModuleList([FiLMResidualBlock(mid, mid, cond_dim, kernel_size, groups),
                                  FiLMResidualBlock(mid, mid, cond_dim, kernel_size, groups)])
        self.up = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            deep, here = channels[i + 1], channels[i]
            self.up.append(nn.ModuleList([
                nn.ConvTranspose1d(deep, deep, 4, stride=2, padding=1),
                FiLMResidualBlock(deep + here, here, cond_dim, kernel_size, groups),
                FiLMResidualBlock(here, here, cond_dim, kernel_size, groups)]))
        self.head = nn.Sequential(ConvNormAct(channels[0], channels[0], kernel_size, groups),
                                  nn.Conv1d(channels[0], action_dim, 1))

    def forward(self, noisy: Tensor, steps: Tensor, obs: Tensor) -> Tensor:
        if noisy.dim() != 3:
            raise ValueError(f"ConditionalUnet1D: expected a noisy chunk (B, H, A), found shape {tuple(noisy.shape)}")
        b = noisy.shape[0]
        steps = torch.as_tensor(steps, device=noisy.device).reshape(-1).expand(b)
        cond = torch.cat([self.step_mlp(step_embedding(steps, self.time_features)), obs], dim=-1)
        x = noisy.transpose(1, 2)  # (B, A, H): convolve along time
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        skips.pop()  # the deepest level feeds the middle blocks directly
        for res in self.mid:
            x = res(x, cond)
        for up, res1, res2 in self.up:
            x = torch.cat([up(x), skips.pop()], dim=1)
            x = res2(res1(x, cond), cond)
        return self.head(x).transpose(1, 2)
