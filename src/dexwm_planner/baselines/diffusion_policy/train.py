"""``dexwm train diffusion-policy``: train the goal-image Diffusion Policy on robot episodes with hindsight goals.

Steps: encode every frame of the episodes once with the frozen encoder (``model.encoder`` of
``config/diffusion_policy.yaml``); fit the per-joint min/max normalisers on the commanded targets and the measured
joints; then ``--steps`` AdamW steps of the DDPM denoising loss on random batches
(:meth:`TokenDataset.batch`), linear warm-up + cosine learning rate, gradient clipping, an exponential moving
average of the weights (the EMA weights are what is saved). Seeded: the same data, seed and thread count give the
same checkpoint. Progress (JSON lines) goes to stderr and ``OUT/metrics.jsonl``; at the end the policy samples
action chunks (DDIM) for a fixed set of samples (``--val-data`` episodes if given, else training samples) and the
error of its first action is reported next to that of holding the current joints. Output: ``OUT/config.yaml`` +
``OUT/model.safetensors`` (:meth:`DiffusionPolicy.save`), loadable by ``dexwm bench tasks --baseline diffusion
--policy-checkpoint OUT``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from dexwm_robot.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="folder of episode files (repeat for several)")
    parser.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder to write")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: train.steps)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size")
    parser.add_argument("--seed", type=int, default=None, help="default: train.seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--config", default=None, metavar="YAML",
                        help="parameter file (default config/diffusion_policy.yaml)")
    parser.add_argument("--encoder", default=None, metavar="FOLDER",
                        help="frozen encoder weights folder (default: model.encoder.weights)")
    parser.add_argument("--val-data", action="append", default=None, metavar="DIR",
                        help="held-out episode folder(s) for the final action-error report")
    parser.add_argument("--eval-samples", type=int, default=256,
                        help="samples in the final action-error report (default 256; 0 skips it)")


def lr_factor(step: int, steps: int, warmup: int, lr: float, min_lr: float) -> float:
    """Multiplier of ``lr`` at ``step``: linear warm-up over ``warmup`` steps, then cosine down to ``min_lr``."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return (min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))) / lr


