"""Predictor benchmark: parameter counts of every size, forward / forward+backward times, cached planning calls.

Run ``python -m dexwm_model.predictor.bench [--sizes tiny S] [--device cpu]``; prints one JSON object.
Random weights and random tokens at the paper's token layout (d = 1024, 16 x 28 grid, 8 context frames).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time

import torch

from dexwm_model.predictor.cdit import CDiTPredictor, count_parameters
from dexwm_model.predictor.config import load_predictor_config, predictor_sizes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    _sync(device)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(samples), "min_s": min(samples)}


def bench_size(size: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    cfg = load_predictor_config(size)
    model = CDiTPredictor(cfg, input_dim=args.input_dim, grid=tuple(args.grid)).to(device)
    b, c, p = args.batch, args.context, model.num_tokens
    context = torch.randn(b, c, p, args.input_dim, device=device)
    times = torch.cumsum(0.2 + 0.3 * torch.rand(b, c, device=device), dim=1)
    action = 0.05 * torch.randn(b, 132, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    def forward():
        with torch.no_grad(), autocast:
            model(context, times, action, 0.2)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = model(context, times, action, 0.2).square().mean()
        loss.backward()

    result = {
        "params": count_parameters(model),
        "batch": b,
        "forward": _time(forward, device, args.repeats),
        "forward_backward": _time(forward_backward, device, args.repeats),
    }
    # planning pattern: encode one context once, then predict N samples and roll T steps from the shared cache
    model.zero_grad(set_to_none=True)
    n, steps = args.samples, args.steps
    actions = 0.05 * torch.randn(n, steps, 132, device=device)
    with torch.no_grad(), autocast:
        enc = _time(lambda: model.encode_context(context[:1], times[:1]), device, args.repeats)
        cache = model.encode_context(context[:1], times[:1])
        pred = _time(lambda: model.predict(cache, context[:1, -1], actions[:, 0], 0.2), device, args.repeats)
        roll = _time(lambda: model.rollout_from_cache(cache, context[:1, -1], actions, 0.2), device, args.repeats)
    result["planning"] = {"samples": n, "steps": steps, "encode_context": enc, "predict": pred, "rollout": roll}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "S"], help="sizes to time (default: tiny S)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2, help="training-style batch for forward/backward")
    parser.add_argument("--context", type=int, default=8, help="context frames")
    parser.add_argument("--input-dim", type=int, default=1024, help="encoder token width d")
    parser.add_argument("--grid", type=int, nargs=2, default=[16, 28], help="token grid Hp Wp")
    parser.add_argument("--samples", type=int, default=8, help="samples N for the cached planning calls")
    parser.add_argument("--steps", type=int, default=2, help="rollout steps T for the cached planning calls")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--bf16", action="store_true", help="run under bf16 autocast")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    counts = {}
    for size in predictor_sizes():
        with torch.device("meta"):
            counts[size] = count_parameters(
                CDiTPredictor(load_predictor_config(size), input_dim=args.input_dim, grid=tuple(args.grid))
            )
    report = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "bf16_autocast": args.bf16,
        "input_dim": args.input_dim,
        "grid": list(args.grid),
        "context_frames": args.context,
        "param_counts": counts,
        "timings": {size: bench_size(size, args, device) for size in args.sizes},
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
