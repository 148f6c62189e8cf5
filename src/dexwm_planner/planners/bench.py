"""``dexwm bench plan``: time per optimiser iteration and per replan of the fast planner, against the reference
compute pattern on the same model, in one run (JSON on stdout).

For every chosen setting and predictor size it builds a world model with random weights (random-init DINOv2
encoder; the predictor's compute does not depend on its weights), a synthetic observation (random context
frames, the robot's home joints, a goal image and goal hand pixels) and measures:

* ``fast``: :class:`Planner` -- context encoded once per replan, shared context cache, batched FK, batched
  rollout with only per-sample work per sample, chunks of ``runtime.chunk_size`` samples;
* ``reference``: :class:`ReferencePattern` -- re-encodes the window's images for every sample / step /
  iteration, runs the full window through the predictor for every query, FK one sample at a time in MuJoCo.

Both evaluate the same cost; the JSON reports the largest relative difference of their costs on the probe
samples. Per path the procedure is: a probe with 1 sample (counted with ``torch.utils.flop_counter``), a
larger probe if the time budget allows, then -- if the budget allows -- the whole replan (``measured``), one
whole iteration (``measured_one_iteration``; the replan is extrapolated) or nothing more
(``estimated_from_probe``: linear in the number of samples, which both patterns are, minus batching gains).
Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA, the process's peak resident set on the CPU
(reset before each path; it includes the model weights).

Settings: ``paper`` (N = 512, K = 10, L = 10, T = 3, 8 context frames, DINOv2 ViT-L at 224 x 392: P = 448
tokens of d = 1024), ``cpu`` (N = 64, K = 10, L = 3, T = 2, 8 frames, ViT-S at 224 x 224: P = 256, d = 384) and
``quick`` (N = 8, K = 3, L = 2, T = 2, 4 frames, ViT-S at 112 x 112: seconds; for CI).

``--checkpoint DIR`` times a trained world model instead (its own encoder and predictor, context = the predictor's
``max_context``, camera frames of the simulator's size) under the search of a planner profile of
``config/mpc.yaml`` (``--profile``, default ``cpu``; reach's task overrides): the FLOPs and the fraction of this
machine's matmul rate that the shipped planner reaches.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

SIZES = ("tiny", "S", "B", "L", "XL")


@dataclass(frozen=True)
class Setting:
    samples: int
    elites: int
    iterations: int
    horizon: int
    context: int
    encoder: str
    image: tuple[int, int]
    chunk_size: int


SETTINGS: dict[str, Setting] = {
    "paper": Setting(samples=512, elites=10, iterations=10, horizon=3, context=8, encoder="L", image=(224, 392),
                     chunk_size=128),
    "cpu": Setting(samples=64, elites=10, iterations=3, horizon=2, context=8, encoder="S", image=(224, 224),
                   chunk_size=64),
    "quick": Setting(samples=8, elites=3, iterations=2, horizon=2, context=4, encoder="S", image=(112, 112),
                     chunk_size=8),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=None,
                        help=f"comma-separated predictor sizes from {','.join(SIZES)} (default: tiny,S on the CPU, "
                             "all on CUDA; tiny with --quick)")
    parser.add_argument("--settings", default=None,
                        help="comma-separated settings from paper,cpu,quick (default: cpu on the CPU, paper on "
                             "CUDA; quick with --quick)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (CI, tests)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds each path (fast / reference) may spend per size beyond its probes before the "
                             "rest is estimated (default 60 on the CPU, 300 on CUDA, 5 with --quick)")
    parser.add_argument("--method", choices=("cem", "mppi"), default="cem")
    parser.add_argument("--memory-budget-gb", type=float, default=None,
                        help="the planner's runtime.memory_budget_gb (default: config/planner.yaml)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path's rollout + cost")
    parser.add_argument("--no-reference", action="store_true", help="time the fast path only")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--checkpoint", default=None, metavar="DIR",
                        help="time this world-model checkpoint under a planner profile instead of random sizes")
    parser.add_argument("--profile", default="cpu",
                        help="with --checkpoint: planner profile of config/mpc.yaml (default cpu)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default=None,
                        help="the planner's runtime.dtype (default: the profile's with --checkpoint, else auto)")


# ------------------------------------------------------------------------------------------------ memory
def _rss_peak_bytes() -> int | None:
    try:
        m = re.search(r"VmHWM:\s+(\d+)\s+kB", open("/proc/self/status").read())
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def _reset_peak(device: torch.device) -> int | None:
    """Reset the peak-memory gauge; returns the memory in use now (the baseline the peak is compared to)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return int(torch.cuda.memory_allocated(device))
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak resident set) to the current resident set
    return _rss_peak_bytes()


