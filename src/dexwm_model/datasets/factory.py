"""``build_datasets``: the datasets named in ``config/datasets.yaml`` (those with a ``root``) and their mix."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dexwm_robot.config import ConfigError
from dexwm_model.datasets.base import ClipDataset, Transform
from dexwm_model.datasets.config import SOURCE_SECTIONS, DatasetsConfig, load_datasets_config
from dexwm_model.datasets.droid_lerobot import DroidLeRobot
from dexwm_model.datasets.droid_raw import DroidRaw
from dexwm_model.datasets.egodex import EgoDex
from dexwm_model.datasets.mixed import MixedDataset
from dexwm_model.datasets.rosbag import RosbagEpisodes
from dexwm_model.datasets.sim import SimEpisodes

ADAPTERS = {"sim": SimEpisodes, "egodex": EgoDex, "droid_raw": DroidRaw, "droid_lerobot": DroidLeRobot,
            "rosbag": RosbagEpisodes}


@dataclass
class BuiltDatasets:
    """``sources``: section name -> dataset (only those with a root); ``mixed``: all of them mixed by the weights."""

    sources: dict[str, ClipDataset] = field(default_factory=dict)
    mixed: MixedDataset | None = None

    def summary(self) -> dict:
        out = {"sources": {k: d.summary() for k, d in self.sources.items()}}
        if self.mixed is not None:
            out["mix"] = self.mixed.effective_mix()
        return out


def build_datasets(config: DatasetsConfig | str | os.PathLike | None = None, transform: Transform | None = None,
                   fk=None, roots: dict[str, str | os.PathLike | None] | None = None) -> BuiltDatasets:
    """Build every source whose ``root`` is set (``roots`` overrides the config's roots per section) and a
    :class:`MixedDataset` over them weighted by ``mix.weights``.

    ``config``: a :class:`DatasetsConfig`, a YAML path, or None for ``config/datasets.yaml``; ``transform`` is given
    to every source (e.g. :meth:`ClipTransform.from_encoder_config`); ``fk`` to the rosbag source.
    """
    cfg = config if isinstance(config, DatasetsConfig) else load_datasets_config(
        config if config is not None else "datasets.yaml")
    roots = dict(roots or {})
    unknown = sorted(set(roots) - set(SOURCE_SECTIONS))
    if unknown:
        raise ConfigError(f"build_datasets: unknown source(s) {unknown}; sources: {list(SOURCE_SECTIONS)}")
    built = BuiltDatasets()
    for name in SOURCE_SECTIONS:
        section = getattr(cfg, name)
        root = roots.get(name, section.root)
        if root is None:
            continue
        root = Path(root).expanduser()
        kwargs = {"fk": fk} if name == "rosbag" else {}
        built.sources[name] = ADAPTERS[name](root, section, cfg.clip, transform, **kwargs)
    if not built.sources:
        raise ConfigError("build_datasets: no source has a root; set e.g. egodex.root in datasets.yaml "
                          f"(sources: {list(SOURCE_SECTIONS)})")
    missing = sorted(n for n in built.sources if n not in cfg.mix.weights)
    if missing:
        raise ConfigError(f"datasets.yaml: mix.weights has no weight for source(s) {missing} in use")
    built.mixed = MixedDataset(built.sources, {n: cfg.mix.weights[n] for n in built.sources},
                               cfg.mix.samples_per_epoch, cfg.mix.seed)
    return built
