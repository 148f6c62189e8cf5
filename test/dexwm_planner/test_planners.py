"""Goal-image planners: optimiser core, joint limits, warm start, the fast rollout against the library's
per-sample rollout, cost decrease, and the reference compute pattern computing the same costs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from dexwm_model.actions.allegro import allegro_sequence_actions
from dexwm_model.encoders.factory import EncoderConfig
from dexwm_model.kinematics.panda_allegro import PandaAllegroFK
from dexwm_model.predictor.config import HandHeadConfig, load_predictor_config
from dexwm_model.world_model import WorldModel, WorldModelConfig
from dexwm_planner.planners import (
    CachedRollout,
    PlanObservation,
    Planner,
    SamplingOptimizer,
    load_planner_config,
    sim_camera,
    sim_joint_limits,
)
from dexwm_planner.planners.attention import attention_lse, two_segment_attention
from dexwm_planner.planners.reference import ReferencePattern

IMAGE = 112
LATENT = 32


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


@pytest.fixture(scope="module")
def world_model() -> WorldModel:
    cfg = WorldModelConfig(
        encoder=EncoderConfig(kind="dinov2", size="S", image_size=[IMAGE, IMAGE], random_init=True, seed=0),
        predictor=load_predictor_config("tiny"),
        hand_head=HandHeadConfig(depth=1, width=32, heads=2, mlp_ratio=2.0, sigma_px=2.0, loss_weight=100.0,
                                 refine_radius_px=2),
        latent_dim=LATENT)
    model = WorldModel(cfg)
    randomize(model.predictor, 1)
    randomize(model.hand_head, 2)
    return model.eval()


@pytest.fixture(scope="module")
def fk() -> PandaAllegroFK:
    return PandaAllegroFK.default()


@pytest.fixture(scope="module")
def home() -> np.ndarray:
    from dexwm_hw.sim.scene import load_sim_config

    return np.asarray(load_sim_config()[0].home, dtype=np.float64)


@pytest.fixture(scope="module")
def frames(world_model):
    g = torch.Generator().manual_seed(5)
    images = (torch.rand(4, IMAGE, IMAGE, 3, generator=g) * 255).to(torch.uint8)
    goal_image = (torch.rand(1, IMAGE, IMAGE, 3, generator=g) * 255).to(torch.uint8)
    with torch.no_grad():
        return images, world_model.encode(images), world_model.encode(goal_image)[0]


def small_config(**planner):
    base = {"samples": 24, "iterations": 3, "horizon": 2, "cem": {"elites": 5}, "mppi": {"elites": 5}}
    base.update(planner)
    return load_planner_config().replace(planner=base, runtime={"device": "cpu", "dtype": "float32",
                                                                "chunk_size": 10})


def make_planner(world_model, fk, cfg=None, **kw):
    return Planner(world_model, cfg or small_config(), fk=fk, **kw)


def observation(frames, home, n_ctx=4, goal_keypoints=None):
    images, lat, goal = frames
    times = 100.0 + 0.2 * np.arange(4)
    return PlanObservation(context=lat[-n_ctx:], times=times[-n_ctx:], joints=home, goal=goal,
                           goal_keypoints=goal_keypoints)


# -------------------------------------------------------------------------------------------- optimiser core
@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_optimizer_finds_quadratic_minimum_inside_the_box(method):
    cfg = load_planner_config().replace(planner={
        "method": method, "samples": 200, "iterations": 40, "horizon": 3,
        "cem": {"elites": 20}, "mppi": {"temperature": 0.1, "elites": 20}}).planner
    d = 5
    low, high = -torch.ones(d), torch.ones(d)
    target = torch.tensor([[0.3, -0.5, 0.1, 0.7, -0.2], [0.0, 0.4, -0.6, 0.2, 0.5], [-0.3, 0.2, 0.6, -0.7, 0.0]])
    scale = torch.tensor([1.0, 2.0, 0.5, 1.5, 1.0])
    seen = []

    def cost(x):
        seen.append(x)
        return (((x - target) ** 2) * scale).sum((1, 2))

    opt = SamplingOptimizer(cfg, low, high, torch.full((d,), 1e-4))
    res = opt.run(cost, torch.zeros(3, d), torch.full((3, d), 0.5), torch.Generator().manual_seed(0))
    assert res.best.shape == (3, d)
    assert torch.allclose(res.best, target, atol=0.05), (res.best - target).abs().max()
    assert res.best_cost == pytest.approx(float(cost(res.best[None])[0]), rel=1e-5)
    assert res.best_cost < 5e-3
    assert len(res.iterations) == 40 and all(len(s.elite_costs) == 20 for s in res.iterations)
    assert all(s.elite_costs == sorted(s.elite_costs) for s in res.iterations)
    # every evaluated sample is inside the box
    allx = torch.cat(seen)
    assert bool((allx >= low).all()) and bool((allx <= high).all())
    if method == "mppi":
        assert all(s.effective_samples is not None and 1.0 <= s.effective_samples <= 200 for s in res.iterations)


def test_fine_fraction_draws_a_narrow_cloud_beside_the_wide_one():
    """planner.fine_fraction: the last share of the samples has its spread scaled by fine_scale; 0 keeps one
    Gaussian; bad values are refused."""
    from dexwm_robot.config import ConfigError

    base = load_planner_config().replace(planner={"samples": 400, "include_mean": True})
    d = 3
    opt = SamplingOptimizer(base.replace(planner={"fine_fraction": 0.5, "fine_scale": 0.1}).planner,
                            -10 * torch.ones(d), 10 * torch.ones(d), torch.zeros(d))
    x = opt.sample(torch.zeros(2, d), torch.ones(2, d), 400, torch.Generator().manual_seed(0))
    assert bool((x[0] == 0).all())  # the mean stays sample 0
    wide, narrow = x[1:200].std(), x[200:].std()
    assert 0.8 < float(wide) < 1.2 and 0.08 < float(narrow) < 0.12
    plain = SamplingOptimizer(base.planner, -10 * torch.ones(d), 10 * torch.ones(d), torch.zeros(d))
    y = plain.sample(torch.zeros(2, d), torch.ones(2, d), 400, torch.Generator().manual_seed(0))
    assert 0.8 < float(y[200:].std()) < 1.2
    for bad in ({"fine_fraction": 1.0}, {"fine_scale": 0.0}, {"fine_scale": 1.5}):
        with pytest.raises(ConfigError, match="fine_"):
            base.replace(planner=bad)


def test_optimizer_minimum_outside_the_box_ends_on_the_bound():
    cfg = load_planner_config().replace(planner={"samples": 100, "iterations": 25, "horizon": 1,
                                                 "cem": {"elites": 10}}).planner
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.5])
    seen = []

    def cost(x):
        seen.append(x)
        return ((x - torch.tensor([3.0, -2.0])) ** 2).sum((1, 2))

    res = SamplingOptimizer(cfg, low, high, torch.full((2,), 1e-3)).run(
        cost, torch.zeros(1, 2), torch.ones(1, 2), torch.Generator().manual_seed(1))
    assert torch.allclose(res.best[0], torch.tensor([1.0, 0.0]), atol=1e-3)
    allx = torch.cat(seen)
    assert bool((allx >= low).all()) and bool((allx <= high).all())
    assert bool((res.mean >= low).all()) and bool((res.mean <= high).all())


def test_optimizer_rejects_bad_inputs():
    cfg = load_planner_config().planner
    with pytest.raises(ValueError, match="low must not exceed high"):
        SamplingOptimizer(cfg, torch.ones(2), torch.zeros(2), torch.zeros(2))
    opt = SamplingOptimizer(cfg, -torch.ones(2), torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(T, 2\)"):
        opt.run(lambda x: x.sum((1, 2)), torch.zeros(3, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="cost function returned shape"):
        opt.run(lambda x: x.sum(2), torch.zeros(3, 2), torch.ones(3, 2))


# -------------------------------------------------------------------------------------------- attention
def test_two_segment_attention_equals_attention_over_the_union():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 4, 7, 8, generator=g, dtype=torch.float64)
    ks, vs = torch.randn(1, 4, 30, 8, generator=g, dtype=torch.float64), torch.randn(1, 4, 30, 8, generator=g,
                                                                                   dtype=torch.float64)
    ko, vo = torch.randn(5, 4, 11, 8, generator=g, dtype=torch.float64), torch.randn(5, 4, 11, 8, generator=g,
                                                                                   dtype=torch.float64)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, torch.cat([ks.expand(5, -1, -1, -1), ko], 2), torch.cat([vs.expand(5, -1, -1, -1), vo], 2))
    for backend in (None, "explicit"):
        out = two_segment_attention(q, ks, vs, ko, vo, backend)
        assert torch.allclose(out, ref, atol=1e-12)
    _, lse = attention_lse(q, ko, vo)
    s = q @ ko.transpose(-1, -2) / math.sqrt(8)
    assert torch.allclose(lse, torch.logsumexp(s, -1), atol=1e-12)


# -------------------------------------------------------------------------------------------- rollout
@pytest.mark.parametrize("n_ctx,steps,masked", [(8, 3, False), (3, 2, False), (6, 3, True), (2, 10, False)])
def test_batched_rollout_equals_per_sample_rollouts(world_model, n_ctx, steps, masked):
    pred = copy.deepcopy(world_model.predictor).double()
    g = torch.Generator().manual_seed(n_ctx + steps)
    p, d = pred.num_tokens, pred.input_dim
    ctx = torch.randn(1, n_ctx, p, d, generator=g, dtype=torch.float64)
    times = (50.0 + torch.cumsum(0.1 + 0.3 * torch.rand(1, n_ctx, generator=g, dtype=torch.float64), 1))
    mask = None
    if masked:
        mask = torch.ones(1, n_ctx, dtype=torch.bool)
        mask[0, [0, 2]] = False
    n = 4
    actions = 0.05 * torch.randn(n, steps, 132, generator=g, dtype=torch.float64)
    dts = 0.1 + 0.2 * torch.rand(steps, generator=g, dtype=torch.float64)
    with torch.no_grad():
        cache = pred.encode_context(ctx, times, mask)
        fast = CachedRollout(pred)
        plan = fast.prepare(cache, ctx[:, -1], dts, steps)
        batched = torch.stack(fast.run(plan, actions), 1)
        if steps == 10:  # the window outgrew the context: its own oldest predictions leave it too
            assert plan.shared_start[-1] == 2 - int(masked) and plan.own_range[-1] == (1, 9)
        for i in range(n):
            one = pred.rollout_from_cache(cache, ctx[:, -1], actions[i:i + 1], dts)
            assert torch.allclose(batched[i:i + 1], one, atol=1e-10), (batched[i:i + 1] - one).abs().max()
        # and in float32 (the planner's precision), against the library's N-sample rollout
        pred32 = pred.float()
        cache32 = pred32.encode_context(ctx.float(), times, mask)
        plan32 = fast.prepare(cache32, ctx[:, -1].float(), dts, steps)
        b32 = torch.stack(fast.run(plan32, actions.float()), 1)
        lib = pred32.rollout_from_cache(cache32, ctx[:, -1].float(), actions.float(), dts)
        # float32 rounding compounds over autoregressive steps: compare relative to the values' scale
        assert float((b32 - lib).abs().max()) <= 2e-6 * float(lib.abs().max()), (b32 - lib).abs().max()
    assert batched.shape == (n, steps, p, d)
    assert not torch.allclose(batched[0], batched[1])  # the samples' actions matter


def test_rollout_prepare_rejects_a_used_cache(world_model):
    pred = world_model.predictor
    p, d = pred.num_tokens, pred.input_dim
    ctx = torch.randn(2, 3, p, d)
    with torch.no_grad():
        cache = pred.encode_context(ctx, torch.tensor([[0.0, 0.1, 0.2]] * 2))
    with pytest.raises(ValueError, match="batch-1 context cache"):
        CachedRollout(pred).prepare(cache, ctx[:1, -1], 0.2, 2)


# -------------------------------------------------------------------------------------------- kinematics
def test_plan_actions_equal_allegro_sequence_actions(world_model, fk, home):
    planner = make_planner(world_model, fk)
    g = torch.Generator().manual_seed(3)
    q0 = torch.as_tensor(home, dtype=torch.float32)
    samples = q0 + 0.1 * torch.randn(4, 3, 23, generator=g)
    out = planner.kin.evaluate(q0, samples, hand=True, orientation=True)
    joints = torch.cat([q0.expand(4, 1, 23), samples], 1)
    ref = allegro_sequence_actions(joints, torch.as_tensor(planner.camera.pose, dtype=torch.float32), fk)
    assert torch.allclose(out.actions, ref, atol=1e-6)
    assert out.hand_uv.shape == (4, 3, 6, 2) and bool(torch.isfinite(out.hand_uv).all())
    assert torch.allclose(out.hand_uv[:, :, None], planner.kin.hand_pixels(samples)[:, :, None], atol=1e-4)
    # home has the palm facing down (scene.py): cosine close to 1
    home_kin = planner.kin.evaluate(q0, q0.expand(1, 1, 23).clone(), orientation=True)
    assert float(home_kin.palm_down[0, 0]) > 0.99


# -------------------------------------------------------------------------------------------- planner
def test_samples_respect_joint_limits_and_warm_start_shifts(world_model, fk, frames, home):
    low, high = sim_joint_limits()
    planner = make_planner(world_model, fk, small_config(horizon=3, init_std_arm=3.0, init_std_hand=3.0))
    seen = []
    evaluate = planner.evaluate

    def spy(state, samples, details=False):
        seen.append(samples.clone())
        return evaluate(state, samples, details)

    planner.evaluate = spy
    obs = observation(frames, home)
    first = planner.plan(obs)
    allx = torch.cat(seen)
    assert allx.shape[1:] == (3, 23)
    assert bool((allx >= torch.as_tensor(low, dtype=torch.float32)).all())
    assert bool((allx <= torch.as_tensor(high, dtype=torch.float32)).all())
    # wide sampling does hit the limits: clamping, not luck
    assert bool((allx == torch.as_tensor(high, dtype=torch.float32)).any())
    assert np.all(first.waypoints >= low - 1e-6) and np.all(first.waypoints <= high + 1e-6)
    assert not first.warm_started and first.replan == 0

    # warm start: the previous best shifted by one step, last waypoint repeated
    mean, std, warm = planner.initial_distribution(torch.as_tensor(home, dtype=torch.float32))
    prev = torch.as_tensor(first.waypoints, dtype=torch.float32)
    assert warm
    assert torch.allclose(mean[0], prev[1]) and torch.allclose(mean[1], prev[2]) and torch.allclose(mean[2], prev[2])
    assert torch.allclose(std[0, :7], torch.full((7,), 3.0)) and torch.allclose(std[0, 7:], torch.full((16,), 3.0))
    second = planner.plan(obs)
    assert second.warm_started and second.replan == 1
    assert torch.allclose(seen[len(seen) - 4][0], mean)  # sample 0 of the first iteration is the warm-start mean

    # open-loop execution of two steps: shift by two
    planner2 = make_planner(world_model, fk, small_config(horizon=2, execute_steps=2, iterations=1))
    r = planner2.plan(obs)
    mean2, _, warm2 = planner2.initial_distribution(torch.as_tensor(home, dtype=torch.float32))
    prev2 = torch.as_tensor(r.waypoints, dtype=torch.float32)
    assert warm2 and torch.allclose(mean2, prev2[1:].expand(2, -1))
    planner2.reset()
    mean3, _, warm3 = planner2.initial_distribution(torch.as_tensor(home, dtype=torch.float32))
    assert not warm3 and torch.allclose(mean3, torch.as_tensor(home, dtype=torch.float32).expand(2, -1))
    # no warm start at all when configured off
    planner3 = make_planner(world_model, fk, small_config(warm_start=False, iterations=1))
    planner3.plan(obs)
    assert not planner3.initial_distribution(torch.as_tensor(home, dtype=torch.float32))[2]


@pytest.mark.parametrize("method", ["cem", "mppi"])
def test_costs_decrease_over_iterations(world_model, fk, frames, home, method):
    cfg = small_config(method=method, samples=48, iterations=5, horizon=2, seed=3, init_std_arm=0.3,
                       cem={"elites": 6}, mppi={"elites": 6, "temperature": 0.1})
    # only the last step counts and no hand term: the target motion below has cost 0
    cfg = cfg.replace(cost={"hand_weight": 0.0, "step_weight_exponent": 30.0, "workspace_weight": 0.0})
    planner = make_planner(world_model, fk, cfg)
    # a reachable goal: the frame the model predicts for a known target motion
    obs = observation(frames, home)
    state = planner.prepare(obs)
    target = torch.as_tensor(home, dtype=torch.float32).expand(2, -1).clone()
    target[:, :7] += torch.tensor([0.25, -0.2, 0.15, 0.2, -0.1, 0.2, 0.3])
    det = planner.evaluate(state, target[None], details=True)
    kin = planner.kin.evaluate(state.joints, target[None])
    goal = torch.stack(planner.rollout.run(state.rollout, kin.actions), 1)[0, -1]
    obs.goal = goal
    res = planner.plan(obs)
    elite_means = [float(np.mean(s.elite_costs)) for s in res.iterations]
    assert elite_means[-1] < 0.25 * elite_means[0], elite_means
    assert float(planner.evaluate(planner.prepare(obs), target[None])[0]) < 1e-6  # the target is optimal
    best = [s.best_so_far for s in res.iterations]
    assert all(b2 <= b1 for b1, b2 in zip(best, best[1:]))
    assert res.cost == pytest.approx(best[-1], rel=1e-6)
    # the reported cost and terms are those of the returned waypoints
    state2 = planner.prepare(obs)
    again = planner.evaluate(state2, torch.as_tensor(res.waypoints, dtype=torch.float32)[None])
    assert float(again[0]) == pytest.approx(res.cost, rel=1e-4)
    assert res.hand_keypoints.shape == (2, 6, 2) and len(res.terms["latent"]) == 2
    assert det.total.shape == (1,)


@pytest.mark.parametrize("hand_source", ["fk", "head"])
def test_reference_pattern_gives_the_same_costs(world_model, fk, frames, home, hand_source):
    n_ctx = 3
    cfg = small_config(horizon=2).replace(cost={"hand_source": hand_source, "hand_weight": 0.01,
                                                "orientation_weight": 0.5})
    planner = make_planner(world_model, fk, cfg)
    goal_uv = torch.tensor([[40.0, 50.0], [60.0, 30.0], [float("nan"), float("nan")], [55.0, 70.0],
                            [20.0, 20.0], [90.0, 100.0]])
    obs = observation(frames, home, n_ctx=n_ctx, goal_keypoints=goal_uv)
    state = planner.prepare(obs)
    g = torch.Generator().manual_seed(11)
    samples = torch.as_tensor(home, dtype=torch.float32) + 0.15 * torch.randn(5, 2, 23, generator=g)
    samples = torch.clamp(samples, planner.joint_low, planner.joint_high)
    fast = planner.evaluate(state, samples, details=True)
    images = frames[0][-n_ctx:]
    ref = ReferencePattern(world_model, cfg, planner.camera, chunk_size=2)
    ref_costs = ref.costs(images, obs.times, home, obs.goal, samples, goal_uv)
    assert torch.allclose(fast.total.double(), ref_costs, rtol=1e-4, atol=1e-4), (fast.total, ref_costs)
    assert float(fast.total.std()) > 1e-3  # the costs differ between samples: the comparison is not vacuous
    assert fast.hand is not None and bool((fast.hand > 0).all())
    # the reference re-encoded the context images for every sample and step, and ran FK per joint vector
    assert ref.counters["encoded_images"] == 5 * (3 + 3)
    assert ref.counters["fk_calls"] == 5 * 3 and ref.counters["predictor_queries"] == 5 * 2


def test_reference_pattern_with_a_full_sliding_window(world_model, fk, frames, home):
    """8 context frames: every rollout step drops the oldest frame (the window slides)."""
    images, lat, goal = frames
    images8 = torch.cat([images, images.flip(0)])
    with torch.no_grad():
        lat8 = world_model.encode(images8)
    cfg = small_config(horizon=2).replace(cost={"hand_weight": 0.0})
    planner = make_planner(world_model, fk, cfg)
    times = 10.0 + 0.2 * np.arange(8)
    obs = PlanObservation(context=lat8, times=times, joints=home, goal=goal)
    g = torch.Generator().manual_seed(4)
    samples = torch.as_tensor(home, dtype=torch.float32) + 0.1 * torch.randn(2, 2, 23, generator=g)
    samples = torch.clamp(samples, planner.joint_low, planner.joint_high)
    fast = planner.evaluate(planner.prepare(obs), samples)
    # the same observation built by the planner's helper (the images encoded in one call)
    obs2 = planner.observe(images8, times, home, goal)
    assert torch.allclose(obs2.context, lat8, atol=1e-5)
    ref = ReferencePattern(world_model, cfg, planner.camera)
    assert torch.allclose(fast.double(), ref.costs(images8, times, home, goal, samples), rtol=1e-4, atol=1e-4)
    assert ref.counters["encoded_images"] == 2 * (8 + 7)


def test_hand_goal_from_the_goal_latent_and_observation_errors(world_model, fk, frames, home):
    cfg = small_config(iterations=1).replace(cost={"hand_source": "head"})
    planner = make_planner(world_model, fk, cfg)
    obs = observation(frames, home)
    state = planner.prepare(obs)
    assert torch.allclose(state.goal_uv, planner.goal_keypoints(frames[2]))
    assert state.goal_uv.shape == (6, 2)
    res = planner.plan(obs)
    assert res.hand_source == "head" and res.hand_keypoints.shape == (2, 6, 2)
    bad = [
        (dict(joints=np.zeros(22)), "observation.joints"),
        (dict(times=[0.0, 1.0]), "observation.times"),
        (dict(context=frames[1][:, :, :5]), "observation.context"),
        (dict(goal=frames[2][:3]), "observation.goal"),
        (dict(goal_keypoints=np.zeros((5, 2))), "observation.goal_keypoints"),
        (dict(mask=np.ones(4)), "observation.mask"),
    ]
    for change, field in bad:
        o = observation(frames, home)
        for k, v in change.items():
            setattr(o, k, v)
        with pytest.raises(ValueError, match=field):
            planner.plan(o)


def test_default_camera_and_limits_come_from_the_simulated_scene(world_model):
    low, high = sim_joint_limits()
    assert low.shape == (23,) and bool((low < high).all())
    cam = sim_camera(world_model.encoder.preprocess)
    assert cam.image_hw == (IMAGE, IMAGE)
    assert cam.intrinsics[0, 2] == pytest.approx(IMAGE / 2) and cam.intrinsics[1, 2] == pytest.approx(IMAGE / 2)
    full = sim_camera()
    assert cam.intrinsics[0, 0] == pytest.approx(full.intrinsics[0, 0] * IMAGE / full.image_hw[1])


def test_memory_budget_shrinks_chunks_without_changing_costs(world_model, fk, frames, home):
    wide = make_planner(world_model, fk)
    tight = make_planner(world_model, fk, small_config().replace(runtime={"memory_budget_gb": 1e-6}))
    assert wide.chunk_size == 10 and tight.chunk_size == 1
    assert tight.sample_bytes() > 0
    obs = observation(frames, home)
    g = torch.Generator().manual_seed(8)
    samples = torch.as_tensor(home, dtype=torch.float32) + 0.1 * torch.randn(7, 2, 23, generator=g)
    samples = torch.clamp(samples, wide.joint_low, wide.joint_high)
    a = wide.evaluate(wide.prepare(obs), samples)
    b = tight.evaluate(tight.prepare(obs), samples)
    assert torch.allclose(a, b, rtol=1e-5)


def test_workspace_term_charges_only_plans_the_safety_layer_would_reject(world_model, fk, frames, home):
    from dexwm_hw.safety.config import load_safety_config
    from dexwm_hw.safety.workspace import WorkspaceBox

    cfg = small_config(horizon=2).replace(cost={"workspace_weight": 0.0})
    free = make_planner(world_model, fk, cfg)
    charged = make_planner(world_model, fk, cfg.replace(cost={"workspace_weight": 100.0, "workspace_margin": 0.0}))
    state_free, state = free.prepare(observation(frames, home)), charged.prepare(observation(frames, home))
    inside = torch.as_tensor(home, dtype=torch.float32)[None, None].repeat(1, 2, 1)
    through_table = inside.clone()
    through_table[0, :, 1] += 1.2  # shoulder forward: the hand dives below the table top
    samples = torch.cat([inside, through_table])
    extra = charged.evaluate(state, samples) - free.evaluate(state_free, samples)
    safety = load_safety_config()
    box = WorkspaceBox.from_fk(fk.double(), safety.workspace_min, safety.workspace_max, safety.workspace_points,
                               safety.workspace_path_samples)
    assert box.check_path(home, inside[0, 0].double().numpy()) is None
    assert box.check_path(home, through_table[0, 0].double().numpy()) is not None  # the safety layer rejects it
    assert float(extra[0]) == pytest.approx(0.0, abs=1e-6)  # accepted plans pay nothing
    assert float(extra[1]) > 1.0  # rejected ones pay (metres outside x 100)


def test_object_term_compares_the_object_heads_centres_with_the_goals(world_model, fk, frames, home):
    """cost.object_weight: the object head's centres on each predicted latent against those it reads on the goal
    latent (objects below object_min_confidence left out); needs a model with an object head."""
    from dexwm_model.predictor.config import ObjectHeadConfig
    from dexwm_planner.planners.cost import hand_distance

    base = small_config(horizon=2).replace(cost={"object_weight": 0.0})
    with pytest.raises(ValueError, match="object head"):
        make_planner(world_model, fk, base.replace(cost={"object_weight": 1.0}))
    model = copy.deepcopy(world_model)
    model.add_object_head(ObjectHeadConfig(depth=1, width=32, heads=2, mlp_ratio=2.0, sigma_px=2.0, loss_weight=1.0,
                                           refine_radius_px=2, objects=["a", "b", "c"]), seed=0)
    randomize(model.object_head, 3)
    model.eval()
    free = make_planner(model, fk, base)
    priced = make_planner(model, fk, base.replace(cost={"object_weight": 2.0, "object_min_confidence": 0.0}))
    obs = observation(frames, home)
    s_free, s = free.prepare(obs), priced.prepare(obs)
    assert s_free.goal_objects is None and s.goal_objects.shape == (3, 2)
    uv, _ = model.object_keypoints(frames[2][None])
    torch.testing.assert_close(s.goal_objects, uv[0].float())
    samples = torch.as_tensor(home, dtype=torch.float32)[None, None].repeat(3, 2, 1)
    samples[1:, :, :7] += torch.tensor([0.3, -0.2, 0.1, 0.2, 0.0, 0.1, 0.0])
    samples[2, :, 7:] += 0.3
    det = priced.evaluate(s, samples, details=True)
    extra = det.total - free.evaluate(s_free, samples)
    expected = (2.0 * det.objects.double() * s.weights.double()).sum(-1)
    torch.testing.assert_close(extra, expected.to(extra))
    assert bool((det.objects > 0).all()) and det.objects.shape == (3, 2)
    # the term is the object head read out of the predictions the planner rolls out: recompute it
    _, _, obj = priced._rollout_chunk(s, priced.kin.evaluate(s.joints, samples).actions, False, True)
    torch.testing.assert_close(obj, det.objects)
    # a confidence bar no object reaches leaves nothing to compare: the term is 0
    blind = make_planner(model, fk, base.replace(cost={"object_weight": 2.0, "object_min_confidence": 1e9}))
    sb = blind.prepare(obs)
    assert bool(torch.isnan(sb.goal_objects).all())
    assert float(blind.evaluate(sb, samples, details=True).objects.abs().max()) == 0.0
    assert hand_distance(torch.zeros(2, 3, 2), sb.goal_objects, (112, 112)).abs().max() == 0


def test_approach_term_charges_low_hands_off_the_goal_rays_only(world_model, fk, frames, home):
    """cost.approach_weight: a hand keypoint pays for being below approach_height above the table while it is
    more than approach_radius off the ray through its goal keypoint; the goal pose itself and high poses pay 0."""
    from dexwm_planner.planners.approach import approach_violation, goal_rays
    from dexwm_planner.planners.workspace import workspace_floor

    base = small_config(horizon=2).replace(cost={"hand_weight": 1.0, "hand_source": "fk", "approach_weight": 0.0})
    free = make_planner(world_model, fk, base)
    charged = make_planner(world_model, fk, base.replace(cost={"approach_weight": 10.0, "approach_height": 0.15,
                                                               "approach_radius": 0.04}))
    # goal: the hand low over the table (shoulder and elbow forward); its keypoints are the goal pixels
    goal_q = torch.as_tensor(home, dtype=torch.float32).clone()
    goal_q[1] += 1.2
    goal_q[3] += 0.9
    goal_uv = free.kin.hand_pixels(goal_q).float()
    goal_xyz = charged.kin.evaluate(torch.as_tensor(home, dtype=torch.float32), goal_q[None, None]).hand_xyz[0, 0]
    floor = workspace_floor()
    assert float(goal_xyz[:, 2].min()) - floor < 0.15  # the goal is low: only its rays let the hand down there
    obs = observation(frames, home, goal_keypoints=goal_uv.numpy())
    s_free, s = free.prepare(obs), charged.prepare(obs)
    assert s_free.goal_rays is None
    origin, dirs = s.goal_rays
    # each ray passes through its goal keypoint
    rel = goal_xyz.double() - origin.double()
    off = rel - (rel * dirs.double()).sum(-1, keepdim=True) * dirs.double()
    assert float(off.norm(dim=-1).max()) < 1e-4
    # the hand low beside the goal (base turned 0.5 rad): charged; at the goal and at home: not
    beside = goal_q.clone()
    beside[0] += 0.5
    samples = torch.stack([torch.as_tensor(home, dtype=torch.float32).repeat(2, 1), goal_q.repeat(2, 1),
                           beside.repeat(2, 1)])
    det = charged.evaluate(s, samples, details=True)
    extra = det.total - free.evaluate(s_free, samples)
    assert float(det.approach[0].abs().max()) == 0.0 and float(det.approach[1].abs().max()) < 1e-6
    assert float(det.approach[2].min()) > 0.1
    torch.testing.assert_close(extra, (10.0 * det.approach.double() * s.weights.double()).sum(-1).to(extra))
    # the formula on hand-made points: a point on the table one radius past its ray costs 1; unknown rays drop out
    o = torch.zeros(3, dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, -1.0], [float("nan")] * 3], dtype=torch.float64)
    pts = torch.tensor([[[0.08, 0.0, 0.0], [5.0, 5.0, 0.0]]], dtype=torch.float64)
    assert float(approach_violation(pts, o, d, 0.0, 0.15, 0.04)[0]) == pytest.approx(1.0)
    assert float(approach_violation(pts + torch.tensor([0, 0, 0.2]), o, d, 0.0, 0.15, 0.04)[0]) == 0.0
    assert float(approach_violation(pts, o, torch.full_like(d, float("nan")), 0.0, 0.15, 0.04)[0]) == 0.0
    uv = torch.tensor([[56.0, 56.0]])
    o2, d2 = goal_rays(uv, free.camera)
    assert torch.isclose(d2.norm(dim=-1), torch.ones(1, dtype=d2.dtype)).all()


def test_depth_term_fixes_where_on_its_ray_the_hand_is(world_model, fk, frames, home):
    """cost.depth_weight: the hand keypoints' camera depths are compared with the goal's; a pose at the goal's
    pixels but nearer the camera pays, the goal pose pays 0; given goal depths are checked; without them and
    without a hand depth head the planner says what is missing."""
    from dexwm_planner.planners.cost import depth_distance
    from dexwm_robot.config import ConfigError

    base = small_config(horizon=2).replace(cost={"hand_weight": 1.0, "hand_source": "fk"})
    free = make_planner(world_model, fk, base)
    charged = make_planner(world_model, fk, base.replace(cost={"depth_weight": 100.0}))
    goal_q = torch.as_tensor(home, dtype=torch.float32).clone()
    goal_q[1] += 0.6
    goal_q[3] += 0.5
    goal_uv = free.kin.hand_pixels(goal_q).float()
    goal_depth = free.kin.hand_depths(goal_q).float()
    assert goal_depth.shape == (6,) and bool((goal_depth > 0.2).all())
    obs = observation(frames, home, goal_keypoints=goal_uv.numpy())
    obs.goal_depth = goal_depth.numpy()
    s_free, s = free.prepare(obs), charged.prepare(obs)
    assert s_free.goal_depth is None
    torch.testing.assert_close(s.goal_depth, goal_depth)
    samples = torch.stack([goal_q.repeat(2, 1), torch.as_tensor(home, dtype=torch.float32).repeat(2, 1)])
    det = charged.evaluate(s, samples, details=True)
    assert float(det.depth[0].abs().max()) < 1e-5
    home_depth = free.kin.hand_depths(torch.as_tensor(home, dtype=torch.float32))
    expected = (home_depth - goal_depth).abs().mean()
    assert float(det.depth[1, 0]) == pytest.approx(float(expected), rel=1e-4)
    extra = det.total - free.evaluate(s_free, samples)
    torch.testing.assert_close(extra, (100.0 * det.depth.double() * s.weights.double()).sum(-1).to(extra))
    assert charged.plan(s).terms["depth"] and not free.plan(s_free).terms["depth"]
    # the formula: unknown goal depths drop out; none known -> 0
    d = torch.tensor([[1.0, 2.0, 3.0]])
    assert float(depth_distance(d, torch.tensor([1.5, float("nan"), 2.0]))[0]) == pytest.approx(0.75)
    assert float(depth_distance(d, torch.full((3,), float("nan")))[0]) == 0.0
    # bad goal depths are refused; no depths and no depth head: a clear error
    for bad in ([1.0] * 5, [1.0, -0.5, 1.0, 1.0, 1.0, 1.0], [1.0, float("inf"), 1.0, 1.0, 1.0, 1.0]):
        obs.goal_depth = bad
        with pytest.raises(ValueError, match="goal_depth"):
            charged.prepare(obs)
    obs.goal_depth = None  # no depths and no hand depth head: planned without the term (warned when built)
    assert not charged.has_depth_head and charged.prepare(obs).goal_depth is None
    with pytest.raises(ValueError, match="hand depth head"):
        charged.goal_depths(obs.goal)
    with pytest.raises(ConfigError, match="depth_weight"):
        base.replace(cost={"depth_weight": -1.0})


def test_goal_pose_proposal_solves_the_goal_hand_and_lines_up_toward_it(world_model, fk, frames, home):
    """planner.proposal_fraction: the goal's pixels + depths are 3-D points; damped least squares finds joints that
    put the hand there; the proposal line moves toward them at most proposal_step per joint and waypoint, and the
    first iteration evaluates it (so a planner whose cost the goal pose minimises starts from it)."""
    from dexwm_planner.planners.goal_pose import goal_points, proposal_sequence, solve_goal_pose

    cfg = small_config(horizon=2).replace(cost={"hand_weight": 1.0, "hand_source": "fk", "depth_weight": 100.0},
                                          planner={"proposal_fraction": 0.25, "proposal_step": 0.1})
    planner = make_planner(world_model, fk, cfg)
    q0 = torch.as_tensor(home, dtype=torch.float32)
    goal_q = q0.clone()
    goal_q[1] += 0.5
    goal_q[3] += 0.4
    goal_q[7:] += 0.2
    kin = planner.kin
    pts = goal_points(kin.hand_pixels(goal_q.double()), kin.hand_depths(goal_q.double()), planner.camera)
    torch.testing.assert_close(pts, kin.hand_world_points(goal_q.double()), atol=1e-9, rtol=0)
    q, err = solve_goal_pose(kin, pts, q0, planner.joint_low, planner.joint_high)
    assert err < 1e-4
    torch.testing.assert_close(kin.hand_world_points(q.double()), pts, atol=2e-4, rtol=0)
    assert bool((q >= planner.joint_low - 1e-6).all() and (q <= planner.joint_high + 1e-6).all())
    # unknown keypoints drop out; none known: the start comes back
    q_none, e_none = solve_goal_pose(kin, torch.full((6, 3), float("nan")), q0, planner.joint_low,
                                     planner.joint_high)
    assert math.isnan(e_none) and torch.equal(q_none, q0)
    line = proposal_sequence(q0, goal_q, 3, 0.1)
    steps = torch.diff(torch.cat([q0[None], line]), dim=0).abs().max(-1).values
    assert bool((steps <= 0.1 + 1e-6).all())
    torch.testing.assert_close(proposal_sequence(q0, goal_q, 50, 0.1)[-1], goal_q)
    # in the planner: the first iteration's samples include the line; the goal pose and error are reported
    obs = observation(frames, home, goal_keypoints=kin.hand_pixels(goal_q).numpy())
    obs.goal_depth = kin.hand_depths(goal_q).numpy()
    state = planner.prepare(obs)
    seen, lines = [], []
    original, propose = planner.evaluate, planner.goal_proposal

    def spy(st, x, details=False):
        seen.append(x.clone())
        return original(st, x, details)

    def spy_line(st):
        lines.append(propose(st))
        return lines[-1]

    planner.evaluate, planner.goal_proposal = spy, spy_line
    res = planner.plan(state)
    expected, first = lines[0], seen[0]
    assert float((first - expected[None]).abs().flatten(1).max(-1).values.min()) < 1e-5
    assert res.timing["goal_pose_error_m"] < 1e-3
    # proposal_lift: aim above the goal until the hand is lined up horizontally, then at the goal itself
    from dexwm_planner.planners.goal_pose import approach_target

    hand_far = pts + torch.tensor([0.2, 0.0, 0.1], dtype=pts.dtype)
    raised, lifted = approach_target(pts, hand_far, 0.08, 0.03)
    assert lifted and torch.allclose(raised[:, 2], pts[:, 2] + 0.08) and torch.equal(raised[:, :2], pts[:, :2])
    same, lifted = approach_target(pts, pts + torch.tensor([0.01, 0.0, 0.1], dtype=pts.dtype), 0.08, 0.03)
    assert not lifted and torch.equal(same, pts)
    assert not approach_target(pts, hand_far, 0.0, 0.03)[1]
    lift_planner = make_planner(world_model, fk, cfg.replace(planner={"proposal_lift": 0.08}))
    lift_state = lift_planner.prepare(obs)
    line = lift_planner.goal_proposal(lift_state)  # home is far from the goal: the line heads for the raised pose
    assert set(lift_planner._goal_poses) == {"lifted"}
    raised_q = lift_planner._goal_poses["lifted"]
    torch.testing.assert_close(kin.hand_world_points(raised_q.double())[:, 2], pts[:, 2] + 0.08, atol=2e-3, rtol=0)
    assert line.shape == (2, 23)
    # proposals without the depth term (and the hand read by the head): the goal's depths serve the line only
    lone = make_planner(world_model, fk, cfg.replace(cost={"depth_weight": 0.0, "hand_source": "head"}))
    lone_state = lone.prepare(obs)
    assert lone_state.goal_depth is not None and lone.goal_proposal(lone_state) is not None
    assert lone.plan(lone_state).terms["depth"] == []
    off = make_planner(world_model, fk, cfg.replace(planner={"proposal_fraction": 0.0}))
    assert off.goal_proposal(off.prepare(obs)) is None
    with pytest.raises(Exception, match="proposal_fraction"):
        cfg.replace(planner={"proposal_fraction": 1.0})


def test_focused_latent_term_weights_the_tokens_around_the_goal_hand(world_model, fk, frames, home):
    """cost.latent_focus: the latent term becomes a weighted mean over tokens, (1 - a) spread evenly and a on a
    Gaussian bump around the goal's hand keypoints; 0 keeps the paper's plain mean."""
    from dexwm_planner.planners.cost import focus_weights, latent_distance

    grid, hw = world_model.grid, (IMAGE, IMAGE)
    uv = torch.tensor([[20.0, 90.0], [float("nan"), float("nan")]])
    assert focus_weights(uv, grid, hw, 0.0, 14.0) is None
    assert focus_weights(torch.full((2, 2), float("nan")), grid, hw, 0.5, 14.0) is None
    w = focus_weights(uv, grid, hw, 0.8, 10.0)
    p = grid[0] * grid[1]
    assert w.shape == (p,) and float(w.sum()) == pytest.approx(1.0) and float(w.min()) >= 0.2 / p - 1e-12
    row, col = int(90 // (IMAGE / grid[0])), int(20 // (IMAGE / grid[1]))  # the token under (u, v) = (20, 90)
    assert int(w.argmax()) == row * grid[1] + col
    pred, goal = torch.randn(3, p, LATENT), torch.randn(1, p, LATENT)
    torch.testing.assert_close(latent_distance(pred, goal, w), (((pred - goal) ** 2).sum(-1).double() @ w).float())
    base = small_config(horizon=2).replace(cost={"hand_weight": 1.0, "latent_focus": 0.0})
    plain = make_planner(world_model, fk, base)
    focused = make_planner(world_model, fk, base.replace(cost={"latent_focus": 0.8, "latent_focus_sigma_px": 10.0}))
    goal_uv = np.array([[20.0, 90.0]] * 6)
    obs = observation(frames, home, goal_keypoints=goal_uv)
    s_plain, s = plain.prepare(obs), focused.prepare(obs)
    assert s_plain.token_weights is None
    torch.testing.assert_close(s.token_weights, w.to(s.token_weights))
    samples = torch.as_tensor(home, dtype=torch.float32)[None, None].repeat(2, 2, 1)
    samples[1, :, :7] += 0.2
    d_plain, d = plain.evaluate(s_plain, samples, details=True), focused.evaluate(s, samples, details=True)
    torch.testing.assert_close(d.hand, d_plain.hand)  # only the latent term changes
    assert not torch.allclose(d.latent, d_plain.latent)
    with pytest.raises(ValueError, match="focused latent"):
        ReferencePattern(world_model, base.replace(cost={"latent_focus": 0.5}), plain.camera)


def test_bf16_autocast_runs_the_predictor_only_and_auto_picks_it_where_the_cpu_multiplies_bf16(
        world_model, fk, frames, home, monkeypatch):
    """runtime.dtype bfloat16: the predictor's rollout runs under bf16 autocast (costs near the fp32 ones, not
    equal), while the encoder and the heads read the goal in fp32 (a depth of ~1 m in bf16 would be rounded to
    4-8 mm); ``auto`` resolves to bf16 on CUDA and on CPUs with hardware bf16 matrix products, else fp32."""
    from dexwm_model.predictor.config import HandDepthHeadConfig
    from dexwm_planner.planners import planner as planner_module

    model = copy.deepcopy(world_model)
    model.add_hand_depth_head(HandDepthHeadConfig(width=32, heads=2), seed=0)
    randomize(model.hand_depth_head, 3)
    base = small_config().replace(cost={"hand_weight": 1.0, "hand_source": "fk", "depth_weight": 10.0})
    p32 = make_planner(model, fk, base)
    p16 = make_planner(model, fk, base.replace(runtime={"dtype": "bfloat16"}))
    assert p32.autocast_dtype is None and p16.autocast_dtype == torch.bfloat16
    images, _, goal = frames
    torch.testing.assert_close(p16.encode(images), p32.encode(images), rtol=0, atol=0)
    torch.testing.assert_close(p16.goal_keypoints(goal), p32.goal_keypoints(goal), rtol=0, atol=0)
    torch.testing.assert_close(p16.goal_depths(goal), p32.goal_depths(goal), rtol=0, atol=0)
    obs = observation(frames, home)
    s32, s16 = p32.prepare(obs), p16.prepare(obs)
    g = torch.Generator().manual_seed(4)
    samples = torch.as_tensor(home, dtype=torch.float32) + 0.1 * torch.randn(16, 2, 23, generator=g)
    c32, c16 = p32.evaluate(s32, samples), p16.evaluate(s16, samples)
    assert c16.dtype == c32.dtype and bool(torch.isfinite(c16).all())
    assert not torch.equal(c16, c32)  # the rollout did run in bf16
    torch.testing.assert_close(c16, c32, rtol=5e-2, atol=5e-2)
    # what "auto" means
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert planner_module.resolve_dtype("float32", cuda) == "float32"
    assert planner_module.resolve_dtype("float64", cpu) == "float64"
    assert planner_module.resolve_dtype("auto", cuda) == "bfloat16"
    monkeypatch.setattr(planner_module, "cpu_has_bf16_matmul", lambda: True)
    assert planner_module.resolve_dtype("auto", cpu) == "bfloat16"
    monkeypatch.setattr(planner_module, "cpu_has_bf16_matmul", lambda: False)
    assert planner_module.resolve_dtype("auto", cpu) == "float32"
    assert make_planner(model, fk, base.replace(runtime={"dtype": "auto"})).autocast_dtype is None


def test_proposal_keeps_the_hand_open_until_it_is_near_the_goal(world_model, fk, frames, home):
    """planner.proposal_close_within: far from the goal's keypoints the proposal line moves the arm only (the hand's
    joints stay as they are); within the distance it closes the hand toward the goal pose too."""
    from dexwm_planner.planners.goal_pose import keep_hand_until_near
    from dexwm_robot.config import ConfigError

    current = torch.as_tensor(home, dtype=torch.float32)
    target = current + 0.3
    points = torch.zeros(6, 3)
    far, near = points + torch.tensor([0.0, 0.0, 0.2]), points + torch.tensor([0.0, 0.0, 0.05])
    kept = keep_hand_until_near(target, current, far, points, 0.1)
    assert torch.equal(kept[:7], target[:7]) and torch.equal(kept[7:], current[7:])
    assert torch.equal(keep_hand_until_near(target, current, near, points, 0.1), target)
    assert torch.equal(keep_hand_until_near(target, current, far, points, 0.0), target)  # 0: off
    unknown = torch.full((6, 3), float("nan"))
    assert torch.equal(keep_hand_until_near(target, current, far, unknown, 0.1), target)
    # in the planner: the proposal's hand joints stay put while the hand is far from the goal
    base = small_config(horizon=2).replace(cost={"hand_weight": 1.0, "hand_source": "fk", "depth_weight": 10.0},
                                           planner={"proposal_fraction": 0.5})
    goal_q = current.clone()
    goal_q[1] += 0.5
    goal_q[8:11] += 0.6  # a hand closing on the goal
    free = make_planner(world_model, fk, base)
    obs = observation(frames, home, goal_keypoints=free.kin.hand_pixels(goal_q).float().numpy())
    obs.goal_depth = free.kin.hand_depths(goal_q).float().numpy()
    line = free.goal_proposal(free.prepare(obs))
    assert float((line[-1, 7:] - current[7:]).abs().max()) > 0.05  # off: the hand closes on the way
    held = make_planner(world_model, fk, base.replace(planner={"proposal_close_within": 0.05}))
    line = held.goal_proposal(held.prepare(obs))
    assert torch.allclose(line[:, 7:], current[7:].expand(2, -1))
    assert float((line[-1, :7] - current[:7]).abs().max()) > 0.05
    with pytest.raises(ConfigError, match="proposal_close_within"):
        base.replace(planner={"proposal_close_within": -0.1})


@pytest.mark.parametrize("iterations_with_proposal", [1, 3])
def test_proposals_enter_the_first_proposal_iterations_only(iterations_with_proposal):
    """planner.proposal_iterations: the proposal sequence itself is among the samples of exactly the first
    ``proposal_iterations`` iterations; a count below 1 is refused."""
    from dexwm_robot.config import ConfigError

    base = load_planner_config().replace(planner={
        "samples": 16, "iterations": 4, "horizon": 2, "cem": {"elites": 4}, "proposal_fraction": 0.25,
        "proposal_iterations": iterations_with_proposal})
    d = 3
    proposal = torch.tensor([[0.5, -0.5, 0.25], [0.6, -0.4, 0.3]])
    seen = []

    def cost(x):
        seen.append(x.clone())
        return (x ** 2).sum((1, 2))

    opt = SamplingOptimizer(base.planner, -torch.ones(d), torch.ones(d), torch.full((d,), 1e-4))
    opt.run(cost, torch.zeros(2, d), torch.full((2, d), 0.05), torch.Generator().manual_seed(0), proposal=proposal)
    has = [bool(((x - proposal[None]).abs().flatten(1).max(-1).values < 1e-6).any()) for x in seen]
    assert has == [i < iterations_with_proposal for i in range(4)]
    with pytest.raises(ConfigError, match="proposal_iterations"):
        base.replace(planner={"proposal_iterations": 0})
