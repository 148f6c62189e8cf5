"""The hand depth head: reading depth maps at pixels, its training on episodes, the model that carries it (save /
load, models without one) and the `dexwm train hand-depth` command."""

import argparse
import json

import numpy as np
import pytest
import torch

from dexwm_model.data.episode import read_episode
from dexwm_model.kinematics.hand_layout import HEATMAP_KEYPOINTS_21
from dexwm_model.predictor.config import HandDepthHeadConfig
from dexwm_model.predictor.hand_head import HandDepthHead
from dexwm_model.training import ModelSpec, build_world_model
from dexwm_model.training import hand_depth
from dexwm_model.world_model import WorldModel
from dexwm_robot.config import ConfigError
from test_training_helpers import TINY_MODEL, write_episodes


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return write_episodes(tmp_path_factory.mktemp("sim_depth") / "episodes", lengths=(24, 24))


def test_read_samples_each_map_at_its_keypoint_bilinearly():
    head = HandDepthHead(HandDepthHeadConfig(width=16, heads=2), 8, (4, 4), (16, 16))
    maps = torch.zeros(1, 12, 16, 16)
    maps[0, :] = torch.arange(16, dtype=torch.float32)[None, None, :]  # value = column index
    maps[0, 3] += 100.0
    uv = torch.full((1, 12, 2), 4.5)  # the centre of pixel (4, 4)
    uv[0, 5, 0] = 7.0  # between columns 6 and 7
    out = head.read(maps, uv)
    assert float(out[0, 0]) == pytest.approx(4.0)
    assert float(out[0, 3]) == pytest.approx(104.0)
    assert float(out[0, 5]) == pytest.approx(6.5)
    far = head.read(maps, torch.full((1, 12, 2), 1e4))  # outside: the border value
    assert float(far[0, 0]) == pytest.approx(15.0)
    with pytest.raises(ValueError, match="uv"):
        head.read(maps, torch.zeros(1, 6, 2))
    # a fresh head says base_depth_m everywhere
    fresh = head(torch.randn(2, 16, 8))
    assert torch.allclose(fresh, torch.full_like(fresh, 1.0))


def test_frames_carry_the_episodes_depths_and_training_fits_them(sim, tmp_path):
    model = build_world_model(ModelSpec(**TINY_MODEL), seed=0)
    frames = hand_depth.encode_episodes(model, [sim], stride=3)
    assert frames.tokens.shape[0] == 16 and frames.depth.shape == (16, 6)
    ep = read_episode(sim / "episode_000000.h5")
    want = ep.keypoints_camera[::3][:, list(HEATMAP_KEYPOINTS_21), 2]
    np.testing.assert_allclose(frames.depth[:8].numpy(), want, rtol=1e-6)
    assert bool(frames.valid.all())
    # the pixels are those of the model's crop: the projection through the crop's intrinsics
    K = model.encoder.preprocess.adjust_intrinsics(ep.camera_intrinsics, ep.frames.shape[1:3])
    kc = ep.keypoints_camera[0, list(HEATMAP_KEYPOINTS_21)]
    uv = kc[:, :2] / kc[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
    np.testing.assert_allclose(frames.uv[0].numpy(), uv, rtol=1e-5, atol=1e-4)

    head_cfg = HandDepthHeadConfig(width=32, heads=2)
    train_cfg = hand_depth.HandDepthTrainConfig(steps=60, batch_size=8, lr=3e-3)
    log = hand_depth.train_head(model, head_cfg, train_cfg, frames, log_every=10)
    assert log[-1]["loss"] < 0.2 * log[0]["loss"]  # the depths (0.8 m) are learnt from the fresh head's 1 m
    report = hand_depth.depth_report(model, frames, float(frames.depth.mean()))
    assert report["at_true_pixels"]["mae_m"] < 0.05
    # the model carries the head through save / load; hand_depths reads it where the hand head looks
    model.save(tmp_path / "m")
    loaded = WorldModel.load(tmp_path / "m")
    assert loaded.config.hand_depth_head == head_cfg
    t = frames.tokens[:3]
    torch.testing.assert_close(loaded.hand_depths(t), model.hand_depths(t))
    assert loaded.hand_depths(t).shape == (3, 12)
    # a model without the head loads as before and says what is missing
    plain = build_world_model(ModelSpec(**TINY_MODEL), seed=0)
    plain.save(tmp_path / "plain")
    assert WorldModel.load(tmp_path / "plain").hand_depth_head is None
    with pytest.raises(ValueError, match="hand depth head"):
        plain.hand_depths(t)


def test_command_trains_writes_the_model_and_report_and_refuses_bad_input(sim, tmp_path, capsys):
    model = build_world_model(ModelSpec(**TINY_MODEL), seed=0)
    model.save(tmp_path / "base")
    args = argparse.Namespace(checkpoint=str(tmp_path / "base"), data=[str(sim)], heldout=[], out=str(tmp_path / "out"),
                              steps=5, config="hand_depth.yaml")
    assert hand_depth.run(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["frames"] == 24 and "at_hand_head_pixels" in line["heldout_report"]
    assert WorldModel.load(tmp_path / "out").hand_depth_head is not None
    assert json.loads((tmp_path / "out" / "hand_depth_report.json").read_text())["train"]["steps"] == 5
    bad = argparse.Namespace(**{**vars(args), "checkpoint": str(tmp_path / "missing")})
    assert hand_depth.run(bad) == 2
    assert "missing" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert hand_depth.run(argparse.Namespace(**{**vars(args), "data": [str(empty)]})) == 2
    assert "no episode files" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="steps"):
        hand_depth.HandDepthTrainConfig(steps=0)
