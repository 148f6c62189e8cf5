"""Building the encoder from ``config/model.yaml`` section ``encoder``, through a registry of encoder kinds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dexwm_robot.config import ConfigError, load_section
from dexwm_model.encoders.base import ImageEncoder

CONFIG_FILE = "model.yaml"
CONFIG_SECTION = "encoder"


@dataclass
class EncoderConfig:
    """Section ``encoder`` of ``config/model.yaml``.

    ``kind``: a registered encoder kind (``dinov2``); ``size``: S, B, L or G (ViT-x/14; null together with
    ``weights``: whatever width the folder holds); ``image_size``: crop ``[H, W]``, multiples of the patch size
    (paper: [224, 392]); ``resize_short``: short side before cropping (null: the crop's short side);
    ``weights``: folder in transformers format, or a Hugging Face id looked up in the local cache only (null: the
    released id of ``size``); ``random_init``: build random weights instead of loading (explicit, never a
    fallback); ``seed``: of the random init; ``dtype``: float32, bfloat16 or float16.
    """

    kind: str = "dinov2"
    size: str | None = "S"
    image_size: list[int] = field(default_factory=lambda: [224, 224])
    resize_short: int | None = None
    weights: str | None = None
    random_init: bool = False
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, (list, tuple)) or len(self.image_size) != 2 or not all(
                isinstance(v, int) and v > 0 for v in self.image_size):
            raise ConfigError(f"encoder.image_size: expected [height, width] positive integers, found "
                              f"{self.image_size!r}")
        self.image_size = [int(v) for v in self.image_size]
        if not isinstance(self.random_init, bool):
            raise ConfigError(f"encoder.random_init: expected true or false, found {self.random_init!r}")
        if self.resize_short is not None and (not isinstance(self.resize_short, int) or self.resize_short <= 0):
            raise ConfigError(f"encoder.resize_short: expected a positive integer or null, found {self.resize_short!r}")


EncoderBuilder = Callable[[EncoderConfig], ImageEncoder]
ENCODERS: dict[str, EncoderBuilder] = {}


def register_encoder(kind: str) -> Callable[[EncoderBuilder], EncoderBuilder]:
    """Decorator: make ``builder(config) -> ImageEncoder`` available as ``kind``."""

    def deco(builder: EncoderBuilder) -> EncoderBuilder:
        if kind in ENCODERS and ENCODERS[kind] is not builder:
            raise ValueError(f"encoder kind '{kind}' is already registered")
        ENCODERS[kind] = builder
        return builder

    return deco


@register_encoder("dinov2")
def _build_dinov2(cfg: EncoderConfig) -> ImageEncoder:
    from dexwm_model.encoders.dinov2 import Dinov2Encoder

    if cfg.random_init:
        if cfg.weights is not None:
            raise ConfigError(f"encoder: random_init is true but weights is set ({cfg.weights!r}); choose one")
        return Dinov2Encoder.random_init(cfg.size, cfg.image_size, cfg.resize_short, seed=cfg.seed, dtype=cfg.dtype)
    return Dinov2Encoder.from_pretrained(cfg.weights, cfg.size, cfg.image_size, cfg.resize_short, dtype=cfg.dtype)


def load_encoder_config(file: str | Path = CONFIG_FILE, **overrides: Any) -> EncoderConfig:
    """Section ``encoder`` of ``file`` (default ``config/model.yaml``), with keyword overrides."""
    cfg = load_section(EncoderConfig, file, CONFIG_SECTION)
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def build_encoder(config: EncoderConfig | None = None, **overrides: Any) -> ImageEncoder:
    """The frozen encoder described by ``config`` (default: ``config/model.yaml``), with keyword overrides."""
    cfg = load_encoder_config() if config is None else config
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    if cfg.kind not in ENCODERS:
        raise ConfigError(f"encoder.kind: unknown encoder '{cfg.kind}'; registered: {sorted(ENCODERS)}")
    return ENCODERS[cfg.kind](cfg)
