"""Typed view of ``config/train.yaml``: one training recipe per section (``pretrain``, ``finetune``,
``cpu_default``) and the ``eval`` section of ``dexwm eval``. Every number lives in the YAML file only."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dexwm_model.config import ConfigError, from_dict, load_yaml

CONFIG_FILE = "train.yaml"
MODES = ("pretrain", "finetune")
TARGETS = ("last", "all")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def _positive_int(where: str, value: Any, allow_zero: bool = False) -> None:
    lo = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ConfigError(f"{where}: expected an integer >= {lo}, found {value!r}")


def _number(where: str, value: Any, lo: float = 0.0, strict: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo or (strict and value == lo):
        raise ConfigError(f"{where}: expected a number {'>' if strict else '>='} {lo}, found {value!r}")


@dataclass
class ModelSpec:
    """Architecture of a new model as overrides of ``config/model.yaml`` (see the header of train.yaml)."""

    encoder: dict
    predictor: dict
    hand_head: dict
    latent_dim: int | None
    train_projection: bool

    def __post_init__(self) -> None:
        for name in ("encoder", "predictor", "hand_head"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"model.{name}: expected a mapping of overrides, found {getattr(self, name)!r}")
        if self.latent_dim is not None:
            _positive_int("model.latent_dim", self.latent_dim)
        if not isinstance(self.train_projection, bool):
            raise ConfigError(f"model.train_projection: expected true or false, found {self.train_projection!r}")


@dataclass
class DataConfig:
    datasets: str
    context_frames: int | None
    batch_size: int
    micro_batch: int | None
    num_workers: int
    latent_cache: bool
    cache_dir: str | None
    cache_batch: int

    def __post_init__(self) -> None:
        if self.context_frames is not None:
            _positive_int("data.context_frames", self.context_frames)
        _positive_int("data.batch_size", self.batch_size)
        if self.micro_batch is not None:
            _positive_int("data.micro_batch", self.micro_batch)
        _positive_int("data.num_workers", self.num_workers, allow_zero=True)
        _positive_int("data.cache_batch", self.cache_batch)
        if not isinstance(self.latent_cache, bool):
            raise ConfigError(f"data.latent_cache: expected true or false, found {self.latent_cache!r}")


@dataclass
class OptimConfig:
    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float
    betas: list[float]
    eps: float
    grad_clip: float | None
    # a step whose loss or gradient norm is not finite is skipped (no update); more than this many in a row stop the
    # run with TrainingDiverged (0: the first one stops it)
    max_skipped_steps: int = 3

    def __post_init__(self) -> None:
        _number("optim.lr", self.lr, strict=True)
        _number("optim.min_lr", self.min_lr)
        if self.min_lr > self.lr:
            raise ConfigError(f"optim.min_lr ({self.min_lr}) must not exceed optim.lr ({self.lr})")
        _positive_int("optim.warmup_steps", self.warmup_steps, allow_zero=True)
        _number("optim.weight_decay", self.weight_decay)
        if (not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)):
            raise ConfigError(f"optim.betas: expected two numbers in [0, 1), found {self.betas!r}")
        _number("optim.eps", self.eps, strict=True)
        if self.grad_clip is not None:
            _number("optim.grad_clip", self.grad_clip, strict=True)
        _positive_int("optim.max_skipped_steps", self.max_skipped_steps, allow_zero=True)


# predicted: the paper's hand-consistency loss on the predictor's output; encoded: the head reads the encoder's latents
# of the target frames (what it reads at plan time, on the goal image), the predictor untouched by the hand loss
HAND_HEAD_INPUTS = ("predicted", "encoded")


@dataclass
class TrainConfig:
    """One section of ``config/train.yaml``."""

    mode: str
    seed: int
    model: ModelSpec
    init_checkpoint: str | None
    targets: str
    rollout_steps: int
    hand_loss: bool
    data: DataConfig
    optim: OptimConfig
    max_steps: int | None
    epochs: float | None
    precision: str
    grad_checkpoint: bool
    compile: bool
    device: str
    threads: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    hand_head_input: str = "predicted"  # what the hand head learns to read: predicted latents | encoded frames
    object_head: dict | None = None  # train an object head: overrides of config/model.yaml object_head ({}: none)
    object_loss: bool = False  # object consistency: the object head's loss on predicted latents too
    object_lr_scale: float = 1.0  # the object head's learning rate = optim.lr * this
    object_moved_weight: float = 0.0  # + this x the object loss of the objects that moved (needs object_loss)

    def __post_init__(self) -> None:
        if self.hand_head_input not in HAND_HEAD_INPUTS:
            raise ConfigError(f"hand_head_input: expected one of {list(HAND_HEAD_INPUTS)}, "
                              f"found {self.hand_head_input!r}")
        if self.mode not in MODES:
            raise ConfigError(f"mode: expected one of {list(MODES)}, found {self.mode!r}")
        _positive_int("seed", self.seed, allow_zero=True)
        if self.targets not in TARGETS:
            raise ConfigError(f"targets: expected one of {list(TARGETS)}, found {self.targets!r}")
        _positive_int("rollout_steps", self.rollout_steps)
        if self.mode == "pretrain" and self.rollout_steps != 1:
            raise ConfigError(f"rollout_steps: pretrain predicts one step (set 1), found {self.rollout_steps}; "
                              "use mode: finetune for multi-step prediction")
        if self.object_head is not None and not isinstance(self.object_head, dict):
            raise ConfigError(f"object_head: expected a mapping of overrides (or null), found {self.object_head!r}")
        if self.object_loss and self.object_head is None:
            raise ConfigError("object_loss: true needs object_head (a mapping, {} for config/model.yaml's)")
        _number("object_lr_scale", self.object_lr_scale, strict=True)
        _number("object_moved_weight", self.object_moved_weight)
        if self.object_moved_weight > 0 and not self.object_loss:
            raise ConfigError("object_moved_weight > 0 needs object_loss: true")
        for name in ("hand_loss", "grad_checkpoint", "compile", "object_loss"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, found {getattr(self, name)!r}")
        if (self.max_steps is None) == (self.epochs is None):
            raise ConfigError(f"set exactly one of max_steps and epochs (found max_steps={self.max_steps!r}, "
                              f"epochs={self.epochs!r})")
        if self.max_steps is not None:
            _positive_int("max_steps", self.max_steps)
        if self.epochs is not None:
            _number("epochs", self.epochs, strict=True)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {list(PRECISIONS)}, found {self.precision!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device: expected one of {list(DEVICES)}, found {self.device!r}")
        _positive_int("threads", self.threads, allow_zero=True)
        _positive_int("log_every", self.log_every)
        _positive_int("checkpoint_every", self.checkpoint_every)
        _positive_int("keep_checkpoints", self.keep_checkpoints)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EvalConfig:
    """Section ``eval`` of ``config/train.yaml``."""

    horizon_s: float
    step_s: float
    context_frames: int
    context_step_s: float
    rollouts_per_episode: int
    max_episodes: int | None
    batch_size: int
    latent_cache: bool
    cache_dir: str | None
    cache_batch: int
    device: str
    threads: int

    def __post_init__(self) -> None:
        _number("eval.horizon_s", self.horizon_s, strict=True)
        _number("eval.step_s", self.step_s, strict=True)
        _number("eval.context_step_s", self.context_step_s, strict=True)
        _positive_int("eval.context_frames", self.context_frames)
        _positive_int("eval.rollouts_per_episode", self.rollouts_per_episode)
        if self.max_episodes is not None:
            _positive_int("eval.max_episodes", self.max_episodes)
        _positive_int("eval.batch_size", self.batch_size)
        _positive_int("eval.cache_batch", self.cache_batch)
        if not isinstance(self.latent_cache, bool):
            raise ConfigError(f"eval.latent_cache: expected true or false, found {self.latent_cache!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"eval.device: expected one of {list(DEVICES)}, found {self.device!r}")
        _positive_int("eval.threads", self.threads, allow_zero=True)


def load_train_config(section: str, file: str | os.PathLike = CONFIG_FILE, **overrides: Any) -> TrainConfig:
    """Section ``section`` of ``file`` (default ``config/train.yaml``); ``overrides`` replace top-level fields."""
    data = load_yaml(file)
    if section not in data or section == "eval":
        sections = sorted(k for k in data if k != "eval")
        raise ConfigError(f"{file}: no training section '{section}' (sections: {sections})")
    cfg = from_dict(TrainConfig, data[section], f"{Path(file).name}:{section}")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def train_config_from_dict(data: dict, where: str = "training config") -> TrainConfig:
    return from_dict(TrainConfig, data, where)


def load_eval_config(file: str | os.PathLike = CONFIG_FILE, section: str = "eval", **overrides: Any) -> EvalConfig:
    data = load_yaml(file)
    if section not in data:
        raise ConfigError(f"{file}: missing section '{section}'")
    cfg = from_dict(EvalConfig, data[section], f"{Path(file).name}:{section}")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def default_cache_dir() -> Path:
    """``$DEXWM_CACHE_DIR/latents``, else ``~/.cache/dexwm/latents``."""
    base = os.environ.get("DEXWM_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "dexwm") / "latents"