class WeightAverage:
    """Exponential moving average of a module's parameters, with the usual warm-up ``min(decay, (1+n)/(10+n))``
    so that short runs are not dominated by the initial weights."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.params = [p.detach().clone() for p in module.parameters()]
        self.updates = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(self.params, module.parameters()):
            avg.lerp_(p.detach(), 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for avg, p in zip(self.params, module.parameters()):
            p.copy_(avg)


@torch.no_grad()
def action_errors(policy, data, samples: int, seed: int, device: torch.device) -> dict:
    """Mean absolute error (rad) of the sampled first action and of the whole chunk, arm / hand, against the data's
    commanded targets, next to the same errors of "hold the current joints"."""
    g = torch.Generator().manual_seed(seed)
    b = data.batch(samples, policy.horizon, g)
    pred = policy.sample(b["current"].to(device), b["goal"].to(device), b["joints"].to(device),
                         generator=torch.Generator(device=device).manual_seed(seed)).cpu()
    truth = b["actions"]
    hold = b["joints"][:, None].expand_as(truth)
    out = {"samples": samples}
    for name, guess in (("policy", pred), ("hold_current", hold)):
        err = (guess - truth).abs()
        out[name] = {"first_action_arm": round(float(err[:, 0, :7].mean()), 5),
                     "first_action_hand": round(float(err[:, 0, 7:].mean()), 5),
                     "chunk_arm": round(float(err[:, :, :7].mean()), 5),
                     "chunk_hand": round(float(err[:, :, 7:].mean()), 5)}
    return out


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from dexwm_planner.baselines.diffusion_policy.config import (CONFIG_FILE, load_model_config,
                                                                 load_scheduler_config, load_train_config)
    from dexwm_planner.baselines.diffusion_policy.dataset import NoEpisodesFound, encode_episodes, episode_files
    from dexwm_planner.baselines.diffusion_policy.model import DiffusionPolicy
    from dexwm_planner.planners.planner import resolve_device

    file = args.config or CONFIG_FILE
    try:
        model_cfg, sched_cfg, train_cfg = load_model_config(file), load_scheduler_config(file), load_train_config(file)
        overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("seed", args.seed))
                     if v is not None}
        train_cfg = dataclasses.replace(train_cfg, **overrides)
    except ConfigError as exc:
        raise SystemExit(f"train diffusion-policy: {exc}") from exc
    if args.encoder is not None:
        model_cfg = dataclasses.replace(model_cfg, encoder=dataclasses.replace(model_cfg.encoder,
                                                                               weights=args.encoder))
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads: expected a positive integer, found {args.threads}")
        torch.set_num_threads(args.threads)
    if args.eval_samples < 0:
        raise SystemExit(f"--eval-samples: expected >= 0, found {args.eval_samples}")
    device = resolve_device(args.device)
    try:
        files = episode_files(args.data)
        val_files = episode_files(args.val_data) if args.val_data else []
    except NoEpisodesFound as exc:
        raise SystemExit(f"train diffusion-policy: {exc}") from exc

    torch.manual_seed(train_cfg.seed)
    t_start = time.perf_counter()
    policy = DiffusionPolicy(model_cfg, sched_cfg)
    data = encode_episodes(files, policy.encoder, train_cfg.encode_batch)
    val = encode_episodes(val_files, policy.encoder, train_cfg.encode_batch) if val_files else None
    encode_s = time.perf_counter() - t_start
    policy.action_norm.fit(data.targets)
    policy.joint_norm.fit(data.joints)
    policy.to(device)
    net = policy.net
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, train_cfg.steps, train_cfg.warmup_steps, train_cfg.lr, train_cfg.min_lr))
    ema = WeightAverage(net, train_cfg.ema_decay)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    noise_gen = torch.Generator(device=device).manual_seed(train_cfg.seed + 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = (out / "metrics.jsonl").open("w")
    curve: list[list[float]] = []
    window: list[float] = []
    first_loss = None
    t_train = time.perf_counter()
    print(json.dumps({"episodes": len(files), "frames": data.num_frames, "samples": int(data.starts.numel()),
                      "net_parameters": sum(p.numel() for p in net.parameters()), "encode_s": round(encode_s, 1),
                      "steps": train_cfg.steps, "batch_size": train_cfg.batch_size, "device": str(device)}),
          file=sys.stderr, flush=True)
    for step in range(train_cfg.steps):
        b = data.batch(train_cfg.batch_size, policy.horizon, gen)
        loss = policy.loss(b["current"].to(device), b["goal"].to(device), b["joints"].to(device),
                           b["actions"].to(device), generator=noise_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), train_cfg.grad_clip)
        opt.step()
        sched.step()
        ema.update(net)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise SystemExit(f"train diffusion-policy: the loss became {value} at step {step + 1}; lower train.lr")
        first_loss = value if first_loss is None else first_loss
        window.append(value)
        if (step + 1) % train_cfg.log_every == 0 or step + 1 == train_cfg.steps:
            mean = sum(window) / len(window)
            window.clear()
            curve.append([step + 1, round(mean, 5)])
            line = {"step": step + 1, "loss": round(mean, 5), "lr": float(sched.get_last_lr()[0]),
                    "elapsed_s": round(time.perf_counter() - t_train, 1)}
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            print(json.dumps(line), file=sys.stderr, flush=True)
    metrics.close()
    train_s = time.perf_counter() - t_train
    ema.copy_to(net)
    policy.eval()
    evaluation = None
    if args.eval_samples:
        evaluation = {"on": "val" if val is not None else "train",
                      **action_errors(policy, val if val is not None else data, args.eval_samples,
                                      train_cfg.seed + 2, device)}
    record = {
        "command": "dexwm " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "data": [str(d) for d in args.data], "val_data": [str(d) for d in args.val_data or []],
        "episodes": len(files), "frames": data.num_frames, "samples": int(data.starts.numel()),
        "train": dataclasses.asdict(train_cfg), "device": str(device), "threads": torch.get_num_threads(),
        "torch": str(torch.__version__), "cpu": platform.processor() or platform.machine(),
        "net_parameters": int(sum(p.numel() for p in net.parameters())),
        "encode_s": round(encode_s, 1), "train_s": round(train_s, 1),
        "first_loss": round(first_loss, 5), "final_loss": curve[-1][1], "loss_curve": curve,
        "action_error_rad": evaluation,
    }
    policy.save(out, training=record)
    summary = {k: record[k] for k in ("episodes", "frames", "net_parameters", "encode_s", "train_s", "first_loss",
                                      "final_loss", "action_error_rad")}
    print(json.dumps({"out": str(out), **summary}))
    return 0
