"""One prepared GPU check: the paper-scale speed claims measured in a single short run (``scripts/gpu_check.sh``).

Stages, most important first, so a run cut off by the lent machine's time still leaves the numbers that matter:

1. ``cuda_tests``: the ``cuda``-marked tests (planner on CUDA vs the CPU, bf16 autocast eager and compiled, one
   training step).
2. ``plan_xl_paper`` / ``plan_xl_paper_compiled`` / ``plan_s_b_paper``: ``dexwm bench plan`` at the paper's settings
   (N 512, K 10, L 10, T 3, 8 context frames, ViT-L/14 at 224 x 392, random weights) with the XL predictor, bf16,
   eager and ``torch.compile``, against the reference compute pattern (one iteration, the rest extrapolated: the
   bench says so per number); then S and B.
3. ``closed_loop_paper`` / ``closed_loop_cpu_profile``: ``dexwm bench tasks`` with the embedded small world model on
   the simulator, planner on the GPU, a few replans of reach episode 0.
4. ``train_s`` / ``train_xl``: world-model training throughput (clips/s) with the latent cache on a few simulator
   episodes; ``train_ddp_smoke``: 2 processes (NCCL on 2 GPUs, else gloo on the CPU).

Every stage is a subprocess with its own time limit (the whole run keeps under ``--budget-s``, 540 s by default =
9 minutes) and writes ``OUT/<stage>.json`` (command, exit code, seconds, the tool's JSON output, its log tail);
``OUT/summary.json`` collects the headline numbers against the targets (one replan at paper settings with XL +
ViT-L <= 10 s, >= 20x the reference; the small default model >= 10 replans/s on the GPU) and is printed at the end.
``--dry-run`` runs every stage at tiny sizes on the CPU in well under a minute (CI), so the script cannot rot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# dense bf16 tensor-core peak (FLOP/s, no sparsity) of the GPUs this project may be lent, from the vendors' data
# sheets: H100 SXM and H200 989 TFLOP/s, H100 PCIe 756, A100 312
BF16_DENSE_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12}
TARGET_REPLAN_S = 10.0  # one paper-setting replan, XL + ViT-L, on one H100
TARGET_SPEEDUP = 20.0  # over the reference pattern on the same GPU
TARGET_SMALL_MODEL_HZ = 10.0  # the embedded default model's closed loop on a GPU


@dataclass
class Stage:
    name: str
    argv: list[str]
    limit_s: float  # at most this long (less when the run's budget is nearly spent)
    json_out: bool = True  # the command prints one JSON document on stdout
    env: dict[str, str] = field(default_factory=dict)


def bf16_peak(device_name: str | None) -> float | None:
    """Dense bf16 peak of a GPU from its name (longest matching key first), None when unknown."""
    if not device_name:
        return None
    for key in sorted(BF16_DENSE_PEAK, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return BF16_DENSE_PEAK[key]
    return None


def _dexwm(*args: str) -> list[str]:
    return [sys.executable, "-m", "dexwm_cli.main", *args]


def training_config(out: Path, size: str, dry_run: bool) -> Path:
    """A training recipe for timing only: the paper's ``pretrain`` section with random encoder weights (no
    pretrained file is needed) and predictor ``size``; a handful of steps."""
    import copy

    import yaml

    from dexwm_robot.config import load_yaml

    section = copy.deepcopy(load_yaml("train.yaml")["pretrain"])
    if dry_run:
        from dexwm_planner.benchmark.tiny_model import TINY_MODEL

        section["model"] = copy.deepcopy(TINY_MODEL)
    else:
        section["model"]["encoder"] = {"random_init": True}
        section["model"]["predictor"] = {"size": size}
    section["data"].update({"batch_size": 8 if dry_run else 64, "micro_batch": None if dry_run else 32,
                            "num_workers": 0 if dry_run else 4, "cache_dir": str(out / "latent_cache"),
                            "context_frames": 4})
    section["optim"].update({"warmup_steps": 2})
    section.update({"max_steps": 3 if dry_run else 30, "epochs": None, "log_every": 1 if dry_run else 5,
                    "checkpoint_every": 100000, "grad_checkpoint": not dry_run, "threads": 1 if dry_run else 0,
                    "device": "cpu" if dry_run else "auto"})
    path = out / f"train_{size}.yaml"
    path.write_text(yaml.safe_dump({"timing": section}, sort_keys=False))
    return path


def stages(out: Path, dry_run: bool, checkpoint: str, two_gpus: bool) -> list[Stage]:
    data = out / "sim_episodes"
    device = "cpu" if dry_run else "cuda"
    plan = ["bench", "plan", "--device", device, "--budget-s", "5" if dry_run else "60"]
    if dry_run:
        plan_stages = [Stage("plan_xl_paper", _dexwm(*plan, "--quick", "--threads", "1"), 60),
                       # torch.compile is left to the GPU run: compiling on the CPU takes a minute, not seconds
                       Stage("plan_xl_paper_compiled", _dexwm(*plan, "--quick", "--threads", "1", "--no-reference"),
                             60),
                       Stage("plan_s_b_paper", _dexwm(*plan, "--quick", "--threads", "1", "--no-reference"), 60)]
    else:
        plan_stages = [Stage("plan_xl_paper", _dexwm(*plan, "--sizes", "XL", "--settings", "paper"), 150),
                       Stage("plan_xl_paper_compiled", _dexwm(*plan, "--sizes", "XL", "--settings", "paper",
                                                              "--compile", "--no-reference"), 150),
                       Stage("plan_s_b_paper", _dexwm(*plan, "--sizes", "S,B", "--settings", "paper",
                                                      "--no-reference"), 90)]
    loop = ["bench", "tasks", "--checkpoint", checkpoint, "--task", "reach", "--episodes", "0", "--device", device,
            "--max-steps", "2" if dry_run else "6", "--record", "0"]
    env_sim = {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    train = ["train", "world-model", "--data", f"sim:{data}", "--no-progress", "--section", "timing"]
    ddp_device = "cuda" if two_gpus and not dry_run else "cpu"
    return [
        Stage("cuda_tests", [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                             str(Path(__file__).resolve().parents[3] / "test" / "dexwm_planner" / "test_cuda.py")],
              120, json_out=False),
        *plan_stages,
        Stage("closed_loop_paper", _dexwm(*loop, "--profile", "quick" if dry_run else "paper",
                                          "--out", str(out / "tasks_paper")), 90, env=env_sim),
        Stage("closed_loop_cpu_profile", _dexwm(*loop, "--profile", "quick" if dry_run else "cpu",
                                                "--out", str(out / "tasks_cpu")), 60, env=env_sim),
        Stage("sim_data", _dexwm("data", "sim", "--episodes", "2" if dry_run else "6", "--out", str(data),
                                 "--workers", "1", "--seed", "900000", "--no-progress"), 120, env=env_sim),
        Stage("train_s", _dexwm(*train, "--config", str(training_config(out, "S", dry_run)), "--out",
                                str(out / "train_s")), 120),
        Stage("train_xl", _dexwm(*train, "--config", str(training_config(out, "XL", dry_run)), "--out",
                                 str(out / "train_xl")), 150),
        Stage("train_ddp_smoke", _dexwm(*train, "--config", str(training_config(out, "ddp", True)), "--out",
                                        str(out / "train_ddp"), "--nproc", "2", "--device", ddp_device), 120),
    ]


def _last_json(text: str) -> Any:
    """The JSON document a tool printed: the whole stdout, else its last line that parses."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        for line in reversed(text.splitlines()):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def run_stage(stage: Stage, out: Path, limit_s: float) -> dict[str, Any]:
    started = time.monotonic()
    env = dict(os.environ, **stage.env)
    record: dict[str, Any] = {"stage": stage.name, "command": stage.argv, "limit_s": round(limit_s, 1)}
    try:
        proc = subprocess.run(stage.argv, capture_output=True, text=True, timeout=limit_s, env=env)
        record.update(rc=proc.returncode, timed_out=False, stdout=proc.stdout, stderr=proc.stderr)
    except subprocess.TimeoutExpired as exc:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")

        record.update(rc=None, timed_out=True, stdout=text(exc.stdout), stderr=text(exc.stderr))
    record["seconds"] = round(time.monotonic() - started, 2)
    record["result"] = _last_json(record["stdout"]) if stage.json_out else None
    record["log_tail"] = (record.pop("stderr") or "")[-4000:]
    if stage.json_out:
        record.pop("stdout")
    else:
        record["stdout_tail"] = record.pop("stdout")[-4000:]
    (out / f"{stage.name}.json").write_text(json.dumps(record, indent=1, default=str))
    return record