def _peak(device: torch.device, start: int | None) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak, kind = int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
    else:
        peak, kind = _rss_peak_bytes(), "process peak resident set (VmHWM; includes earlier sizes' freed heap)"
    out: dict[str, Any] = {"peak_memory_bytes": peak, "memory_kind": kind}
    if peak is not None and start is not None:
        out["peak_over_start_bytes"] = max(0, peak - start)
    return out


# ------------------------------------------------------------------------------------------------ flops
def _flop_counter():
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    mapping = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = cpu_flash
    return FlopCounterMode(display=False, custom_mapping=mapping)


def analytic_flops(model: Any, setting: Setting) -> dict[str, float]:
    """Matmul + attention FLOPs per sample of one iteration, from the architecture alone (forward passes):
    ``fast`` (the planner's rollout) and ``reference`` (re-encoding + full-window queries). Used to decide
    what is too slow to even probe, and reported next to the counted FLOPs as a cross-check."""
    p = model.predictor
    cfg = p.cfg
    P, d, W, r, depth = p.num_tokens, p.input_dim, cfg.width, cfg.mlp_ratio, cfg.depth
    C, T, cap = setting.context, setting.horizon, cfg.max_context
    proj = 0.0 if d == W else 2.0 * P * d * W  # in_proj / out_proj when the widths differ

    def query(keys: int, append: bool) -> float:
        per_block = (2 * P * 4 * W * W + 4 * P * P * W  # self-attention: qkv + proj, scores + values
                     + 2 * P * 2 * W * W + 4 * P * keys * W  # cross-attention: q + proj, scores + values
                     + 2 * P * W * r * W * 2  # MLP
                     + (2 * P * W * 2 * W if append else 0.0))  # keys / values of the new frame
        return depth * per_block + 2 * proj

    fast = sum(query(min(C + s, cap) * P, s + 1 < T) for s in range(T))
    image = _image_flops(model.encoder)
    ref = 0.0
    for s in range(T):
        frames = min(C + s, cap)
        n_img = C - max(0, C + s - cap)
        ref += n_img * image + frames * (proj + depth * 2 * P * W * 2 * W) + query(frames * P, False)
    return {"fast": fast, "reference": ref}


def _image_flops(enc: Any) -> float:
    """FLOPs of encoding one frame: our ``dexwm_vit`` from its architecture, DINOv2 from its config."""
    arch = getattr(enc, "arch", None)
    if arch is not None and hasattr(arch, "patch_size") and hasattr(arch, "mlp_ratio"):
        from dexwm_model.encoders.sim_vit import flops_per_image

        return flops_per_image(arch)
    ew, layers, tok = enc.dim, enc.backbone.config.num_hidden_layers, enc.num_tokens + 1  # + CLS
    return layers * (2 * tok * 12 * ew * ew + 4 * tok * tok * ew) + 2 * enc.num_tokens * 3 * enc.patch_size ** 2 * ew


def checkpoint_setting(model: Any, profile: str) -> Setting:
    """The search of planner profile ``profile`` (reach's task overrides) for a trained model: its context, the
    simulator camera's frame size."""
    from dexwm_hw.sim.scene import load_sim_config
    from dexwm_planner.mpc import mpc_planner_config

    pc = mpc_planner_config("reach", profile).planner
    cam = load_sim_config()[1]
    elites = pc.cem.elites if pc.method == "cem" else pc.mppi.elites
    return Setting(samples=pc.samples, elites=elites, iterations=pc.iterations, horizon=pc.horizon,
                   context=model.predictor.cfg.max_context, encoder="checkpoint", image=(cam.height, cam.width),
                   chunk_size=pc.samples)


def machine_rate(device: torch.device, dtype: torch.dtype | None = None) -> float:
    """FLOP/s of a large matrix product here (default float32 on the CPU, bfloat16 on CUDA): the yardstick for the
    a-priori estimates of configurations too slow to probe."""
    n = 1024 if device.type == "cpu" else 8192
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    a @ a
    reps, (_, dt) = 3, _timed(lambda: [a @ a for _ in range(3)], device)
    return reps * 2.0 * n ** 3 / dt


