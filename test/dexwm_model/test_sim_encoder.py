"""The project's own dexwm_vit encoder: ImageEncoder contract, factory save/load, errors, MAE training, probes."""

import json
import math

import numpy as np
import pytest
import torch
import yaml

from dexwm_cli.main import main as dexwm_main
from dexwm_robot.config import ConfigError
from dexwm_model.data.episode import Episode, EpisodeMeta, WriterConfig, write_episode
from dexwm_model.encoders import ENCODERS, EncoderConfig, EncoderWeightsMissing, build_encoder
from dexwm_model.encoders.sim_vit import (
    EncoderWeightsCorrupt,
    SimViTArch,
    SimViTEncoder,
    load_architecture,
    save_sim_vit,
    write_folder_atomic,
)
from dexwm_model.encoders.ssl import config as ssl_config
from dexwm_model.encoders.ssl import probe
from dexwm_model.encoders.ssl.train import evaluate_mae, train_mae
from dexwm_model.kinematics.panda_allegro import robot_joint_limits, robot_joint_names

_LOW, _HIGH = robot_joint_limits()
MID = (_LOW + _HIGH) / 2  # the middle of every joint's range: a posture inside the robot's limits

MICRO = dict(image_size=[56, 56], patch_size=14, width=32, depth=1, heads=2, mlp_ratio=2.0, name="micro")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest and does not stall when other processes hold the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def micro_arch() -> SimViTArch:
    return SimViTArch(**MICRO)


def cfg(**kw) -> EncoderConfig:
    base = dict(kind="dexwm_vit", size=None, image_size=[112, 112])
    base.update(kw)
    return EncoderConfig(**base)


