"""``dexwm bench diagnose``: can the world model's planning cost tell a good plan from none?

Model failure and search failure look the same in a closed-loop success rate. This diagnostic separates them: at
points along each suite episode's scripted demonstration (the demonstrator's own run in simulation, the camera
frames it saw as context, exactly as :class:`~dexwm_planner.mpc.GoalImageMPC` keeps them) it scores, under the
planner's cost,

* ``demo``: the demonstrator's own joint path from that point on, resampled at the planner's waypoint spacing
  (waypoint k = the demonstrated joints ``k * spacing`` seconds later; default spacing the planner's ``step_dt``);
* ``still``: holding the current joints for T waypoints;
* ``random``: N plans drawn from the planner's initial distribution (mean = hold still, std = the initial std,
  clamped to the joint limits) -- what the search starts from.

Reported per point: the demonstration's percentile among the random plans (share of random plans that cost less,
in %: 0 = better than all of them), the gap ``still - demo`` (> 0: the model prefers the demonstration to doing
nothing), and the same for each cost term alone (latent; hand keypoints by projected FK). Because the terms are
kept apart, the percentile is also given for a list of hand-term weights (``--hand-weights``): the calibration
of ``cost.hand_weight`` in ``config/planner.yaml``. The hand head's error on the goal image (its goal keypoints
against the goal state's projected FK) is reported too: the hand term can be no better than it.

A point counts as *ranked* when the demonstration is in the best ``--top`` % (default 5); an episode counts when
the median percentile over its points is. Output: one JSON document (stdout, and ``--out FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_FRACTIONS = (0.1, 0.3, 0.5, 0.7)
DEFAULT_HAND_WEIGHTS = (0.0, 0.001, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # spans the paper's 0.001 to the calibrated values


@dataclass
class DemoTrace:
    """The demonstration as the robot's camera and joint encoders saw it."""

    times: np.ndarray  # (n,) s since the first control tick
    joints: np.ndarray  # (n, 23) measured joints per control tick
    frame_times: list[float] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)  # camera images, one per frame_period

    def joints_at(self, t: float) -> np.ndarray:
        """Measured joints at time ``t`` (linear between ticks, held after the end)."""
        t = float(np.clip(t, self.times[0], self.times[-1]))
        return np.stack([np.interp(t, self.times, self.joints[:, j]) for j in range(self.joints.shape[1])])


def record_demonstration(sim, task: str, entry: dict, cfg, frame_period: float):
    """Run the suite episode's scripted demonstration, keeping the joints every tick and a camera frame every
    ``frame_period`` s. Returns ``(spec, trace)``; ``spec.goal_image`` is None when the demonstration failed."""
    from dexwm_planner.tasks.episodes import run_episode

    times: list[float] = []
    joints: list[np.ndarray] = []
    trace = DemoTrace(np.zeros(0), np.zeros((0, 23)))
    t0: list[float] = []

    def on_tick(s) -> None:
        if not t0:
            t0.append(float(s.time))
        t = float(s.time) - t0[0]
        times.append(t)
        joints.append(np.array(s.joints, dtype=np.float64))
        if not trace.frame_times or t >= trace.frame_times[-1] + frame_period - 1e-9:
            trace.frame_times.append(t)
            trace.frames.append(s.render())

    spec, _ = run_episode(sim, task, entry, cfg, on_tick=on_tick, render_goal=True)
    trace.times = np.asarray(times, dtype=np.float64)
    trace.joints = np.stack(joints) if joints else np.zeros((0, 23))
    return spec, trace


def percentile_of(value: float, population: np.ndarray) -> float:
    """Share (in %) of ``population`` strictly below ``value``."""
    return float(100.0 * np.mean(population < value)) if population.size else float("nan")


def rank_plans(latent: np.ndarray, hand: np.ndarray, rest: np.ndarray, hand_weight: float) -> dict:
    """Rows 0 = demo, 1 = still, 2.. = random; per-plan step-weighted terms -> percentile and gap."""
    total = latent + hand_weight * hand + rest
    rnd = total[2:]
    return {"demo_percentile": round(percentile_of(total[0], rnd), 2),
            "still_percentile": round(percentile_of(total[1], rnd), 2),
            "gap_still_minus_demo": round(float(total[1] - total[0]), 6),
            "demo_cost": round(float(total[0]), 6), "still_cost": round(float(total[1]), 6),
            "random_cost_p5_p50": [round(float(np.percentile(rnd, 5)), 6), round(float(np.percentile(rnd, 50)), 6)]}