# ------------------------------------------------------------------------------------------------ model
_LAST_MODEL: dict[tuple, Any] = {}


def cached_model(size: str, setting: Setting, device: torch.device) -> tuple[Any, float]:
    """:func:`build_model`, reusing the previous call's model when asked for the same one (the previous model is
    released before a different one is built, so a size sweep never holds two). Returns (model, build seconds)."""
    key = (size, setting, str(device))
    if key not in _LAST_MODEL:
        _LAST_MODEL.clear()
        t0 = time.perf_counter()
        _LAST_MODEL[key] = (build_model(size, setting, device), time.perf_counter() - t0)
    return _LAST_MODEL[key]


def build_model(size: str, setting: Setting, device: torch.device):
    from dexwm_model.encoders.factory import EncoderConfig
    from dexwm_model.predictor.config import load_hand_head_config, load_predictor_config
    from dexwm_model.world_model import WorldModel, WorldModelConfig
    from dexwm_model.encoders.dinov2 import DINOV2_ARCH

    width = DINOV2_ARCH[setting.encoder]["hidden_size"]
    cfg = WorldModelConfig(
        encoder=EncoderConfig(kind="dinov2", size=setting.encoder, image_size=list(setting.image), random_init=True),
        predictor=load_predictor_config(size), hand_head=load_hand_head_config(), latent_dim=width)
    model = WorldModel(cfg)
    # AdaLN-Zero starts every block as the identity: give the predictor random weights everywhere, so that
    # predictions differ between samples and the fast / reference cost comparison means something
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, prm in model.predictor.named_parameters():
            if prm.dim() >= 2:
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.02)
    return model.to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def _probe(fn: Callable[[int], Any], n_max: int, budget: float, device: torch.device) -> dict[str, Any]:
    """Time ``fn(n)`` (costs of n samples): 1 sample under the FLOP counter (also the warm-up), again timed if
    cheap, then a larger batch the budget allows. Returns per-sample seconds, FLOPs and the probe outputs."""
    with _flop_counter() as fc:
        out1, t1 = _timed(lambda: fn(1), device)
    flops1 = int(fc.get_total_flops())
    if t1 < budget / 4:  # the first call also paid one-time costs: time it again when affordable
        out1, t1 = _timed(lambda: fn(1), device)
    n2 = min(n_max, int(budget / 4 / max(t1, 1e-6)))
    per_sample, n_used, outputs = t1, 1, out1
    if n2 >= 2:
        outputs, t2 = _timed(lambda: fn(n2), device)
        per_sample, n_used = t2 / n2, n2
    return {"per_sample_s": per_sample, "probe_samples": n_used, "flops_per_sample": flops1, "costs": outputs}


def _summary(iter_times: list[float]) -> float:
    return statistics.median(iter_times)


