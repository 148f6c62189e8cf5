"""GoalImageMPC: the contract (shapes, joint limits, errors), encoding once per frame / goal, the context window,
warm start passing through, prediction error against the next frame, keypoint sources, loading a checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dexwm_robot.config import ConfigError
from dexwm_model.encoders.factory import EncoderConfig
from dexwm_model.predictor.config import HandDepthHeadConfig, HandHeadConfig, load_predictor_config
from dexwm_model.world_model import WorldModel, WorldModelConfig
from dexwm_planner.mpc import GoalImageMPC, MPCConfig, MPCNotReady, MPCStep, load_mpc_config, mpc_planner_config
from dexwm_planner.planners import Planner, sim_joint_limits
from dexwm_planner.planners.cost import latent_distance

IMAGE = 112
CAMERA = 224


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Random values for every parameter (the zero-initialised AdaLN gates would hide every block)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = 1.0 / math.sqrt(p.shape[-1]) if p.dim() == 2 else 0.1
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)


def tiny_world_model() -> WorldModel:
    cfg = WorldModelConfig(
        encoder=EncoderConfig(kind="dinov2", size="S", image_size=[IMAGE, IMAGE], random_init=True, seed=0),
        predictor=load_predictor_config("tiny"),
        hand_head=HandHeadConfig(depth=1, width=32, heads=2, mlp_ratio=2.0, sigma_px=2.0, loss_weight=100.0,
                                 refine_radius_px=2),
        latent_dim=32)
    model = WorldModel(cfg)
    randomize(model.predictor, 1)
    randomize(model.hand_head, 2)
    return model.eval()


@pytest.fixture(scope="module")
def world_model() -> WorldModel:
    return tiny_world_model()


@pytest.fixture(scope="module")
def home() -> np.ndarray:
    from dexwm_robot.scene import load_sim_config

    return np.asarray(load_sim_config()[0].home, dtype=np.float64)


def small_planner_config(**planner):
    base = {"samples": 12, "iterations": 2, "horizon": 2, "cem": {"elites": 4}, "mppi": {"elites": 4}}
    base.update(planner)
    return mpc_planner_config("reach").replace(planner=base, runtime={"device": "cpu", "dtype": "float32"})


def make_mpc(world_model, mpc=None, **planner) -> GoalImageMPC:
    cfg = mpc if mpc is not None else MPCConfig(context_frames=4, frame_period_s=0.2)
    return GoalImageMPC(world_model, Planner(world_model, small_planner_config(**planner)), cfg)


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (CAMERA, CAMERA, 3), dtype=np.uint8) for _ in range(n)]


class EncoderCounter:
    """Counts forward calls of the model's image encoder (and the images they carried)."""

    def __init__(self, model: WorldModel) -> None:
        self.calls = 0
        self.images = 0
        self.handle = model.encoder.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.calls += 1
        self.images += int(output.shape[0])

    def close(self) -> None:
        self.handle.remove()


# ---------------------------------------------------------------------------------------------------- contract
def test_plan_contract_shapes_limits_and_info(world_model, home):
    mpc = make_mpc(world_model)
    goal, *frames = images(4)
    mpc.set_goal(goal, "reach")
    for i, img in enumerate(frames):
        mpc.observe(img, home, 10.0 + 0.2 * i)
    step = mpc.plan()
    assert isinstance(step, MPCStep)
    assert step.waypoints.shape == (1, 23) and step.plan.shape == (2, 23)
    np.testing.assert_array_equal(step.waypoints, step.plan[:1])
    low, high = sim_joint_limits()
    assert (step.plan >= low - 1e-6).all() and (step.plan <= high + 1e-6).all()
    assert np.isfinite(step.cost) and step.planning_time_s > 0
    assert step.predicted_keypoints.shape == (2, 12, 2) and np.isfinite(step.predicted_keypoints).all()
    info = step.info
    assert len(info["elite_costs"]) == 2 and all(len(e) == 4 for e in info["elite_costs"])
    assert all(e == sorted(e) for e in info["elite_costs"])
    assert set(info["terms"]) >= {"latent", "hand", "weight"} and len(info["terms"]["latent"]) == 2
    assert info["context_frames"] == 3 and info["context_times"] == pytest.approx([10.0, 10.2, 10.4])
    assert info["replan"] == 0 and info["task"] == "reach" and info["prediction_error"] is None
    assert np.asarray(info["fk_keypoints"]).shape == (2, 6, 2)
    assert step.to_dict()["waypoints"] == np.round(step.waypoints, 6).tolist()


