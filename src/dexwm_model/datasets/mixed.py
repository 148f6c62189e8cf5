"""Weighted mixing of several clip datasets, deterministic under a seed."""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np
from torch.utils.data import Dataset


class MixedDataset(Dataset):
    """Draws each epoch's samples from ``datasets`` in proportion to ``weights`` (relative, >= 0).

    An epoch has ``samples_per_epoch`` samples (default: the summed lengths of the datasets with weight > 0).
    Dataset ``d`` gets ``round(share_d * length)`` of them (largest remainder, so the counts add up exactly); its
    items are taken in a seeded random order without repetition until exhausted, then again in a new order, and
    all draws are shuffled together. The plan depends only on ``seed`` and the epoch (:meth:`set_epoch`, which also
    reaches every member dataset that has one). :meth:`effective_mix` reports what was drawn.
    """

    def __init__(self, datasets: Mapping[str, Dataset], weights: Mapping[str, float],
                 samples_per_epoch: int | None = None, seed: int = 0) -> None:
        if not datasets:
            raise ValueError("MixedDataset: no datasets to mix")
        unweighted = sorted(set(datasets) - set(weights))
        if unweighted:
            raise ValueError(f"MixedDataset: no weight for dataset(s) {unweighted}; weights given for "
                             f"{sorted(weights)}")
        for name, w in weights.items():
            if name in datasets and (not np.isfinite(w) or w < 0):
                raise ValueError(f"MixedDataset: weight of '{name}' must be a finite number >= 0, found {w!r}")
        self.names = [n for n in datasets if weights[n] > 0]
        if not self.names:
            raise ValueError(f"MixedDataset: every weight is 0 ({dict(weights)})")
        empty = [n for n in self.names if len(datasets[n]) == 0]
        if empty:
            raise ValueError(f"MixedDataset: dataset(s) {empty} have weight > 0 but no samples")
        self.datasets = {n: datasets[n] for n in self.names}
        total = float(sum(weights[n] for n in self.names))
        self.shares = {n: float(weights[n]) / total for n in self.names}
        self.ignored = sorted(n for n in datasets if weights[n] == 0)
        self.length = int(samples_per_epoch) if samples_per_epoch is not None else sum(
            len(d) for d in self.datasets.values())
        if self.length < 1:
            raise ValueError(f"MixedDataset: samples_per_epoch must be >= 1, found {samples_per_epoch!r}")
        self.seed = int(seed)
        # sources in use (weight > 0) whose share rounds to no sample per epoch: reported, never silently dropped
        self.never_drawn = sorted(n for n, c in self.counts().items() if c == 0)
        if self.never_drawn:
            warnings.warn(self.never_drawn_message(), stacklevel=2)
        self.set_epoch(0)

    def never_drawn_message(self) -> str:
        detail = ", ".join(f"'{n}' (weight share {self.shares[n]:.2%} of {self.length} samples, {len(self.datasets[n])} "
                           f"clip(s))" for n in self.never_drawn)
        return (f"MixedDataset: source(s) in use that are never drawn: {detail}; raise their weight or "
                f"mix.samples_per_epoch, or set the weight to 0 to leave them out on purpose")

    def counts(self) -> dict[str, int]:
        """Samples per dataset in one epoch (largest-remainder rounding of ``share * length``)."""
        exact = np.array([self.shares[n] * self.length for n in self.names])
        base = np.floor(exact).astype(np.int64)
        rest = self.length - int(base.sum())
        order = np.argsort(-(exact - base), kind="stable")
        base[order[:rest]] += 1
        return dict(zip(self.names, (int(c) for c in base)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for d in self.datasets.values():
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)
        rng = np.random.default_rng([self.seed, self.epoch])
        plan_d, plan_i = [], []
        for di, (name, count) in enumerate(self.counts().items()):
            n = len(self.datasets[name])
            reps = -(-count // n)  # ceil
            order = np.concatenate([rng.permutation(n) for _ in range(reps)])[:count] if count else np.zeros(0, int)
            plan_d.append(np.full(count, di, dtype=np.int64))
            plan_i.append(order.astype(np.int64))
        d, i = np.concatenate(plan_d), np.concatenate(plan_i)
        perm = rng.permutation(len(d))
        self._plan = np.stack((d[perm], i[perm]), axis=1)

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[str, int]:
        """(dataset name, index in it) of sample ``index`` in the current epoch."""
        if not -self.length <= index < self.length:
            raise IndexError(f"MixedDataset: index {index} out of range for {self.length} samples")
        d, i = self._plan[index % self.length]
        return self.names[int(d)], int(i)

    def __getitem__(self, index: int) -> dict:
        name, i = self.locate(index)
        return self.datasets[name][i]

    def effective_mix(self) -> dict[str, dict]:
        """Per dataset: requested share, samples drawn this epoch and their share, dataset length, and how many
        times over the epoch goes through that dataset."""
        counts = self.counts()
        return {n: {"weight_share": self.shares[n], "samples": counts[n], "share": counts[n] / self.length,
                    "dataset_length": len(self.datasets[n]), "passes": counts[n] / len(self.datasets[n])}
                for n in self.names}

    def report(self) -> str:
        lines = [f"MixedDataset: {self.length} samples per epoch (seed {self.seed}, epoch {self.epoch})"]
        for n, m in self.effective_mix().items():
            lines.append(f"  {n:<14} weight {m['weight_share']:6.1%}  drawn {m['samples']:>8} ({m['share']:6.1%})  "
                         f"of {m['dataset_length']} clips ({m['passes']:.2f} passes)")
        if self.ignored:
            lines.append(f"  weight 0, not drawn: {', '.join(self.ignored)}")
        if self.never_drawn:
            lines.append(f"  weight > 0 but 0 samples per epoch (never drawn): {', '.join(self.never_drawn)}")
        return "\n".join(lines)
