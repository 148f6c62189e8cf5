"""``dexwm bench tasks``: closed-loop success rates of the goal-image MPC (or a baseline) on the task suites.

For every selected suite episode: build it with the suite code (start state, goal state for scoring, goal image;
or read a ``dexwm suite build`` folder with ``--goals``), reset the simulator to the start, then loop render ->
observe -> plan -> execute the waypoint(s) with the success monitor fed every control tick, until the success
test has held for ``hold_ticks`` ticks or ``mpc.max_steps`` replans (``config/mpc.yaml``).

Writes ``OUT/<task>/episode_XXXX.json`` (steps, costs, final distances, planning time per replan, loop rate,
failure category), ``OUT/<task>/episode_XXXX.gif`` for the first ``--record`` episodes (camera | goal image with
the predicted hand keypoints), ``OUT/rerun/<task>_<index>.rrd`` for the first ``--rerun`` episodes
(:class:`~dexwm_planner.recording.RunRecording`), ``OUT/summary.json``; prints the summary (JSON): per task the
success rate with its 95 % Wilson interval, failure categories, the loop rate (replans per second, images -> commands: render +
encode + plan) and wall time. ``--baseline still|random`` runs a baseline in the same harness (no checkpoint);
``--baseline diffusion --policy-checkpoint DIR`` runs the goal-image Diffusion Policy
(:mod:`dexwm_planner.baselines.diffusion_policy`, closed-loop settings in ``config/diffusion_policy.yaml``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

TASK_CHOICES = ("reach", "grasp", "place", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="DIR", help="world-model checkpoint folder (not needed with "
                                                            "--baseline)")
    parser.add_argument("--task", required=True, choices=TASK_CHOICES)
    parser.add_argument("--episodes", default="0-9", help="suite episode indices: ranges and lists, e.g. 0-9 or "
                                                          "0,3,7-9 (default 0-9)")
    parser.add_argument("--planner", choices=("cem", "mppi"), default=None,
                        help="search method (default: planner.method of config/planner.yaml)")
    parser.add_argument("--baseline", choices=("random", "still", "diffusion"), default=None,
                        help="run a baseline instead of the world-model planner")
    parser.add_argument("--policy-checkpoint", metavar="DIR",
                        help="Diffusion Policy checkpoint folder (with --baseline diffusion)")
    parser.add_argument("--profile", default=None,
                        help="planner profile from config/mpc.yaml planner_profiles (paper, cpu, quick; default: "
                             "cpu without CUDA, paper with)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", default="runs/bench_tasks", help="output folder (default runs/bench_tasks)")
    parser.add_argument("--record", type=int, default=1, metavar="N",
                        help="GIF recordings of the first N episodes of each task (default 1)")
    parser.add_argument("--rerun", type=int, default=0, metavar="N",
                        help="rerun recordings (OUT/rerun/<task>_<index>.rrd: camera, goal, predicted vs actual "
                             "hand keypoints, joints, costs; `rerun FILE.rrd` opens one) of the first N episodes of "
                             "each task (default 0)")
    parser.add_argument("--rerun-decoder", metavar="DIR",
                        help="latent decoder folder (`dexwm train decoder`) for the imagined frames of the rerun "
                             "recordings (one that does not fit the world model is noted in the recording)")
    parser.add_argument("--max-steps", type=int, default=None, help="replans per episode (default mpc.max_steps)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 is fastest on a busy machine)")
    parser.add_argument("--goals", metavar="DIR", help="read episodes and goal images from a `dexwm suite build "
                                                       "--out DIR` folder instead of building them")
    parser.add_argument("--privileged-goal-keypoints", action="store_true",
                        help="diagnostic, not the method: the planner's goal hand pixels are the FK projection of "
                             "the episode's goal state instead of the hand head on the goal image (how much of the "
                             "error is the goal keypoints' estimate); world-model planner only")


def parse_episodes(text: str) -> list[int]:
    """``"0-9"``, ``"3"``, ``"0,2,5-7"`` -> sorted unique indices."""
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError as exc:
            raise ValueError(f"--episodes: expected indices like 0-9 or 0,3,5-7, found {part!r} in {text!r}") \
                from exc
    if not out or min(out) < 0:
        raise ValueError(f"--episodes: expected at least one index >= 0, found {text!r}")
    return sorted(out)


def _stats(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not v.size:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    return {"mean": round(float(v.mean()), 5), "p50": round(float(np.percentile(v, 50)), 5),
            "p95": round(float(np.percentile(v, 95)), 5), "max": round(float(v.max()), 5)}


def summarize(task: str, records: list[dict], skipped: list[dict], wall_s: float) -> dict:
    """Success rate with its Wilson interval, failure categories, timings of one task's episodes."""
    from dexwm_planner.benchmark.stats import wilson_interval

    n = len(records)
    k = sum(bool(r["success"]) for r in records)
    lo, hi = wilson_interval(k, n)
    cats = Counter(r["failure"]["category"] for r in records if not r["success"])
    steps = [s for r in records for s in r["replans"]]
    loop_s = sum(s["render_s"] + s["observe_s"] + s["plan_s"] for s in steps)
    out = {
        "task": task, "episodes": n, "successes": k, "success_rate": round(k / n, 4) if n else None,
        "wilson_95": [round(lo, 4), round(hi, 4)],
        "failure_categories": dict(sorted(cats.items())),
        "replans": len(steps),
        "loop_rate_hz": round(len(steps) / loop_s, 3) if loop_s > 0 else None,
        "planning_time_s": _stats([s["plan_s"] for s in steps]),
        "observe_time_s": _stats([s["observe_s"] for s in steps]),
        "render_time_s": _stats([s["render_s"] for s in steps]),
        "rerun_log_time_s": _stats([s.get("rerun_log_s") for s in steps]),
        "steps_per_episode": _stats([r["steps"] for r in records]),
        "final_distance": _stats([r["final_distance"] for r in records]),
        "sim_time_s_per_episode": _stats([r["sim_time_s"] for r in records]),
        "wall_s": round(wall_s, 2), "wall_s_per_episode": round(wall_s / max(n, 1), 3),
    }
    if task == "grasp":
        out["lifted_rate"] = round(sum(bool(r.get("lifted")) for r in records) / n, 4) if n else None
    if skipped:
        out["skipped"] = skipped
    return out


