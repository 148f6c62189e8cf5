"""``dexwm train decoder``: fit the latent -> image decoder on a frozen encoder's tokens of simulator frames.

``dexwm train decoder --encoder ENC_FOLDER --data DIR [--data DIR2] --out FOLDER [--steps N | --epochs E]``:
frames are read and resized to the encoder's crop (section ``frames`` of ``config/encoder_training.yaml``),
encoded once by the frozen encoder, and the decoder (section ``decoder``) learns to map those tokens back to the
crop's pixels with an L1 (or MSE) loss. ENC_FOLDER is a trained ``dexwm_vit`` folder (default: the embedded
``checkpoints/encoder_sim_vit``). Writes FOLDER atomically and prints one JSON summary line (with the
reconstruction error on held-back episodes when ``--val-fraction`` > 0).
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
import torch.nn.functional as F
from torch import Tensor, nn

from dexwm_robot.config import ConfigError
from dexwm_model.data.episode import EpisodeFormatError
from dexwm_model.decoder.model import LatentDecoder
from dexwm_model.encoders.base import EncoderWeightsMissing, ImageEncoder
from dexwm_model.encoders.sim_vit import EncoderWeightsCorrupt, SimViTEncoder, num_parameters, resolve_weights
from dexwm_model.encoders.ssl import config as ssl_config
from dexwm_model.encoders.ssl.config import DecoderConfig
from dexwm_model.encoders.ssl.frames import NoFramesFound, load_frames
from dexwm_model.encoders.ssl.train import lr_at, param_groups, resolve_device


@torch.no_grad()
def encode_crops(encoder: ImageEncoder, frames: Tensor, batch_size: int = 256) -> Tensor:
    """uint8 crops ``(N, 3, h, w)`` -> frozen tokens ``(N, P, d)`` float32 (on the CPU)."""
    out = [encoder(frames[i : i + batch_size], layout="chw").float().cpu() for i in range(0, len(frames), batch_size)]
    return torch.cat(out)


def pixel_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    return F.l1_loss(pred, target) if kind == "l1" else F.mse_loss(pred, target)


@torch.no_grad()
def reconstruction_error(decoder: LatentDecoder, tokens: Tensor, frames: Tensor, batch_size: int = 256) -> dict:
    """Mean absolute error (0..255 scale) and PSNR (dB) of ``decode(tokens)`` against uint8 ``frames``."""
    abs_sum, sq_sum, count = 0.0, 0.0, 0
    for i in range(0, len(tokens), batch_size):
        img = torch.from_numpy(decoder.decode(tokens[i : i + batch_size])).permute(0, 3, 1, 2).float()
        diff = img - frames[i : i + batch_size].float()
        abs_sum += float(diff.abs().sum())
        sq_sum += float((diff**2).sum())
        count += diff.numel()
    mse = sq_sum / max(1, count)
    return {"mae_0_255": round(abs_sum / max(1, count), 3),
            "psnr_db": round(10 * math.log10(255.0**2 / mse), 2) if mse > 0 else float("inf")}


def train_decoder(decoder: LatentDecoder, tokens: Tensor, frames: Tensor, cfg: DecoderConfig, steps: int,
                  seed: int = 0, device: torch.device | str = "cpu", progress: bool = False,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``decoder`` in place: ``tokens (N, P, d)`` -> uint8 ``frames (N, 3, h, w)``. Returns a history dict."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, found {steps}")
    if len(tokens) != len(frames) or len(tokens) == 0:
        raise ValueError(f"tokens and frames must be non-empty and the same length, found {len(tokens)} and "
                         f"{len(frames)}")
    device = torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    decoder.to(device).train()
    opt = torch.optim.AdamW(param_groups(decoder, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99))
    n = len(tokens)
    batch = min(cfg.batch_size, n)
    order, pos = rng.permutation(n), 0
    tokens_dev, frames_dev = tokens.to(device), frames.to(device)
    losses: list[float] = []
    curve: list[list[float]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="decoder", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    every = max(1, min(50, steps // 10))
    for step in range(steps):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        idx = torch.from_numpy(order[pos : pos + batch]).to(device)
        pos += batch
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, cfg.lr, cfg.min_lr, cfg.warmup_fraction)
        pred = decoder(tokens_dev[idx])
        loss = pixel_loss(pred, frames_dev[idx].float() / 255.0, cfg.loss)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"decoder loss became {float(loss)} at step {step}; lower decoder.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(decoder.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append([step + 1, round(float(np.mean(losses[-every:])), 5)])
            if log is not None:
                log(f"step {step + 1}/{steps} {cfg.loss} {curve[-1][1]:.4f} {time.perf_counter() - t0:.0f}s")
    if bar is not None:
        bar.close()
    decoder.cpu().eval()
    return {"steps": steps, "batch_size": batch, "seconds": round(time.perf_counter() - t0, 1),
            "first_loss": round(losses[0], 5), "final_loss": round(float(np.mean(losses[-every:])), 5),
            "loss_curve": curve, "epochs": round(steps * batch / n, 2), "device": str(device)}


# ---------------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", default=None, help="trained dexwm_vit folder (default: the embedded "
                        "checkpoints/encoder_sim_vit)")
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="folder of dexwm-episode files (repeat for several)")
    parser.add_argument("--out", required=True, help="output folder (config.yaml + model.safetensors)")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="optimisation steps")
    length.add_argument("--epochs", type=float, help="passes over the frames")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="share of the episodes held back to report reconstruction error (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=list(ssl_config.DEVICES))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default; see "
                        "train.threads in encoder_training.yaml for why 1)")
    parser.add_argument("--config", default=ssl_config.CONFIG_FILE, help="parameter file (default: "
                        "config/encoder_training.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    def err(msg: str) -> int:
        print(f"dexwm train decoder: {msg}", file=sys.stderr)
        return 2

    if (args.steps is not None and args.steps < 1) or (args.epochs is not None and args.epochs <= 0):
        return err(f"--steps must be >= 1 and --epochs > 0 (got steps={args.steps}, epochs={args.epochs})")
    if not 0 <= args.val_fraction < 1:
        return err(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    try:
        cfg: DecoderConfig = ssl_config.load("decoder", args.config)
        frames_cfg = ssl_config.load("frames", args.config)
        device = resolve_device(args.device)
    except ConfigError as exc:
        return err(str(exc))
    if args.threads:
        torch.set_num_threads(args.threads)
    enc_dir = resolve_weights(args.encoder)
    try:
        encoder = SimViTEncoder.from_folder(enc_dir)
    except (EncoderWeightsMissing, EncoderWeightsCorrupt) as exc:
        return err(str(exc))
    progress = not args.no_progress
    t_start = time.perf_counter()
    try:
        data = load_frames(args.data, encoder.preprocess, frames_cfg.stride, frames_cfg.max_frames, args.seed,
                           progress)
    except (NoFramesFound, EpisodeFormatError) as exc:
        return err(str(exc))
    t_enc = time.perf_counter()
    tokens = encode_crops(encoder.to(device), data.frames.to(device)) if device.type == "cuda" else \
        encode_crops(encoder, data.frames)
    encode_seconds = time.perf_counter() - t_enc
    episodes = np.unique(data.episode)
    n_val = int(round(len(episodes) * args.val_fraction))
    val_eps = np.random.default_rng(args.seed).choice(episodes, size=n_val, replace=False) if n_val else []
    val = torch.from_numpy(np.isin(data.episode, val_eps))
    if bool(val.all()):
        return err(f"--val-fraction {args.val_fraction} leaves no training episodes")
    tr_tokens, tr_frames = tokens[~val], data.frames[~val]
    steps = args.steps or max(1, math.ceil(args.epochs * len(tr_tokens) / min(cfg.batch_size, len(tr_tokens))))
    decoder = LatentDecoder.for_encoder(encoder, cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio, cfg.refine_channels)
    log = (lambda s: print(s, file=sys.stderr)) if not progress else None
    hist = train_decoder(decoder, tr_tokens, tr_frames, cfg, steps, args.seed, device, progress, log)
    summary: dict[str, Any] = {"train": reconstruction_error(decoder, tr_tokens, tr_frames)}
    if bool(val.any()):
        summary["val"] = reconstruction_error(decoder, tokens[val], data.frames[val])
    info = {"encoder_folder": str(enc_dir.resolve()), "encoder_weights_sha256": encoder.info.get("weights_sha256"),
            "encoder_tensors_sha256": encoder.info.get("tensors_sha256"),
            "training": {"data": [str(Path(d).resolve()) for d in args.data], "episodes": len(data.episodes),
                         "frames": len(data), "val_episodes": int(n_val), "seed": args.seed,
                         "threads": torch.get_num_threads(), "torch": str(torch.__version__),
                         "decoder": dataclasses.asdict(cfg), "encode_seconds": round(encode_seconds, 1),
                         "reconstruction": summary, **hist}}
    try:
        out = decoder.save(args.out, info)
    except OSError as exc:
        return err(f"could not write {args.out}: {exc}")
    print(json.dumps({"out": str(out), "frames": len(data), "steps": steps, "epochs": hist["epochs"],
                      "train_seconds": hist["seconds"], "total_seconds": round(time.perf_counter() - t_start, 1),
                      "final_loss": hist["final_loss"], "parameters": num_parameters(decoder),
                      "weights_bytes": (out / "model.safetensors").stat().st_size, **summary}))
    return 0
