"""Training throughput of a recipe's model (JSON on stdout): optimiser steps on latent batches, as the trainer
runs them from the latent cache (objective forward + backward, gradient clipping, AdamW step).

    python -m dexwm_model.training.bench --section cpu_default [--batch 32] [--steps 10] [--threads 2]
        [--random-encoder] [--data sim:/path]

The batches are random latents of the encoder's shape (the arithmetic does not depend on the values). With
``--data`` it also times assembling batches from the latent cache of those episodes (what the DataLoader does).
``--random-encoder`` builds the recipe's encoder with random weights (same architecture, same speed) when its
trained weights are not on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="train.yaml")
    parser.add_argument("--section", default="cpu_default")
    parser.add_argument("--batch", type=int, default=None, help="samples per step (default: the recipe's micro batch)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    parser.add_argument("--random-encoder", action="store_true",
                        help="random encoder weights of the recipe's architecture (speed is the same)")
    parser.add_argument("--data", action="append", default=[], metavar="SOURCE:PATH",
                        help="also time batch assembly from the latent cache of these episodes")
    parser.add_argument("--cache-dir", default=None)


def _encoder_overrides(spec: dict, random_encoder: bool) -> dict:
    if not random_encoder:
        return spec
    return {**spec, "random_init": True, "weights": None}


def run(args: argparse.Namespace) -> dict:
    from dexwm_model.training.config import default_cache_dir, load_train_config
    from dexwm_model.training.distributed import pick_device
    from dexwm_model.training.model import build_world_model, describe
    from dexwm_model.training.objective import WorldModelObjective
    from dexwm_model.training.trainer import param_groups

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_train_config(args.section, args.config)
    spec = dataclasses.replace(cfg.model, encoder=_encoder_overrides(cfg.model.encoder, args.random_encoder))
    device = pick_device(args.device or cfg.device)
    model = build_world_model(spec, cfg.seed).to(device).train()
    model.predictor.grad_checkpoint = cfg.grad_checkpoint
    if model.projection.is_identity or not cfg.model.train_projection:
        model.projection.requires_grad_(False)
    obj = WorldModelObjective(model, cfg.mode, cfg.targets, cfg.rollout_steps, cfg.hand_loss,
                              cfg.model.train_projection, cfg.hand_head_input)
    from dexwm_model.training.data import datasets_config

    context = cfg.data.context_frames or datasets_config(cfg.data.datasets, None).clip.context_frames
    k = obj.required_frames(context)
    b = args.batch or cfg.data.micro_batch or cfg.data.batch_size
    p, d = model.encoder.num_tokens, model.encoder.dim
    h, w = model.image_size
    g = torch.Generator().manual_seed(0)
    gaps = 0.1 + 0.4 * torch.rand(b, k, generator=g)
    batch = {
        "latents": torch.randn(b, k, p, d, generator=g).to(torch.float16),
        "times": torch.cumsum(gaps, 1) - gaps[:, :1],
        "actions": 0.02 * torch.randn(b, k - 1, 132, generator=g),
        "keypoints_px": torch.rand(b, k, 12, 2, generator=g) * torch.tensor([w, h]),
        "keypoints_valid": torch.rand(b, k, 12, generator=g) > 0.5,
        "hand_loss": torch.ones(b, dtype=torch.bool),
    }
    batch = {key: v.to(device) for key, v in batch.items()}
    opt = torch.optim.AdamW(param_groups([model.projection, model.predictor, model.hand_head],
                                         cfg.optim.weight_decay), lr=cfg.optim.lr)
    params = [q for grp in opt.param_groups for q in grp["params"]]
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            losses = obj(batch)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip or float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):
        step()
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    sync()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sps = b * args.steps / wall
    total_samples = (cfg.max_steps or 0) * cfg.data.batch_size
    out = {
        "section": args.section, "mode": cfg.mode, "targets": cfg.targets, "device": str(device), "bf16": bf16,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "batch": b, "clip_frames": k, "tokens_per_frame": p, "encoder_dim": d, "model": describe(model),
        "steps": args.steps, "step_ms": round(1e3 * wall / args.steps, 2),
        "cpu_s_per_step": round(cpu / args.steps, 4), "samples_per_s": round(sps, 1),
        "hours_for_recipe": round(total_samples / sps / 3600, 2) if total_samples else None,
        "latent_frames_5000": {  # 5000 frames at 5 Hz = 1000 s of episodes; clips per epoch from datasets.yaml
            "clips_per_epoch": int(1000.0 / datasets_config(cfg.data.datasets, None).clip.clip_stride_s),
        },
    }
    out["latent_frames_5000"]["epoch_s"] = round(out["latent_frames_5000"]["clips_per_epoch"] / sps, 2)
    if args.data:
        out["data"] = _time_data(args, cfg, model, k, b, device, default_cache_dir())
    return out


def _time_data(args, cfg, model, k, b, device, default_cache) -> dict:
    from dexwm_model.training.data import build_clip_data, collate_training, parse_data_specs

    data = build_clip_data(parse_data_specs(args.data), cfg.data.datasets, k, model.encoder, device, True,
                           args.cache_dir or cfg.data.cache_dir or default_cache, cfg.data.cache_batch)
    n = min(len(data.train), 4 * b)
    t0 = time.perf_counter()
    for lo in range(0, n, b):
        collate_training([data.train[i] for i in range(lo, min(n, lo + b))])
    wall = time.perf_counter() - t0
    return {"clips": len(data.train), "timed_samples": n, "samples_per_s": round(n / wall, 1),
            "cache": data.summary()["cache_counts"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    print(json.dumps(run(parser.parse_args(argv)), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
