"""``dexwm eval``: open-loop prediction quality of a world-model checkpoint over recorded episodes.

    dexwm eval --checkpoint runs/cpu/final --data sim:/data/sim_val [--out DIR]

Writes ``eval.json`` (per horizon step: latent MSE, cosine, PCK@2.5/5/10/20 px of the hand head read out of the
predicted latents, each for the model and the "nothing moves" baseline) and ``embedding_error.png`` / ``pck.png``
into ``--out`` (default ``<checkpoint>/eval``); prints the summary as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="world-model folder (config.yaml + model.safetensors)")
    parser.add_argument("--data", action="append", metavar="SOURCE:PATH", default=[],
                        help="episodes to evaluate on, e.g. sim:/data/sim_val (repeatable; default: the roots in "
                             "config/datasets.yaml)")
    parser.add_argument("--out", default=None, help="output folder (default: <checkpoint>/eval)")
    parser.add_argument("--config", default="train.yaml", help="parameter file holding the eval section")
    parser.add_argument("--section", default="eval", help="section of --config (default: eval)")
    parser.add_argument("--datasets", default="datasets.yaml", help="dataset parameter file (config/datasets.yaml)")
    parser.add_argument("--horizon-s", type=float, default=None, help="override eval.horizon_s")
    parser.add_argument("--max-episodes", type=int, default=None, help="override eval.max_episodes (per source)")
    parser.add_argument("--cache-dir", default=None, help="latent cache root (default: eval.cache_dir or "
                                                          "~/.cache/dexwm/latents)")
    parser.add_argument("--no-cache", action="store_true", help="encode frames on the fly, no latent cache")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    parser.add_argument("--no-progress", action="store_true")


def evaluate_checkpoint(checkpoint: str, roots: dict[str, str], cfg, out: str | Path | None = None,
                        datasets_file: str = "datasets.yaml", cache_dir: str | None = None,
                        progress: bool = False) -> dict:
    """Load ``checkpoint``, evaluate it on ``roots`` with :class:`EvalConfig` ``cfg``, write the report."""
    import torch

    from dexwm_model.evaluation.open_loop import evaluate
    from dexwm_model.evaluation.report import PLOTS, write_report
    from dexwm_model.training.config import default_cache_dir
    from dexwm_model.training.data import build_clip_data, datasets_config
    from dexwm_model.training.distributed import pick_device
    from dexwm_model.world_model import WorldModel

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    model = WorldModel.load(checkpoint, map_location=device)
    dcfg = datasets_config(datasets_file, None)
    # evaluation cuts its own rollouts out of whole episodes: the training clip rules only decide which episodes
    # are listed, so short ones are left out (reported) instead of failing
    dcfg = dataclasses.replace(dcfg, clip=dataclasses.replace(dcfg.clip, short_episodes="skip", context_frames=1,
                                                               min_gap_s=0.0))
    data = build_clip_data(roots, dcfg, None, model.encoder, device, cfg.latent_cache,
                           cache_dir or cfg.cache_dir or default_cache_dir(), cfg.cache_batch, progress=progress)
    report = evaluate(model, data.by_source, cfg, device, progress=progress)
    report["checkpoint"] = str(checkpoint)
    report["data"] = {k: str(v) for k, v in roots.items()} or "datasets.yaml roots"
    report["latent_cache"] = str(data.cache.folder) if data.cache is not None else None
    out = Path(out) if out is not None else Path(checkpoint) / "eval"
    report["files"] = [str(out / name) for name in ("eval.json",) + PLOTS]
    write_report(report, out)
    return report


def run(args: argparse.Namespace) -> int:
    from dexwm_robot.config import ConfigError
    from dexwm_model.datasets.errors import DatasetFormatError
    from dexwm_model.training.config import load_eval_config
    from dexwm_model.training.data import parse_data_specs
    from dexwm_model.evaluation.report import non_finite_metrics
    from dexwm_model.weights_file import BadWeights

    try:
        overrides = {}
        if args.horizon_s is not None:
            overrides["horizon_s"] = args.horizon_s
        if args.max_episodes is not None:
            overrides["max_episodes"] = args.max_episodes
        if args.no_cache:
            overrides["latent_cache"] = False
        if args.device is not None:
            overrides["device"] = args.device
        cfg = load_eval_config(args.config, args.section, **overrides)
        report = evaluate_checkpoint(args.checkpoint, parse_data_specs(args.data), cfg, args.out, args.datasets,
                                     args.cache_dir, progress=not args.no_progress)
    except (ConfigError, DatasetFormatError, BadWeights, ValueError) as exc:
        print(f"dexwm eval: {exc}", file=sys.stderr)
        return 2
    brief = {k: report[k] for k in ("checkpoint", "episodes", "rollouts", "horizon_steps", "step_s", "summary",
                                    "files")}
    print(json.dumps(brief))
    bad = non_finite_metrics(report)
    if bad:
        print(f"dexwm eval: {args.checkpoint}: metrics {bad} are not finite (NaN or inf predictions, or no rollout "
              f"scored); the report in {report['files'][0]} shows them as null", file=sys.stderr)
        return 3
    return 0
