"""Typed sections of ``config/diffusion_policy.yaml``: the policy's architecture (``model``), its noise schedule
(``scheduler``), the training recipe (``train``) and the closed-loop settings (``policy``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dexwm_robot.config import ConfigError, from_dict, load_section
from dexwm_model.encoders.factory import EncoderConfig

CONFIG_FILE = "diffusion_policy.yaml"
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample")


def _number(where: str, value: Any, low: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (low_open and value == low):
        raise ConfigError(f"{where}: expected a number {'>' if low_open else '>='} {low}, found {value!r}")


def _positive_int(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected a positive integer, found {value!r}")


@dataclass
class PolicyModelConfig:
    """Section ``model``: the frozen encoder, the chunk length and the noise predictor's sizes."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    horizon: int = 8
    token_features: int = 8
    image_features: int = 256
    time_features: int = 128
    unet_channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    kernel_size: int = 5
    groups: int = 8
    min_half_range: float = 1e-3

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = from_dict(EncoderConfig, self.encoder, "model.encoder")
        for name in ("horizon", "token_features", "image_features", "time_features", "kernel_size", "groups"):
            _positive_int(f"model.{name}", getattr(self, name))
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size: expected an odd number (same-length convolutions), found "
                              f"{self.kernel_size}")
        if self.time_features % 2:
            raise ConfigError(f"model.time_features: expected an even number (sine + cosine), found "
                              f"{self.time_features}")
        ch = self.unet_channels
        if not isinstance(ch, (list, tuple)) or not ch:
            raise ConfigError(f"model.unet_channels: expected a non-empty list of channel counts, found {ch!r}")
        for c in ch:
            _positive_int("model.unet_channels[]", c)
            if c % self.groups:
                raise ConfigError(f"model.unet_channels: {c} is not divisible by model.groups = {self.groups}")
        self.unet_channels = [int(c) for c in ch]
        factor = 2 ** (len(ch) - 1)
        if self.horizon % factor:
            raise ConfigError(f"model.horizon: {self.horizon} is not a multiple of {factor} (the U-Net halves the "
                              f"chunk {len(ch) - 1} times); use e.g. {max(factor, self.horizon // factor * factor)}")
        _number("model.min_half_range", self.min_half_range, 0.0, low_open=True)


@dataclass
class SchedulerConfig:
    """Section ``scheduler``: the DDPM noise schedule, what the network predicts (the noise: ``epsilon``, or the
    clean chunk: ``sample``) and the DDIM sampling steps."""

    train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    inference_steps: int = 10

    def __post_init__(self) -> None:
        _positive_int("scheduler.train_timesteps", self.train_timesteps)
        _positive_int("scheduler.inference_steps", self.inference_steps)
        if self.inference_steps > self.train_timesteps:
            raise ConfigError(f"scheduler.inference_steps: {self.inference_steps} exceeds train_timesteps "
                              f"{self.train_timesteps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"scheduler.beta_schedule: expected one of {BETA_SCHEDULES}, found "
                              f"{self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"scheduler.prediction_type: expected one of {PREDICTION_TYPES}, found "
                              f"{self.prediction_type!r}")


@dataclass
class PolicyTrainConfig:
    """Section ``train``: optimiser, schedule, EMA and logging of ``dexwm train diffusion-policy``."""

    steps: int = 20000
    batch_size: int = 128
    lr: float = 3e-4
    min_lr: float = 1e-5
    warmup_steps: int = 500
    weight_decay: float = 1e-6
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    encode_batch: int = 32
    log_every: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "encode_batch", "log_every"):
            _positive_int(f"train.{name}", getattr(self, name))
        for name in ("lr", "grad_clip"):
            _number(f"train.{name}", getattr(self, name), 0.0, low_open=True)
        for name in ("min_lr", "weight_decay"):
            _number(f"train.{name}", getattr(self, name), 0.0)
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps: expected an integer >= 0, found {self.warmup_steps!r}")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) or \
                not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay: expected a number in [0, 1), found {self.ema_decay!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"train.seed: expected an integer, found {self.seed!r}")


@dataclass
class ClosedLoopConfig:
    """Section ``policy``: how many actions of a chunk run before re-inferring, and how long each takes."""

    execute_steps: int = 2
    waypoint_duration_s: float = 0.2

    def __post_init__(self) -> None:
        _positive_int("policy.execute_steps", self.execute_steps)
        _number("policy.waypoint_duration_s", self.waypoint_duration_s, 0.0, low_open=True)


def load_model_config(file: str | Path = CONFIG_FILE) -> PolicyModelConfig:
    return load_section(PolicyModelConfig, file, "model")


def load_scheduler_config(file: str | Path = CONFIG_FILE) -> SchedulerConfig:
    return load_section(SchedulerConfig, file, "scheduler")


def load_train_config(file: str | Path = CONFIG_FILE) -> PolicyTrainConfig:
    return load_section(PolicyTrainConfig, file, "train")


def load_closed_loop_config(file: str | Path = CONFIG_FILE) -> ClosedLoopConfig:
    return load_section(ClosedLoopConfig, file, "policy")


def as_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
