"""``dexwm bench fk``: forward-kinematics throughput of :class:`PandaAllegroFK` (JSON on stdout).

For each batch size it times ``fk.sites(q)`` (the 17 hand keypoint positions from ``q[B, 23]``, float32,
no autograd) on the CPU and, when present, on CUDA, and reports calls/s and joint-vectors/s (wall clock; the
median of several rounds, after a warm-up). On the CPU it also gives the process's CPU time per call, which a
busy shared machine disturbs less than the wall clock.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from dexwm_model.kinematics.panda_allegro import PandaAllegroFK

DEFAULT_BATCHES = (1, 512, 16384)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, nargs="+", default=list(DEFAULT_BATCHES),
                        help="batch sizes (joint vectors per call); default: 1 512 16384")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per batch size and device")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per measurement (the median is kept)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the CPU, and CUDA when available")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--chain", default=None,
                        help="a chain saved with PandaAllegroFK.save (default: build the scene's chain)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fk: PandaAllegroFK, batch: int, device: torch.device, seconds: float, rounds: int,
            seed: int = 0) -> dict:
    """Time ``fk.sites`` on ``batch`` random joint vectors within the joint ranges' envelope (float32)."""
    g = torch.Generator().manual_seed(seed)
    q = ((torch.rand(batch, fk.n_joints, generator=g) - 0.5) * 2.0).to(device=device, dtype=torch.float32)
    with torch.no_grad():
        for _ in range(3):  # warm-up: constant conversion, plan caches, CUDA context / kernels
            fk.sites(q)
        _sync(device)
        t0 = time.perf_counter()
        fk.sites(q)
        _sync(device)
        one = max(time.perf_counter() - t0, 1e-7)
        per_round = max(1, int(seconds / rounds / one))
        times, cpu_times = [], []
        for _ in range(rounds):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                fk.sites(q)
            _sync(device)
            times.append((time.perf_counter() - t0) / per_round)
            cpu_times.append((time.process_time() - c0) / per_round)
    dt = statistics.median(times)
    out = {"batch": batch, "ms_per_call": round(dt * 1e3, 4), "calls_per_s": round(1.0 / dt, 1),
           "vectors_per_s": round(batch / dt, 1), "calls_timed": per_round * rounds}
    if device.type == "cpu":  # CPU time of this process: less disturbed than wall clock on a shared machine
        out["process_cpu_ms_per_call"] = round(statistics.median(cpu_times) * 1e3, 4)
    return out


def run(args: argparse.Namespace) -> int:
    if any(b < 1 for b in args.batch):
        raise SystemExit(f"--batch: batch sizes must be >= 1, found {args.batch}")
    if args.seconds <= 0 or args.rounds < 1:
        raise SystemExit("--seconds must be > 0 and --rounds >= 1")
    if args.threads < 0:
        raise SystemExit(f"--threads must be >= 0, found {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available to torch")
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))

    fk = PandaAllegroFK.load(args.chain) if args.chain else PandaAllegroFK.default()
    report: dict = {
        "benchmark": "fk", "function": "PandaAllegroFK.sites (23 joints -> 17 keypoints)", "dtype": "float32",
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "cpu": platform.processor() or
        platform.machine(), "cpu_chunk": fk.cpu_chunk, "results": {},
    }
    for device in devices:
        fk_d = fk.to(device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        report["results"][device.type] = {
            "device": name,
            "batches": [measure(fk_d, b, device, args.seconds, args.rounds) for b in args.batch],
        }
    print(json.dumps(report, indent=1))
    return 0
