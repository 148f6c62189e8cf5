"""`dexwm bench tasks --rerun N`: the first N episodes of a task are recorded to OUT/rerun/<task>_<index>.rrd (one
camera frame per replan plus the final one, the plan's keypoints, the episode's outcome as a note), and the
per-step logging time is reported in the episode JSON and the summary."""

from __future__ import annotations

import json

import pytest
import torch

from dexwm_cli.main import main
from dexwm_model.world_model import WorldModel
from test_mpc import tiny_world_model
from test_recording import read_rrd, rows, texts


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model: WorldModel = tiny_world_model()
    return model.save(tmp_path_factory.mktemp("bench_rerun") / "ckpt")


def test_bench_tasks_records_the_first_episode(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["bench", "tasks", "--checkpoint", str(checkpoint), "--task", "reach", "--episodes", "0",
                 "--profile", "quick", "--max-steps", "2", "--record", "0", "--rerun", "1", "--threads", "1",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ep = json.loads((out / "reach" / "episode_0000.json").read_text())
    rrd = out / "rerun" / "reach_0.rrd"
    assert ep["rerun"]["file"] == str(rrd) and ep["rerun"]["log_s"]["steps"] == ep["steps"] + 1
    assert all(s["rerun_log_s"] > 0 for s in ep["replans"])
    assert report["tasks"]["reach"]["rerun_log_time_s"]["mean"] > 0
    data = read_rrd(rrd)
    assert rows(data["/camera/image"]) == ep["steps"] + 1  # every replan and the final frame
    assert rows(data["/camera/keypoints/predicted"]) == rows(data["/costs/best_plan"]) == ep["steps"]
    assert rows(data["/task/reach_distance_m"]) >= ep["steps"]
    assert rows(data["/goal/image"]) == 1
    notes = texts(data["/log"])
    assert any("no latent decoder" in n for n in notes)
    assert any(n.startswith("reach episode 0: ") for n in notes)


def test_bench_tasks_rejects_bad_rerun_arguments(tmp_path):
    with pytest.raises(SystemExit, match="--rerun: expected a number of episodes >= 0"):
        main(["bench", "tasks", "--baseline", "still", "--task", "reach", "--rerun", "-1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--rerun-decoder: only used with the world-model planner"):
        main(["bench", "tasks", "--baseline", "still", "--task", "reach", "--rerun", "1", "--rerun-decoder",
              str(tmp_path), "--out", str(tmp_path)])
