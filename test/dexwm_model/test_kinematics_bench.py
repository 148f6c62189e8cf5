"""``dexwm bench fk`` runs and prints a well-formed JSON report (no assertion on speed)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from dexwm_cli.main import main
from dexwm_model.kinematics.panda_allegro import PandaAllegroFK


def test_bench_fk_prints_json(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main(argv) rewrites sys.argv
    chain = PandaAllegroFK.default().save(tmp_path / "chain.json")
    threads = torch.get_num_threads()
    try:
        rc = main(["bench", "fk", "--batch", "1", "7", "--seconds", "0.05", "--rounds", "2", "--device", "cpu",
                   "--threads", "1", "--chain", str(chain)])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "fk" and report["dtype"] == "float32" and report["cpu_threads"] == 1
    rows = report["results"]["cpu"]["batches"]
    assert [r["batch"] for r in rows] == [1, 7]
    for r in rows:
        assert r["calls_per_s"] > 0 and r["ms_per_call"] > 0 and r["process_cpu_ms_per_call"] >= 0
        assert r["vectors_per_s"] == pytest.approx(r["calls_per_s"] * r["batch"], rel=1e-3)
    assert "cuda" not in report["results"]


def test_bench_fk_rejects_bad_arguments(monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit, match="batch sizes must be >= 1"):
        main(["bench", "fk", "--batch", "0"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            main(["bench", "fk", "--device", "cuda"])