def bench_one(setting_name: str, size: str, device: torch.device, budget: float, method: str, compile_: bool,
              reference: bool, rate: float, memory_gb: float | None = None,
              checkpoint: str | None = None, dtype: str | None = None) -> dict[str, Any]:
    """One row of the report. With ``checkpoint`` (a world-model folder), ``setting_name`` is a planner profile of
    ``config/mpc.yaml`` and ``size`` only labels the row."""
    from dexwm_hw.sim.scene import load_sim_config
    from dexwm_model.predictor import count_parameters
    from dexwm_planner.planners.config import load_planner_config
    from dexwm_planner.planners.optimizer import SamplingOptimizer
    from dexwm_planner.planners.planner import PlanObservation, Planner
    from dexwm_planner.planners.reference import ReferencePattern

    if checkpoint is not None:
        from dexwm_model.world_model import WorldModel
        from dexwm_planner.mpc import mpc_planner_config

        t0 = time.perf_counter()
        model = WorldModel.load(checkpoint, map_location=device)
        build_s = time.perf_counter() - t0
        st = checkpoint_setting(model, setting_name)
        base = mpc_planner_config("reach", setting_name)  # the shipped search and cost, not only its sizes
    else:
        st = SETTINGS[setting_name]
        model, build_s = cached_model(size, st, device)
        base = load_planner_config()
    cfg = base.replace(
        planner={"method": method, "samples": st.samples, "iterations": st.iterations, "horizon": st.horizon,
                 "cem": {"elites": st.elites}, "mppi": {"elites": st.elites}},
        runtime={"device": str(device), "compile": compile_, "chunk_size": st.chunk_size,
                 "dtype": dtype or (base.runtime.dtype if checkpoint is not None else "auto"),
                 **({} if memory_gb is None else {"memory_budget_gb": memory_gb})})
    planner = Planner(model, cfg)
    g = torch.Generator().manual_seed(0)
    h, w = st.image
    images = (torch.rand(st.context, h, w, 3, generator=g) * 255).to(torch.uint8)
    goal_image = (torch.rand(1, h, w, 3, generator=g) * 255).to(torch.uint8)
    times = 0.2 * np.arange(st.context)
    home = torch.as_tensor(load_sim_config()[0].home, dtype=torch.float32)
    goal_joints = home.clone()
    goal_joints[:7] += torch.tensor([0.3, 0.2, -0.2, 0.3, 0.1, -0.2, 0.2])
    p = model.predictor
    entry: dict[str, Any] = {
        "settings": setting_name, "size": size, "samples": st.samples, "elites": st.elites,
        "iterations": st.iterations, "horizon": st.horizon, "context_frames": st.context,
        "image_size": list(st.image), "tokens": p.num_tokens, "latent_dim": p.input_dim,
        "encoder": (f"{type(model.encoder).__name__} of {checkpoint}" if checkpoint is not None
                    else f"dinov2-{st.encoder} (random weights)"), "predictor_params": count_parameters(p),
        "predictor": {"depth": p.cfg.depth, "width": p.cfg.width, "heads": p.cfg.heads},
        "dtype": planner.dtype_label,
        "chunk_size": planner.chunk_size, "model_build_s": round(build_s, 3),
    }
    with torch.no_grad():
        goal = planner.encode(goal_image)[0]
        goal_uv = planner.kin.hand_pixels(goal_joints.to(device))

        # ---------------------------------------------------------------------------------- fast path
        mem0 = _reset_peak(device)
        lat, encode_s = _timed(lambda: planner.encode(images), device)
        obs = PlanObservation(context=lat, times=times, joints=home, goal=goal, goal_keypoints=goal_uv)
        state = planner.prepare(obs)
        mean, std, _ = planner.initial_distribution(state.joints)
        # sample 0 would be the mean (the current joints held still): probe with the random ones after it
        samples = planner.optimizer.sample(mean, std, st.samples + 1,
                                           torch.Generator(device=device).manual_seed(1))[1:]
        flops = analytic_flops(model, st)
        entry["analytic_flops_per_iteration"] = {k: v * st.samples for k, v in flops.items()}
        fast: dict[str, Any] = {"encode_context_frames_s": encode_s, "context_cache_s": state.seconds}
        if flops["fast"] / rate > budget:  # even one sample would take too long: estimate, do not probe
            pr = None
            est_iter = flops["fast"] * st.samples / rate
        else:
            pr = _probe(lambda n: planner.evaluate(state, samples[:n]), st.samples, budget, device)
            est_iter = pr["per_sample_s"] * st.samples
            fast["probe_samples"] = pr["probe_samples"]
        if pr is None:
            fast.update(status="skipped_estimated_from_flops", iteration_s=est_iter,
                        replan_s=encode_s + state.seconds + st.iterations * est_iter)
        elif est_iter * st.iterations <= budget:
            res = planner.plan(state)
            fast.update(status="measured", iteration_s=_summary(res.timing["iterations_s"]),
                        iteration_times_s=res.timing["iterations_s"],
                        replan_s=encode_s + state.seconds + res.timing["total_s"])
        elif est_iter <= budget:
            one = copy.copy(planner)  # same model, FK and camera; an optimiser that stops after one iteration
            o = planner.optimizer
            one.optimizer = SamplingOptimizer(cfg.replace(planner={"iterations": 1}).planner, o.low, o.high,
                                              o.std_floor)
            res = one.plan(state)
            it = res.timing["iterations_s"][0]
            fast.update(status="measured_one_iteration", iteration_s=it,
                        replan_s=encode_s + state.seconds + st.iterations * it + res.timing["details_s"])
        else:
            fast.update(status="estimated_from_probe", iteration_s=est_iter,
                        replan_s=encode_s + state.seconds + st.iterations * est_iter)
        fast.update(_peak(device, mem0))
        if pr is not None:
            fast["flops_per_iteration"] = pr["flops_per_sample"] * st.samples
            fast["flop_rate"] = fast["flops_per_iteration"] / fast["iteration_s"]
        entry["fast"] = _rounded(fast)

        # ---------------------------------------------------------------------------------- reference
        if reference:
            mem0 = _reset_peak(device)
            ref = ReferencePattern(model, cfg, planner.camera, device=device)
            ref.autocast_dtype = planner.autocast_dtype
            refd: dict[str, Any] = {}
            if flops["reference"] / rate > budget:
                rp = None
                est_ref = flops["reference"] * st.samples / rate
            else:
                rp = _probe(lambda n: ref.costs(images, times, home, goal, samples[:n], goal_uv), st.samples,
                            budget, device)
                est_ref = rp["per_sample_s"] * st.samples
                refd["probe_samples"] = rp["probe_samples"]
            if rp is None:
                refd.update(status="skipped_estimated_from_flops", iteration_s=est_ref,
                            replan_s=st.iterations * est_ref)
            elif est_ref * st.iterations <= budget:
                t1 = time.perf_counter()
                res_ref = ref.plan(images, times, home, goal, planner.optimizer, mean, std,
                                   torch.Generator(device=device).manual_seed(2), goal_uv)
                total = time.perf_counter() - t1
                its = [s.seconds for s in res_ref.iterations]
                refd.update(status="measured", iteration_s=_summary(its), iteration_times_s=its, replan_s=total)
            elif est_ref <= budget:
                _, it = _timed(lambda: ref.costs(images, times, home, goal, samples, goal_uv), device)
                refd.update(status="measured_one_iteration", iteration_s=it, replan_s=st.iterations * it)
            else:
                refd.update(status="estimated_from_probe", iteration_s=est_ref, replan_s=st.iterations * est_ref)
            refd.update(_peak(device, mem0))
            if rp is not None:
                refd["flops_per_iteration"] = rp["flops_per_sample"] * st.samples
                refd["flop_rate"] = refd["flops_per_iteration"] / refd["iteration_s"]
            spent = sum(ref.seconds.values())
            refd["time_share"] = {k: v / spent for k, v in ref.seconds.items()} if spent > 0 else {}
            refd["per_sample_work"] = {
                "encoded_images": st.horizon * st.context - sum(max(0, st.context + s - p.cfg.max_context)
                                                                 for s in range(st.horizon)),
                "predictor_queries": st.horizon, "fk_calls_one_at_a_time": st.horizon + 1}
            entry["reference"] = _rounded(refd)
            if pr is not None and rp is not None:
                n = min(len(pr["costs"]), len(rp["costs"]))
                a, b = pr["costs"][:n].double().cpu(), rp["costs"][:n].double().cpu()
                entry["same_costs_max_rel_diff"] = float(((a - b).abs() / b.abs().clamp(min=1e-12)).max())
            entry["flop_ratio"] = round(flops["reference"] / flops["fast"], 2)
            if pr is None or rp is None:  # one side is a FLOP estimate: compare both at the one rate
                f_it, r_it = flops["fast"] * st.samples / rate, flops["reference"] * st.samples / rate
                f_replan = encode_s + state.seconds + st.iterations * f_it  # measured encode + cache
                entry["speedup"] = {"iteration": round(r_it / f_it, 2),
                                    "replan": round(st.iterations * r_it / f_replan, 2),
                                    "basis": "analytic FLOPs of both paths at matmul_flop_rate"}
            else:
                entry["speedup"] = {"iteration": round(refd["iteration_s"] / fast["iteration_s"], 2),
                                    "replan": round(refd["replan_s"] / fast["replan_s"], 2),
                                    "basis": "timed (measured or probe-extrapolated)"}
    return entry


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float):
            out[k] = float(f"{v:.4g}") if math.isfinite(v) else None
        elif isinstance(v, list):
            out[k] = [float(f"{x:.4g}") if isinstance(x, float) else x for x in v]
        elif isinstance(v, dict):
            out[k] = _rounded(v)
        else:
            out[k] = v
    return out