def _plan_numbers(record: dict[str, Any] | None, peak: float | None) -> list[dict[str, Any]]:
    rows = []
    result = (record or {}).get("result") or {}
    for r in result.get("results", []):
        fast, ref = r.get("fast") or {}, r.get("reference") or {}
        rate = fast.get("flop_rate")
        rows.append({"size": r.get("size"), "settings": r.get("settings"), "dtype": r.get("dtype"),
                     "compile": result.get("compile"), "iteration_s": fast.get("iteration_s"),
                     "replan_s": fast.get("replan_s"), "status": fast.get("status"),
                     "peak_memory_bytes": fast.get("peak_memory_bytes"),
                     "tflop_per_s": None if rate is None else round(rate / 1e12, 2),
                     "fraction_of_bf16_peak": None if rate is None or peak is None else round(rate / peak, 4),
                     "reference_replan_s": ref.get("replan_s"), "reference_status": ref.get("status"),
                     "speedup_replan": (r.get("speedup") or {}).get("replan")})
    return rows


def _loop_numbers(record: dict[str, Any] | None) -> dict[str, Any] | None:
    result = (record or {}).get("result") or {}
    task = (result.get("tasks") or {}).get("reach")
    if not task:
        return None
    return {"loop_rate_hz": task.get("loop_rate_hz"), "planning_time_s": task.get("planning_time_s"),
            "replans": task.get("replans"), "success_rate": task.get("success_rate")}


