"""``dexwm data sim``: generate exploratory robot episodes in the simulator (resumable, parallel).

Lives in the top layer because it joins two layers: the simulator's episode generator (``dexwm_hw.sim.exploration``)
and the planner's scripted demonstrator, which it hands to the generator for the ``lift_replay`` episodes.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", type=int, required=True, help="number of episodes (indices 0..N-1)")
    parser.add_argument("--out", required=True, help="output folder (episode_XXXXXX.h5 files)")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes, one simulator each")
    parser.add_argument("--seed", type=int, default=None,
                        help="base seed: episode i uses seed+i (default: exploration.base_seed in data.yaml)")
    parser.add_argument("--config", default="data.yaml", help="parameter file (default: config/data.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexwm_hw.sim.exploration import DemonstratorUnavailable, generate, load_exploration_config, summary_json
    from dexwm_robot.config import ConfigError
    from dexwm_model.data.episode import load_writer_config

    if args.episodes < 1 or args.workers < 1:
        print(f"dexwm data sim: --episodes and --workers must be >= 1 (got {args.episodes}, {args.workers})",
              file=sys.stderr)
        return 2
    try:
        cfg = load_exploration_config(args.config)
        summary = generate(args.out, args.episodes, workers=args.workers, seed=args.seed, cfg=cfg,
                           writer=load_writer_config(args.config), progress=not args.no_progress,
                           plan_lift=_demonstrator() if cfg.kind_probability("lift_replay") > 0 else None)
    except (ConfigError, DemonstratorUnavailable, ValueError) as exc:
        print(f"dexwm data sim: {exc}", file=sys.stderr)
        return 2
    print(summary_json(summary))
    for failure in summary["failed"]:
        print(f"dexwm data sim: {failure['episode']} not written: {failure['error']}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _demonstrator():
    """The scripted demonstrator's ``plan_lift`` (module-level, so worker processes can unpickle it)."""
    from dexwm_hw.sim.exploration import DemonstratorUnavailable

    try:
        from dexwm_planner.tasks.demonstrator import plan_lift
    except ImportError as exc:
        raise DemonstratorUnavailable(
            f"exploration.mix.lift_replay needs the scripted demonstrator (dexwm_planner.tasks.demonstrator."
            f"plan_lift), which cannot be imported ({exc}); set that share to 0 in config/data.yaml to generate "
            "without it") from exc
    return plan_lift
