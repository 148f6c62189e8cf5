"""``dexwm launch TASK``: start the task's ROS 2 graph (:func:`dexwm_ros.launch_graph.graph.describe`) here.

Every node runs as a process (``<exe> --ros-args -r __node:=<name> --params-file ... -p k:=v``) with its output
prefixed by its name. A node that dies stops the whole graph (SIGINT, then SIGTERM, then SIGKILL) and the command
exits 1, as it does when the planner's task ends without success (the planner exits 3 then, and the outcome line
says why); Ctrl-C (or SIGTERM) is forwarded to every node; ``--timeout`` bounds the task (exit 3 when it runs
out); ``--duration`` stops a healthy graph after that many seconds (exit 0). Nodes that are not installed are
listed and left out. While the graph runs, the nodes and topics it shows are collected through rclpy's graph API
and printed at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from dexwm_ros.launch_graph.episode import with_suite_episode
from dexwm_ros.launch_graph.graph import ARGUMENTS, BACKENDS, RESULT_FILE, TASKS, Graph, describe

EXIT_BAD_ARGUMENTS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=TASKS, help="the task the planner runs")
    parser.add_argument("--backend", choices=BACKENDS, default="sim", help="sim (default) or real robot")
    help_of = {a.name: a.description for a in ARGUMENTS}
    parser.add_argument("--goal-image", dest="goal_image", default="", help=help_of["goal_image"])
    parser.add_argument("--checkpoint", default="", help=help_of["checkpoint"])
    parser.add_argument("--rviz", action="store_true", help=help_of["rviz"])
    parser.add_argument("--record", action="store_true", help=help_of["record"])
    parser.add_argument("--seed", type=int, default=0, help=help_of["seed"])
    parser.add_argument("--episode", type=int, default=0, help=help_of["episode"])
    parser.add_argument("--serve", action="store_true", help=help_of["serve"])
    parser.add_argument("--episode-file", dest="episode_file", default="", help=help_of["episode_file"])
    parser.add_argument("--duration", type=float, default=None,
                        help="stop the graph after this many seconds and exit 0 if every node was healthy")
    parser.add_argument("--timeout", type=float, default=None,
                        help="give up (exit 3) if the task has not finished after this many seconds")
    parser.add_argument("--no-introspect", dest="introspect", action="store_false",
                        help="do not watch the ROS graph (nodes and topics) while it runs")
    parser.add_argument("--dry-run", action="store_true", help="print the graph and the commands, start nothing")


def print_graph(graph: Graph, out) -> None:
    args = " ".join(f"{k}:={v!r}" if v == "" else f"{k}:={v}" for k, v in graph.arguments.items())
    out.write(f"[launch] graph for task '{graph.task}' on backend '{graph.backend}' ({args})\n")
    for node in graph.active_nodes():
        out.write(f"[launch]   node {node.name:<22} {node.package}/{node.executable}  - {node.description}\n")
    for m in graph.active_missing():
        out.write(f"[launch]   MISSING {m.node.name:<19} {m.reason}\n")
    for ext in graph.external:
        topics = ", ".join(f"{t.name} ({t.direction} {t.type})" for t in ext.topics)
        out.write(f"[launch]   external {ext.name}: start with `{ext.command}`; topics {topics}\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    from dexwm_ros.launch_graph.commands import process_specs
    from dexwm_ros.launch_graph.supervisor import Supervisor, load_launch_config

    out = sys.stdout
    for name in ("duration", "timeout"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            print(f"dexwm launch: --{name} must be a positive number of seconds, got {value}", file=sys.stderr)
            return EXIT_BAD_ARGUMENTS
    arguments = dict(goal_image=args.goal_image, checkpoint=args.checkpoint, rviz=args.rviz, record=args.record,
                     seed=args.seed, episode=args.episode, episode_file=args.episode_file, serve=args.serve)
    try:
        if not args.dry_run:
            arguments = with_suite_episode(args.task, args.backend, arguments,
                                           say=lambda text: out.write(f"[launch] {text}\n"))
        graph = describe(args.task, args.backend, **arguments)
        config = load_launch_config()
    except ValueError as exc:
        print(f"dexwm launch: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    print_graph(graph, out)
    specs = process_specs(graph)
    if args.dry_run:
        for spec in specs:
            out.write(f"[launch] {spec.name}: {' '.join(spec.cmd)}\n")
        return 0
    if not specs:
        print("dexwm launch: no node of this graph is installed", file=sys.stderr)
        return 1
    if not graph.ends_on_its_own() and args.duration is None:
        out.write("[launch] no installed node finishes the task (planner missing): the graph runs until Ctrl-C, "
                  "--duration or --timeout\n")

    supervisor = Supervisor(specs, config, out=out)
    previous = {s: signal.signal(s, lambda *_: supervisor.interrupt()) for s in (signal.SIGINT, signal.SIGTERM)}
    watcher = None
    try:
        if args.introspect:
            watcher = _watcher(supervisor)
        supervisor.start()
        expected = {"/" + n.name for n in graph.active_nodes()}
        poll = _sampler(watcher, config.introspection_period_s, expected, supervisor) if watcher else None
        outcome = supervisor.run(duration=args.duration, timeout=args.timeout, on_poll=poll)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if watcher is not None:
        watcher.sample()
        supervisor.say(watcher.report())
        unseen = sorted(expected - watcher.nodes)
        if unseen:
            supervisor.say(f"graph nodes never seen on the ROS graph: {', '.join(unseen)}")
        watcher.close()
    if graph.arguments["episode_file"]:
        supervisor.say(task_outcome(Path(graph.arguments["episode_file"]).parent / RESULT_FILE, graph.task))
    supervisor.say(f"{outcome.reason} -> dexwm launch exits {outcome.code}")
    return outcome.code


def task_outcome(result_file: Path, task: str) -> str:
    """One line on how the task ended, from the planner's result file."""
    try:
        result = json.loads(result_file.read_text())
    except FileNotFoundError:
        return f"task outcome: {task} ended without a result ({result_file} was not written)"
    except (OSError, ValueError) as exc:
        return f"task outcome: {task}: unreadable result file {result_file}: {exc}"
    metrics = result.get("metrics", {})
    shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                      if k in ("keypoint_distance_m", "object_distance_m", "wrist_object_distance_m",
                               "loop_rate_hz", "mean_replan_time_s", "mean_image_to_command_s"))
    return (f"task outcome: {task} {'SUCCEEDED' if result.get('success') else 'FAILED'} ({result.get('reason')}) "
            f"after {result.get('steps')} steps in {result.get('duration_s')} s"
            + (f"; {shown}" if shown else "") + (f"; {result['message']}" if result.get("message") else "")
            + f" [{result_file}]")


def _watcher(supervisor):
    try:
        from dexwm_ros.launch_graph.introspect import GraphWatcher

        return GraphWatcher()
    except ImportError as exc:
        supervisor.say(f"rclpy not available ({exc}): the ROS graph is not watched")
        return None


def _sampler(watcher, period: float, expected: set[str], supervisor):
    """Sample the ROS graph every ``period`` s; say once when every node of the graph has appeared on it."""
    import time

    started = time.monotonic()
    state = {"last": 0.0, "all_up": False}

    def poll() -> None:
        now = time.monotonic()
        if now - state["last"] < period:
            return
        state["last"] = now
        watcher.sample()
        if not state["all_up"] and expected <= watcher.nodes:
            state["all_up"] = True
            supervisor.say(f"all {len(expected)} nodes are on the ROS graph after {now - started:.1f} s")

    return poll