def _episodes(task: str, indices: list[int], sim, cfg, goals_dir: str | None):
    """Yield ``(spec, build_s, skip_reason)`` per selected episode."""
    from dexwm_planner.tasks import suite as S

    if goals_dir is not None:
        built = {s.index: s for s in S.load_build(task, goals_dir)}
        missing = [i for i in indices if i not in built]
        if missing:
            raise SystemExit(f"--goals {goals_dir}: the {task} build has no episode(s) {missing}")
        for i in indices:
            spec = built[i]
            yield spec, 0.0, None if spec.goal_image is not None else "the build has no goal image"
        return
    entries = S.select(S.load_suite(task), indices)
    for e in entries:
        t0 = time.perf_counter()
        ((spec, outcome),) = S.build_suite(task, [e], sim, cfg, render=True)
        reason = None if spec.goal_image is not None else "the scripted demonstration failed: no goal image"
        yield spec, time.perf_counter() - t0, reason


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    from dexwm_hw.sim.robot import PandaAllegroSim
    from dexwm_planner.benchmark.harness import load_bench_config, run_closed_loop
    from dexwm_planner.benchmark.policies import RandomPolicy, StillPolicy
    from dexwm_planner.benchmark.recording import FrameRecorder
    from dexwm_planner.mpc import build_mpc, load_mpc_config
    from dexwm_planner.planners.config import load_planner_config
    from dexwm_planner.planners.planner import resolve_device
    from dexwm_planner.tasks.cli_demo import save_video
    from dexwm_planner.tasks.config import TASKS, load_tasks_config

    try:
        indices = parse_episodes(args.episodes)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    if args.baseline is None and not args.checkpoint:
        raise SystemExit("bench tasks: --checkpoint DIR is required (or run a --baseline)")
    if (args.baseline == "diffusion") != bool(args.policy_checkpoint):
        raise SystemExit("bench tasks: --baseline diffusion needs --policy-checkpoint DIR, and --policy-checkpoint "
                         "is only used with --baseline diffusion")
    if args.record < 0:
        raise SystemExit(f"--record: expected a number of episodes >= 0, found {args.record}")
    if args.rerun < 0:
        raise SystemExit(f"--rerun: expected a number of episodes >= 0, found {args.rerun}")
    if args.rerun_decoder and (args.baseline is not None or args.rerun == 0):
        raise SystemExit("--rerun-decoder: only used with the world-model planner and --rerun N > 0")
    mpc_cfg = load_mpc_config()
    bench_cfg = load_bench_config()
    tasks_cfg = load_tasks_config()
    max_steps = mpc_cfg.max_steps if args.max_steps is None else args.max_steps
    if max_steps < 1:
        raise SystemExit(f"--max-steps: expected a positive integer, found {max_steps}")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads: expected a positive integer, found {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    profile = args.profile or ("cpu" if device.type == "cpu" else "paper")
    tasks = TASKS if args.task == "all" else (args.task,)
    out_dir = Path(args.out)
    model = None
    if args.baseline is None:
        from dexwm_model.world_model import WorldModel

        model = WorldModel.load(args.checkpoint, map_location="cpu")
    diffusion = None
    if args.baseline == "diffusion":
        from dexwm_planner.baselines.diffusion_policy import (DiffusionPolicy, PolicyCheckpointError,
                                                              load_closed_loop_config)

        try:
            diffusion = (DiffusionPolicy.load(args.policy_checkpoint, map_location=device), load_closed_loop_config())
        except PolicyCheckpointError as exc:
            raise SystemExit(f"bench tasks: {exc}") from exc
    sim = PandaAllegroSim(render=True)
    t_all = time.perf_counter()
    report: dict = {"benchmark": "tasks", "policy": args.baseline or "world_model_mpc",
                    "checkpoint": str(args.policy_checkpoint) if diffusion else
                    None if args.baseline else str(args.checkpoint), "profile": profile,
                    "device": str(device), "cpu": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "max_steps": max_steps, "episodes": indices,
                    "out": str(out_dir), "tasks": {}}
    try:
        for task in tasks:
            if model is not None:
                policy = build_mpc(model, task, profile, args.planner, str(device), mpc_cfg)
                pc = policy.planner.config
                report.setdefault("planner", {})[task] = {
                    "method": pc.planner.method, "samples": pc.planner.samples, "horizon": pc.planner.horizon,
                    "iterations": pc.planner.iterations, "elites": pc.planner.elites,
                    "execute_steps": pc.planner.execute_steps, "hand_source": pc.cost.hand_source,
                    "dtype": policy.planner.dtype_label,
                    "context_frames": policy.config.context_frames, "waypoint_duration_s": policy.waypoint_duration_s,
                    "goal_keypoints": "goal state FK (privileged)" if args.privileged_goal_keypoints else "hand head"}
                recorder = FrameRecorder(policy, bench_cfg.keypoint_radius_px)
            elif diffusion is not None:
                from dexwm_planner.baselines.diffusion_policy import DiffusionPolicyController

                dp, loop = diffusion
                policy = DiffusionPolicyController(dp, (sim.joint_low, sim.joint_high), loop.execute_steps,
                                                   loop.waypoint_duration_s, device=device)
                report.setdefault("planner", {})[task] = {
                    "method": "diffusion_policy", "horizon": dp.horizon, "execute_steps": loop.execute_steps,
                    "inference_steps": dp.scheduler_config.inference_steps,
                    "waypoint_duration_s": loop.waypoint_duration_s}
                recorder = FrameRecorder(None, bench_cfg.keypoint_radius_px)
            else:
                wd = mpc_cfg.waypoint_duration_s or load_planner_config(task).planner.step_dt
                limits = (sim.joint_low, sim.joint_high)
                policy = (StillPolicy(limits, wd) if args.baseline == "still" else
                          RandomPolicy(limits, wd, bench_cfg.random_step_arm, bench_cfg.random_step_hand))
                recorder = FrameRecorder(None, bench_cfg.keypoint_radius_px)
            folder = out_dir / task
            folder.mkdir(parents=True, exist_ok=True)
            records, skipped = [], []
            t_task = time.perf_counter()
            for n, (spec, build_s, reason) in enumerate(_episodes(task, indices, sim, tasks_cfg, args.goals)):
                if reason is not None:
                    skipped.append({"episode": spec.index, "reason": reason})
                    continue
                if isinstance(policy, RandomPolicy) or diffusion is not None:
                    policy.seed(spec.seed)
                record_gif = len(records) < args.record
                rrd = None
                if len(records) < args.rerun:
                    from dexwm_planner.recording import RunRecording

                    try:
                        rrd = RunRecording(out_dir / "rerun" / f"{task}_{spec.index}.rrd",
                                           policy if model is not None else None, args.rerun_decoder,
                                           name=f"{task} episode {spec.index}")
                    except ValueError as exc:
                        raise SystemExit(f"--rerun: {exc}") from exc
                try:
                    result = run_closed_loop(sim, spec, policy, tasks_cfg.success, bench_cfg, max_steps,
                                             recorder if record_gif else None, rrd,
                                             privileged_goal_keypoints=args.privileged_goal_keypoints)
                finally:
                    if rrd is not None:
                        rrd.close()
                rec = result.record
                rec["rerun"] = None if rrd is None else {"file": str(rrd.path), "log_s": rrd.overhead()}
                rec["policy"] = report["policy"]
                rec["build_s"] = round(build_s, 3)
                rec["gif"] = None
                if record_gif and result.frames:
                    gif = folder / f"episode_{spec.index:04d}.gif"
                    save_video(result.frames, gif, bench_cfg.gif_fps)
                    rec["gif"] = str(gif)
                (folder / f"episode_{spec.index:04d}.json").write_text(json.dumps(rec, indent=1) + "\n")
                records.append(rec)
                print(json.dumps({"task": task, "episode": spec.index, "success": rec["success"],
                                  "steps": rec["steps"], "final_distance": rec["final_distance"],
                                  "failure": rec["failure"]["category"], "loop_rate_hz": rec["loop_rate_hz"],
                                  "wall_s": rec["wall_s"]}), file=sys.stderr, flush=True)
            report["tasks"][task] = summarize(task, records, skipped, time.perf_counter() - t_task)
    finally:
        sim.close()
    report["wall_s"] = round(time.perf_counter() - t_all, 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0