def _parse_list(text: str | None, allowed: tuple[str, ...], what: str) -> list[str] | None:
    if text is None:
        return None
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise SystemExit(f"--{what}: expected a comma-separated list from {','.join(allowed)}, found {text!r}")
    return items


def run(args: argparse.Namespace) -> int:
    sizes = _parse_list(args.sizes, SIZES, "sizes")
    settings = _parse_list(args.settings, tuple(SETTINGS), "settings")
    if args.threads < 0:
        raise SystemExit(f"--threads must be >= 0, found {args.threads}")
    if args.memory_budget_gb is not None and not args.memory_budget_gb > 0:
        raise SystemExit(f"--memory-budget-gb must be > 0, found {args.memory_budget_gb}")
    if args.budget_s is not None and not args.budget_s > 0:
        raise SystemExit(f"--budget-s must be > 0, found {args.budget_s}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device on this machine")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = device.type == "cuda"
    if args.quick:
        sizes, settings = sizes or ["tiny"], settings or ["quick"]
    sizes = sizes or (list(SIZES) if on_gpu else ["tiny", "S"])
    settings = settings or (["paper"] if on_gpu else ["cpu"])
    budget = args.budget_s if args.budget_s is not None else (5.0 if args.quick else 300.0 if on_gpu else 60.0)
    report: dict[str, Any] = {
        "benchmark": "plan", "device": torch.cuda.get_device_name(device) if on_gpu else platform.processor() or "cpu",
        "device_type": device.type, "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
        "method": args.method, "compile": bool(args.compile), "budget_s": budget, "results": [],
        "notes": [
            "iteration_s / replan_s: wall seconds; status says whether they were measured or extrapolated "
            "linearly in N from a probe (both patterns do per-sample work, so time grows ~linearly in N)",
            "fast replan = encode the context frames once + context cache + L iterations (+ best-plan details); "
            "reference replan = L iterations (it encodes inside every iteration)",
            "same_costs_max_rel_diff: fast and reference costs of the same probe samples",
            "skipped_estimated_from_flops: one probe sample alone would exceed the budget; the time is the "
            "analytic FLOPs / matmul_flop_rate (optimistic: real kernels run below the matmul rate)",
        ],
    }
    rate = machine_rate(device)
    report["matmul_flop_rate"] = float(f"{rate:.4g}")
    if args.checkpoint is not None:
        from dexwm_model.world_model import CheckpointError
        from dexwm_planner.mpc import planner_profiles

        if args.profile not in planner_profiles():
            raise SystemExit(f"--profile: unknown planner profile {args.profile!r}; config/mpc.yaml defines "
                             f"{sorted(planner_profiles())}")
        t0 = time.perf_counter()
        try:
            entry = bench_one(args.profile, args.checkpoint, device, budget, args.method, args.compile,
                              not args.no_reference, rate, args.memory_budget_gb, checkpoint=args.checkpoint,
                              dtype=args.dtype)
        except CheckpointError as exc:
            raise SystemExit(f"--checkpoint: {exc}") from None
        except (RuntimeError, MemoryError) as exc:
            entry = {"settings": args.profile, "size": args.checkpoint, "error": f"{type(exc).__name__}: {exc}"[:500]}
        entry["bench_wall_s"] = round(time.perf_counter() - t0, 2)
        if "fast" in entry and entry["fast"].get("flop_rate"):
            entry["fast"]["fraction_of_matmul_rate"] = round(entry["fast"]["flop_rate"] / rate, 3)
            if device.type == "cpu" and entry.get("dtype") == "bfloat16 autocast":  # also against bf16's own peak
                bf16_rate = machine_rate(device, torch.bfloat16)
                report["matmul_flop_rate_bfloat16"] = float(f"{bf16_rate:.4g}")
                entry["fast"]["fraction_of_bfloat16_matmul_rate"] = round(entry["fast"]["flop_rate"] / bf16_rate, 3)
        report["results"].append(entry)
        settings = []
    for setting in settings:
        for size in sizes:
            t0 = time.perf_counter()
            try:
                entry = bench_one(setting, size, device, budget, args.method, args.compile, not args.no_reference,
                                  rate, args.memory_budget_gb, dtype=args.dtype)
            except (RuntimeError, MemoryError) as exc:  # e.g. out of memory: report and go on with the next
                entry = {"settings": setting, "size": size, "error": f"{type(exc).__name__}: {exc}"[:500]}
            entry["bench_wall_s"] = round(time.perf_counter() - t0, 2)
            report["results"].append(entry)
            if on_gpu:
                torch.cuda.empty_cache()
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0
