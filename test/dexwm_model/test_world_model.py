"""WorldModel checkpoints: save / load round trip, and clear errors for missing or damaged folders."""

import shutil

import numpy as np
import pytest
import torch
import yaml

from dexwm_model.config import ConfigError
from dexwm_model.training import ModelSpec, build_world_model
from dexwm_model.world_model import CheckpointError, WorldModel
from test_training_helpers import TINY_MODEL


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = build_world_model(ModelSpec(**TINY_MODEL), seed=5)
    for p in list(model.predictor.parameters()) + list(model.hand_head.parameters()):
        p.data.add_(0.05 * torch.randn_like(p))  # away from the zero initialisation, so outputs carry the weights
    folder = tmp_path_factory.mktemp("wm") / "model"
    model.save(folder)
    return model, folder


def test_round_trip_reproduces_every_output(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model.safetensors"]
    back = WorldModel.load(folder)
    assert back.config == model.config and not back.training
    sa, sb = model.state_dict(), back.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    model.eval()
    with torch.no_grad():
        za, zb = model.encode(images), back.encode(images)
        torch.testing.assert_close(za, zb, rtol=0, atol=0)
        ctx = za[None].expand(2, -1, -1, -1)
        times = torch.tensor([[0.0, 0.3, 0.5]] * 2)
        act = 0.01 * torch.randn(2, 4, 132)
        ra = model.predictor.rollout(ctx, times, act, 0.2)
        rb = back.predictor.rollout(ctx, times, act, 0.2)
        torch.testing.assert_close(ra, rb, rtol=0, atol=0)
        uva, ca = model.hand_keypoints(ra[:, -1])
        uvb, cb = back.hand_keypoints(rb[:, -1])
    torch.testing.assert_close(uva, uvb, rtol=0, atol=0)
    assert uva.shape == (2, 12, 2) and ca.shape == (2, 12)
    assert model.image_size == back.image_size == (56, 56) and back.grid == (4, 4) and back.latent_dim == 32


def _copy(folder, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def test_missing_files_are_named(saved, tmp_path):
    _, folder = saved
    with pytest.raises(CheckpointError, match=r"missing config.yaml .*train one with `dexwm train`"):
        WorldModel.load(tmp_path / "nowhere")
    d = _copy(folder, tmp_path)
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"copy: missing model.safetensors"):
        WorldModel.load(d)


def test_damaged_files_are_reported(saved, tmp_path):
    _, folder = saved
    d = _copy(folder, tmp_path)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])  # truncated download / disk full
    with pytest.raises(CheckpointError, match=r"model.safetensors: unreadable weights file"):
        WorldModel.load(d)
    shutil.copy(folder / "model.safetensors", w)
    (d / "config.yaml").write_text("format: [unclosed")
    with pytest.raises(CheckpointError, match=r"config.yaml: not valid YAML"):
        WorldModel.load(d)
    data = yaml.safe_load((folder / "config.yaml").read_text())
    (d / "config.yaml").write_text(yaml.safe_dump({**data, "format": "something-else"}))
    with pytest.raises(ConfigError, match=r"not a dexwm-world-model config"):
        WorldModel.load(d)
    (d / "config.yaml").write_text(yaml.safe_dump({**data, "format_version": 99}))
    with pytest.raises(ConfigError, match=r"format_version 99 is not supported"):
        WorldModel.load(d)
    wider = {**data, "predictor": {**data["predictor"], "depth": data["predictor"]["depth"] + 1}}
    (d / "config.yaml").write_text(yaml.safe_dump(wider))
    with pytest.raises(CheckpointError, match=r"weights do not match config.yaml: missing \['predictor.blocks.2"):
        WorldModel.load(d)


def test_dexwm_vit_checkpoint_needs_no_encoder_folder(tmp_path):
    """The checkpoint holds the encoder's weights: loading must not look for the folder the config names."""
    import dataclasses

    from dexwm_model.encoders.factory import EncoderConfig, build_encoder
    from dexwm_model.predictor.config import load_hand_head_config, load_predictor_config
    from dexwm_model.world_model import WorldModelConfig

    trained = build_encoder(EncoderConfig(kind="dexwm_vit", size=None, image_size=[112, 112], random_init=True, seed=3))
    cfg = WorldModelConfig(
        encoder=EncoderConfig(kind="dexwm_vit", size=None, image_size=[112, 112], weights=str(tmp_path / "gone")),
        predictor=load_predictor_config("tiny"),
        hand_head=dataclasses.replace(load_hand_head_config(), depth=1, width=64),
        latent_dim=trained.dim,
    )
    model = WorldModel(cfg, encoder=trained)
    model.save(tmp_path / "ckpt")
    back = WorldModel.load(tmp_path / "ckpt")
    assert back.config.encoder.weights == str(tmp_path / "gone")
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8))
    torch.testing.assert_close(model.eval().encode(images), back.encode(images), rtol=0, atol=0)