def test_a_far_current_posture_stays_within_limits(world_model, home):
    mpc = make_mpc(world_model)
    low, high = sim_joint_limits()
    q = high.copy()  # at the upper limit of every joint: samples get clamped
    goal, img = images(2, seed=1)
    mpc.set_goal(goal, "reach")
    mpc.observe(img, q, 0.0)
    step = mpc.plan()
    assert (step.plan >= low - 1e-6).all() and (step.plan <= high + 1e-6).all()


def test_encoding_happens_once_per_frame_and_goal(world_model, home):
    mpc = make_mpc(world_model)
    counter = EncoderCounter(world_model)
    try:
        goal, *frames = images(4, seed=2)
        mpc.set_goal(goal, "reach")
        assert (counter.calls, counter.images) == (1, 1)
        for i, img in enumerate(frames):
            mpc.observe(img, home, 0.2 * i)
        assert (counter.calls, counter.images) == (4, 4)
        mpc.plan()
        mpc.plan()
        assert (counter.calls, counter.images) == (4, 4)  # replans never touch the image encoder
        mpc.observe(frames[0], home, 1.0)
        mpc.plan()
        assert (counter.calls, counter.images) == (5, 5)
        assert mpc.encoder_calls == 5
    finally:
        counter.close()


def test_warm_start_passes_through_and_goal_clears_it(world_model, home):
    mpc = make_mpc(world_model)
    goal, a, b = images(3, seed=3)
    mpc.set_goal(goal, "reach")
    mpc.observe(a, home, 0.0)
    first = mpc.plan()
    assert first.info["warm_started"] is False
    # the next replan starts from the best plan shifted by the executed waypoint
    mean, _, warm = mpc.planner.initial_distribution(torch.as_tensor(home, dtype=torch.float32))
    assert warm
    np.testing.assert_allclose(mean.numpy()[0], first.plan[1], atol=1e-6)
    np.testing.assert_allclose(mean.numpy()[1], first.plan[1], atol=1e-6)
    mpc.observe(b, first.waypoints[0], 0.2)
    second = mpc.plan()
    assert second.info["warm_started"] is True and second.info["replan"] == 1
    mpc.set_goal(goal, "reach")  # a new goal: no warm start, no context
    with pytest.raises(MPCNotReady, match="no camera frame observed"):
        mpc.plan()
    mpc.observe(a, home, 5.0)
    third = mpc.plan()
    assert third.info["warm_started"] is False and third.info["replan"] == 0
    assert third.info["context_times"] == [5.0]


# ---------------------------------------------------------------------------------------------------- errors
def test_errors_are_specific(world_model, home):
    mpc = make_mpc(world_model)
    goal, img = images(2, seed=4)
    with pytest.raises(MPCNotReady, match="no goal set"):
        mpc.plan()
    with pytest.raises(ValueError, match="dtype uint8"):
        mpc.set_goal(goal.astype(np.float32) / 255, "reach")
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        mpc.set_goal(goal[..., 0], "reach")
    with pytest.raises(ValueError, match="empty image"):
        mpc.set_goal(np.zeros((0, 10, 3), np.uint8), "reach")
    with pytest.raises(ValueError, match="numpy array"):
        mpc.set_goal(goal.tolist(), "reach")
    with pytest.raises(ValueError, match="task must be one of"):
        mpc.set_goal(goal, "push")
    with pytest.raises(ValueError, match="goal_keypoints"):
        mpc.set_goal(goal, "reach", goal_keypoints=np.zeros((5, 2)))
    mpc.set_goal(goal, "reach")
    bad = home.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"joints must be finite.*index\(es\) \[3\]"):
        mpc.observe(img, bad, 0.0)
    with pytest.raises(ValueError, match=r"joints must have shape \(23,\)"):
        mpc.observe(img, home[:7], 0.0)
    with pytest.raises(ValueError, match="t must be finite"):
        mpc.observe(img, home, float("inf"))
    with pytest.raises(ValueError, match="observe: image: expected dtype uint8"):
        mpc.observe(img.astype(np.int32), home, 0.0)
    mpc.observe(img, home, 2.0)
    with pytest.raises(ValueError, match="time went backwards"):
        mpc.observe(img, home, 1.9)
    mpc.plan()  # the rejected observations left the state usable


