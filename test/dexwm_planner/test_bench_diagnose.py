"""`dexwm bench diagnose`: ranking arithmetic, the demonstration trace, and one CLI run on a tiny model; the suite
builder's rejection of episodes that holding still already solves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dexwm_cli.main import main
from dexwm_model.encoders.factory import EncoderConfig
from dexwm_model.predictor.config import HandHeadConfig, load_predictor_config
from dexwm_model.world_model import WorldModel, WorldModelConfig
from dexwm_planner.benchmark.diagnose import DemoTrace, percentile_of, rank_plans, record_demonstration


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sim():
    from dexwm_hw.sim.robot import PandaAllegroSim

    s = PandaAllegroSim(render=True)
    yield s
    s.close()


def test_percentile_and_ranking():
    assert percentile_of(1.0, np.array([0.5, 2.0, 3.0, 4.0])) == 25.0
    assert percentile_of(0.0, np.array([0.5, 2.0])) == 0.0
    assert math.isnan(percentile_of(1.0, np.array([])))
    latent = np.array([1.0, 2.0, 0.5, 3.0, 4.0, 5.0])
    hand = np.array([0.0, 10.0, 20.0, 10.0, 10.0, 10.0])
    zero = np.zeros(6)
    r = rank_plans(latent, hand, zero, 0.0)  # random costs 0.5, 3, 4, 5: the demo (1.0) beats three of four
    assert r["demo_percentile"] == 25.0 and r["gap_still_minus_demo"] == pytest.approx(1.0)
    r = rank_plans(latent, hand, zero, 1.0)  # with the hand term the random plan 0.5 + 20 costs most
    assert r["demo_percentile"] == 0.0 and r["still_percentile"] == 0.0
    assert r["gap_still_minus_demo"] == pytest.approx(11.0)


def test_trace_interpolates_and_holds_at_the_end():
    tr = DemoTrace(np.array([0.0, 1.0]), np.stack([np.zeros(23), np.ones(23)]))
    assert tr.joints_at(0.25) == pytest.approx(np.full(23, 0.25))
    assert tr.joints_at(5.0) == pytest.approx(np.ones(23))


def test_record_demonstration_keeps_frames_a_period_apart(sim):
    from dexwm_planner.tasks import suite as S
    from dexwm_planner.tasks.config import load_tasks_config

    entry = S.select(S.load_suite("reach"), [0])[0]
    spec, trace = record_demonstration(sim, "reach", entry, load_tasks_config(), 0.2)
    assert spec.goal_image is not None
    assert len(trace.frames) == len(trace.frame_times) >= 5
    assert np.all(np.diff(trace.frame_times) >= 0.2 - 1e-9)
    assert trace.joints.shape == (trace.times.size, 23)
    # the demonstration ends at the goal state the episode is scored with
    assert trace.joints_at(trace.times[-1]) == pytest.approx(spec.goal_joints, abs=1e-9)


def test_cli_reports_percentiles_per_point(tmp_path, capsys):
    cfg = WorldModelConfig(
        encoder=EncoderConfig(kind="dinov2", size="S", image_size=[112, 112], random_init=True, seed=0),
        predictor=load_predictor_config("tiny"),
        hand_head=HandHeadConfig(depth=1, width=32, heads=2, mlp_ratio=2.0, sigma_px=2.0, loss_weight=100.0,
                                 refine_radius_px=2),
        latent_dim=32)
    ckpt = WorldModel(cfg).save(tmp_path / "ckpt")
    out = tmp_path / "diag.json"
    code = main(["bench", "diagnose", "--checkpoint", str(ckpt), "--task", "reach", "--episodes", "0",
                 "--samples", "16", "--fractions", "0.2,0.6", "--profile", "quick", "--hand-weights", "0,0.1",
                 "--threads", "1", "--out", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    s = summary["reach"]
    assert s["episodes"] == 1 and s["points"] == 2
    assert set(s["by_hand_weight"]) == {"0.0", "0.1"}
    rep = json.loads(out.read_text())
    ep = rep["tasks"]["reach"]["episodes"][0]
    assert ep["goal_keypoint_error_px"] >= 0 and len(ep["points"]) == 2
    for p in ep["points"]:
        for key in ("configured", "latent_only", "hand_only"):
            assert 0.0 <= p[key]["demo_percentile"] <= 100.0
        # the hand-only ranking is exact FK against the goal keypoints: the demo's later point is nearer the goal
        assert p["context_frames"] >= 1 and p["demo_move_rad"] >= 0
    assert ep["points"][0]["t_s"] < ep["points"][1]["t_s"]
    # --planner-config is the parameter file the planner is built from: a hand weight of 0 there leaves the
    # configured ranking to the latent term alone
    from dexwm_robot.config import config_dir

    text = (config_dir() / "planner.yaml").read_text().replace("cost: {hand_weight: 1.0}", "cost: {hand_weight: 0.0}")
    own = tmp_path / "planner.yaml"
    own.write_text(text)
    code = main(["bench", "diagnose", "--checkpoint", str(ckpt), "--task", "reach", "--episodes", "0",
                 "--samples", "16", "--fractions", "0.2,0.6", "--profile", "quick", "--threads", "1",
                 "--planner-config", str(own), "--out", str(out)])
    assert code == 0
    rep = json.loads(out.read_text())
    assert rep["tasks"]["reach"]["planner"]["hand_weight"] == 0.0
    for p in rep["tasks"]["reach"]["episodes"][0]["points"]:
        assert p["configured"]["demo_percentile"] == p["latent_only"]["demo_percentile"]


def test_cli_rejects_a_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="bench diagnose"):
        main(["bench", "diagnose", "--checkpoint", str(tmp_path / "none"), "--task", "reach"])


def test_suite_rejects_an_episode_that_holding_still_solves(sim):
    from dexwm_planner.tasks import suite as S
    from dexwm_planner.tasks.config import load_tasks_config
    from dexwm_planner.tasks.episodes import solved_at_start

    cfg = load_tasks_config()
    entry = S.select(S.load_suite("reach"), [0])[0]
    ((spec, outcome),) = S.build_suite("reach", [entry], sim, cfg, render=False)
    assert outcome["success"] and not solved_at_start(sim, spec, cfg)
    # the same episode with its goal moved onto the start state: holding still now solves it
    from dexwm_planner.tasks.episodes import goal_keypoints_for

    sim.reset(spec.seed, joints=spec.start_joints)
    spec.goal_keypoints = goal_keypoints_for(sim, spec.start_joints)
    assert solved_at_start(sim, spec, cfg)
