"""``dexwm train encoder``: self-supervised (MAE) training of the ``dexwm_vit`` encoder on simulator episodes.

``dexwm train encoder --data DIR [--data DIR2 ...] --out FOLDER [--steps N | --epochs E]`` reads every frame of
the episodes (``frames`` section of ``config/encoder_training.yaml``), trains the backbone as a masked autoencoder
(sections ``mae``, ``train``, ``augment``), and writes FOLDER (``config.yaml`` + ``model.safetensors``) atomically;
``encoder: {kind: dexwm_vit, weights: FOLDER, image_size: [112, 112], size: null}`` in ``config/model.yaml`` then
uses it. Seeded; CPU or GPU (``--device auto``). Prints one JSON summary line at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from dexwm_robot.config import ConfigError
from dexwm_model.data.episode import EpisodeFormatError
from dexwm_model.encoders.base import EncoderWeightsMissing
from dexwm_model.encoders.preprocess import ImagePreprocessor
from dexwm_model.encoders.sim_vit import (
    EncoderWeightsCorrupt,
    SimViTArch,
    SimViTBackbone,
    load_architecture,
    num_parameters,
    save_sim_vit,
)
from dexwm_model.encoders.ssl import config as ssl_config
from dexwm_model.encoders.ssl.config import AugmentConfig, MAEConfig, TrainConfig
from dexwm_model.encoders.ssl.frames import NoFramesFound, augment, load_frames
from dexwm_model.encoders.ssl.mae import MaskedAutoencoder


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(name)


def lr_at(step: int, total: int, lr: float, min_lr: float, warmup_fraction: float) -> float:
    """Linear warm-up to ``lr`` over ``warmup_fraction`` of the steps, then cosine decay to ``min_lr``."""
    warm = int(round(total * warmup_fraction))
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on biases, norms, embeddings of shape (1, 1, d))."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and p.shape[0] > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def normalise(x01: Tensor, preprocess: ImagePreprocessor) -> Tensor:
    """Pixels in [0, 1] of the crop's size -> the encoder's normalised input."""
    return (x01 - preprocess.mean.to(x01.device)) / preprocess.std.to(x01.device)


@torch.no_grad()
def evaluate_mae(model: MaskedAutoencoder, frames: Tensor, preprocess: ImagePreprocessor, seed: int = 1234,
                 batch_size: int = 256) -> float:
    """Mean MAE loss on un-augmented ``frames`` (uint8) with masks drawn from ``seed`` (comparable across calls)."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(frames), batch_size):
        x = normalise(frames[i : i + batch_size].to(dev).float() / 255.0, preprocess)
        loss, _, _ = model(x, g)
        total += float(loss) * len(x)
        count += len(x)
    model.train(was_training)
    return total / max(1, count)