def _train_numbers(out: Path, name: str) -> dict[str, Any] | None:
    path = out / name / "train_summary.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text())
    return {"samples_per_s": s.get("samples_per_s"), "steps": s.get("steps"), "processes": s.get("processes"),
            "device": s.get("device"), "bf16": s.get("bf16")}


def summarize(out: Path, records: dict[str, dict[str, Any]], device: dict[str, Any]) -> dict[str, Any]:
    peak = bf16_peak(device.get("name"))
    plans = [row for name in ("plan_xl_paper", "plan_xl_paper_compiled", "plan_s_b_paper")
             for row in _plan_numbers(records.get(name), peak)]
    xl = [row for row in plans if row["size"] == "XL" and row["replan_s"] is not None]
    best_xl = min(xl, key=lambda row: row["replan_s"]) if xl else None
    ref_xl = next((row["reference_replan_s"] for row in xl if row["reference_replan_s"]), None)
    small = _loop_numbers(records.get("closed_loop_cpu_profile"))
    paper_loop = _loop_numbers(records.get("closed_loop_paper"))
    targets = {
        "xl_paper_replan_s": {"target": f"<= {TARGET_REPLAN_S:g}", "value": best_xl and best_xl["replan_s"],
                              "met": None if not best_xl else best_xl["replan_s"] <= TARGET_REPLAN_S},
        "xl_paper_speedup_vs_reference": {
            "target": f">= {TARGET_SPEEDUP:g}",
            "value": None if not (best_xl and ref_xl) else round(ref_xl / best_xl["replan_s"], 2),
            "met": None if not (best_xl and ref_xl) else ref_xl / best_xl["replan_s"] >= TARGET_SPEEDUP},
        "small_model_replans_per_s": {
            "target": f">= {TARGET_SMALL_MODEL_HZ:g} (cpu profile on the GPU)",
            "value": small and small["loop_rate_hz"],
            "met": None if not small or small["loop_rate_hz"] is None else small["loop_rate_hz"] >= TARGET_SMALL_MODEL_HZ},
    }
    return {"device": device, "bf16_dense_peak_flop_s": peak,
            "stages": {n: {"rc": r.get("rc"), "timed_out": r.get("timed_out"), "seconds": r.get("seconds")}
                       for n, r in records.items()},
            "plan": plans, "closed_loop": {"paper_profile": paper_loop, "cpu_profile": small},
            "training": {n: _train_numbers(out, n) for n in ("train_s", "train_xl", "train_ddp")},
            "targets": targets}


def device_info(dry_run: bool) -> dict[str, Any]:
    import platform

    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "host": platform.node(), "cpu_count": os.cpu_count(),
                            "cuda_available": torch.cuda.is_available(), "gpus": torch.cuda.device_count()}
    if torch.cuda.is_available():
        info["name"] = torch.cuda.get_device_name(0)
        info["memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = None
    info["dry_run"] = dry_run
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the JSON files (created)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (seconds; CI)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="wall seconds for all stages (default 540)")
    parser.add_argument("--checkpoint", default=None,
                        help="world model of the closed-loop stages (default: the embedded checkpoints/world_model_sim_cpu)")
    parser.add_argument("--only", default=None, help="comma-separated stage names to run (default: all)")
    args = parser.parse_args(argv)

    from dexwm_robot.config import config_dir

    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint or str(config_dir().parent / "checkpoints" / "world_model_sim_cpu")
    device = device_info(args.dry_run)
    if not args.dry_run and not device["cuda_available"]:
        print("gpu_check: no CUDA device visible; run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    (out / "device.json").write_text(json.dumps(device, indent=1))
    todo = stages(out, args.dry_run, checkpoint, device["gpus"] >= 2)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.name for s in todo}
        if unknown:
            print(f"gpu_check: unknown stage(s) {sorted(unknown)}; stages: {[s.name for s in todo]}", file=sys.stderr)
            return 2
        todo = [s for s in todo if s.name in wanted]
    deadline = time.monotonic() + args.budget_s
    records: dict[str, dict[str, Any]] = {}
    for stage in todo:
        left = deadline - time.monotonic()
        if left < 5:
            records[stage.name] = {"stage": stage.name, "rc": None, "timed_out": True, "seconds": 0.0,
                                   "skipped": "the run's budget was spent"}
            continue
        rec = run_stage(stage, out, min(stage.limit_s, left))
        records[stage.name] = rec
        state = "timed out" if rec["timed_out"] else f"rc {rec['rc']}"
        print(f"gpu_check: {stage.name}: {state} in {rec['seconds']:.1f} s", file=sys.stderr, flush=True)
        summary = summarize(out, records, device)  # rewritten after every stage: a cut-off run keeps what it has
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    summary = summarize(out, records, device)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str))
    failed = [n for n, r in records.items() if r.get("rc") not in (0, 5)]  # pytest 5: no test selected
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
