"""``dexwm suite create|build|check|report``: the fixed reach / grasp / place suites.

- ``create --task T [--episodes N]``: draw new episodes and write ``config/suites/T.json`` (run once, commit);
- ``build --task T --out DIR [--report]``: regenerate start, goal state and goal image of every episode;
- ``check --task T [--limit N]``: build twice in fresh simulators and compare (determinism), JSON verdict;
- ``report --task T``: the scripted demonstrator's success rates and seconds per episode, JSON.
``--task all`` runs the three tasks in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("create", "build", "check", "report"))
    parser.add_argument("--task", required=True, choices=("reach", "grasp", "place", "all"))
    parser.add_argument("--out", help="build: output folder (DIR/<task>/episodes.json + goals.npz); "
                                      "create: suite file (default config/suites/<task>.json)")
    parser.add_argument("--episodes", type=str, default=None,
                        help="create: how many episodes (default suite.episodes in tasks.yaml); "
                             "build/check/report: comma-separated episode indices")
    parser.add_argument("--limit", type=int, default=None, help="only the first N episodes")
    parser.add_argument("--report", action="store_true", help="build: also print the demonstrator's report")
    parser.add_argument("--png", action="store_true", help="build: also write goal_XXXX.png files")
    parser.add_argument("--against", help="check: also compare with a previous build in this folder")
    parser.add_argument("--include-rejected", action="store_true",
                        help="report: also run the episodes the suite's creation rejected (unbiased rate)")


def _indices(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise SystemExit(f"--episodes expects comma-separated integers, got '{text}'") from exc


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexwm_hw.sim.robot import PandaAllegroSim
    from dexwm_planner.tasks import suite as S
    from dexwm_planner.tasks.config import TASKS, load_tasks_config

    cfg = load_tasks_config()
    tasks = TASKS if args.task == "all" else (args.task,)
    status = 0
    for task in tasks:
        if args.action == "create":
            n = int(args.episodes) if args.episodes else cfg.suite.episodes
            sim = PandaAllegroSim(render=False)
            suite = S.create_suite(task, n, sim, cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
            path = args.out if (args.out and len(tasks) == 1) else S.suite_path(task)
            S.write_suite(suite, path)
            print(json.dumps({"task": task, "written": str(path), **{k: suite["creation"][k]
                                                                     for k in ("draws", "kept")}}))
            if suite["creation"]["kept"] < n:
                status = 1
            continue
        suite = S.load_suite(task)
        entries = S.select(suite, _indices(args.episodes), args.limit)
        if args.action == "build":
            if not args.out:
                raise SystemExit("suite build needs --out DIR")
            sim = PandaAllegroSim(render=True)
            t0 = time.perf_counter()
            built = S.build_suite(task, entries, sim, cfg)
            folder = S.save_build(task, [s for s, _ in built], args.out, png=args.png)
            failed = [s.index for s, o in built if not o["success"]]
            print(json.dumps({"task": task, "built": len(built), "out": str(folder), "failed": failed,
                              "wall_s": round(time.perf_counter() - t0, 1)}))
            if args.report:
                print(json.dumps(S.report(task, [o for _, o in built], suite)))
            status |= int(bool(failed))
            sim.close()
        elif args.action == "check":
            runs = []
            for _ in range(2):
                sim = PandaAllegroSim(render=True)
                runs.append([s for s, _ in S.build_suite(task, entries, sim, cfg)])
                sim.close()
            diffs = S.compare_specs(runs[0], runs[1])
            if args.against:
                previous = {s.index: s for s in S.load_build(task, args.against)}
                missing = [s.index for s in runs[0] if s.index not in previous]
                diffs += [f"episode {i}: not in {args.against}" for i in missing]
                diffs += S.compare_specs([s for s in runs[0] if s.index in previous],
                                         [previous[s.index] for s in runs[0] if s.index in previous])
            print(json.dumps({"task": task, "episodes": len(entries), "deterministic": not diffs,
                              "differences": diffs[:20]}))
            status |= int(bool(diffs))
        else:
            sim = PandaAllegroSim(render=False)
            print(json.dumps(S.run_report(task, sim, cfg, entries if (args.episodes or args.limit) else None,
                                          include_rejected=args.include_rejected)))
    return status
