"""Typed sections of ``config/encoder_training.yaml`` (the dexwm_vit architecture presets live in
:mod:`dexwm_model.encoders.sim_vit`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dexwm_robot.config import ConfigError, load_section

CONFIG_FILE = "encoder_training.yaml"
DEVICES = ("auto", "cpu", "cuda")
T = TypeVar("T")


def _positive_int(where: str, value: object, allow_zero: bool = False) -> None:
    lo = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ConfigError(f"{CONFIG_FILE} {where}: expected an integer >= {lo}, found {value!r}")


def _range01(where: str, value: object, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0 < value if low_open else 0 <= value) \
        and value <= 1
    if not ok:
        raise ConfigError(f"{CONFIG_FILE} {where}: expected a number in {'(0' if low_open else '[0'}, 1], found "
                          f"{value!r}")


@dataclass
class FramesConfig:
    stride: int
    max_frames: int

    def __post_init__(self) -> None:
        _positive_int("frames.stride", self.stride)
        _positive_int("frames.max_frames", self.max_frames, allow_zero=True)


@dataclass
class AugmentConfig:
    scale: list[float]
    aspect_jitter: float
    crop_probability: float
    brightness: float
    contrast: float

    def __post_init__(self) -> None:
        if (not isinstance(self.scale, (list, tuple)) or len(self.scale) != 2
                or not 0 < self.scale[0] <= self.scale[1] <= 1):
            raise ConfigError(f"{CONFIG_FILE} augment.scale: expected [low, high] with 0 < low <= high <= 1, found "
                              f"{self.scale!r}")
        for name in ("aspect_jitter", "crop_probability", "brightness", "contrast"):
            _range01(f"augment.{name}", getattr(self, name))


@dataclass
class MAEConfig:
    mask_ratio: float
    norm_pix_loss: bool
    decoder_width: int
    decoder_depth: int
    decoder_heads: int
    decoder_mlp_ratio: float

    def __post_init__(self) -> None:
        if not isinstance(self.mask_ratio, float) or not 0 < self.mask_ratio < 1:
            raise ConfigError(f"{CONFIG_FILE} mae.mask_ratio: expected a number in (0, 1), found {self.mask_ratio!r}")
        for name in ("decoder_width", "decoder_depth", "decoder_heads"):
            _positive_int(f"mae.{name}", getattr(self, name))
        if self.decoder_width % self.decoder_heads or self.decoder_width % 4:
            raise ConfigError(f"{CONFIG_FILE} mae.decoder_width: {self.decoder_width} must be a multiple of 4 and of "
                              f"decoder_heads ({self.decoder_heads})")


@dataclass
class TrainConfig:
    batch_size: int
    lr: float
    min_lr: float
    warmup_fraction: float
    weight_decay: float
    betas: list[float]
    grad_clip: float
    seed: int
    threads: int
    device: str
    log_every: int

    def __post_init__(self) -> None:
        _positive_int("train.batch_size", self.batch_size)
        _positive_int("train.threads", self.threads, allow_zero=True)
        _positive_int("train.log_every", self.log_every)
        _range01("train.warmup_fraction", self.warmup_fraction)
        if not (0 <= self.min_lr <= self.lr):
            raise ConfigError(f"{CONFIG_FILE} train: expected 0 <= min_lr <= lr, found min_lr={self.min_lr!r}, "
                              f"lr={self.lr!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{CONFIG_FILE} train.betas: expected two numbers in [0, 1), found {self.betas!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"{CONFIG_FILE} train.device: expected one of {list(DEVICES)}, found {self.device!r}")


@dataclass
class ProbeConfig:
    hand_keypoints: list[int]
    alphas: list[float]
    val_fraction: float
    raw_pixels_size: int
    batch_size: int
    stride: int

    def __post_init__(self) -> None:
        if not self.hand_keypoints or not all(isinstance(k, int) and 0 <= k < 21 for k in self.hand_keypoints):
            raise ConfigError(f"{CONFIG_FILE} probe.hand_keypoints: expected indices 0..20 of the 21-point layout, "
                              f"found {self.hand_keypoints!r}")
        if not self.alphas or not all(isinstance(a, (int, float)) and a > 0 for a in self.alphas):
            raise ConfigError(f"{CONFIG_FILE} probe.alphas: expected positive numbers, found {self.alphas!r}")
        _range01("probe.val_fraction", self.val_fraction, low_open=True)
        for name in ("raw_pixels_size", "batch_size", "stride"):
            _positive_int(f"probe.{name}", getattr(self, name))


@dataclass
class DecoderConfig:
    width: int
    depth: int
    heads: int
    mlp_ratio: float
    refine_channels: int
    loss: str
    batch_size: int
    lr: float
    min_lr: float
    warmup_fraction: float
    weight_decay: float
    grad_clip: float

    def __post_init__(self) -> None:
        for name in ("width", "depth", "heads", "batch_size"):
            _positive_int(f"decoder.{name}", getattr(self, name))
        _positive_int("decoder.refine_channels", self.refine_channels, allow_zero=True)
        if self.width % self.heads or self.width % 4:
            raise ConfigError(f"{CONFIG_FILE} decoder.width: {self.width} must be a multiple of 4 and of heads "
                              f"({self.heads})")
        if self.loss not in ("l1", "mse"):
            raise ConfigError(f"{CONFIG_FILE} decoder.loss: expected 'l1' or 'mse', found {self.loss!r}")
        _range01("decoder.warmup_fraction", self.warmup_fraction)
        if not (0 <= self.min_lr <= self.lr):
            raise ConfigError(f"{CONFIG_FILE} decoder: expected 0 <= min_lr <= lr, found min_lr={self.min_lr!r}, "
                              f"lr={self.lr!r}")


SECTIONS = {"frames": FramesConfig, "augment": AugmentConfig, "mae": MAEConfig, "train": TrainConfig,
            "probe": ProbeConfig, "decoder": DecoderConfig}


def load(section: str, file: str | Path = CONFIG_FILE):
    """Section ``section`` of ``config/encoder_training.yaml`` (or ``file``) as its dataclass."""
    if section not in SECTIONS:
        raise ConfigError(f"{CONFIG_FILE}: unknown section {section!r}; known: {sorted(SECTIONS)}")
    return load_section(SECTIONS[section], file, section)
