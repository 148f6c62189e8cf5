"""``dexwm train hand-depth``: give a trained world model a hand depth head (our addition, not in the paper).

``dexwm train hand-depth --checkpoint MODEL --data DIR [--data DIR2] [--heldout DIR] --out FOLDER``: every
``frame_stride``-th frame of the episodes is encoded ONCE by the model's frozen encoder (+ projection); the head
(:class:`dexwm_model.predictor.hand_head.HandDepthHead`, section ``head`` of ``config/hand_depth.yaml``) learns the
camera depth of the right hand's wrist + 5 fingertips (``keypoints_camera`` z of the episodes), read at the true
keypoint pixels (smooth L1, metres). Nothing else of the model changes. FOLDER is the whole model with the head
(written atomically; a ``decoder/`` next to MODEL's weights is copied along) and ``hand_depth_report.json``: the
held-out depth error at the true pixels and at the pixels the hand head finds, against always predicting the mean
depth. Prints that report as one JSON line.

Why: the planner's hand term compares pixels, so a hand on the goal keypoints' rays but short of the object costs
nothing more than one on it; the depths make the goal's keypoints 3-D points (``cost.depth_weight``, goal-pose
proposals).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dexwm_model.config import ConfigError, from_dict, load_yaml
from dexwm_model.data.episode import EpisodeFormatError, EpisodeReader, list_episodes
from dexwm_model.datasets.keypoints import finalize, project
from dexwm_model.kinematics.hand_layout import HEATMAP_KEYPOINTS_21
from dexwm_model.predictor.config import HandDepthHeadConfig
from dexwm_model.predictor.hand_head import NUM_HEATMAPS, RIGHT_HAND_MAPS as RIGHT, HandDepthHead
from dexwm_model.world_model import CheckpointError, WorldModel

CONFIG_FILE = "hand_depth.yaml"


@dataclass
class HandDepthTrainConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 1.0e-3
    weight_decay: float = 0.01
    frame_stride: int = 2
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "frame_stride", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"hand_depth.train.{name}: expected a positive integer, found {value!r}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"hand_depth.train: lr must be > 0 and weight_decay >= 0, found {self.lr!r}, "
                              f"{self.weight_decay!r}")


def load_config(file: str | Path = CONFIG_FILE) -> tuple[HandDepthHeadConfig, HandDepthTrainConfig]:
    data = load_yaml(file)
    name = Path(file).name
    for key in ("head", "train"):
        if not isinstance(data.get(key), dict):
            raise ConfigError(f"{name}: missing section {key!r}")
    return (from_dict(HandDepthHeadConfig, data["head"], f"{name}:head"),
            from_dict(HandDepthTrainConfig, data["train"], f"{name}:train"))


@dataclass
class DepthFrames:
    tokens: Tensor  # (N, P, d) float32: the frozen encoder's (projected) tokens
    uv: Tensor  # (N, 6, 2) right wrist + 5 tips, pixels of the model's input image
    depth: Tensor  # (N, 6) their camera depth (m)
    valid: Tensor  # (N, 6) bool: in front of the camera and inside the image


@torch.no_grad()
def encode_episodes(model: WorldModel, folders: list[str | Path], stride: int, batch: int = 64) -> DepthFrames:
    """Every ``stride``-th frame of every episode in ``folders``: tokens, keypoint pixels (mapped into the model's
    crop), depths and validity."""
    files = [f for d in folders for f in list_episodes(d)]
    if not files:
        raise FileNotFoundError(f"no episode files (*.h5) in {', '.join(str(d) for d in folders)}")
    pre = model.encoder.preprocess
    h, w = model.image_size
    toks, uvs, depths, valids = [], [], [], []
    tips = list(HEATMAP_KEYPOINTS_21)
    for path in files:
        with EpisodeReader(path) as reader:
            ep = reader.load()
        idx = np.arange(0, ep.frames.shape[0], stride)
        K = pre.adjust_intrinsics(np.asarray(ep.camera_intrinsics, dtype=np.float64), ep.frames.shape[1:3])
        cam = np.asarray(ep.keypoints_camera, dtype=np.float64)[idx][:, tips]  # (n, 6, 3)
        uv, inside = finalize(project(cam, K), np.ones(cam.shape[:-1], dtype=bool), (h, w))
        for s in range(0, len(idx), batch):
            toks.append(model.encode(ep.frames[idx[s:s + batch]]).float())
        uvs.append(torch.as_tensor(uv))
        depths.append(torch.as_tensor(cam[..., 2], dtype=torch.float32))
        valids.append(torch.as_tensor(inside))
    return DepthFrames(torch.cat(toks), torch.cat(uvs), torch.cat(depths), torch.cat(valids))


def read_at_right_hand(head: HandDepthHead, maps: Tensor, uv: Tensor) -> Tensor:
    """Depths ``(B, 6)`` of the right hand's keypoints read from the head's maps at their pixels ``uv (B, 6, 2)``."""
    full = torch.zeros(uv.shape[0], NUM_HEATMAPS, 2, dtype=uv.dtype, device=uv.device)
    full[:, RIGHT] = uv
    return head.read(maps, full)[:, RIGHT]


def depth_report(model: WorldModel, frames: DepthFrames, mean_depth: float, batch: int = 128) -> dict[str, Any]:
    """Held-out errors (m) of the head: at the true pixels, at the hand head's pixels, and of the mean depth."""
    head = model.hand_depth_head
    at_true, at_head = [], []
    with torch.no_grad():
        for s in range(0, frames.tokens.shape[0], batch):
            t = frames.tokens[s:s + batch]
            maps = head(t)
            at_true.append(read_at_right_hand(head, maps, frames.uv[s:s + batch]))
            at_head.append(head.read(maps, model.hand_keypoints(t)[0])[:, RIGHT])
    valid = frames.valid
    truth = frames.depth[valid]

    def stats(pred: Tensor) -> dict[str, float]:
        err = (pred[valid] - truth).abs()
        return {"mae_m": round(float(err.mean()), 5), "median_m": round(float(err.median()), 5),
                "p90_m": round(float(torch.quantile(err, 0.9)), 5)}

    return {"keypoints": int(valid.sum()), "at_true_pixels": stats(torch.cat(at_true)),
            "at_hand_head_pixels": stats(torch.cat(at_head)),
            "mean_depth_baseline": stats(torch.full_like(frames.depth, mean_depth))}