def squares(n: int, size: int = 56, seed: int = 0) -> np.ndarray:
    """Grey frames (n, size, size, 3) with one coloured square each at a random place (the 'hand')."""
    rng = np.random.default_rng(seed)
    frames = np.full((n, size, size, 3), 90, dtype=np.uint8)
    frames[:, size // 2 :] = 140  # a 'table' in the lower half
    for i in range(n):
        s = size // 5
        y, x = rng.integers(0, size - s, 2)
        frames[i, y : y + s, x : x + s] = rng.integers(0, 256, 3)
    return frames


# ------------------------------------------------------------------------------------------------ contract
@pytest.fixture(scope="module")
def t112():
    return SimViTEncoder.random_init(load_architecture("T112"), seed=0)


def test_t112_contract_shapes_grid_frozen_normalised(t112):
    assert "dexwm_vit" in ENCODERS
    assert t112.image_size == (112, 112) and t112.grid == (8, 8) and t112.num_tokens == 64 and t112.dim == 192
    frames = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)  # the sim's render size
    tokens = t112(frames)
    assert tokens.shape == (2, 64, 192) and tokens.dtype == torch.float32 and not tokens.requires_grad
    # LayerNorm output (identity affine at init): every token has mean 0 and unit variance over its channels
    assert torch.allclose(tokens.mean(-1), torch.zeros(2, 64), atol=1e-4)
    assert torch.allclose(tokens.var(-1, unbiased=False), torch.ones(2, 64), atol=1e-3)
    assert all(not p.requires_grad for p in t112.parameters())
    t112.train()
    assert not t112.training and not t112.backbone.training
    # weights fit the size budget for embedding in the repository (<= 10 MB as float32)
    assert sum(p.numel() for p in t112.parameters()) * 4 <= 10e6
    # tokens are row-major over the grid: changing only the top-left 28x28 px (2x2 patches at 112) changes the
    # nearby tokens more than the far bottom-right one
    changed = frames.copy()
    changed[0, :28, :28] = 255 - changed[0, :28, :28]
    delta = (t112(changed)[0] - tokens[0]).norm(dim=-1)
    assert delta[0] > 5 * delta[63]


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = SimViTEncoder.random_init(micro_arch(), seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = SimViTEncoder.random_init(micro_arch(), seed=5)
    c = SimViTEncoder.random_init(micro_arch(), seed=6)
    x = squares(2)
    assert torch.equal(a(x), b(x)) and not torch.allclose(a(x), c(x))


# ------------------------------------------------------------------------------------------ factory / files
def test_save_then_factory_load_gives_identical_tokens(tmp_path, t112):
    out = save_sim_vit(t112.backbone, tmp_path / "enc", info={"note": "test"})
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors"]
    meta = yaml.safe_load((out / "config.yaml").read_text())
    assert meta["format"] == "dexwm-vit-encoder" and meta["architecture"]["width"] == 192
    assert meta["training"] == {"note": "test"}
    loaded = build_encoder(cfg(weights=str(out)))
    assert isinstance(loaded, SimViTEncoder) and loaded.is_pretrained and not t112.is_pretrained
    frames = np.random.default_rng(1).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    assert torch.equal(loaded(frames), t112(frames))
    assert build_encoder(cfg(weights=str(out), size="T112")).arch.name == "T112"


def test_factory_random_init_uses_the_yaml_preset():
    enc = build_encoder(cfg(random_init=True, size=None, seed=3))
    assert enc.arch.name == "T112" and enc.grid == (8, 8) and enc.source == "random-init(seed=3)"
    enc = build_encoder(cfg(random_init=True, size="micro", image_size=[56, 56]))
    assert enc.grid == (4, 4) and enc.dim == 32


def test_factory_config_errors_are_specific(tmp_path, t112):
    out = save_sim_vit(t112.backbone, tmp_path / "enc")
    with pytest.raises(ConfigError, match="random_init is true but weights is set"):
        build_encoder(cfg(random_init=True, weights=str(out)))
    with pytest.raises(ConfigError, match=r"image_size: \[224, 224\].*set image_size to \[112, 112\]"):
        build_encoder(cfg(weights=str(out), image_size=[224, 224]))
    with pytest.raises(ConfigError, match="size: 'S' but .* have architecture 'T112'"):
        build_encoder(cfg(weights=str(out), size="S"))
    with pytest.raises(ConfigError, match="unknown architecture preset 'huge'"):
        build_encoder(cfg(random_init=True, size="huge"))


def test_missing_weights_folder_or_files_raise_weights_missing(tmp_path, t112):
    with pytest.raises(EncoderWeightsMissing, match=r"nowhere: no such folder .*dexwm train encoder"):
        build_encoder(cfg(weights=str(tmp_path / "nowhere")))
    out = save_sim_vit(t112.backbone, tmp_path / "enc")
    (out / "model.safetensors").unlink()
    with pytest.raises(EncoderWeightsMissing, match="missing model.safetensors"):
        build_encoder(cfg(weights=str(out)))


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-100]), "sha256"),
    (lambda d: (d / "config.yaml").write_text("format: [unclosed"), "not valid YAML"),
    (lambda d: (d / "config.yaml").write_text("format: something-else\n"), "'format' must be 'dexwm-vit-encoder'"),
])
def test_corrupt_weights_folder_raises_clear_error(tmp_path, damage, message):
    out = save_sim_vit(SimViTEncoder.random_init(micro_arch()).backbone, tmp_path / "enc")
    damage(out)
    with pytest.raises(EncoderWeightsCorrupt, match=message):
        SimViTEncoder.from_folder(out)