def train_mae(frames: Tensor, arch: SimViTArch, mae_cfg: MAEConfig, train_cfg: TrainConfig, aug_cfg: AugmentConfig,
              steps: int, device: torch.device | str = "cpu", progress: bool = False,
              log: Callable[[str], None] | None = None) -> tuple[MaskedAutoencoder, dict[str, Any]]:
    """Train a fresh backbone as an MAE on ``frames`` (uint8 ``(N, 3, h, w)`` at the crop size) for ``steps``.

    Returns the trained MAE (on the CPU, in eval mode; ``.backbone`` is the encoder) and a history dict.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, found {steps}")
    if frames.dtype != torch.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != (3, *arch.image_size):
        raise ValueError(f"frames: expected uint8 (N, 3, {arch.image_size[0]}, {arch.image_size[1]}), found "
                         f"{frames.dtype} {tuple(frames.shape)}")
    device = torch.device(device)
    torch.manual_seed(train_cfg.seed)
    rng = np.random.default_rng(train_cfg.seed)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    backbone = SimViTBackbone(arch)
    model = MaskedAutoencoder(backbone, mae_cfg).to(device).train()
    preprocess = ImagePreprocessor(arch.image_size).to(device)
    opt = torch.optim.AdamW(param_groups(model, train_cfg.weight_decay), lr=train_cfg.lr,
                            betas=tuple(train_cfg.betas))
    n = len(frames)
    batch = min(train_cfg.batch_size, n)
    frames_dev = frames.to(device)
    order = rng.permutation(n)
    pos = 0
    losses: list[float] = []
    curve: list[list[float]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="MAE", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    for step in range(steps):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        idx = torch.from_numpy(order[pos : pos + batch]).to(device)
        pos += batch
        x = normalise(augment(frames_dev[idx], aug_cfg, gen), preprocess)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, train_cfg.lr, train_cfg.min_lr, train_cfg.warmup_fraction)
        loss, _, _ = model(x, gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"MAE loss became {float(loss)} at step {step}; lower train.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if (step + 1) % train_cfg.log_every == 0 or step + 1 == steps:
            recent = float(np.mean(losses[-train_cfg.log_every:]))
            curve.append([step + 1, round(recent, 5)])
            if log is not None:
                log(f"step {step + 1}/{steps} loss {recent:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                    f"{time.perf_counter() - t0:.0f}s")
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    model = model.cpu().eval()
    backbone = model.backbone
    history = {"steps": steps, "batch_size": batch, "seconds": round(seconds, 1),
               "first_loss": round(losses[0], 5), "final_loss": round(float(np.mean(losses[-50:])), 5),
               "loss_curve": curve, "epochs": round(steps * batch / n, 2), "device": str(device),
               "mae_decoder_parameters": num_parameters(model) - num_parameters(backbone)}
    return model, history


# ---------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="folder of dexwm-episode files (repeat for several)")
    parser.add_argument("--out", required=True, help="output folder (config.yaml + model.safetensors)")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="optimisation steps")
    length.add_argument("--epochs", type=float, help="passes over the frames (steps = epochs * frames / batch)")
    parser.add_argument("--arch", default=None, help="architecture preset of encoder_training.yaml (default: its "
                        "architecture.default)")
    parser.add_argument("--batch-size", type=int, default=None, help="override train.batch_size")
    parser.add_argument("--lr", type=float, default=None, help="override train.lr (peak)")
    parser.add_argument("--seed", type=int, default=None, help="override train.seed")
    parser.add_argument("--device", default=None, choices=list(ssl_config.DEVICES), help="override train.device")
    parser.add_argument("--threads", type=int, default=None, help="override train.threads (torch CPU threads)")
    parser.add_argument("--max-frames", type=int, default=None, help="override frames.max_frames")
    parser.add_argument("--config", default=ssl_config.CONFIG_FILE, help="parameter file (default: "
                        "config/encoder_training.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    def err(msg: str) -> int:
        print(f"dexwm train encoder: {msg}", file=sys.stderr)
        return 2

    try:
        train_cfg: TrainConfig = ssl_config.load("train", args.config)
        frames_cfg = ssl_config.load("frames", args.config)
        overrides = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr), ("seed", args.seed),
                                       ("device", args.device), ("threads", args.threads)) if v is not None}
        train_cfg = dataclasses.replace(train_cfg, **overrides)
        if args.max_frames is not None:
            frames_cfg = dataclasses.replace(frames_cfg, max_frames=args.max_frames)
        mae_cfg = ssl_config.load("mae", args.config)
        aug_cfg = ssl_config.load("augment", args.config)
        arch = load_architecture(args.arch, args.config)
        device = resolve_device(train_cfg.device)
    except ConfigError as exc:
        return err(str(exc))
    if (args.steps is not None and args.steps < 1) or (args.epochs is not None and args.epochs <= 0):
        return err(f"--steps must be >= 1 and --epochs > 0 (got steps={args.steps}, epochs={args.epochs})")
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    progress = not args.no_progress
    t_start = time.perf_counter()
    try:
        data = load_frames(args.data, ImagePreprocessor(arch.image_size), frames_cfg.stride, frames_cfg.max_frames,
                           train_cfg.seed, progress)
    except (NoFramesFound, EpisodeFormatError) as exc:
        return err(str(exc))
    steps = args.steps or max(1, math.ceil(args.epochs * len(data) / min(train_cfg.batch_size, len(data))))
    log = (lambda s: print(s, file=sys.stderr)) if not progress else None
    model, hist = train_mae(data.frames, arch, mae_cfg, train_cfg, aug_cfg, steps, device, progress, log)
    backbone = model.backbone
    info = {
        "method": "masked autoencoder (MAE)", "data": [str(Path(d).resolve()) for d in args.data],
        "episodes": len(data.episodes), "frames": len(data), "seed": train_cfg.seed,
        "threads": torch.get_num_threads(), "torch": str(torch.__version__),
        "mae": dataclasses.asdict(mae_cfg), "train": dataclasses.asdict(train_cfg),
        "augment": dataclasses.asdict(aug_cfg), "frames_config": dataclasses.asdict(frames_cfg), **hist,
        "command": "dexwm train encoder " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "",
    }
    try:
        out = save_sim_vit(backbone, args.out, info)
    except (OSError, EncoderWeightsMissing, EncoderWeightsCorrupt) as exc:
        return err(f"could not write {args.out}: {exc}")
    weights = out / "model.safetensors"
    print(json.dumps({"out": str(out), "frames": len(data), "episodes": len(data.episodes), "steps": steps,
                      "epochs": hist["epochs"], "train_seconds": hist["seconds"],
                      "total_seconds": round(time.perf_counter() - t_start, 1), "first_loss": hist["first_loss"],
                      "final_loss": hist["final_loss"], "parameters": num_parameters(backbone),
                      "weights_bytes": weights.stat().st_size, "device": hist["device"]}))
    return 0