def score_point(mpc, spec, trace: DemoTrace, frame_index: int, samples: int, spacing: float, hand_weights,
                rng: np.random.Generator) -> dict:
    """Score demo / still / random plans at camera frame ``frame_index`` of the demonstration."""
    import torch

    from dexwm_planner.planners.cost import hand_distance

    planner = mpc.planner
    mpc.set_goal(spec.goal_image, spec.task)
    # the frames the MPC loop would hold at this point (the trace keeps one frame per frame_period already)
    for i in range(max(0, frame_index - mpc.config.context_frames + 1), frame_index + 1):
        t = trace.frame_times[i]
        mpc.observe(trace.frames[i], trace.joints_at(t), t)
    obs = mpc.observation()
    state = planner.prepare(obs)
    t_now = trace.frame_times[frame_index]
    q0 = trace.joints_at(t_now)
    horizon = planner.horizon
    demo = np.stack([trace.joints_at(t_now + (k + 1) * spacing) for k in range(horizon)])
    still = np.repeat(q0[None], horizon, 0)
    low = planner.joint_low.cpu().double().numpy()
    high = planner.joint_high.cpu().double().numpy()
    std = planner.init_std.cpu().double().numpy()
    rnd = np.clip(still[None] + std * rng.standard_normal((samples, horizon, q0.size)), low, high)
    plans = torch.as_tensor(np.concatenate([demo[None], still[None], rnd]), dtype=torch.float32)
    det = planner.evaluate(state, plans, details=True)
    w = state.weights.to(torch.float64)
    goal_uv = state.goal_uv if state.goal_uv is not None else planner.goal_keypoints(state.goal[0])
    fk_hand = (hand_distance(det.fk_uv, goal_uv, planner.camera.image_hw).double() * w).sum(-1).cpu().numpy()
    latent = (det.latent.double() * w).sum(-1).cpu().numpy()
    cfg = planner.config.cost
    configured_hand = np.zeros_like(latent)
    if cfg.uses_hand:  # the hand term as configured: FK or the hand head on the predicted latents
        configured_hand = fk_hand if cfg.hand_source == "fk" else (det.hand.double() * w).sum(-1).cpu().numpy()
    # orientation and workspace terms: whatever the total holds beyond the latent and the hand term
    other = det.total.double().cpu().numpy() - latent - (cfg.hand_weight if cfg.uses_hand else 0.0) * configured_hand
    zero = np.zeros_like(latent)
    return {"t_s": round(t_now, 3), "context_frames": int(obs.context.shape[0]),
            "demo_move_rad": round(float(np.abs(demo[-1] - q0).max()), 4),
            "configured": rank_plans(latent, configured_hand, other, cfg.hand_weight if cfg.uses_hand else 0.0),
            "latent_only": rank_plans(latent, zero, zero, 0.0),
            "hand_only": rank_plans(zero, fk_hand, zero, 1.0),
            "by_hand_weight": {str(hw): rank_plans(latent, fk_hand, other, hw) for hw in hand_weights}}


def goal_keypoint_error(planner, spec, goal_latent) -> float:
    """Mean pixel error of the hand head's goal keypoints against the goal state's projected FK."""
    import torch

    q = torch.as_tensor(np.asarray(spec.goal_joints, dtype=np.float64), dtype=torch.float32, device=planner.device)
    true = planner.kin.evaluate(q, q[None, None], hand=True, orientation=False).hand_uv[0, 0].double()
    head = planner.goal_keypoints(goal_latent).double()
    ok = torch.isfinite(true).all(-1) & torch.isfinite(head).all(-1)
    return float(torch.linalg.vector_norm(true[ok] - head[ok], dim=-1).mean()) if bool(ok.any()) else float("nan")