def train_head(model: WorldModel, cfg: HandDepthHeadConfig, train: HandDepthTrainConfig, frames: DepthFrames,
               log_every: int = 50) -> list[dict[str, float]]:
    """Attach a fresh head to ``model`` and fit it on ``frames`` (the rest of the model is untouched)."""
    torch.manual_seed(train.seed)
    model.add_hand_depth_head(cfg, seed=train.seed)
    head = model.hand_depth_head
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    n = frames.tokens.shape[0]
    gen = torch.Generator().manual_seed(train.seed)
    log = []
    for step in range(train.steps):
        lr = train.lr * 0.5 * (1.0 + math.cos(math.pi * step / train.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, n, (min(train.batch_size, n),), generator=gen)
        pred = read_at_right_hand(head, head(frames.tokens[idx]), frames.uv[idx])
        valid = frames.valid[idx]
        loss = F.smooth_l1_loss(pred[valid], frames.depth[idx][valid], beta=0.02)
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"hand depth head: the loss is not finite at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == train.steps - 1:
            log.append({"step": step, "loss": round(float(loss.detach()), 6), "lr": lr})
    head.eval()
    return log


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="trained world-model folder (left unchanged)")
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="folder of dexwm-episode files to train on (repeat for several)")
    parser.add_argument("--heldout", action="append", default=[], metavar="DIR",
                        help="folder of episodes for the report (default: none, the report is on the training frames)")
    parser.add_argument("--out", required=True, help="output folder: the model with its hand depth head")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps")
    parser.add_argument("--config", default=CONFIG_FILE, help="parameter file (default: config/hand_depth.yaml)")


def run(args: argparse.Namespace) -> int:
    def err(msg: str) -> int:
        print(f"dexwm train hand-depth: {msg}", file=sys.stderr)
        return 2

    try:
        head_cfg, train_cfg = load_config(args.config)
        if args.steps is not None:
            train_cfg = HandDepthTrainConfig(**{**train_cfg.__dict__, "steps": args.steps})
        model = WorldModel.load(args.checkpoint)
    except (ConfigError, CheckpointError, TypeError) as exc:
        return err(str(exc))
    torch.set_num_threads(train_cfg.threads)
    t0 = time.perf_counter()
    try:
        frames = encode_episodes(model, args.data, train_cfg.frame_stride)
        held = encode_episodes(model, args.heldout, train_cfg.frame_stride) if args.heldout else frames
    except (FileNotFoundError, EpisodeFormatError) as exc:
        return err(str(exc))
    t1 = time.perf_counter()
    log = train_head(model, head_cfg, train_cfg, frames)
    t2 = time.perf_counter()
    mean_depth = float(frames.depth[frames.valid].mean())
    report = {"checkpoint": str(args.checkpoint), "data": list(args.data), "heldout": list(args.heldout),
              "frames": int(frames.tokens.shape[0]), "heldout_frames": int(held.tokens.shape[0]),
              "head": head_cfg.__dict__, "train": train_cfg.__dict__, "encode_s": round(t1 - t0, 1),
              "train_s": round(t2 - t1, 1), "loss": log,
              "heldout_report": depth_report(model, held, mean_depth)}
    out = Path(args.out)
    model.save(out)
    decoder = Path(args.checkpoint) / "decoder"
    if decoder.is_dir() and not (out / "decoder").exists():
        shutil.copytree(decoder, out / "decoder")
    (out / "hand_depth_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("frames", "heldout_frames", "encode_s", "train_s", "heldout_report")}))
    return 0