def test_weights_not_matching_the_architecture_are_refused(tmp_path):
    out = save_sim_vit(SimViTEncoder.random_init(micro_arch()).backbone, tmp_path / "enc")
    meta = yaml.safe_load((out / "config.yaml").read_text())
    meta["architecture"]["width"] = 64  # the file still holds width-32 tensors (the sha256 still matches)
    (out / "config.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(EncoderWeightsCorrupt, match="has shape .* the architecture needs"):
        SimViTEncoder.from_folder(out)


def test_folder_write_is_atomic(tmp_path):
    target = tmp_path / "folder"
    write_folder_atomic(target, {"a.txt": lambda p: p.write_text("old")})

    def boom(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_folder_atomic(target, {"a.txt": lambda p: p.write_text("new"), "b.txt": boom})
    assert (target / "a.txt").read_text() == "old" and not (target / "b.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # no temporary folders left behind
    write_folder_atomic(target, {"c.txt": lambda p: p.write_text("new")})
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]


# ------------------------------------------------------------------------------------------------- training
def test_a_few_mae_steps_reduce_the_loss_and_are_seeded():
    frames = torch.from_numpy(squares(48)).permute(0, 3, 1, 2).contiguous()
    train_cfg = ssl_config.load("train")
    import dataclasses

    train_cfg = dataclasses.replace(train_cfg, batch_size=16, lr=3e-3, warmup_fraction=0.1, seed=7, log_every=10)
    mae_cfg = dataclasses.replace(ssl_config.load("mae"), decoder_width=32, decoder_depth=1, decoder_heads=2)
    aug = ssl_config.load("augment")
    from dexwm_model.encoders.sim_vit import SimViTBackbone
    from dexwm_model.encoders.ssl.mae import MaskedAutoencoder
    from dexwm_model.encoders.preprocess import ImagePreprocessor

    torch.manual_seed(7)
    untrained = MaskedAutoencoder(SimViTBackbone(micro_arch()), mae_cfg)
    pre = ImagePreprocessor((56, 56))
    before = evaluate_mae(untrained, frames, pre)
    model, hist = train_mae(frames, micro_arch(), mae_cfg, train_cfg, aug, steps=60)
    after = evaluate_mae(model, frames, pre)
    assert after < 0.8 * before, (before, after)
    assert hist["steps"] == 60 and hist["loss_curve"][-1][0] == 60
    model2, _ = train_mae(frames, micro_arch(), mae_cfg, train_cfg, aug, steps=60)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


# ----------------------------------------------------------------------------------------------------- probe
def test_ridge_recovers_a_known_linear_map_exactly_primal_and_dual():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12))
    w, b = rng.normal(size=(12, 3)), rng.normal(size=3)
    y = x @ w + b
    m = probe.ridge_fit(x, y, alpha=1e-12)
    np.testing.assert_allclose(m.weight, w, atol=1e-8)
    np.testing.assert_allclose(m.predict(x[:5]) - m.predict(np.zeros((1, 12))), x[:5] @ w, atol=1e-8)
    assert np.all(probe.r2_score(y, m.predict(x)) > 1 - 1e-12)
    # more features than samples (dual form): same answer as the primal form would give on the same data
    xd = rng.normal(size=(20, 50))
    yd = xd @ rng.normal(size=(50, 2)) + 1.0
    dual = probe._RidgePath(xd, yd)
    assert not dual.primal
    md = dual.model(1e-3)
    xc, yc = xd - xd.mean(0), yd - yd.mean(0)
    w_primal = np.linalg.solve(xc.T @ xc + md.lam * np.eye(50), xc.T @ yc)
    np.testing.assert_allclose(md.weight, w_primal, atol=1e-8)
    # noise-free data: validation picks the smallest alpha and the probe is exact on new rows
    xv = rng.normal(size=(50, 12))
    models, scores = probe.fit_probe(x, y, xv, xv @ w + b, [1e-9, 1e-3, 1.0], {"a": slice(0, 2), "b": slice(2, 3)})
    assert models["a"].alpha == 1e-9 and scores["a"][1e-9] > scores["a"][1.0]
    np.testing.assert_allclose(models["b"].predict(xv), (xv @ w + b)[:, 2:], atol=1e-6)


def test_point_error_projection_and_heat_readout():
    assert probe.mean_point_error(np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([[3.0, 4.0, 1.0, 1.0]])) == 2.5
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    pose = np.eye(4)[None].repeat(2, 0)
    pose[1, :3, 3] = [0.1, 0.0, 0.0]  # camera moved right: the point appears further left
    uv = probe.project_points(np.array([[[0.2, -0.1, 2.0]]] * 2), pose, K)
    np.testing.assert_allclose(uv[:, 0], [[60.0, 35.0], [55.0, 35.0]])
    centres = probe.patch_centres((8, 8), (224, 224))
    assert centres[0].tolist() == [14.0, 14.0] and centres[9].tolist() == [42.0, 42.0]
    pts = np.array([[50.0, 120.0, 200.0, 30.0]])
    heat = probe.heat_targets(pts, centres, sigma=28.0)
    assert heat.shape == (1, 64, 2)
    np.testing.assert_allclose(probe.heat_readout(heat, centres, (8, 8)), pts, atol=6.0)
    # a point exactly at a patch centre is read out exactly (symmetric neighbourhood)
    np.testing.assert_allclose(probe.heat_readout(probe.heat_targets(centres[[27]].reshape(1, 2), centres, 28.0),
                                                  centres, (8, 8)), centres[[27]], atol=1e-9)


