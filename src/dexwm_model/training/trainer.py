"""The world-model training loop (``dexwm train world-model``).

One call of :func:`train` runs one process of a run: alone, or as one rank of a torchrun / :func:`launch_local`
process group (DistributedDataParallel; NCCL on GPU, gloo on CPU; every rank draws its own share of each global
batch, only rank 0 writes files). Per optimiser step: ``accum`` micro-batches (gradients summed, synchronised on the
last), global-norm clipping, AdamW, a linear warm-up + cosine learning-rate schedule down to a floor.

Outputs under ``out``: ``train_config.yaml``, ``metrics.jsonl`` (one record per logged step), ``tb/`` (TensorBoard
scalars), ``checkpoints/step_<N>/`` (a loadable model + the exact training state; ``checkpoints/latest``),
``final/`` (the trained model) and ``train_summary.json``. A run resumed from a checkpoint continues exactly:
the data order depends only on (seed, epoch, step), and the optimiser, scheduler and RNG states are restored.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from dexwm_model.config import ConfigError
from dexwm_model.training import checkpoint as ckpt
from dexwm_model.training.config import TrainConfig, default_cache_dir, train_config_from_dict
from dexwm_model.training.data import ClipData, StepBatchSampler, build_clip_data, collate_training
from dexwm_model.training.distributed import DistInfo, gather_objects, parameter_digest, setup, teardown
from dexwm_model.training.model import build_world_model, describe
from dexwm_model.training.model import object_head_config
from dexwm_model.training.objective import WorldModelObjective
from dexwm_model.world_model import WorldModel

# settings that may change when a run is resumed (everything else must match the checkpoint's config)
RESUMABLE_CHANGES = ("max_steps", "epochs", "log_every", "checkpoint_every", "keep_checkpoints", "threads",
                     "device", "compile", "data.num_workers", "data.cache_dir", "data.cache_batch",
                     "init_checkpoint", "optim.max_skipped_steps")


class TrainingDiverged(RuntimeError):
    """The loss or the gradients stayed non-finite for more steps than ``optim.max_skipped_steps`` allows."""


@dataclass
class TrainRequest:
    """What to train: a config, the data (``source -> root``; empty = datasets.yaml roots) and where to write."""

    config: TrainConfig
    out: str
    roots: dict[str, str]
    resume: str | None = None
    init: str | None = None
    cache_dir: str | None = None
    progress: bool = True


def lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k in ("data", "optim"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    a, b = _flatten(saved), _flatten(current)
    return sorted(k for k in set(a) | set(b) if k not in RESUMABLE_CHANGES and a.get(k) != b.get(k))


def param_groups(modules: list[torch.nn.Module], weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for m in modules:
        for name, p in m.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and "pos_embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _to_device(batch: dict, device: torch.device) -> dict:
    non_blocking = device.type == "cuda"
    return {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class _Writers:
    """Rank 0's outputs: metrics.jsonl, TensorBoard, progress bar."""

    def __init__(self, out: Path, start_step: int, total: int, progress: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.metrics_path = out / "metrics.jsonl"
        if start_step > 0 and self.metrics_path.exists():  # drop records after the resumed step
            keep = [line for line in self.metrics_path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start_step]
            self.metrics_path.write_text("".join(line + "\n" for line in keep))
        elif start_step == 0:
            self.metrics_path.write_text("")
        self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1 if start_step else None)
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start_step, desc="training", unit="step", dynamic_ncols=True)

    def log(self, record: dict) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["step"]
        for key in ("loss", "latent", "hand", "lr", "grad_norm", "samples_per_s"):
            if record.get(key) is not None:
                self.tb.add_scalar(f"train/{key}", record[key], step)
        if self.bar is not None and record.get("loss") is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4g}", latent=f"{record['latent']:.4g}",
                                 hand=f"{record['hand']:.4g}", sps=f"{record['samples_per_s']:.1f}")

    def warn(self, step: int, message: str) -> None:
        """A line on stderr (through the progress bar when there is one) and a record in metrics.jsonl."""
        with self.metrics_path.open("a") as f:
            f.write(json.dumps({"step": step, "warning": message}) + "\n")
        if self.bar is not None:
            self.bar.write(f"warning: {message}", file=sys.stderr)
        else:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        self.tb.close()
        if self.bar is not None:
            self.bar.close()


def _load_model(req: TrainRequest, resume_dir: Path | None) -> WorldModel:
    cfg = req.config
    if resume_dir is not None:
        return WorldModel.load(resume_dir)
    init = req.init or cfg.init_checkpoint
    if init:
        return WorldModel.load(init)
    if cfg.mode == "finetune":
        raise ConfigError("finetune: no pre-trained model to start from; set init_checkpoint in the config or pass "
                          "--init MODEL_DIR")
    return build_world_model(cfg.model, cfg.seed)


