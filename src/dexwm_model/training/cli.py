"""``dexwm train world-model``: train (pre-train or fine-tune) the latent world model.

Examples::

    dexwm train world-model --config config/train.yaml --section cpu_default --data sim:/data/sim --out runs/cpu
    dexwm train world-model --section finetune --init runs/pretrain/final --data sim:/data/sim --out runs/ft
    dexwm train world-model --section cpu_default --data sim:/data/sim --out runs/cpu --resume
    torchrun --nproc-per-node 8 -m dexwm_cli.main train world-model --section pretrain --data egodex:/d/egodex ...
    dexwm train world-model --section cpu_default --data sim:/data/sim --out runs/cpu2 --nproc 2   # local gloo
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="train.yaml", help="training parameter file (default: config/train.yaml)")
    parser.add_argument("--section", default="cpu_default",
                        help="recipe in the file: pretrain, finetune, cpu_default, ... (default: cpu_default)")
    parser.add_argument("--data", action="append", metavar="SOURCE:PATH", default=[],
                        help="a data source and its root, e.g. sim:/data/sim or egodex:/data/egodex (repeatable; "
                             "default: the roots set in config/datasets.yaml)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<section>)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="CHECKPOINT",
                        help="continue exactly from a checkpoint folder; without a value: the newest one in --out")
    parser.add_argument("--init", default=None, metavar="MODEL_DIR",
                        help="start from this model's weights (fine-tuning); overrides the config's init_checkpoint")
    parser.add_argument("--no-hand-loss", action="store_true",
                        help="ablation: no hand-consistency gradient into the predictor (the hand head still learns "
                             "a read-out from detached predictions)")
    parser.add_argument("--max-steps", type=int, default=None, help="override max_steps (optimiser steps)")
    parser.add_argument("--cache-dir", default=None, help="latent cache root (default: data.cache_dir or "
                                                          "~/.cache/dexwm/latents)")
    parser.add_argument("--no-cache", action="store_true", help="encode frames in every step instead of caching")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="override device")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes to launch on this machine (DDP; gloo on CPU, NCCL on GPUs); under torchrun "
                             "leave at 1")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def request_from_args(args: argparse.Namespace):
    import dataclasses
    from pathlib import Path

    from dexwm_model.training.config import load_train_config
    from dexwm_model.training.data import parse_data_specs
    from dexwm_model.training.trainer import TrainRequest

    cfg = load_train_config(args.section, args.config)
    changes = {}
    if args.no_hand_loss:
        changes["hand_loss"] = False
    if args.max_steps is not None:
        changes["max_steps"], changes["epochs"] = args.max_steps, None
    if args.device is not None:
        changes["device"] = args.device
    if args.no_cache:
        changes["data"] = dataclasses.replace(cfg.data, latent_cache=False)
    if changes:
        cfg = dataclasses.replace(cfg, **changes)
    out = args.out or str(Path("runs") / args.section)
    resume = None
    if args.resume is not None:
        resume = args.resume or out
    return TrainRequest(config=cfg, out=out, roots=parse_data_specs(args.data), resume=resume, init=args.init,
                        cache_dir=args.cache_dir, progress=not args.no_progress)


def run_request(req) -> dict:
    """Entry point of every process (importable, so :func:`launch_local` can start it)."""
    from dexwm_model.training.trainer import train

    return train(req)


def run(args: argparse.Namespace) -> int:
    from dexwm_model.config import ConfigError
    from dexwm_model.datasets.errors import DatasetFormatError
    from dexwm_model.encoders.base import EncoderWeightsMissing
    from dexwm_model.training.trainer import TrainingDiverged
    from dexwm_model.weights_file import BadWeights

    try:
        req = request_from_args(args)
        if args.nproc < 1:
            raise ConfigError(f"--nproc must be >= 1, found {args.nproc}")
        if args.nproc > 1:
            from pathlib import Path

            from dexwm_model.training.distributed import launch_local

            launch_local(args.nproc, run_request, req)
            summary = json.loads((Path(req.out) / "train_summary.json").read_text())
        else:
            summary = run_request(req)
    except (ConfigError, DatasetFormatError, BadWeights, EncoderWeightsMissing, ValueError) as exc:
        print(f"dexwm train world-model: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"dexwm train world-model: {exc}", file=sys.stderr)
        return 3
    if summary.get("final"):
        brief = {k: summary.get(k) for k in ("final", "steps", "total_steps", "samples_per_s", "last", "processes",
                                             "device")}
        print(json.dumps(brief, default=str))
    return 0
