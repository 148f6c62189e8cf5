"""Encoder speed benchmark (random weights): prints one JSON object.

``python -m dexwm_model.encoders.bench --size S --image-size 224 224 --batch 8 --iters 5 [--device cuda]
[--dtype bfloat16] [--input-size 1080 1920]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from dexwm_model.encoders.dinov2 import DTYPES, Dinov2Encoder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, n: int = 1024, reps: int = 5) -> float:
    """Reference throughput of this device right now (shared machines vary), to read the timings against."""
    a = torch.randn(n, n, device=device)
    a @ a
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ a
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    enc = Dinov2Encoder.random_init(args.size, tuple(args.image_size), dtype=args.dtype).to(device)
    h, w = args.input_size
    images = torch.randint(0, 256, (args.batch, h, w, 3), dtype=torch.uint8, device=device)
    pixels = enc.preprocess(images)
    for _ in range(args.warmup):
        enc.encode_pixels(pixels)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        enc.encode_pixels(pixels)
    _sync(device)
    t_enc = (time.perf_counter() - t0) / (args.iters * args.batch)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        enc.preprocess(images)
    _sync(device)
    t_pre = (time.perf_counter() - t0) / (args.iters * args.batch)
    return {
        "encoder": f"dinov2-{args.size}/14 (random init)", "device": str(device), "dtype": args.dtype,
        "threads": torch.get_num_threads(), "batch": args.batch, "input_hw": [h, w],
        "image_size": list(enc.image_size), "grid": list(enc.grid), "dim": enc.dim, "iters": args.iters,
        "encode_ms_per_image": round(t_enc * 1e3, 3), "preprocess_ms_per_image": round(t_pre * 1e3, 3),
        "images_per_s": round(1.0 / t_enc, 2), "matmul_fp32_gflops": round(matmul_gflops(device), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="S", choices=["S", "B", "L", "G"])
    p.add_argument("--image-size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"))
    p.add_argument("--input-size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"),
                   help="size of the raw uint8 frames fed to preprocessing")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    print(json.dumps(run(p.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
