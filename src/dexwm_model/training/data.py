"""Training / evaluation data: ``--data source:path`` specs, the clip datasets, the latent cache, batching."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from dexwm_model.config import ConfigError
from dexwm_model.datasets.base import ClipDataset
from dexwm_model.datasets.config import SOURCE_SECTIONS, DatasetsConfig, load_datasets_config
from dexwm_model.datasets.factory import build_datasets
from dexwm_model.datasets.mixed import MixedDataset
from dexwm_model.datasets.transform import ClipTransform
from dexwm_model.encoders.base import ImageEncoder
from dexwm_model.training.latent_cache import LatentCache, open_latent_datasets


def parse_data_specs(specs: Sequence[str] | None) -> dict[str, str]:
    """``["sim:/data/sim", "egodex:/data/egodex"]`` -> ``{"sim": "/data/sim", ...}`` (source names of
    ``config/datasets.yaml``)."""
    roots: dict[str, str] = {}
    for spec in specs or ():
        name, sep, path = str(spec).partition(":")
        if not sep or not name or not path:
            raise ConfigError(f"--data {spec!r}: expected SOURCE:PATH with SOURCE one of {list(SOURCE_SECTIONS)}")
        if name not in SOURCE_SECTIONS:
            raise ConfigError(f"--data {spec!r}: unknown source '{name}'; sources: {list(SOURCE_SECTIONS)}")
        if name in roots:
            raise ConfigError(f"--data: source '{name}' given twice ({roots[name]!r} and {path!r})")
        if not Path(path).expanduser().exists():
            raise ConfigError(f"--data {spec!r}: path not found: {path}")
        roots[name] = path
    return roots


def datasets_config(file: str | os.PathLike, clip_frames: int | None) -> DatasetsConfig:
    """``config/datasets.yaml`` (or ``file``) with clips of ``clip_frames`` frames when given."""
    cfg = load_datasets_config(file)
    if clip_frames is not None:
        if clip_frames < 2:
            raise ConfigError(f"a training clip needs at least 2 frames, asked for {clip_frames}")
        try:
            clip = dataclasses.replace(cfg.clip, context_frames=clip_frames - 1)
        except ConfigError as exc:
            raise ConfigError(f"clips of {clip_frames} frames do not fit datasets.yaml's clip window: {exc}") from None
        cfg = dataclasses.replace(cfg, clip=clip)
    return cfg


@dataclass
class ClipData:
    """The datasets of a run: ``sources`` (pixel clip datasets, no transform), ``train`` (what batches are drawn
    from: latent or pixel clips, mixed), and whether it reads latents."""

    sources: dict[str, ClipDataset]
    by_source: dict[str, object]
    train: MixedDataset
    latent: bool
    cache: LatentCache | None = None
    cache_counts: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"sources": {k: d.summary() for k, d in self.sources.items()}, "latent_cache": self.latent,
                "cache_folder": str(self.cache.folder) if self.cache is not None else None,
                "cache_counts": self.cache_counts, "samples_per_epoch": len(self.train),
                "never_drawn": list(getattr(self.train, "never_drawn", []))}


def build_clip_data(roots: dict[str, str], datasets_file: str | os.PathLike | DatasetsConfig,
                    clip_frames: int | None, encoder: ImageEncoder, device: torch.device, latent_cache: bool,
                    cache_dir: str | os.PathLike, cache_batch: int = 64, rank: int = 0, world: int = 1, barrier=None,
                    progress: bool = False) -> ClipData:
    """Datasets for ``roots`` (empty: the roots set in datasets.yaml). With ``latent_cache`` the cache of
    ``encoder`` under ``cache_dir`` is completed first (``barrier()`` is called after this process's share).
    ``datasets_file`` may also be a ready :class:`DatasetsConfig` (then ``clip_frames`` still applies)."""
    if isinstance(datasets_file, DatasetsConfig):
        cfg = datasets_file
        if clip_frames is not None:
            cfg = dataclasses.replace(cfg, clip=dataclasses.replace(cfg.clip, context_frames=clip_frames - 1))
    else:
        cfg = datasets_config(datasets_file, clip_frames)
    raw = build_datasets(cfg, transform=None, roots=roots or None)
    weights = {n: cfg.mix.weights[n] for n in raw.sources}
    if latent_cache:
        cache = LatentCache.for_encoder(cache_dir, encoder)
        counts = cache.ensure(raw.sources, encoder, device, cache_batch, rank, world, progress)
        if barrier is not None:
            barrier()
        by_source = open_latent_datasets(raw.sources, cache)
        mixed = MixedDataset(by_source, weights, cfg.mix.samples_per_epoch, cfg.mix.seed)
        return ClipData(raw.sources, by_source, mixed, True, cache, counts)
    pixel = build_datasets(cfg, transform=ClipTransform(encoder.preprocess), roots=roots or None)
    return ClipData(raw.sources, dict(pixel.sources), pixel.mixed, False)


# ---------------------------------------------------------------------------------------------------- batching
BATCH_TENSORS = ("latents", "frames", "times", "actions", "keypoints_px", "keypoints_valid", "object_px", "object_valid",
                 "frame_indices")


def collate_training(samples: Sequence[dict]) -> dict:
    """Stack latent or pixel samples (after :class:`ClipTransform`) into a batch."""
    if not samples:
        raise ValueError("collate_training: empty batch")
    first = samples[0]
    out: dict = {}
    for key in BATCH_TENSORS:
        if key not in first:
            continue
        ref = first[key]
        for i, s in enumerate(samples):
            t = s.get(key)
            if not isinstance(t, torch.Tensor) or t.shape != ref.shape or t.dtype != ref.dtype:
                raise ValueError(
                    f"collate_training: sample {i} ({s.get('source')} episode {s.get('episode')!r}) has '{key}' "
                    f"{getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}, sample 0 has {ref.dtype} "
                    f"{tuple(ref.shape)}")
        out[key] = torch.stack([s[key] for s in samples])
    if "latents" not in out and "frames" not in out:
        raise ValueError("collate_training: samples carry neither 'latents' nor 'frames'")
    out["hand_loss"] = torch.tensor([bool(s["hand_loss"]) for s in samples], dtype=torch.bool)
    out["source"] = [s["source"] for s in samples]
    out["episode"] = [s["episode"] for s in samples]
    return out


class StepBatchSampler(Sampler[list[int]]):
    """Deterministic batches for optimiser steps ``start_step, start_step + 1, ...`` of one epoch.

    Epoch ``e`` is a permutation of the dataset seeded by ``(seed, e)``, cut into ``steps_per_epoch`` global batches
    of ``batch_size`` (the rest is dropped); process ``rank`` of ``world`` takes its contiguous share of each
    global batch and yields it as ``accum`` micro-batches. The same (seed, epoch, step) always gives the same
    samples, which is what makes resuming exact.
    """

    def __init__(self, length: int, batch_size: int, rank: int, world: int, accum: int, seed: int, epoch: int,
                 start_step: int = 0) -> None:
        if batch_size % (world * accum):
            raise ValueError(f"batch_size {batch_size} must be a multiple of processes x accumulation steps "
                             f"({world} x {accum})")
        self.length, self.batch_size, self.rank, self.world = length, batch_size, rank, world
        self.accum, self.seed, self.epoch, self.start_step = accum, seed, epoch, start_step
        self.steps = length // batch_size
        if self.steps == 0:
            raise ValueError(f"the dataset has {length} clips per epoch, fewer than one batch of {batch_size}; "
                             "use more data or a smaller data.batch_size")

    def step_indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, 0x5EED])
        perm = rng.permutation(self.length)[: self.steps * self.batch_size].reshape(self.steps, self.batch_size)
        per_rank = self.batch_size // self.world
        return perm[:, self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self):
        micro = self.batch_size // (self.world * self.accum)
        for row in self.step_indices()[self.start_step:]:
            for a in range(self.accum):
                yield [int(i) for i in row[a * micro:(a + 1) * micro]]

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.accum