def test_config_errors(world_model):
    with pytest.raises(ConfigError, match="mpc.context_frames"):
        MPCConfig(context_frames=0)
    with pytest.raises(ConfigError, match="mpc.keypoints"):
        MPCConfig(keypoints="decoder")
    with pytest.raises(ConfigError, match="waypoint_duration_s"):
        MPCConfig(waypoint_duration_s=-1.0)
    with pytest.raises(ConfigError, match="max_context"):
        make_mpc(world_model, MPCConfig(context_frames=world_model.predictor.cfg.max_context + 1))
    with pytest.raises(ConfigError, match="differs from the planner's"):
        make_mpc(world_model, MPCConfig(execute_steps=2))
    # null: the context the predictor was built for
    assert make_mpc(world_model, MPCConfig()).config.context_frames == world_model.predictor.cfg.max_context
    cfg = load_mpc_config()
    assert cfg.context_frames is None and cfg.keypoints in ("head", "fk", "none")
    cpu = mpc_planner_config("place", "cpu", "mppi", "cpu")
    assert (cpu.planner.samples, cpu.planner.horizon, cpu.planner.iterations) == (32, 2, 3)
    assert cpu.planner.method == "mppi" and cpu.planner.init_std_hand == 0.01  # the task's override survives
    assert cpu.cost.hand_weight == 1.0 and mpc_planner_config("grasp", "cpu").cost.orientation_weight == 0.1
    with pytest.raises(ConfigError, match="unknown planner profile"):
        mpc_planner_config("reach", "gpu-huge")


# ---------------------------------------------------------------------------------------------------- context
def test_context_keeps_frames_a_period_apart_and_the_newest(world_model, home):
    mpc = make_mpc(world_model, MPCConfig(context_frames=3, frame_period_s=0.25))
    goal, img = images(2, seed=5)
    mpc.set_goal(goal, "reach")
    seen = []
    for k in range(12):  # 16 Hz camera (times exact in binary)
        mpc.observe(img, home, k / 16)
        seen.append(mpc.context_times)
    assert seen[0] == [0.0]
    assert seen[1] == [0.0, 0.0625]
    assert seen[3] == [0.0, 0.1875]  # the newest replaces a frame too close to the one kept before it
    assert seen[5] == [0.0, 0.25, 0.3125]
    assert seen[11] == [0.25, 0.5, 0.6875]  # at most context_frames, the oldest dropped
    for times in seen:
        assert (np.diff(times[:-1]) >= 0.25).all()
    mpc.observe(img, home, 0.6875)  # the same instant again replaces the newest frame
    assert mpc.context_times == [0.25, 0.5, 0.6875]


def test_prediction_error_compares_the_predicted_and_the_observed_frame(world_model, home):
    mpc = make_mpc(world_model)
    goal, a, b = images(3, seed=6)
    mpc.set_goal(goal, "reach")
    mpc.observe(a, home, 0.0)
    step = mpc.plan()
    predicted = mpc._pending[0].clone()
    mpc.observe(b, home, 0.01)  # far too early for the predicted frame (0.2 s): not compared
    assert mpc.prediction_errors == []
    mpc.observe(b, step.waypoints[0], 0.2)
    assert len(mpc.prediction_errors) == 1
    expected = float(latent_distance(predicted[None], world_model.encode(b[None]).float())[0])
    assert mpc.prediction_errors[0] == pytest.approx(expected, rel=1e-4)
    nxt = mpc.plan()
    assert nxt.info["prediction_error"] == pytest.approx(expected, rel=1e-4)
    assert nxt.info["actual_dt_s"] == pytest.approx(0.2) and nxt.info["predicted_dt_s"] == pytest.approx(0.2)


def test_execute_steps_and_keypoint_sources(world_model, home):
    goal, a = images(2, seed=7)
    two = make_mpc(world_model, MPCConfig(context_frames=4, execute_steps=2, keypoints="fk"), execute_steps=2)
    two.set_goal(goal, "reach")
    two.observe(a, home, 0.0)
    st = two.plan()
    assert st.waypoints.shape == (2, 23)
    np.testing.assert_array_equal(st.waypoints, st.plan)
    kp = st.predicted_keypoints
    assert kp.shape == (2, 12, 2) and np.isnan(kp[:, :6]).all()
    np.testing.assert_allclose(kp[:, 6:], np.asarray(st.info["fk_keypoints"]), atol=1e-3)
    none = make_mpc(world_model, MPCConfig(context_frames=4, keypoints="none"))
    none.set_goal(goal, "reach")
    none.observe(a, home, 0.0)
    assert none.plan().predicted_keypoints is None