def train(req: TrainRequest) -> dict:
    """Run (or resume) one training run; returns the summary (also written to ``out/train_summary.json``)."""
    cfg = req.config
    info = setup(cfg.device)
    try:
        return _train(req, info)
    finally:
        teardown(info)


def _train(req: TrainRequest, info: DistInfo) -> dict:
    cfg = req.config
    out = Path(req.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _seed_everything(cfg.seed)
    device = info.device

    resume_dir, state = None, None
    if req.resume:
        resume_dir = ckpt.resolve_resume(req.resume)
        state = ckpt.load_training_state(resume_dir)
        diff = config_differences(state["train_config"], cfg.to_dict())
        if diff:
            saved = _flatten(state["train_config"])
            now = _flatten(cfg.to_dict())
            detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in diff)
            raise ConfigError(f"resume {resume_dir}: the training config differs from the checkpoint's in {detail}")
        if state["roots"] != req.roots:
            raise ConfigError(f"resume {resume_dir}: trained on data {state['roots']}, now given {req.roots}")

    model = _load_model(req, resume_dir).to(device)
    model.train()
    model.predictor.grad_checkpoint = cfg.grad_checkpoint
    train_projection = cfg.model.train_projection and not model.projection.is_identity
    if not train_projection:
        model.projection.requires_grad_(False)

    # ---------------------------------------------------------------------------------------------- data
    mc = model.config.predictor.max_context
    from dexwm_model.training.data import datasets_config

    context = cfg.data.context_frames or datasets_config(cfg.data.datasets, None).clip.context_frames
    if context > mc:
        raise ConfigError(f"data.context_frames: {context} context frames exceed the predictor's max_context {mc}")
    if cfg.object_head is not None and model.object_head is None:
        model.add_object_head(object_head_config(cfg.object_head), seed=cfg.seed)
        model.object_head.to(device).train()
    objective = WorldModelObjective(model, cfg.mode, cfg.targets, cfg.rollout_steps, cfg.hand_loss,
                                    train_projection, cfg.hand_head_input, cfg.object_loss, cfg.object_moved_weight)
    clip_frames = objective.required_frames(context)
    cache_dir = req.cache_dir or cfg.data.cache_dir or default_cache_dir()
    data: ClipData = build_clip_data(req.roots, cfg.data.datasets, clip_frames, model.encoder, device,
                                     cfg.data.latent_cache, cache_dir, cfg.data.cache_batch, info.rank, info.world,
                                     info.barrier, progress=req.progress and info.is_main)
    micro = cfg.data.micro_batch or cfg.data.batch_size // info.world
    per_rank = cfg.data.batch_size // info.world
    if cfg.data.batch_size % info.world or per_rank % micro:
        raise ConfigError(f"data.batch_size {cfg.data.batch_size} must split into {info.world} process(es) x "
                          f"micro-batches of {micro}")
    accum = per_rank // micro
    steps_per_epoch = len(data.train) // cfg.data.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"the data give {len(data.train)} clips per epoch, fewer than one batch of "
                          f"{cfg.data.batch_size}; add data or lower data.batch_size")
    total = cfg.max_steps if cfg.max_steps is not None else max(1, math.ceil(cfg.epochs * steps_per_epoch))

    # ------------------------------------------------------------------------------------- optimisation
    if cfg.compile:
        for block in model.predictor.blocks:
            block.compile()
        model.hand_head.compile()
    runner: torch.nn.Module = objective
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # buffers (the encoder's fixed normalisation / position tables) are identical on every rank: no per-step sync
        runner = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                         forward_sync_buffers=False)
    trainable = [m for m in (model.projection, model.predictor, model.hand_head)]
    groups = param_groups(trainable, cfg.optim.weight_decay)
    if model.object_head is not None:  # a new head may learn faster than the pre-trained predictor it reads
        groups += [{**g, "lr": cfg.optim.lr * cfg.object_lr_scale}
                   for g in param_groups([model.object_head], cfg.optim.weight_decay)]
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    zero = torch.zeros((), device=device)
    params = [p for g in opt.param_groups for p in g["params"]]
    floor = cfg.optim.min_lr / cfg.optim.lr
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.optim.warmup_steps, total, floor))
    step = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
        ckpt.set_rng_state(state["rng"])
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")

    writers = None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.yaml").write_text(yaml.safe_dump(
            {"config": cfg.to_dict(), "roots": req.roots, "processes": info.world}, sort_keys=False))
        writers = _Writers(out, step, total, req.progress)

    def save(at_step: int) -> Path | None:
        if not info.is_main:
            return None
        epoch = at_step // steps_per_epoch
        return ckpt.save_checkpoint(out, model, {
            "step": at_step, "epoch": epoch, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": ckpt.rng_state(), "train_config": cfg.to_dict(), "roots": req.roots, "processes": info.world,
        }, cfg.keep_checkpoints)

    # ------------------------------------------------------------------------------------------- loop
    started = step
    t_run = time.perf_counter()
    t_log, samples_since_log, last_record = time.perf_counter(), 0, None
    timed_samples, timed_seconds = 0, 0.0
    sums = torch.zeros(4, dtype=torch.float64)
    counted = 0  # finite steps summed into sums since the last log line
    skipped, skipped_in_row = 0, 0
    while step < total:
        epoch = step // steps_per_epoch
        data.train.set_epoch(epoch)
        sampler = StepBatchSampler(len(data.train), cfg.data.batch_size, info.rank, info.world, accum, cfg.seed,
                                   epoch, step % steps_per_epoch)
        loader = DataLoader(data.train, batch_sampler=sampler, collate_fn=collate_training,
                            num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
        it = iter(loader)
        for _ in range(sampler.steps - sampler.start_step):
            t_step = time.perf_counter()
            step_sums = torch.zeros(4, dtype=torch.float64)
            for a in range(accum):
                batch = _to_device(next(it), device)
                sync = a == accum - 1
                ctx = runner.no_sync() if (info.enabled and not sync) else contextlib.nullcontext()
                with ctx, torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                    losses = runner(batch)
                (losses["total"] / accum).backward()
                step_sums += torch.stack([losses["total"].detach(), losses["latent"], losses["hand"],
                                          losses.get("object", zero)]).double().cpu()
            max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip is not None else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            lr = opt.param_groups[0]["lr"]
            # DDP averages gradients, so every rank sees the same norm and takes the same decision
            finite = math.isfinite(grad_norm) and bool(torch.isfinite(step_sums).all())
            if finite:
                opt.step()
                sums += step_sums
                counted += 1
                skipped_in_row = 0
            else:
                skipped += 1
                skipped_in_row += 1
                detail = (f"step {step + 1}: loss {float(step_sums[0]) / accum:.4g}, gradient norm {grad_norm:.4g} "
                          f"(lr {lr:.3g})")
                if skipped_in_row > cfg.optim.max_skipped_steps:
                    raise TrainingDiverged(
                        f"training diverged at {detail}: {skipped_in_row} step(s) in a row with a non-finite loss or "
                        f"gradient (optim.max_skipped_steps {cfg.optim.max_skipped_steps}); the last finite "
                        f"checkpoint is the newest under {out / 'checkpoints'}, nothing non-finite was written")
                if writers is not None:
                    writers.warn(step + 1, f"skipped {detail} (non-finite; {skipped_in_row} in a row, at most "
                                 f"{cfg.optim.max_skipped_steps})")
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            n_samples = cfg.data.batch_size
            samples_since_log += n_samples
            if step - started > 1:  # the first step includes warm-up (allocations, compilation)
                timed_samples += n_samples
                timed_seconds += time.perf_counter() - t_step
            if step % cfg.log_every == 0 or step == total:
                mean = info.all_reduce_mean((sums / (max(counted, 1) * accum)).to(device)).cpu()
                now = time.perf_counter()
                losses_of = (lambda i: float(mean[i])) if counted else (lambda i: None)  # None: every step skipped
                record = {"step": step, "epoch": epoch, "lr": lr, "loss": losses_of(0), "latent": losses_of(1),
                          "hand": losses_of(2), **({"object": losses_of(3)} if model.object_head is not None else {}),
                          "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
                          "samples_per_s": samples_since_log / max(now - t_log, 1e-9)}
                last_record = record
                if writers is not None:
                    writers.log(record)
                sums.zero_()
                counted, samples_since_log, t_log = 0, 0, now
            if writers is not None:
                writers.advance()
            if step % cfg.checkpoint_every == 0 and step < total:
                save(step)
            if step >= total:
                break
        del it, loader

    final_ckpt = save(step)
    digest = parameter_digest(model)
    digests = gather_objects(info, digest)
    if info.enabled and len(set(digests)) != 1:
        raise RuntimeError(f"DDP ranks ended with different weights: {digests}")
    summary = {
        "steps": step, "resumed_from": started, "total_steps": total, "steps_per_epoch": steps_per_epoch,
        "processes": info.world, "device": str(device), "bf16": bf16, "accumulation": accum,
        "micro_batch": micro, "batch_size": cfg.data.batch_size, "clip_frames": clip_frames,
        "samples_per_s": timed_samples / timed_seconds if timed_seconds > 0 else None,
        "wall_s": time.perf_counter() - t_run, "last": last_record, "rank_parameter_digests": digests,
        "model": describe(model), "data": data.summary(), "hand_loss": cfg.hand_loss, "mode": cfg.mode,
        "skipped_steps": skipped,
    }
    if info.is_main:
        final = out / "final"
        model.save(final)
        summary["final"] = str(final)
        summary["checkpoint"] = str(final_ckpt)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    if writers is not None:
        writers.close()
    return summary


def train_config_of_checkpoint(folder: str | os.PathLike) -> TrainConfig:
    """The training config stored in a training checkpoint."""
    state = ckpt.load_training_state(ckpt.resolve_resume(folder))
    return train_config_from_dict(state["train_config"], f"{folder}:{ckpt.STATE_NAME}")
