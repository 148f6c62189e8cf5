"""Goal-image Diffusion Policy baseline: normalisation round trip, noise-predictor / scheduler shapes, hindsight-goal
batches, a tiny policy overfitting a tiny synthetic dataset (loss falls, DDIM reproduces the trained chunks),
checkpoint round trip and damaged checkpoints, `dexwm train diffusion-policy` on synthetic episodes, and one short
closed-loop episode through `dexwm bench tasks --baseline diffusion`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from dexwm_cli.main import main
from dexwm_robot.config import ConfigError, load_yaml
from dexwm_model.data.episode import Episode, EpisodeMeta, WriterConfig, write_episode
from dexwm_model.encoders.factory import EncoderConfig
from dexwm_model.kinematics.panda_allegro import robot_joint_limits, robot_joint_names
from dexwm_planner.baselines.diffusion_policy import (DiffusionPolicy, DiffusionPolicyController, MinMaxNormalizer,
                                                      PolicyCheckpointError, PolicyModelConfig, SchedulerConfig)
from dexwm_planner.baselines.diffusion_policy.dataset import TokenDataset, encode_episodes, episode_files
from dexwm_planner.baselines.diffusion_policy.unet1d import ConditionalUnet1D

TINY_ENCODER = {"kind": "dexwm_vit", "size": "micro", "image_size": [56, 56], "random_init": True, "seed": 1,
                "weights": None}
TINY_MODEL = {"encoder": TINY_ENCODER, "horizon": 4, "token_features": 4, "image_features": 32, "time_features": 32,
              "unet_channels": [32, 64], "kernel_size": 3, "groups": 8, "min_half_range": 0.001}
TINY_SCHEDULER = {"train_timesteps": 50, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample",
                  "inference_steps": 10}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_policy(**scheduler) -> DiffusionPolicy:
    cfg = PolicyModelConfig(**{**TINY_MODEL, "encoder": EncoderConfig(**TINY_ENCODER)})
    torch.manual_seed(0)
    return DiffusionPolicy(cfg, SchedulerConfig(**{**TINY_SCHEDULER, **scheduler}))


def fixed_batch(b: int = 4, tokens: int = 16, dim: int = 32, horizon: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cur, goal = torch.randn(b, tokens, dim, generator=g), torch.randn(b, tokens, dim, generator=g)
    joints = torch.randn(b, 23, generator=g)
    actions = torch.cumsum(torch.randn(b, horizon, 23, generator=g) * 0.3, dim=1)
    return cur, goal, joints, actions


# ------------------------------------------------------------------------------------------------ normalisation
def test_normalizer_round_trip_and_constant_joints():
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.uniform(-2.0, 3.0, (500, 23)))
    data[:, 5] = 0.7  # a joint that never moved
    norm = MinMaxNormalizer(23, min_half_range=1e-3).fit(data)
    y = norm.normalize(data)
    assert y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6
    np.testing.assert_allclose(y.min(0).values[[0, 1, 22]], -1.0, atol=1e-6)
    np.testing.assert_allclose(y.max(0).values[[0, 1, 22]], 1.0, atol=1e-6)
    np.testing.assert_allclose(norm.unnormalize(y), data, atol=1e-6)
    z = torch.rand(7, 23, dtype=torch.float64) * 2 - 1
    np.testing.assert_allclose(norm.normalize(norm.unnormalize(z)), z, atol=1e-9)
    assert torch.all(y[:, 5].abs() < 1e-3)  # float32 statistics: 0.7 is not exact
    ends = norm.unnormalize(torch.stack([torch.full((23,), -1.0), torch.ones(23)]).double())
    assert torch.all((ends[:, 5] - 0.7).abs() <= 1e-3 + 1e-6)  # any sample in [-1, 1] stays at the value seen
    with pytest.raises(ValueError, match="last dimension of 23"):
        norm.normalize(torch.zeros(3, 22))
    with pytest.raises(ValueError, match="NaN"):
        MinMaxNormalizer(23).fit(torch.full((2, 23), float("nan")))


# ------------------------------------------------------------------------------------------- shapes, schedulers
def test_noise_predictor_and_scheduler_shapes():
    net = ConditionalUnet1D(action_dim=23, obs_dim=40, channels=[16, 32, 64], time_features=16, kernel_size=5,
                            groups=8)
    x = torch.randn(3, 8, 23)
    out = net(x, torch.tensor([0, 10, 99]), torch.randn(3, 40))
    assert out.shape == x.shape
    assert net(x, torch.tensor(5), torch.randn(3, 40)).shape == x.shape  # one step for the whole batch
    with pytest.raises(ValueError, match=r"\(B, H, A\)"):
        net(torch.randn(8, 23), torch.tensor(1), torch.randn(1, 40))

    cur, goal, joints, actions = fixed_batch()
    for prediction in ("epsilon", "sample"):
        policy = tiny_policy(prediction_type=prediction)
        assert type(policy.train_scheduler).__name__ == "DDPMScheduler"
        assert type(policy.sample_scheduler).__name__ == "DDIMScheduler"
        assert policy.sample_scheduler.config.prediction_type == prediction
        policy.action_norm.fit(actions)
        policy.joint_norm.fit(joints)
        loss = policy.loss(cur, goal, joints, actions, generator=torch.Generator().manual_seed(0))
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None for p in policy.net.parameters())
        assert all(p.grad is None for p in policy.encoder.parameters())  # the encoder stays frozen
    with pytest.raises(ValueError, match=r"expected actions \(B, 4, 23\)"):
        policy.loss(cur, goal, joints, actions[:, :3])
    a = policy.sample(cur, goal, joints, generator=torch.Generator().manual_seed(3))
    b = policy.sample(cur, goal, joints, generator=torch.Generator().manual_seed(3))
    assert a.shape == (4, 4, 23) and torch.equal(a, b)
    assert len(policy.sample_scheduler.timesteps) == 10
    low, high = actions.reshape(-1, 23).min(0).values, actions.reshape(-1, 23).max(0).values
    assert torch.all(a >= low - 1e-4) and torch.all(a <= high + 1e-4)  # clipped samples stay in the data's range


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="not a multiple of 4"):
        PolicyModelConfig(**{**TINY_MODEL, "horizon": 6, "unet_channels": [8, 16, 32]})
    with pytest.raises(ConfigError, match="not divisible by model.groups"):
        PolicyModelConfig(**{**TINY_MODEL, "unet_channels": [12, 24]})
    with pytest.raises(ConfigError, match="inference_steps"):
        SchedulerConfig(train_timesteps=5, inference_steps=10)
    with pytest.raises(ConfigError, match="beta_schedule"):
        SchedulerConfig(beta_schedule="cosine")
    with pytest.raises(ConfigError, match="prediction_type"):
        SchedulerConfig(prediction_type="v_prediction")


# -------------------------------------------------------------------------------------------- hindsight batches
def test_hindsight_batches_stay_inside_their_episode():
    lengths = (5, 9, 1, 6)  # a one-frame episode yields no samples
    n = sum(lengths)
    ends = torch.cat([torch.full((m,), sum(lengths[:i]) + m - 1) for i, m in enumerate(lengths)])
    targets = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 23).clone()
    data = TokenDataset(torch.arange(n, dtype=torch.float16)[:, None, None].expand(n, 2, 3).clone(),
                        targets + 0.5, targets, ends, ["a", "b", "c", "d"])
    assert data.starts.numel() == n - len(lengths)
    b = data.batch(2000, 4, torch.Generator().manual_seed(0))
    t, goal = b["t"], b["goal_index"]
    assert torch.all(goal > t) and torch.all(goal <= ends[t])
    assert torch.all(t < ends[t])
    assert set(goal.tolist()) >= set(range(1, n)) - {5, 14, 15}  # every later frame of an episode is a goal
    expected = torch.minimum(t[:, None] + 1 + torch.arange(4), ends[t][:, None]).float()
    assert torch.equal(b["actions"][..., 0], expected)  # next targets, the last one repeated past the end
    assert torch.equal(b["current"][:, 0, 0], t.float()) and torch.equal(b["goal"][:, 0, 0], goal.float())
    assert torch.equal(b["joints"][:, 0], t.float() + 0.5)


# ------------------------------------------------------------------------------------------------------ overfit
@pytest.fixture(scope="module")
def overfit_policy():
    policy = tiny_policy()
    cur, goal, joints, actions = fixed_batch()
    policy.action_norm.fit(actions)
    policy.joint_norm.fit(joints)
    opt = torch.optim.Adam(policy.net.parameters(), lr=2e-3)
    noise = torch.Generator().manual_seed(1)
    losses = []
    rep = lambda x: x.repeat(16, *[1] * (x.dim() - 1))  # noqa: E731  (16 noise levels per sample and step)
    for _ in range(300):
        loss = policy.loss(rep(cur), rep(goal), rep(joints), rep(actions), generator=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return policy.eval(), (cur, goal, joints, actions), losses


def test_tiny_policy_overfits_and_ddim_reproduces_the_chunks(overfit_policy):
    policy, (cur, goal, joints, actions), losses = overfit_policy
    first, last = np.mean(losses[:20]), np.mean(losses[-50:])
    assert last < first / 50, (first, last)
    out = policy.sample(cur, goal, joints, generator=torch.Generator().manual_seed(7))
    err = (out - actions).abs() / policy.action_norm.half_range  # in normalised units (range [-1, 1])
    assert err.mean() < 0.05 and err.max() < 0.3, (float(err.mean()), float(err.max()))
    # the observation matters: another sample's observation gives that sample's chunk
    swapped = policy.sample(cur[[1, 0, 3, 2]], goal[[1, 0, 3, 2]], joints[[1, 0, 3, 2]],
                            generator=torch.Generator().manual_seed(7))
    assert ((swapped - actions[[1, 0, 3, 2]]).abs() / policy.action_norm.half_range).mean() < 0.05


# -------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_damaged_checkpoints(overfit_policy, tmp_path):
    policy, (cur, goal, joints, _), _ = overfit_policy
    folder = policy.save(tmp_path / "ckpt", training={"steps": 300})
    loaded = DiffusionPolicy.load(folder)
    assert loaded.config == policy.config and loaded.scheduler_config == policy.scheduler_config
    for k, v in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    assert torch.equal(loaded.sample(cur, goal, joints, generator=g()), policy.sample(cur, goal, joints, generator=g()))
    assert DiffusionPolicy.read_training_record(folder) == {"steps": 300}

    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(PolicyCheckpointError, match="unreadable weights file"):
        DiffusionPolicy.load(folder)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(PolicyCheckpointError, match="model.safetensors"):
        DiffusionPolicy.load(folder)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump({**cfg, "format": "dexwm-world-model"}))
    with pytest.raises(PolicyCheckpointError, match="not a dexwm-diffusion-policy config"):
        DiffusionPolicy.load(folder)
    (folder / "config.yaml").write_text(yaml.safe_dump({**cfg, "model": {**cfg["model"], "horizon": 7}}))
    with pytest.raises(PolicyCheckpointError, match="horizon"):
        DiffusionPolicy.load(folder)
    wider = {**cfg, "model": {**cfg["model"], "image_features": 48}}
    (folder / "config.yaml").write_text(yaml.safe_dump(wider))
    policy.save(tmp_path / "ok")
    (folder / "model.safetensors").write_bytes((tmp_path / "ok" / "model.safetensors").read_bytes())
    with pytest.raises(PolicyCheckpointError, match="weights do not match config.yaml"):
        DiffusionPolicy.load(folder)
    (folder / "config.yaml").unlink()
    with pytest.raises(PolicyCheckpointError, match="missing config.yaml"):
        DiffusionPolicy.load(folder)


# ---------------------------------------------------------------------------------------------- training (CLI)
def synthetic_episode(seed: int, n: int = 12, size: int = 56) -> Episode:
    """A bright square whose image position follows joint 0, which moves toward piecewise-constant targets."""
    rng = np.random.default_rng(seed)
    K = np.array([[50.0, 0.0, size / 2], [0.0, 50.0, size / 2], [0.0, 0.0, 1.0]])
    # targets about the middle of every joint's range, joint 0 (middle 0) swinging +-1 rad: inside the robot's limits
    low, high = robot_joint_limits()
    mid, reach = (low + high) / 2, np.minimum(1.0, 0.9 * (high - low) / 2)
    targets = mid + reach * np.repeat(rng.uniform(-1, 1, (3, 23)), [n // 3, n // 3, n - 2 * (n // 3)], axis=0)
    joints = np.tile(mid, (n, 1))
    for i in range(1, n):
        joints[i] = joints[i - 1] + 0.5 * (targets[i] - joints[i - 1])
    frames = np.full((n, size, size, 3), 40, dtype=np.uint8)
    for i in range(n):
        u = int((joints[i, 0] + 1) / 2 * (size - 8))
        frames[i, 20:28, u:u + 8] = 250
    kc = np.stack([rng.uniform(-0.3, 0.3, (n, 21)), rng.uniform(-0.3, 0.3, (n, 21)), np.ones((n, 21))], -1)
    return Episode(
        meta=EpisodeMeta(robot="panda_allegro_right", scene_seed=seed, episode_kind="reach", object_layout={},
                         fps=5.0, generator_version="test/diffusion-policy", camera_name="test"),
        frames=frames, timestamps=np.arange(n) * 0.2, joint_positions=joints, commanded_targets=targets,
        keypoints_world=kc.copy(), keypoints_camera=kc, keypoints_pixels=kc[..., :2] * 50.0 + size / 2,
        camera_intrinsics=K, camera_pose_world=np.tile(np.eye(4), (n, 1, 1)), object_poses=np.zeros((n, 0, 7)),
        joint_names=robot_joint_names(), object_names=())


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    data = root / "episodes"
    data.mkdir()
    for i in range(2):
        write_episode(data / f"episode_{i:06d}.h5", synthetic_episode(i), WriterConfig("lzf", 1))
    config = load_yaml("diffusion_policy.yaml")
    config["model"] = TINY_MODEL
    config["scheduler"] = TINY_SCHEDULER
    config["train"].update(steps=30, batch_size=8, warmup_steps=5, log_every=10)
    cfg_file = root / "dp.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    out = root / "ckpt"
    code = main(["train", "diffusion-policy", "--data", str(data), "--out", str(out), "--config", str(cfg_file),
                 "--threads", "1", "--eval-samples", "8"])
    assert code == 0
    return data, out


def test_train_cli_writes_a_loadable_checkpoint(trained_checkpoint, capsys):
    data, out = trained_checkpoint
    record = DiffusionPolicy.read_training_record(out)
    assert record["episodes"] == 2 and record["frames"] == 24 and record["samples"] == 22
    assert [s for s, _ in record["loss_curve"]] == [10, 20, 30]
    assert all(np.isfinite(v) for _, v in record["loss_curve"])
    assert record["train"]["steps"] == 30 and record["command"].startswith("dexwm train diffusion-policy")
    err = record["action_error_rad"]
    assert err["on"] == "train" and err["policy"]["first_action_arm"] >= 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [10, 20, 30]
    policy = DiffusionPolicy.load(out)
    # the normalisers were fitted on the episodes' commanded targets
    targets = torch.cat([torch.from_numpy(synthetic_episode(i).commanded_targets) for i in range(2)]).float()
    np.testing.assert_allclose(policy.action_norm.unnormalize(torch.ones(23)), targets.max(0).values, atol=1e-5)
    tokens = encode_episodes(episode_files([data]), policy.encoder, progress=False)
    assert tokens.tokens.shape == (24, 16, 32) and tokens.tokens.dtype == torch.float16


def test_train_cli_rejects_a_folder_without_episodes(tmp_path):
    with pytest.raises(SystemExit, match="no episode files"):
        main(["train", "diffusion-policy", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--steps", "1"])


# ------------------------------------------------------------------------------------------ closed loop (CLI)
def test_controller_returns_chunk_waypoints_within_limits(trained_checkpoint):
    policy = DiffusionPolicy.load(trained_checkpoint[1])
    low, high = np.full(23, -0.5), np.full(23, 0.5)
    ctl = DiffusionPolicyController(policy, (low, high), execute_steps=2, waypoint_duration_s=0.2, seed=4)
    image = np.full((224, 224, 3), 90, dtype=np.uint8)
    with pytest.raises(Exception, match="no goal set"):
        ctl.plan()
    ctl.set_goal(image, "reach")
    with pytest.raises(Exception, match="no camera frame"):
        ctl.plan()
    ctl.observe(image, np.zeros(23), 0.0)
    step = ctl.plan()
    assert step.waypoints.shape == (2, 23) and step.plan.shape == (4, 23)
    assert np.all(step.plan >= low) and np.all(step.plan <= high)
    np.testing.assert_array_equal(step.waypoints, step.plan[:2])
    ctl.seed(4)
    np.testing.assert_array_equal(ctl.plan().plan, step.plan)  # reproducible per seed
    with pytest.raises(ValueError, match="execute_steps"):
        DiffusionPolicyController(policy, (low, high), execute_steps=5, waypoint_duration_s=0.2)
    with pytest.raises(ValueError, match="time went backwards"):
        ctl.observe(image, np.zeros(23), -1.0)


def test_bench_tasks_runs_the_policy_closed_loop(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "tasks", "--baseline", "diffusion", "--policy-checkpoint", str(trained_checkpoint[1]),
                 "--task", "reach", "--episodes", "0", "--max-steps", "2", "--record", "0", "--threads", "1",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["policy"] == "diffusion" and report["checkpoint"] == str(trained_checkpoint[1])
    assert report["planner"]["reach"]["method"] == "diffusion_policy"
    s = report["tasks"]["reach"]
    assert s["episodes"] == 1 and s["replans"] == 2 and s["successes"] == 0
    ep = json.loads((out / "reach" / "episode_0000.json").read_text())
    assert ep["steps"] == 2 and ep["ticks"] > 0 and ep["planning_time_s"][0] > 0


def test_bench_tasks_needs_the_policy_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="--baseline diffusion needs --policy-checkpoint"):
        main(["bench", "tasks", "--baseline", "diffusion", "--task", "reach", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="missing config.yaml"):
        main(["bench", "tasks", "--baseline", "diffusion", "--policy-checkpoint", str(tmp_path), "--task", "reach",
              "--out", str(tmp_path)])