# -------------------------------------------------------------------------------------- end to end (CLI)
def _episode(seed: int, t: int = 8, size: int = 56) -> Episode:
    """Synthetic 56x56 episode: a bright square follows hand keypoint 0; objects sit in front of the camera."""
    rng = np.random.default_rng(seed)
    K = np.array([[50.0, 0.0, size / 2], [0.0, 50.0, size / 2], [0.0, 0.0, 1.0]])
    pose = np.tile(np.eye(4), (t, 1, 1))
    kc = np.stack([rng.uniform(-0.3, 0.3, (t, 21)), rng.uniform(-0.3, 0.3, (t, 21)), np.full((t, 21), 1.0)], -1)
    kp = kc[..., :2] / kc[..., 2:3] * 50.0 + size / 2
    frames = np.full((t, size, size, 3), 60, dtype=np.uint8)
    for i in range(t):
        u, v = (int(c) for c in kp[i, 0])
        frames[i, max(0, v - 4) : v + 4, max(0, u - 4) : u + 4] = 250
    quat = np.tile([1.0, 0, 0, 0], (t, 2, 1))
    obj = np.concatenate([np.stack([rng.uniform(-0.2, 0.2, (t, 2)), rng.uniform(-0.2, 0.2, (t, 2)),
                                    np.full((t, 2), 1.5)], -1), quat], -1)
    return Episode(
        meta=EpisodeMeta(robot="panda_allegro_right", scene_seed=seed, episode_kind="reach",
                         object_layout={"cube": [0.0, 0.0, 0.0], "ball": [0.0, 0.0, 0.0]}, fps=5.0,
                         generator_version="test/1", camera_name="test"),
        frames=frames, timestamps=np.arange(t) * 0.2, joint_positions=np.tile(MID, (t, 1)),
        commanded_targets=np.tile(MID, (t, 1)), keypoints_world=kc.copy(), keypoints_camera=kc, keypoints_pixels=kp,
        camera_intrinsics=K, camera_pose_world=pose, object_poses=obj,
        joint_names=robot_joint_names(), object_names=("cube", "ball"),
    )


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    for split, seeds in (("train", (0, 1, 2)), ("test", (10,))):
        (root / split).mkdir()
        for i, s in enumerate(seeds):
            write_episode(root / split / f"episode_{i:06d}.h5", _episode(s), WriterConfig("gzip", 1))
    return root


def test_cli_train_encoder_then_probe(episodes, tmp_path, capsys):
    out = tmp_path / "enc"
    rc = dexwm_main(["train", "encoder", "--data", str(episodes / "train"), "--out", str(out), "--steps", "3",
                     "--arch", "micro", "--batch-size", "8", "--threads", "1", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 24 and summary["steps"] == 3 and math.isfinite(summary["final_loss"])
    meta = yaml.safe_load((out / "config.yaml").read_text())
    assert meta["training"]["episodes"] == 3 and meta["training"]["method"].startswith("masked autoencoder")
    enc = build_encoder(cfg(weights=str(out), image_size=[56, 56]))
    assert enc(np.zeros((1, 56, 56, 3), np.uint8)).shape == (1, 16, 32)
    report_path = tmp_path / "probe.json"
    assert probe.main(["--encoder", str(out), "--train", str(episodes / "train"), "--test", str(episodes / "test"),
                       "--out", str(report_path), "--threads", "1"]) == 0
    report = json.loads(report_path.read_text())
    for key in ("trained_flat", "trained_pooled", "trained_per_token", "random_init_flat", "raw_pixels"):
        assert set(report["results"][key]) == {"hand", "objects"}
    assert report["results"]["trained_flat"]["hand"]["test_frames"] == 4  # stride 2 of 8 frames


def test_cli_train_encoder_reports_bad_input(tmp_path, capsys):
    rc = dexwm_main(["train", "encoder", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                     "--steps", "1", "--arch", "micro", "--no-progress"])
    assert rc == 2 and "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    rc = dexwm_main(["train", "encoder", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
                     "--steps", "1", "--arch", "micro", "--no-progress"])
    assert rc == 2 and "no episode files" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