def summarize(points: list[dict], episodes: list[dict], top: float, hand_weights) -> dict:
    def share(values: list[float]) -> float | None:
        v = [x for x in values if x == x]
        return round(float(np.mean([x <= top for x in v])), 4) if v else None

    def block(key: str, sub: str | None = None) -> dict:
        get = (lambda p: p[key]) if sub is None else (lambda p: p[key][sub])
        pts = [get(p)["demo_percentile"] for p in points]
        eps = [float(np.median([get(p)["demo_percentile"] for p in e["points"]])) for e in episodes if e["points"]]
        return {"points_ranked": share(pts), "episodes_ranked": share(eps),
                "median_demo_percentile": round(float(np.median(pts)), 2) if pts else None,
                "mean_gap_still_minus_demo": round(float(np.mean([get(p)["gap_still_minus_demo"] for p in points])), 6)
                if points else None}

    return {"top_percent": top, "points": len(points), "episodes": len(episodes),
            "configured": block("configured"), "latent_only": block("latent_only"), "hand_only": block("hand_only"),
            "by_hand_weight": {str(hw): block("by_hand_weight", str(hw)) for hw in hand_weights},
            "goal_keypoint_error_px": round(float(np.nanmean([e["goal_keypoint_error_px"] for e in episodes])), 3)
            if episodes else None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="DIR", required=True, help="world-model checkpoint folder")
    parser.add_argument("--task", required=True, choices=("reach", "grasp", "place", "all"))
    parser.add_argument("--episodes", default="0-19", help="suite episode indices (default 0-19)")
    parser.add_argument("--samples", type=int, default=256, help="random plans per point (default 256)")
    parser.add_argument("--fractions", default=",".join(str(f) for f in DEFAULT_FRACTIONS),
                        help="points along the demonstration, as fractions of its duration (default 0.1,0.3,0.5,0.7)")
    parser.add_argument("--spacing", type=float, default=None,
                        help="s between the demonstration's waypoints (default: the planner's step_dt)")
    parser.add_argument("--hand-weights", default=",".join(str(w) for w in DEFAULT_HAND_WEIGHTS),
                        help="hand-term weights to rank under as well (calibration of cost.hand_weight)")
    parser.add_argument("--top", type=float, default=5.0, help="'ranked' = demo in the best TOP %% (default 5)")
    parser.add_argument("--profile", default="cpu", help="planner profile of config/mpc.yaml (default cpu)")
    parser.add_argument("--planner-config", metavar="FILE", default=None,
                        help="planner parameter file instead of config/planner.yaml (with its task overrides)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", metavar="FILE", default=None, help="also write the JSON here")


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError as exc:
        raise SystemExit(f"{what}: expected comma-separated numbers, found {text!r}") from exc
    if not vals:
        raise SystemExit(f"{what}: expected at least one number")
    return vals


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    from dexwm_hw.sim.robot import PandaAllegroSim
    from dexwm_model.world_model import WorldModel
    from dexwm_planner.benchmark.cli import parse_episodes
    from dexwm_planner.mpc import build_mpc, load_mpc_config
    from dexwm_planner.tasks import suite as S
    from dexwm_planner.tasks.config import TASKS, load_tasks_config

    try:
        indices = parse_episodes(args.episodes)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    fractions = _floats(args.fractions, "--fractions")
    if any(not 0 <= f < 1 for f in fractions):
        raise SystemExit(f"--fractions: expected values in [0, 1), found {fractions}")
    hand_weights = _floats(args.hand_weights, "--hand-weights")
    if args.samples < 1:
        raise SystemExit(f"--samples: expected a positive integer, found {args.samples}")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        model = WorldModel.load(args.checkpoint, map_location="cpu")
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"bench diagnose: {exc}") from exc
    mpc_cfg = load_mpc_config()
    tasks_cfg = load_tasks_config()
    sim = PandaAllegroSim(render=True)
    rng = np.random.default_rng(args.seed)
    report: dict = {"benchmark": "diagnose", "checkpoint": str(args.checkpoint), "profile": args.profile,
                    "samples": args.samples, "fractions": fractions, "episodes": indices, "tasks": {}}
    t_all = time.perf_counter()
    try:
        for task in (TASKS if args.task == "all" else (args.task,)):
            mpc = build_mpc(model, task, args.profile, None, "cpu", mpc_cfg, planner_file=args.planner_config)
            spacing = args.spacing or mpc.planner.config.planner.step_dt
            pc = mpc.planner.config
            episodes, points = [], []
            for entry in S.select(S.load_suite(task), indices):
                spec, trace = record_demonstration(sim, task, entry, tasks_cfg, mpc_cfg.frame_period_s)
                if spec.goal_image is None or not trace.frames:
                    episodes.append({"episode": spec.index, "skipped": "the demonstration failed", "points": []})
                    continue
                mpc.set_goal(spec.goal_image, task)
                kp_err = goal_keypoint_error(mpc.planner, spec, mpc._goal)
                n_frames = len(trace.frame_times)
                duration = trace.times[-1]
                frame_ids = sorted({int(np.searchsorted(trace.frame_times, f * duration, side="right") - 1)
                                    for f in fractions})
                ep_points = []
                for fi in frame_ids:
                    fi = max(0, min(fi, n_frames - 1))
                    p = score_point(mpc, spec, trace, fi, args.samples, spacing, hand_weights, rng)
                    ep_points.append(p)
                points.extend(ep_points)
                rec = {"episode": spec.index, "goal_keypoint_error_px": round(kp_err, 3),
                       "demo_duration_s": round(float(duration), 3), "points": ep_points}
                episodes.append(rec)
                print(json.dumps({"task": task, "episode": spec.index, "goal_keypoint_error_px": rec[
                    "goal_keypoint_error_px"], "demo_percentile": [p["configured"]["demo_percentile"]
                                                                    for p in ep_points],
                                  "gap": [p["configured"]["gap_still_minus_demo"] for p in ep_points]}),
                      file=sys.stderr, flush=True)
            scored = [e for e in episodes if e["points"]]
            report["tasks"][task] = {
                "planner": {"method": pc.planner.method, "horizon": pc.planner.horizon, "step_dt": pc.planner.step_dt,
                            "hand_weight": pc.cost.hand_weight, "hand_source": pc.cost.hand_source,
                            "orientation_weight": pc.cost.orientation_weight, "spacing_s": spacing},
                "summary": summarize(points, scored, args.top, hand_weights), "episodes": episodes}
    finally:
        sim.close()
    report["wall_s"] = round(time.perf_counter() - t_all, 2)
    text = json.dumps(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({t: v["summary"] for t, v in report["tasks"].items()}))
    if not args.out:
        print(text)
    return 0
