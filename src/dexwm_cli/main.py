"""The ``dexwm`` command. Each sub-command lives with the code it drives; this file only dispatches to it.

A sub-command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when
used, so ``dexwm --help`` stays fast and a missing optional dependency affects only its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# "group command" -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("dexwm_planner.tasks.cli_demo", "run the scripted demonstrator on one task episode in simulation"),
    "suite": ("dexwm_planner.tasks.cli_suite", "generate / check the fixed reach, grasp and place suites"),
    "data sim": ("dexwm_cli.data_sim", "generate exploratory robot episodes in the simulator"),
    "data check": ("dexwm_model.data.cli_check", "validate episodes written in our dataset format"),
    "train encoder": ("dexwm_model.encoders.ssl.train", "train the dexwm_vit image encoder (MAE) on sim episodes"),
    "train decoder": ("dexwm_model.decoder.train", "train the latent -> image decoder on frozen encoder tokens"),
    "train hand-depth": ("dexwm_model.training.hand_depth", "give a world model a hand depth head (camera depth of the hand keypoints)"),
    "train diffusion-policy": ("dexwm_planner.baselines.diffusion_policy.train",
                               "train the goal-image Diffusion Policy baseline on robot episodes (hindsight goals)"),
    "bench sim": ("dexwm_hw.sim.bench", "measure simulator physics steps/s and render fps (JSON)"),
    "bench sim-node": ("dexwm_ros.sim_node_bench", "measure the sim ROS node's achieved control and camera rates (JSON)"),
    "bench fk": ("dexwm_model.kinematics.bench", "measure batched forward-kinematics calls/s and joint-vectors/s (JSON)"),
    "bench plan": ("dexwm_planner.planners.bench", "time CEM/MPPI planning per iteration and replan vs the reference pattern (JSON)"),
    "bench diagnose": ("dexwm_planner.benchmark.diagnose", "score the demonstration, holding still and random plans under the planning cost: model vs search failure (JSON)"),
    "bench tasks": ("dexwm_planner.benchmark.cli", "closed-loop MPC (or baseline) success rates on the task suites, with recordings (JSON)"),
    "launch": ("dexwm_ros.launch_graph.cli", "start a task's ROS 2 graph (sim or real backend) and watch it"),
    "train world-model": ("dexwm_model.training.cli", "train / fine-tune the latent world model (DDP-capable)"),
    "eval": ("dexwm_model.evaluation.cli", "open-loop world-model evaluation: latent error and hand PCK per step"),
    "record": ("dexwm_ros.bags.cli_record", "record the run's topics into a rosbag2 bag (MCAP, zstd)"),
    "replay": ("dexwm_ros.bags.cli_replay", "republish a bag's raw messages with the recorded timing"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dexwm", description="DexWM on ROS 2 command line")
    sub = parser.add_subparsers(dest="group", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (module, help_text) in COMMANDS.items():
        parts = name.split()
        if len(parts) == 1:
            p = sub.add_parser(parts[0], help=help_text)
        else:
            if parts[0] not in groups:
                gp = sub.add_parser(parts[0], help=f"{parts[0]} commands")
                groups[parts[0]] = gp.add_subparsers(dest="command", required=True)
            p = groups[parts[0]].add_parser(parts[1], help=help_text)
        p.set_defaults(_module=module)
        _lazy_arguments(p, module)
    return parser


def _lazy_arguments(parser: argparse.ArgumentParser, module: str) -> None:
    """Add the sub-command's arguments only when that sub-command was asked for (keeps start-up light)."""
    argv = sys.argv[1:]
    wanted = next(k for k, (m, _) in COMMANDS.items() if m == module).split()
    if argv[: len(wanted)] == wanted:
        importlib.import_module(module).add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)
    args = build_parser().parse_args()
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
