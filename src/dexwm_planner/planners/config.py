"""Typed configuration of the goal-image planners (``config/planner.yaml``)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dexwm_model.config import ConfigError, from_dict, load_yaml

CONFIG_FILE = "planner.yaml"
METHODS = ("cem", "mppi")
HAND_SOURCES = ("fk", "head", "none")
DTYPES = ("auto", "float32", "bfloat16", "float64")


def _positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected a positive integer, found {value!r}")
    return value


def _number(where: str, value: Any, low: float | None = None, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, found {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ConfigError(f"{where}: expected a number {'>' if strict else '>='} {low}, found {value!r}")
    return float(value)


@dataclass
class CEMConfig:
    elites: int = 10
    smoothing: float = 0.0

    def __post_init__(self) -> None:
        _positive_int("planner.cem.elites", self.elites)
        if not 0.0 <= _number("planner.cem.smoothing", self.smoothing) < 1.0:
            raise ConfigError(f"planner.cem.smoothing: expected a value in [0, 1), found {self.smoothing!r}")


@dataclass
class MPPIConfig:
    temperature: float = 0.1
    normalize_costs: bool = True
    adapt_std: bool = True
    smoothing: float = 0.0
    elites: int = 10

    def __post_init__(self) -> None:
        _number("planner.mppi.temperature", self.temperature, 0.0, strict=True)
        _positive_int("planner.mppi.elites", self.elites)
        for name in ("normalize_costs", "adapt_std"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"planner.mppi.{name}: expected true or false, found {getattr(self, name)!r}")
        if not 0.0 <= _number("planner.mppi.smoothing", self.smoothing) < 1.0:
            raise ConfigError(f"planner.mppi.smoothing: expected a value in [0, 1), found {self.smoothing!r}")


@dataclass
class SearchConfig:
    """Section ``planner``: the optimiser and the MPC loop."""

    method: str = "cem"
    horizon: int = 3
    samples: int = 512
    iterations: int = 10
    step_dt: float = 0.2
    init_std_arm: float = 0.3
    init_std_hand: float = 0.1
    std_floor_arm: float = 0.005
    std_floor_hand: float = 0.002
    include_mean: bool = True
    seed: int = 0
    warm_start: bool = True
    execute_steps: int = 1
    fine_fraction: float = 0.0
    fine_scale: float = 0.25
    proposal_fraction: float = 0.0
    proposal_step: float = 0.1
    proposal_lift: float = 0.0
    proposal_align: float = 0.03
    proposal_close_within: float = 0.0
    proposal_iterations: int = 1
    cem: CEMConfig = field(default_factory=CEMConfig)
    mppi: MPPIConfig = field(default_factory=MPPIConfig)

    def __post_init__(self) -> None:
        if isinstance(self.cem, dict):
            self.cem = from_dict(CEMConfig, self.cem, "planner.cem")
        if isinstance(self.mppi, dict):
            self.mppi = from_dict(MPPIConfig, self.mppi, "planner.mppi")
        if self.method not in METHODS:
            raise ConfigError(f"planner.method: expected one of {list(METHODS)}, found {self.method!r}")
        for name in ("horizon", "samples", "iterations", "execute_steps", "proposal_iterations"):
            _positive_int(f"planner.{name}", getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"planner.seed: expected an integer >= 0, found {self.seed!r}")
        _number("planner.step_dt", self.step_dt, 0.0, strict=True)
        if not 0.0 <= _number("planner.fine_fraction", self.fine_fraction) < 1.0:
            raise ConfigError(f"planner.fine_fraction: expected a value in [0, 1), found {self.fine_fraction!r}")
        if not 0.0 < _number("planner.fine_scale", self.fine_scale) <= 1.0:
            raise ConfigError(f"planner.fine_scale: expected a value in (0, 1], found {self.fine_scale!r}")
        if not 0.0 <= _number("planner.proposal_fraction", self.proposal_fraction) < 1.0:
            raise ConfigError(f"planner.proposal_fraction: expected a value in [0, 1), found "
                              f"{self.proposal_fraction!r}")
        _number("planner.proposal_step", self.proposal_step, 0.0, strict=True)
        _number("planner.proposal_lift", self.proposal_lift, 0.0)
        _number("planner.proposal_align", self.proposal_align, 0.0)
        _number("planner.proposal_close_within", self.proposal_close_within, 0.0)
        for name in ("init_std_arm", "init_std_hand"):
            _number(f"planner.{name}", getattr(self, name), 0.0, strict=True)
        for name in ("std_floor_arm", "std_floor_hand"):
            _number(f"planner.{name}", getattr(self, name), 0.0)
        for name in ("include_mean", "warm_start"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"planner.{name}: expected true or false, found {getattr(self, name)!r}")
        if self.execute_steps > self.horizon:
            raise ConfigError(f"planner.execute_steps: at most the horizon ({self.horizon}) waypoints can be "
                              f"executed, found {self.execute_steps}")
        elites = self.cem.elites if self.method == "cem" else self.mppi.elites
        if elites > self.samples:
            raise ConfigError(f"planner.{self.method}.elites ({elites}) must not exceed planner.samples "
                              f"({self.samples})")

    @property
    def elites(self) -> int:
        return self.cem.elites if self.method == "cem" else self.mppi.elites


@dataclass
class CostConfig:
    step_weight_exponent: float = 1.0
    hand_weight: float = 0.001
    hand_source: str = "fk"
    orientation_weight: float = 0.0
    workspace_weight: float = 0.0
    workspace_margin: float = 0.01
    object_weight: float = 0.0
    object_min_confidence: float = 0.3
    approach_weight: float = 0.0
    approach_height: float = 0.15
    approach_radius: float = 0.04
    latent_focus: float = 0.0
    latent_focus_sigma_px: float = 14.0
    depth_weight: float = 0.0

    def __post_init__(self) -> None:
        _number("cost.depth_weight", self.depth_weight, 0.0)
        if not 0.0 <= _number("cost.latent_focus", self.latent_focus) <= 1.0:
            raise ConfigError(f"cost.latent_focus: expected a value in [0, 1], found {self.latent_focus!r}")
        _number("cost.latent_focus_sigma_px", self.latent_focus_sigma_px, 0.0, strict=True)
        _number("cost.approach_weight", self.approach_weight, 0.0)
        _number("cost.approach_height", self.approach_height, 0.0, strict=True)
        _number("cost.approach_radius", self.approach_radius, 0.0, strict=True)
        _number("cost.object_weight", self.object_weight, 0.0)
        _number("cost.object_min_confidence", self.object_min_confidence, 0.0)
        _number("cost.step_weight_exponent", self.step_weight_exponent, 0.0)
        _number("cost.hand_weight", self.hand_weight, 0.0)
        _number("cost.orientation_weight", self.orientation_weight, 0.0)
        _number("cost.workspace_weight", self.workspace_weight, 0.0)
        _number("cost.workspace_margin", self.workspace_margin, 0.0)
        if self.hand_source not in HAND_SOURCES:
            raise ConfigError(f"cost.hand_source: expected one of {list(HAND_SOURCES)}, found {self.hand_source!r}")

    @property
    def uses_hand(self) -> bool:
        return self.hand_source != "none" and self.hand_weight > 0

    @property
    def uses_objects(self) -> bool:
        return self.object_weight > 0

    @property
    def uses_focus(self) -> bool:
        """The focused latent term centres on the goal's hand keypoints, so only with the hand term on."""
        return self.latent_focus > 0 and self.uses_hand

    @property
    def uses_depth(self) -> bool:
        """The depth term compares the hand keypoints' camera depth with the goal's: with the hand term on."""
        return self.depth_weight > 0 and self.uses_hand

    @property
    def uses_approach(self) -> bool:
        """The approach term needs the goal's hand keypoints (its rays), so only with the hand term on."""
        return self.approach_weight > 0 and self.uses_hand


