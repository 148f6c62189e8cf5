"""Open-loop evaluation: rollout planning, metrics against the "nothing moves" baseline, the report and CLI."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from dexwm_cli.main import main as dexwm_main
from dexwm_model.evaluation import plan_episode
from dexwm_model.evaluation.cli import evaluate_checkpoint
from dexwm_model.training import ModelSpec, build_world_model, load_eval_config
from test_training_helpers import TINY_MODEL, datasets_file, write_episodes


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return write_episodes(tmp_path_factory.mktemp("sim_eval") / "episodes", lengths=(36, 30, 1))


def _cfg(tmp_path, **kw):
    return load_eval_config(device="cpu", threads=1, cache_dir=str(tmp_path / "cache"), **kw)


def test_plan_snaps_to_the_frame_spacing_and_shortens_for_short_episodes(tmp_path):
    cfg = _cfg(tmp_path)
    c, h, idx = plan_episode(np.arange(100) / 5.0, cfg, max_context=8)  # 5 Hz: strides of one frame
    assert (c, h) == (8, 20) and idx.shape == (4, 28)
    assert np.all(np.diff(idx, axis=1) == 1) and idx[0, 0] == 0 and idx[-1, -1] == 99
    c, h, idx = plan_episode(np.arange(200) / 10.0, cfg, max_context=8)  # 10 Hz: every other frame
    assert (c, h) == (8, 20) and np.all(np.diff(idx, axis=1) == 2)
    c, h, idx = plan_episode(np.arange(12) / 5.0, cfg, max_context=8)  # too short for 20 steps: fewer
    assert (c, h) == (8, 4) and idx.shape[1] == 12
    c, h, _ = plan_episode(np.arange(5) / 5.0, cfg, max_context=8)  # fewer context frames when it must
    assert c + h == 5 and h >= 1
    assert plan_episode(np.array([0.0]), cfg, max_context=8) is None
    c, _, _ = plan_episode(np.arange(100) / 5.0, cfg, max_context=3)
    assert c == 3


def _save(model, folder):
    model.save(folder)
    return str(folder)


def test_untrained_model_equals_the_baseline_and_a_trained_one_differs(sim, tmp_path):
    model = build_world_model(ModelSpec(**TINY_MODEL), seed=0)
    cfg = _cfg(tmp_path, rollouts_per_episode=2)
    ds_file = str(datasets_file(tmp_path))
    report = evaluate_checkpoint(_save(model, tmp_path / "m0"), {"sim": str(sim)}, cfg, tmp_path / "e0", ds_file)
    assert report["format"] == "dexwm-open-loop-eval" and report["horizon_steps"] == 20
    assert report["episodes"] == 2 and report["rollouts"] == 4
    assert [s["episode"] for s in report["skipped_episodes"]] == ["episode_000002"]  # 1 frame: too short, reported
    steps = report["steps"]
    assert [s["step"] for s in steps] == list(range(1, 21))
    assert steps[0]["time_s"] == pytest.approx(0.2) and steps[-1]["time_s"] == pytest.approx(4.0)
    assert steps[0]["mean_time_s"] == pytest.approx(0.2, abs=1e-5)
    # 36 frames at 5 Hz hold 8 context frames + 20 steps; the 30-frame episode only 8 + 20 as well (29 = 7 + 22)
    assert all(s["rollouts"] == 4 for s in steps)
    for s in steps:
        for method in ("model", "baseline"):
            m = s[method]
            assert set(m) == {"latent_mse", "cosine", "pck"} and set(m["pck"]) == {"2.5", "5", "10", "20"}
            assert math.isfinite(m["latent_mse"]) and -1 <= m["cosine"] <= 1
            assert all(0 <= v <= 1 for v in m["pck"].values())
        assert set(s["true_readout"]) == {"pck"}
        assert s["keypoints"] == 4 * 6  # right wrist + 5 tips of every rollout; the left hand is absent
    # an untrained predictor copies the newest frame (residual output, zero-initialised): exactly the baseline
    for s in steps:
        assert s["model"]["latent_mse"] == pytest.approx(s["baseline"]["latent_mse"], rel=1e-6, abs=1e-9)
        assert s["model"]["pck"] == s["baseline"]["pck"]
    # the hand moves: the baseline's error grows with the horizon (until the hand has left its old place)
    base = [s["baseline"]["latent_mse"] for s in steps]
    assert 0 < base[0] < base[1] and min(base[4:]) > 1.5 * base[0]
    assert steps[0]["baseline"]["cosine"] > steps[14]["baseline"]["cosine"]
    for name in ("eval.json", "embedding_error.png", "pck.png"):
        data = (tmp_path / "e0" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" if name.endswith(".png") else json.loads(data) == report

    torch.manual_seed(0)
    for p in model.predictor.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    moved = evaluate_checkpoint(_save(model, tmp_path / "m1"), {"sim": str(sim)}, dataclasses.replace(cfg),
                                tmp_path / "e1", ds_file)
    assert moved["latent_cache"] == report["latent_cache"]  # same encoder: the cache is reused
    diff = [abs(a["model"]["latent_mse"] - b["model"]["latent_mse"]) for a, b in zip(moved["steps"], steps)]
    assert max(diff) > 1e-4
    assert [s["baseline"] for s in moved["steps"]] == [s["baseline"] for s in steps]


def test_eval_cli_pixel_path_and_errors(sim, tmp_path, capsys):
    model = build_world_model(ModelSpec(**TINY_MODEL), seed=0)
    ckpt = _save(model, tmp_path / "m")
    out = tmp_path / "out"
    code = dexwm_main(["eval", "--checkpoint", ckpt, "--data", f"sim:{sim}", "--out", str(out), "--no-cache",
                       "--datasets", str(datasets_file(tmp_path)), "--horizon-s", "1.0", "--max-episodes", "1",
                       "--device", "cpu", "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["horizon_steps"] == 5 and printed["episodes"] == 1 and printed["rollouts"] == 4
    report = json.loads((out / "eval.json").read_text())
    assert report["latent_cache"] is None and len(report["steps"]) == 5
    assert report["summary"]["model"]["latent_mse_final"] == pytest.approx(report["steps"][-1]["model"]["latent_mse"])
    code = dexwm_main(["eval", "--checkpoint", str(tmp_path / "nothing"), "--data", f"sim:{sim}", "--no-progress"])
    assert code == 2 and "missing config.yaml" in capsys.readouterr().err
