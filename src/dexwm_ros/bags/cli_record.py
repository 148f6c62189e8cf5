"""``dexwm record --out DIR [--topics T ...] [--duration S]``: the recorder node (``dexwm_recorder_node``) run in
this process with ``config/recorder_node.yaml`` and these overrides; Ctrl-C closes the bag cleanly."""

from __future__ import annotations

import argparse

from dexwm_ros.bags.writing import COMPRESSIONS, STORAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="bag folder to create (must not exist)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="topics to record (default: the run's topics "
                        "listed in config/recorder_node.yaml)")
    parser.add_argument("--duration", type=float, default=0.0, metavar="S",
                        help="stop after S seconds (default: until Ctrl-C)")
    parser.add_argument("--storage", choices=sorted(STORAGES), help="storage plugin (default: the config's)")
    parser.add_argument("--compression", choices=COMPRESSIONS, help="compression (default: the config's)")


def ros_arguments(args: argparse.Namespace) -> list[str]:
    """The node's ``--ros-args`` for these options (params file first, then the overrides)."""
    from dexwm_robot.config import config_dir

    if args.duration < 0:
        raise SystemExit(f"--duration must be >= 0, got {args.duration}")
    out = ["--ros-args", "--params-file", str(config_dir() / "recorder_node.yaml"), "-p", f"output:={args.out}",
           "-p", f"max_duration_s:={float(args.duration)}"]
    if args.topics:
        bad = [t for t in args.topics if not t.strip() or "," in t or " " in t]
        if bad:
            raise SystemExit(f"--topics: not topic names: {bad}")
        out += ["-p", "topics:=[" + ",".join(args.topics) + "]"]
    if args.storage:
        out += ["-p", f"storage:={args.storage}"]
    if args.compression:
        out += ["-p", f"compression:={args.compression}"]
    return out


def run(args: argparse.Namespace) -> int:
    from dexwm_ros.recorder_node import main

    return main(["dexwm_record", *ros_arguments(args)])
