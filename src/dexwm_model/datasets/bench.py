"""Benchmark: clip loading speed of the datasets in a ``datasets.yaml`` (those with a root). Prints JSON.

``python -m dexwm_model.datasets.bench [--config datasets.yaml] [--samples 32] [--workers 0] [--batch 8]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from torch.utils.data import DataLoader

from dexwm_model.datasets.collate import collate_clips
from dexwm_model.datasets.factory import build_datasets
from dexwm_model.datasets.transform import ClipTransform


def bench_source(dataset, samples: int, workers: int, batch: int) -> dict:
    n = min(samples, len(dataset))
    t0 = time.perf_counter()
    first = dataset[0]
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(n):
        dataset[i]
    single = (time.perf_counter() - t0) / n
    out = {"clips": len(dataset), "frames_per_clip": int(first["frames"].shape[0]),
           "image_size": list(first["source_image_size"] if "source_image_size" in first else first["image_size"]),
           "first_sample_s": round(t_first, 4), "sample_ms": round(1000 * single, 2),
           "samples_per_s": round(1.0 / single, 2)}
    if workers > 0:
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate_clips)
        t0 = time.perf_counter()
        seen = 0
        for b in loader:
            seen += len(b["episode"])
            if seen >= n:
                break
        out[f"loader_samples_per_s_{workers}_workers"] = round(seen / (time.perf_counter() - t0), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="datasets.yaml")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--encoder-transform", action="store_true", help="apply the encoder preprocessing (model.yaml)")
    args = p.parse_args(argv)
    transform = ClipTransform.from_encoder_config() if args.encoder_transform else None
    t0 = time.perf_counter()
    built = build_datasets(args.config, transform=transform)
    result = {"index_s": round(time.perf_counter() - t0, 3), "transform": args.encoder_transform,
              "sources": {name: {**ds.summary(), **bench_source(ds, args.samples, args.workers, args.batch)}
                          for name, ds in built.sources.items()}}
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
