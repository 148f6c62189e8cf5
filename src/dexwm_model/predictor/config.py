"""Typed configuration of the predictor and the hand-consistency head (``config/model.yaml``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from dexwm_model.config import ConfigError, from_dict, load_yaml

MODEL_CONFIG_FILE = "model.yaml"


@dataclass
class PredictorConfig:
    """One resolved predictor architecture (a size preset merged with the shared settings)."""

    depth: int
    width: int
    heads: int
    mlp_ratio: float = 2.0
    cond_dim: int = 192
    max_context: int = 8
    time_features: int = 64
    time_min_period: float = 0.05
    time_max_period: float = 16.0
    rope_fraction: float = 0.5
    residual_output: bool = True
    layer_norm_eps: float = 1e-6
    grad_checkpoint: bool = False
    size: str = "custom"

    def __post_init__(self) -> None:
        for name in ("depth", "width", "heads", "cond_dim", "max_context", "time_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"predictor.{name}: expected a positive integer, found {value!r}")
        if self.width % self.heads:
            raise ConfigError(f"predictor: width {self.width} is not divisible by heads {self.heads}")
        if self.time_features % 2:
            raise ConfigError(f"predictor.time_features: expected an even number, found {self.time_features}")
        if not 0.0 <= self.rope_fraction <= 1.0:
            raise ConfigError(f"predictor.rope_fraction: expected a value in [0, 1], found {self.rope_fraction}")
        if not 0.0 < self.time_min_period < self.time_max_period:
            raise ConfigError(
                "predictor: expected 0 < time_min_period < time_max_period, found "
                f"{self.time_min_period} and {self.time_max_period}"
            )
        if self.mlp_ratio <= 0:
            raise ConfigError(f"predictor.mlp_ratio: expected > 0, found {self.mlp_ratio}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


def _check_head_blocks(cfg, section: str) -> None:
    """The transformer of a keypoint head: positive integer ``depth``, ``width``, ``heads``; width divisible by heads."""
    for name in ("depth", "width", "heads"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{section}.{name}: expected a positive integer, found {value!r}")
    if cfg.width % cfg.heads:
        raise ConfigError(f"{section}: width {cfg.width} is not divisible by heads {cfg.heads}")


@dataclass
class HandHeadConfig:
    depth: int
    width: int
    heads: int
    mlp_ratio: float
    sigma_px: float
    loss_weight: float
    refine_radius_px: int
    pck_thresholds_px: list[float] = field(default_factory=lambda: [2.5, 5.0, 10.0, 20.0])

    def __post_init__(self) -> None:
        _check_head_blocks(self, "hand_head")
        if self.sigma_px <= 0:
            raise ConfigError(f"hand_head.sigma_px: expected > 0, found {self.sigma_px}")
        if self.loss_weight < 0:
            raise ConfigError(f"hand_head.loss_weight: expected >= 0, found {self.loss_weight}")
        if not isinstance(self.refine_radius_px, int) or self.refine_radius_px < 0:
            raise ConfigError(f"hand_head.refine_radius_px: expected an integer >= 0, found {self.refine_radius_px!r}")


@dataclass
class ObjectHeadConfig(HandHeadConfig):
    """The object head: one heat-map per catalogue object (``objects``, the slots of the datasets' object keypoints,
    :func:`dexwm_model.datasets.objects.object_catalogue`), read from the same latents as the hand head."""

    objects: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        names = [str(n) for n in self.objects] if isinstance(self.objects, (list, tuple)) else None
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"object_head.objects: expected a non-empty list of unique object names, found "
                              f"{self.objects!r}")
        self.objects = names


@dataclass
class HandDepthHeadConfig:
    """The hand depth head (our addition, not in the paper): one depth map per heat-map keypoint, read where the hand
    head finds that keypoint; the depth (metres along the camera's optical axis) is ``base_depth_m`` + the map."""

    depth: int = 1
    width: int = 128
    heads: int = 4
    mlp_ratio: float = 2.0
    base_depth_m: float = 1.0

    def __post_init__(self) -> None:
        _check_head_blocks(self, "hand_depth_head")
        if not self.base_depth_m > 0:
            raise ConfigError(f"hand_depth_head.base_depth_m: expected > 0, found {self.base_depth_m!r}")


def load_predictor_config(
    size: str | None = None, file: str | Path = MODEL_CONFIG_FILE, **overrides
) -> PredictorConfig:
    """The ``predictor`` section with the preset ``size`` (default: the file's ``size``) resolved.

    ``overrides`` replace single fields afterwards (e.g. ``grad_checkpoint=True``).
    """
    data = load_yaml(file).get("predictor")
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: missing section 'predictor'")
    data = dict(data)
    sizes = data.pop("sizes", None)
    default_size = data.pop("size", None)
    if not isinstance(sizes, dict) or not sizes:
        raise ConfigError(f"{file}: predictor.sizes must map preset names to {{depth, width, heads}}")
    chosen = size if size is not None else default_size
    if chosen not in sizes:
        raise ConfigError(f"{file}: predictor size {chosen!r} is not one of {sorted(sizes)}")
    preset = sizes[chosen]
    if not isinstance(preset, dict) or set(preset) != {"depth", "width", "heads"}:
        raise ConfigError(f"{file}: predictor.sizes.{chosen} must hold exactly depth, width, heads; found {preset!r}")
    cfg = from_dict(PredictorConfig, {**data, **preset, "size": chosen}, f"{Path(file).name}:predictor")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def predictor_sizes(file: str | Path = MODEL_CONFIG_FILE) -> list[str]:
    data = load_yaml(file).get("predictor") or {}
    return list((data.get("sizes") or {}).keys())


def load_hand_head_config(file: str | Path = MODEL_CONFIG_FILE, **overrides) -> HandHeadConfig:
    data = load_yaml(file).get("hand_head")
    if data is None:
        raise ConfigError(f"{file}: missing section 'hand_head'")
    cfg = from_dict(HandHeadConfig, data, f"{Path(file).name}:hand_head")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