def test_goal_keypoints_given_or_read_and_mapped_to_the_camera(world_model, home):
    mpc = make_mpc(world_model)
    goal, a = images(2, seed=8)
    mpc.set_goal(goal, "reach")
    with torch.no_grad():
        head = world_model.hand_keypoints(world_model.encode(goal[None]))[0][0].numpy()
    np.testing.assert_allclose(mpc.goal_keypoints, head, atol=1e-3)
    given = np.full((6, 2), np.nan)
    given[0] = (50.0, 60.0)
    mpc.set_goal(goal, "reach", goal_keypoints=given)
    kp = mpc.goal_keypoints
    assert np.isnan(kp[:6]).all() and kp[6].tolist() == [50.0, 60.0] and np.isnan(kp[7:]).all()
    # the 112 x 112 crop of a 224 x 224 camera image is a plain 1/2 scale: model pixels map back x 2
    uv = np.array([[10.0, 20.0], [56.0, 56.0]])
    np.testing.assert_allclose(mpc.keypoints_to_image(uv, (CAMERA, CAMERA)), uv * 2)
    back = world_model.encoder.preprocess.map_pixels(mpc.keypoints_to_image(uv, (240, 320)), (240, 320))
    np.testing.assert_allclose(back, uv, atol=1e-9)


def test_goal_depths_given_or_read_by_the_hand_depth_head(home):
    """With cost.depth_weight > 0 the goal's hand depths come from the model's hand depth head on the goal image
    (or are given, checked) and reach every replan; without the term none are read."""
    model = tiny_world_model()
    model.add_hand_depth_head(HandDepthHeadConfig(width=32, heads=2), seed=0)
    randomize(model.hand_depth_head, 3)
    with torch.no_grad():
        model.hand_depth_head.out.weight.mul_(0.01)  # depths near the head's base (1 m), so all are known
    cfg = small_planner_config().replace(cost={"hand_weight": 1.0, "depth_weight": 100.0})
    mpc = GoalImageMPC(model, Planner(model, cfg), MPCConfig(context_frames=4, frame_period_s=0.2))
    goal, a = images(2, seed=9)
    mpc.set_goal(goal, "reach")
    with torch.no_grad():
        want = model.hand_depths(model.encode(goal[None]))[0, 6:12].numpy()
    np.testing.assert_allclose(mpc._goal_depth, want, atol=1e-5)
    assert np.all(want > 0.5)
    mpc.observe(a, home, 0.0)
    np.testing.assert_allclose(mpc.observation().goal_depth, want, atol=1e-5)
    step = mpc.plan()
    assert len(step.info["terms"]["depth"]) == 2
    given = np.array([0.9, 0.8, np.nan, 0.85, 0.8, 0.8])
    mpc.set_goal(goal, "reach", goal_depth=given)
    np.testing.assert_array_equal(mpc._goal_depth, given)
    for bad in (np.ones(5), np.array([0.9, -0.1, 0.9, 0.9, 0.9, 0.9]), np.array([0.9, np.inf, 0.9, 0.9, 0.9, 0.9])):
        with pytest.raises(ValueError, match="goal_depth"):
            mpc.set_goal(goal, "reach", goal_depth=bad)
    plain = GoalImageMPC(model, Planner(model, small_planner_config()), MPCConfig(context_frames=4))
    plain.set_goal(goal, "reach")
    assert plain._goal_depth is None


def test_from_checkpoint_and_task_switching(world_model, home, tmp_path):
    world_model.save(tmp_path / "ckpt")
    mpc = GoalImageMPC.from_checkpoint(tmp_path / "ckpt", device="cpu", task="reach", profile="quick")
    assert mpc.planner.config.planner.samples == 8 and mpc.planner.config.cost.orientation_weight == 0.0
    assert mpc.execute_steps == 1 and mpc.waypoint_duration_s == pytest.approx(0.2)
    goal, a = images(2, seed=9)
    mpc.set_goal(goal, "grasp")  # the grasp task's planner settings (palm-down term) apply
    assert mpc.task == "grasp" and mpc.planner.config.cost.orientation_weight == pytest.approx(0.1)
    mpc.observe(a, home, 0.0)
    assert mpc.plan().waypoints.shape == (1, 23)
    with pytest.raises(FileNotFoundError, match="missing config.yaml"):
        GoalImageMPC.from_checkpoint(tmp_path / "nothing")