@dataclass
class RuntimeConfig:
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    chunk_size: int = 128
    memory_budget_gb: float = 8.0

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu", "cuda")
                                                    or self.device.startswith("cuda:")):
            raise ConfigError(f"runtime.device: expected auto, cpu, cuda or cuda:N, found {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"runtime.dtype: expected one of {list(DTYPES)}, found {self.dtype!r}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"runtime.compile: expected true or false, found {self.compile!r}")
        _positive_int("runtime.chunk_size", self.chunk_size)
        _number("runtime.memory_budget_gb", self.memory_budget_gb, 0.0, strict=True)


@dataclass
class PlannerConfig:
    planner: SearchConfig = field(default_factory=SearchConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def uses_goal_depth(self) -> bool:
        """The goal's hand depths are needed: by the depth term, or by goal-pose proposals (which also need the
        goal's hand pixels, so the hand term on)."""
        return self.cost.uses_depth or (self.planner.proposal_fraction > 0 and self.cost.uses_hand)

    def replace(self, **sections: dict[str, Any]) -> "PlannerConfig":
        """A copy with single fields changed: ``cfg.replace(planner={"samples": 64}, cost={"hand_source": "head"})``
        (nested ``cem`` / ``mppi`` dictionaries are merged too)."""
        data = _merge(dataclasses.asdict(self), sections, "PlannerConfig.replace")
        return from_dict(PlannerConfig, data, "planner config")


def _merge(base: dict[str, Any], changes: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if key not in out:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {sorted(out)}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a mapping, found {type(value).__name__}")
            out[key] = _merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def load_planner_config(task: str | None = None, real_robot: bool = False,
                        file: str | Path = CONFIG_FILE) -> PlannerConfig:
    """Sections ``planner``, ``cost`` and ``runtime`` of ``config/planner.yaml``, then the overrides of ``task``
    (section ``tasks``) and, with ``real_robot``, those of section ``real_robot``."""
    data = load_yaml(file)
    name = Path(file).name
    base = {k: data.get(k) for k in ("planner", "cost", "runtime")}
    for key, value in base.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: missing section {key!r}")
    cfg = from_dict(PlannerConfig, base, name)
    known = {"planner", "cost", "runtime", "tasks", "real_robot"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown section(s) {unknown}; allowed: {sorted(known)}")
    if task is not None:
        tasks = data.get("tasks") or {}
        if task not in tasks:
            raise ConfigError(f"{name}: task {task!r} has no entry in section 'tasks' (known: {sorted(tasks)})")
        cfg = _apply(cfg, tasks[task] or {}, f"{name}:tasks.{task}")
    if real_robot:
        cfg = _apply(cfg, data.get("real_robot") or {}, f"{name}:real_robot")
    return cfg


def _apply(cfg: PlannerConfig, overrides: Any, where: str) -> PlannerConfig:
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping of sections to changed fields, found {overrides!r}")
    data = _merge(dataclasses.asdict(cfg), overrides, where)
    return from_dict(PlannerConfig, data, where)
