"""`dexwm bench tasks`: Wilson intervals, failure categories, the closed-loop harness with baselines (still fails a
far reach, a policy commanding the goal joints succeeds and stops early) and a 1-episode run of the CLI with the
world-model MPC writing the episode JSON and a GIF."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dexwm_cli.main import main
from dexwm_model.encoders.factory import EncoderConfig
from dexwm_model.predictor.config import HandHeadConfig, load_predictor_config
from dexwm_model.world_model import WorldModel, WorldModelConfig
from dexwm_planner.benchmark import RandomPolicy, StillPolicy, load_bench_config, run_closed_loop, wilson_interval
from dexwm_planner.benchmark.cli import parse_episodes, summarize
from dexwm_planner.benchmark.harness import _ContactWatch, classify_failure, drift_ratio
from dexwm_planner.mpc import MPCStep
from dexwm_planner.tasks.config import load_tasks_config


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def success_cfg():
    return load_tasks_config().success


@pytest.fixture(scope="module")
def sim():
    from dexwm_hw.sim.robot import PandaAllegroSim

    s = PandaAllegroSim(render=True)
    yield s
    s.close()


@pytest.fixture(scope="module")
def reach_spec(sim):
    from dexwm_planner.tasks import suite as S

    ((spec, outcome),) = S.build_suite("reach", S.select(S.load_suite("reach"), [0]), sim)
    assert outcome["success"] and spec.goal_image is not None
    return spec


# ---------------------------------------------------------------------------------------------------- statistics
def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(72, 100) == pytest.approx((0.6251, 0.7986), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(3, 7)
    assert lo < 3 / 7 < hi
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="integers"):
        wilson_interval(2.5, 10)


def test_parse_episodes():
    assert parse_episodes("0-9") == list(range(10))
    assert parse_episodes("3") == [3]
    assert parse_episodes("7,0,2-4,3") == [0, 2, 3, 4, 7]
    for bad in ("", "a", "5-2", "-3", "1,,x"):
        with pytest.raises(ValueError, match="--episodes"):
            parse_episodes(bad)


# ---------------------------------------------------------------------------------------------------- failures
def test_failure_categories(success_cfg):
    cfg = load_bench_config()
    touched = _ContactWatch(success_cfg.lift_height)
    touched.update({"contacts": 3, "object_rise": 0.0})
    near = classify_failure("reach", False, {"reach_distance": 0.2}, success_cfg, touched, [], cfg)
    assert near["category"] == "last_centimetre" and near["flags"]["no_contact"] is None
    far = classify_failure("reach", False, {"reach_distance": 0.4}, success_cfg, touched, [], cfg)
    assert far["category"] == "other"
    drift = classify_failure("reach", False, {"reach_distance": 0.4}, success_cfg, touched,
                             [1.0, 1.1, 1.0, 2.0, 3.0, 4.0], cfg)
    assert drift["category"] == "latent_drift" and drift["drift_ratio"] == pytest.approx(3.5 / 1.05, abs=1e-4)
    assert classify_failure("reach", True, {"reach_distance": 0.05}, success_cfg, touched, [], cfg)["category"] is None
    never = _ContactWatch(success_cfg.lift_height)
    never.update({"contacts": 0, "object_rise": 0.0})
    assert classify_failure("grasp", False, {"wrist_object_distance": 0.25}, success_cfg, never, [],
                            cfg)["category"] == "no_contact"
    assert classify_failure("grasp", False, {"wrist_object_distance": 0.25}, success_cfg, touched, [],
                            cfg)["category"] == "last_centimetre"
    dropped = _ContactWatch(success_cfg.lift_height)
    for m in ({"contacts": 2, "object_rise": 0.0}, {"contacts": 4, "object_rise": 0.1},
              {"contacts": 0, "object_rise": 0.01}):
        dropped.update(m)
    assert dropped.lifted and dropped.dropped
    assert classify_failure("place", False, {"place_distance": 0.15}, success_cfg, dropped, [],
                            cfg)["category"] == "dropped_object"
    assert drift_ratio([1.0, 2.0], 3) is None
    assert drift_ratio([2.0, 2.0, 2.0], 3) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------- harness
class GoalJointsPolicy(StillPolicy):
    """Commands the episode's demonstrated goal joints (what a perfect planner would do): the scoring path must
    report success."""

    def __init__(self, goal_joints, limits) -> None:
        self.goal_joints = np.asarray(goal_joints, dtype=np.float64)
        super().__init__(limits, 0.2)

    def _waypoint(self) -> np.ndarray:
        return self.goal_joints.copy()


def test_still_baseline_fails_a_far_reach(sim, reach_spec, success_cfg):
    cfg = load_bench_config()
    still = StillPolicy((sim.joint_low, sim.joint_high), 0.2)
    res = run_closed_loop(sim, reach_spec, still, success_cfg, cfg, max_steps=4)
    r = res.record
    assert not r["success"] and r["steps"] == 4 and r["ticks"] >= 16
    assert r["final_distance"] > 2 * success_cfg.reach_distance  # the goal is far: nothing moved toward it
    assert r["failure"]["category"] == "other"
    assert r["success_tick"] is None and r["loop_rate_hz"] > 0
    np.testing.assert_allclose(sim.joints[:7], reach_spec.start_joints[:7], atol=0.02)
    assert res.frames == []


def test_commanding_the_goal_joints_succeeds_and_stops(sim, reach_spec, success_cfg):
    policy = GoalJointsPolicy(reach_spec.goal_joints, (sim.joint_low, sim.joint_high))
    res = run_closed_loop(sim, reach_spec, policy, success_cfg, load_bench_config(), max_steps=20)
    r = res.record
    assert r["success"] and r["reach"] and r["failure"]["category"] is None
    assert r["steps"] < 20 and r["success_tick"] is not None and r["held_ticks"] >= success_cfg.hold_ticks
    assert r["final_distance"] < success_cfg.reach_distance


def test_random_baseline_moves_within_limits(sim, reach_spec, success_cfg):
    policy = RandomPolicy((sim.joint_low, sim.joint_high), 0.2, 0.15, 0.1, seed=3)
    policy.set_goal(reach_spec.goal_image, "reach")
    q = reach_spec.start_joints
    policy.observe(reach_spec.goal_image, q, 0.0)
    steps = [policy.plan() for _ in range(5)]
    for st in steps:
        assert isinstance(st, MPCStep) and st.waypoints.shape == (1, 23)
        assert (st.waypoints >= sim.joint_low).all() and (st.waypoints <= sim.joint_high).all()
        assert np.abs(st.waypoints[0] - q).max() <= 0.15 + 1e-12
    assert not np.allclose(steps[0].waypoints, steps[1].waypoints)
    res = run_closed_loop(sim, reach_spec, policy, success_cfg, load_bench_config(), max_steps=2)
    assert res.record["steps"] == 2 and not np.allclose(sim.joints, reach_spec.start_joints)


# ---------------------------------------------------------------------------------------------------- the CLI
def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = 1.0 / math.sqrt(p.shape[-1]) if p.dim() == 2 else 0.1
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = WorldModelConfig(
        encoder=EncoderConfig(kind="dinov2", size="S", image_size=[112, 112], random_init=True, seed=0),
        predictor=load_predictor_config("tiny"),
        hand_head=HandHeadConfig(depth=1, width=32, heads=2, mlp_ratio=2.0, sigma_px=2.0, loss_weight=100.0,
                                 refine_radius_px=2),
        latent_dim=32)
    model = WorldModel(cfg)
    _randomize(model.predictor, 1)
    _randomize(model.hand_head, 2)
    return model.save(tmp_path_factory.mktemp("bench") / "ckpt")


def test_cli_runs_one_reach_episode_closed_loop(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["bench", "tasks", "--checkpoint", str(checkpoint), "--task", "reach", "--episodes", "0",
                 "--profile", "quick", "--planner", "mppi", "--max-steps", "3", "--record", "1", "--threads", "1",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["policy"] == "world_model_mpc" and report["profile"] == "quick"
    assert report["planner"]["reach"]["method"] == "mppi" and report["planner"]["reach"]["samples"] == 8
    s = report["tasks"]["reach"]
    assert s["episodes"] == 1 and s["successes"] in (0, 1)
    assert 0.0 <= s["wilson_95"][0] <= s["wilson_95"][1] <= 1.0
    assert s["replans"] == 3 or s["successes"] == 1
    assert s["loop_rate_hz"] > 0 and s["planning_time_s"]["mean"] > 0
    assert sum(s["failure_categories"].values()) == 1 - s["successes"]
    assert json.loads((out / "summary.json").read_text())["tasks"]["reach"]["episodes"] == 1
    ep = json.loads((out / "reach" / "episode_0000.json").read_text())
    for key in ("success", "steps", "costs", "final", "final_distance", "planning_time_s", "loop_rate_hz",
                "failure", "prediction_errors", "replans", "gif", "ticks", "sim_time_s"):
        assert key in ep, key
    assert len(ep["costs"]) == ep["steps"] == len(ep["planning_time_s"]) == len(ep["replans"])
    assert all(c is not None and c > 0 for c in ep["costs"])
    assert ep["replans"][0]["warm_started"] is False and ep["replans"][1]["warm_started"] is True
    assert ep["replans"][0]["prediction_error"] is None and ep["replans"][1]["prediction_error"] > 0
    assert len(ep["prediction_errors"]) == ep["steps"] - 1
    assert ep["final"]["reach_distance"] == pytest.approx(ep["final_distance"])
    gif = Image.open(ep["gif"])
    assert gif.n_frames == ep["steps"] + 1 and gif.size == (2 * 224, 224 + 14)


def test_cli_rejects_a_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="--checkpoint DIR is required"):
        main(["bench", "tasks", "--task", "reach", "--episodes", "0", "--out", str(tmp_path)])


def test_summary_counts(success_cfg):
    recs = [{"success": ok, "failure": {"category": None if ok else cat}, "steps": 2, "final_distance": 0.1,
             "sim_time_s": 1.0, "replans": [{"render_s": 0.01, "observe_s": 0.02, "plan_s": 0.07}] * 2}
            for ok, cat in ((True, None), (False, "other"), (False, "last_centimetre"), (True, None))]
    s = summarize("reach", recs, [], 4.0)
    assert (s["episodes"], s["successes"], s["success_rate"]) == (4, 2, 0.5)
    assert s["failure_categories"] == {"last_centimetre": 1, "other": 1}
    assert s["loop_rate_hz"] == pytest.approx(10.0) and s["wilson_95"] == pytest.approx([0.15, 0.85], abs=1e-2)


def test_privileged_goal_keypoints_are_the_goal_states_projection(checkpoint, sim, reach_spec, success_cfg):
    """The diagnostic swaps the hand head's goal pixels for the FK projection of the goal state; baselines refuse."""
    from dexwm_planner.mpc import RIGHT_HEATMAPS, GoalImageMPC

    policy = GoalImageMPC.from_checkpoint(str(checkpoint), profile="quick", device="cpu")
    run_closed_loop(sim, reach_spec, policy, success_cfg, load_bench_config(), max_steps=1,
                    privileged_goal_keypoints=True)
    expected = policy.planner.kin.hand_pixels(torch.as_tensor(reach_spec.goal_joints)).numpy()
    assert np.allclose(policy.goal_keypoints[RIGHT_HEATMAPS], expected)
    run_closed_loop(sim, reach_spec, policy, success_cfg, load_bench_config(), max_steps=1)
    assert not np.allclose(policy.goal_keypoints[RIGHT_HEATMAPS], expected)  # the random head reads something else
    with pytest.raises(ValueError, match="only the world-model planner"):
        run_closed_loop(sim, reach_spec, StillPolicy((sim.joint_low, sim.joint_high), 0.2), success_cfg, load_bench_config(), max_steps=1,
                        privileged_goal_keypoints=True)
