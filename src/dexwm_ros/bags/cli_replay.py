"""``dexwm replay BAG [--rate R] [--topics T ...] [--clock] [--delay S]``: republish a bag's raw messages with the
recorded timing (see :mod:`dexwm_ros.bags.replay`); prints the messages published per topic (JSON)."""

from __future__ import annotations

import argparse
import json
import sys
import threading


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="rosbag2 folder (with metadata.yaml)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="replay only these topics (default: all)")
    parser.add_argument("--clock", action="store_true", help="also publish /clock with the recorded times "
                        "(for nodes with use_sim_time)")
    parser.add_argument("--start", type=float, default=0.0, metavar="S", help="skip the first S seconds")
    parser.add_argument("--duration", type=float, metavar="S", help="replay S seconds at most")
    parser.add_argument("--delay", type=float, default=1.0, metavar="S",
                        help="seconds between creating the publishers and the first message (discovery)")


def run(args: argparse.Namespace) -> int:
    import rclpy

    from dexwm_ros.bags.errors import BagError
    from dexwm_ros.bags.replay import BagReplayer

    if args.delay < 0:
        raise SystemExit(f"--delay must be >= 0, got {args.delay}")
    rclpy.init()
    node = rclpy.create_node("dexwm_replay")
    stop = threading.Event()
    replayer = None
    try:
        replayer = BagReplayer(node, args.bag, args.topics, args.rate, args.clock, args.start, args.duration)
        stop.wait(args.delay)
        counts = replayer.play(stop)
    except (BagError, ValueError) as exc:
        print(f"dexwm replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        stop.set()
        counts = replayer.published if replayer is not None else {}
    finally:
        if replayer is not None:
            replayer.close()
        node.destroy_node()
        rclpy.try_shutdown()
    print(json.dumps({"bag": args.bag, "rate": args.rate, "published": counts}))
    return 0
