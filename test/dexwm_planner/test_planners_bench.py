"""Planner configuration (config/planner.yaml) and ``dexwm bench plan --quick`` (valid JSON; no timing asserts)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from dexwm_cli.main import main
from dexwm_model.config import ConfigError
from dexwm_planner.planners import load_planner_config


def test_default_config_has_the_paper_settings():
    cfg = load_planner_config()
    p = cfg.planner
    assert (p.method, p.horizon, p.samples, p.iterations, p.cem.elites) == ("cem", 3, 512, 10, 10)
    assert (p.init_std_arm, p.init_std_hand, p.execute_steps, p.warm_start) == (0.3, 0.1, 1, True)
    assert cfg.cost.hand_weight == 0.001 and cfg.cost.hand_source == "fk"
    real = load_planner_config(real_robot=True).planner
    assert (real.horizon, real.samples, real.execute_steps) == (2, 256, 2)
    assert load_planner_config("place").planner.init_std_hand == 0.01
    assert load_planner_config("grasp").cost.orientation_weight > 0


@pytest.mark.parametrize("change,match", [
    ({"planner": {"method": "random"}}, "planner.method"),
    ({"planner": {"samples": 0}}, "planner.samples"),
    ({"planner": {"execute_steps": 4}}, "planner.execute_steps"),
    ({"planner": {"samples": 5}}, r"planner.cem.elites \(10\) must not exceed planner.samples \(5\)"),
    ({"planner": {"init_std_arm": 0.0}}, "planner.init_std_arm"),
    ({"planner": {"cem": {"smoothing": 1.0}}}, "planner.cem.smoothing"),
    ({"planner": {"mppi": {"temperature": 0}}}, "planner.mppi.temperature"),
    ({"cost": {"hand_source": "eyes"}}, "cost.hand_source"),
    ({"cost": {"hand_weight": -1}}, "cost.hand_weight"),
    ({"runtime": {"device": "tpu"}}, "runtime.device"),
    ({"runtime": {"dtype": "int8"}}, "runtime.dtype"),
    ({"runtime": {"chunk_size": 0}}, "runtime.chunk_size"),
    ({"planner": {"horizon_steps": 3}}, "unknown key 'horizon_steps'"),
])
def test_config_errors_name_the_field(change, match):
    with pytest.raises(ConfigError, match=match):
        load_planner_config().replace(**change)


def test_config_file_errors(tmp_path):
    bad = tmp_path / "planner.yaml"
    bad.write_text("planner: {}\ncost: {}\nruntime: {}\nextra: 1\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['extra'\]"):
        load_planner_config(file=bad)
    bad.write_text("planner: {}\ncost: {}\n")
    with pytest.raises(ConfigError, match="missing section 'runtime'"):
        load_planner_config(file=bad)
    with pytest.raises(ConfigError, match="task 'juggle' has no entry"):
        load_planner_config("juggle")


def test_bench_plan_quick_prints_valid_json(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main(argv) rewrites sys.argv
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", "plan", "--quick", "--device", "cpu", "--threads", "1", "--budget-s", "2"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "plan" and report["device_type"] == "cpu" and report["cpu_threads"] == 1
    (entry,) = report["results"]
    assert "error" not in entry, entry.get("error")
    assert (entry["settings"], entry["size"], entry["samples"], entry["iterations"]) == ("quick", "tiny", 8, 2)
    for path in ("fast", "reference"):
        r = entry[path]
        assert r["status"] in ("measured", "measured_one_iteration", "estimated_from_probe")
        assert r["iteration_s"] > 0 and r["replan_s"] >= r["iteration_s"]
        assert r["flops_per_iteration"] > 0 and r["peak_memory_bytes"] > 0
    # the reference does strictly more work: it re-encodes the window's images for every sample and step
    assert entry["reference"]["flops_per_iteration"] > entry["fast"]["flops_per_iteration"]
    assert entry["reference"]["per_sample_work"]["encoded_images"] == 2 * 4
    assert entry["same_costs_max_rel_diff"] < 1e-4
    # the architecture-only FLOP model (used to skip configurations too slow to probe) agrees with the counter
    for path in ("fast", "reference"):
        ratio = entry["analytic_flops_per_iteration"][path] / entry[path]["flops_per_iteration"]
        assert 0.8 < ratio < 1.25, (path, ratio)
    assert entry["speedup"]["iteration"] > 0 and entry["speedup"]["replan"] > 0


def test_bench_plan_times_a_checkpoint_under_a_planner_profile(capsys, monkeypatch, tmp_path):
    """--checkpoint: the committed world model (its own encoder, its trained context) under the quick profile's
    search, both paths; FLOPs counted agree with the architecture's and the matmul-rate fraction is reported."""
    from pathlib import Path

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    ckpt = Path(__file__).resolve().parents[2] / "checkpoints" / "world_model_sim_cpu"
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", "plan", "--checkpoint", str(ckpt), "--profile", "quick", "--device", "cpu",
                   "--threads", "1", "--budget-s", "2"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    (entry,) = json.loads(capsys.readouterr().out)["results"]
    assert "error" not in entry, entry.get("error")
    assert (entry["settings"], entry["samples"], entry["iterations"], entry["horizon"]) == ("quick", 8, 2, 2)
    assert entry["context_frames"] == 4 and entry["tokens"] == 64 and "SimViTEncoder" in entry["encoder"]
    for path in ("fast", "reference"):
        ratio = entry["analytic_flops_per_iteration"][path] / entry[path]["flops_per_iteration"]
        assert 0.8 < ratio < 1.25, (path, ratio)
    assert 0 < entry["fast"]["fraction_of_matmul_rate"]
    assert entry["same_costs_max_rel_diff"] < 1e-4
    assert entry["dtype"] == "float32"  # the quick profile's runtime.dtype
    try:  # --dtype overrides the profile's; a bf16 run is also measured against the bf16 matmul rate
        rc = main(["bench", "plan", "--checkpoint", str(ckpt), "--profile", "quick", "--device", "cpu",
                   "--threads", "1", "--budget-s", "2", "--no-reference", "--dtype", "bfloat16"])
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out)
    (entry,) = report["results"]
    assert rc == 0 and entry["dtype"] == "bfloat16 autocast" and "reference" not in entry
    assert report["matmul_flop_rate_bfloat16"] > 0 and entry["fast"]["fraction_of_bfloat16_matmul_rate"] > 0
    with pytest.raises(SystemExit, match="unknown planner profile 'moon'"):
        main(["bench", "plan", "--checkpoint", str(ckpt), "--profile", "moon"])
    with pytest.raises(SystemExit, match="--checkpoint: world-model checkpoint .* missing config.yaml"):
        main(["bench", "plan", "--checkpoint", str(tmp_path), "--no-reference"])


def test_bench_plan_rejects_bad_arguments(monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit, match="--sizes"):
        main(["bench", "plan", "--sizes", "tiny,XXL"])
    with pytest.raises(SystemExit, match="--settings"):
        main(["bench", "plan", "--settings", "moon"])
    with pytest.raises(SystemExit, match="--budget-s must be > 0"):
        main(["bench", "plan", "--budget-s", "0"])


def test_bench_skips_what_would_take_too_long():
    """A budget below one probe sample: nothing is probed, both paths are estimated from FLOPs (and say so)."""
    from dexwm_planner.planners.bench import bench_one

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        entry = bench_one("quick", "tiny", torch.device("cpu"), budget=1e-9, method="mppi", compile_=False,
                          reference=True, rate=1e10)
    finally:
        torch.set_num_threads(threads)
    for path in ("fast", "reference"):
        r = entry[path]
        assert r["status"] == "skipped_estimated_from_flops" and "probe_samples" not in r
        assert r["iteration_s"] == pytest.approx(entry["analytic_flops_per_iteration"][path] / 1e10, rel=1e-3)
    assert "same_costs_max_rel_diff" not in entry
    assert entry["speedup"]["iteration"] > 1
