"""scripts/gpu_check.sh: its dry run (every stage at tiny sizes on the CPU) completes and writes the summary the GPU
run would, so the prepared check cannot rot before a GPU is lent."""

import json
import subprocess
from pathlib import Path

import pytest

from dexwm_planner.benchmark.gpu_check import bf16_peak, summarize

ROOT = Path(__file__).resolve().parents[2]


def test_bf16_peak_by_device_name():
    assert bf16_peak("NVIDIA H100 80GB HBM3") == 989e12
    assert bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert bf16_peak("NVIDIA H200") == 989e12
    assert bf16_peak("Tesla T4") is None and bf16_peak(None) is None


def test_summary_of_a_cut_off_run_keeps_what_it_has(tmp_path):
    plan = {"result": {"compile": False, "results": [
        {"size": "XL", "settings": "paper", "dtype": "bfloat16 autocast",
         "fast": {"iteration_s": 0.5, "replan_s": 6.0, "status": "measured", "flop_rate": 494.7e12},
         "reference": {"replan_s": 240.0, "status": "extrapolated"}, "speedup": {"replan": 40.0}}]}}
    s = summarize(tmp_path, {"plan_xl_paper": {"rc": 0, "timed_out": False, "seconds": 80.0, **plan}},
                  {"name": "NVIDIA H100 80GB HBM3"})
    assert s["plan"][0]["fraction_of_bf16_peak"] == pytest.approx(0.5, abs=1e-3)
    assert s["targets"]["xl_paper_replan_s"] == {"target": "<= 10", "value": 6.0, "met": True}
    assert s["targets"]["xl_paper_speedup_vs_reference"]["value"] == 40.0
    assert s["targets"]["small_model_replans_per_s"]["met"] is None  # its stage did not run


@pytest.mark.slow
def test_dry_run_runs_every_stage_on_the_cpu(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(proc.stdout) == summary
    assert list(summary["stages"]) == ["cuda_tests", "plan_xl_paper", "plan_xl_paper_compiled", "plan_s_b_paper",
                                       "closed_loop_paper", "closed_loop_cpu_profile", "sim_data", "train_s",
                                       "train_xl", "train_ddp_smoke"]
    assert all(s["rc"] == 0 and not s["timed_out"] for s in summary["stages"].values()), summary["stages"]
    assert summary["device"]["dry_run"] is True
    assert [r["size"] for r in summary["plan"]] == ["tiny", "tiny", "tiny"]
    assert all(r["replan_s"] > 0 for r in summary["plan"]) and summary["plan"][0]["reference_replan_s"] > 0
    assert summary["closed_loop"]["cpu_profile"]["replans"] == 2
    assert summary["training"]["train_s"]["steps"] == 3 and summary["training"]["train_ddp"]["processes"] == 2
    for name in summary["stages"]:
        assert json.loads((out / f"{name}.json").read_text())["stage"] == name
