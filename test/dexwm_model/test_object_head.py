"""Object keypoints (datasets -> latent cache -> batch), the object head, its losses and the world model that carries
one (save / load, old checkpoints without it)."""

import dataclasses

import numpy as np
import pytest
import torch

from dexwm_model.config import ConfigError
from dexwm_model.datasets import ClipTransform, SimEpisodes
from dexwm_model.datasets.config import load_datasets_config
from dexwm_model.datasets.objects import object_catalogue, object_pixels
from dexwm_model.predictor.config import ObjectHeadConfig
from dexwm_model.training import (LatentCache, LatentClipDataset, ModelSpec, TrainRequest, WorldModelObjective,
                                  build_world_model, collate_training, train)
from dexwm_model.training.model import object_head_config
from dexwm_model.world_model import WorldModel
from test_training_helpers import TINY_MODEL, datasets_file, object_track, tiny_config, write_episodes

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return write_episodes(tmp_path_factory.mktemp("sim_objects") / "episodes", objects=True)


def _dataset(root, tmp_path, frames=5, transform=None):
    cfg = load_datasets_config(datasets_file(tmp_path))
    return SimEpisodes(root, cfg.sim, dataclasses.replace(cfg.clip, context_frames=frames - 1), transform=transform)


def test_the_catalogue_is_the_scenes_object_list_in_order():
    names = object_catalogue()
    assert names[:3] == ("red_cube", "green_can", "blue_ball") and len(names) == len(set(names)) == 6


def test_object_pixels_fill_catalogue_slots_and_mark_what_cannot_be_seen():
    catalogue = ("a", "b", "c", "d")
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    pose = np.eye(4)  # camera at the origin looking along +z
    pos = np.array([[[0.0, 0.0, 2.0], [0.1, -0.2, 1.0], [0.0, 0.0, -1.0]]])  # centre, off-centre, behind
    px, ok = object_pixels(pos, ("b", "a", "d"), catalogue, K, pose, (80, 100))
    np.testing.assert_allclose(px[0, 1], [50, 40])  # slot of "b" (the first position)
    np.testing.assert_allclose(px[0, 0], [60, 20])  # "a": u = 100 * 0.1 + 50, v = 100 * -0.2 + 40
    assert ok.tolist() == [[True, True, False, False]]  # "c" absent, "d" behind the camera
    _, ok = object_pixels(np.array([[[5.0, 0.0, 1.0]]]), ("a",), catalogue, K, pose, (80, 100))
    assert not ok[0, 0]  # outside the image
    with pytest.raises(ValueError, match="expected"):
        object_pixels(np.zeros((1, 2, 3)), ("a",), catalogue, K, pose, (80, 100))


def test_sim_clips_carry_object_keypoints_through_crop_and_latent_cache(sim, tmp_path):
    model = build_world_model(ModelSpec(**TINY_MODEL), seed=0)
    raw = _dataset(sim, tmp_path)
    s = raw.episode_clip(0, [0, 10, 20, 30, 39])
    names, poses = object_track(40)
    cat = object_catalogue()
    cube, ball = cat.index("red_cube"), cat.index("blue_ball")
    assert s["object_px"].shape == (5, len(cat), 2)
    valid = s["object_valid"]
    assert valid[:, cube].all() and valid[:, ball].all() and valid.sum() == 10  # only the episode's two objects
    expect_u = 60 * poses[[0, 10, 20, 30, 39], 1, 0] + 32  # the pushed ball moves along the image's u axis
    torch.testing.assert_close(s["object_px"][:, ball, 0], torch.tensor(expect_u, dtype=torch.float32))
    assert torch.allclose(s["object_px"][:, cube], s["object_px"][0, cube])  # the cube stays
    pixel = _dataset(sim, tmp_path, transform=ClipTransform(model.encoder.preprocess))
    cache = LatentCache.for_encoder(tmp_path / "cache", model.encoder)
    cache.ensure({"sim": pixel}, model.encoder, CPU)
    latent = LatentClipDataset(pixel, cache)
    a, b = latent.episode_clip(1, [1, 2, 3, 4, 5]), pixel.episode_clip(1, [1, 2, 3, 4, 5])
    for key in ("object_px", "object_valid"):
        torch.testing.assert_close(a[key], b[key], msg=key)
    # 64 px frames cropped to 56: the crop moved the keypoints by the crop offset
    assert not torch.equal(b["object_px"][:, ball], s["object_px"][1:6, ball])
    batch = collate_training([latent[i] for i in range(3)])
    assert batch["object_px"].shape == (3, 5, len(cat), 2) and batch["object_valid"].dtype == torch.bool


def _grads(module):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def test_object_loss_reads_encoded_frames_and_with_object_loss_shapes_the_predictor(sim, tmp_path):
    model = build_world_model(ModelSpec(**TINY_MODEL), seed=1)
    model.add_object_head(object_head_config({"depth": 1, "width": 32, "heads": 2}), seed=0)
    torch.manual_seed(1)
    for p in model.object_head.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    ds = _dataset(sim, tmp_path, transform=None)
    cache = LatentCache.for_encoder(tmp_path / "cache", model.encoder)
    cache.ensure({"sim": ds}, model.encoder, CPU)
    batch = collate_training([LatentClipDataset(ds, cache)[i] for i in range(4)])
    read_only = WorldModelObjective(model, "pretrain")
    consistent = WorldModelObjective(model, "pretrain", object_loss=True)
    out = read_only(batch)
    assert float(out["object"]) > 0 and float(out["objects"]) == 4 * 2  # 4 targets x 2 objects
    no_head = build_world_model(ModelSpec(**TINY_MODEL), seed=1)
    no_head.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("object_head")})

    def predictor_grads(objective):
        model.zero_grad()
        objective(batch)["total"].backward()
        return _grads(model.predictor)

    plain = WorldModelObjective(no_head, "pretrain")
    no_head.zero_grad()
    plain(batch)["total"].backward()
    g_plain = _grads(no_head.predictor)
    for a, b in zip(predictor_grads(read_only), g_plain):  # the read-out gives the predictor no gradient
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)
    assert any(not torch.allclose(a, b, atol=1e-7) for a, b in zip(predictor_grads(consistent), g_plain))
    with pytest.raises(ValueError, match="object head"):
        WorldModelObjective(no_head, "pretrain", object_loss=True)


def test_a_model_with_an_object_head_saves_and_loads_and_old_checkpoints_still_load(tmp_path):
    model = build_world_model(ModelSpec(**TINY_MODEL), seed=0)
    model.save(tmp_path / "old")
    old = WorldModel.load(tmp_path / "old")
    assert old.object_head is None
    with pytest.raises(ValueError, match="no object head"):
        old.object_keypoints(torch.zeros(1, 16, 32))
    model.add_object_head(object_head_config({"depth": 1, "width": 32, "heads": 2}), seed=0)
    with torch.no_grad():
        model.object_head.out.bias.normal_()
    model.save(tmp_path / "new")
    new = WorldModel.load(tmp_path / "new")
    assert new.config.object_head.objects == list(object_catalogue())
    z = torch.randn(2, 16, 32)
    uv, conf = new.object_keypoints(z)
    assert uv.shape == (2, 6, 2) and conf.shape == (2, 6)
    torch.testing.assert_close(new.object_head(z), model.object_head(z))


def test_object_head_config_errors():
    base = dict(depth=1, width=32, heads=2, mlp_ratio=2.0, sigma_px=2.0, loss_weight=1.0, refine_radius_px=2)
    with pytest.raises(ConfigError, match="object_head.objects"):
        ObjectHeadConfig(**base, objects=[])
    with pytest.raises(ConfigError, match="object_head.objects"):
        ObjectHeadConfig(**base, objects=["a", "a"])
    with pytest.raises(ConfigError, match="object_loss"):
        tiny_config_for(object_loss=True)


def tiny_config_for(**kw):
    import tempfile
    from pathlib import Path

    return tiny_config(Path(tempfile.mkdtemp()), **kw)


def test_training_adds_an_object_head_and_learns_it(sim, tmp_path):
    cfg = tiny_config(tmp_path, object_head={"depth": 1, "width": 32, "heads": 2}, object_loss=True,
                      object_lr_scale=10.0, max_steps=20)
    summary = train(TrainRequest(config=cfg, roots={"sim": str(sim)}, out=str(tmp_path / "run"), progress=False))
    assert summary["steps"] == 20
    model = WorldModel.load(tmp_path / "run" / "final")
    assert model.object_head is not None and model.config.object_head.objects == list(object_catalogue())
    import json

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["object"] for r in records if "object" in r]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4])


def test_eval_reports_the_object_head_on_moved_and_static_objects(sim, tmp_path):
    from dexwm_model.evaluation.cli import evaluate_checkpoint
    from dexwm_model.training import load_eval_config

    model = build_world_model(ModelSpec(**TINY_MODEL), seed=0)
    model.add_object_head(object_head_config({"depth": 1, "width": 32, "heads": 2}), seed=0)
    with torch.no_grad():
        model.object_head.out.bias.normal_()
    model.save(tmp_path / "m")
    cfg = load_eval_config(device="cpu", threads=1, cache_dir=str(tmp_path / "cache"), rollouts_per_episode=2)
    report = evaluate_checkpoint(str(tmp_path / "m"), {"sim": str(sim)}, cfg, tmp_path / "e",
                                 str(datasets_file(tmp_path)))
    objects = report["summary"]["objects"]
    moved, static = objects["moved"], objects["static"]
    # per rollout and predicted frame: the cube never moves; the ball moves more than 2 px after a few frames
    assert moved["model"]["n"] == moved["baseline"]["n"] == moved["true_readout"]["n"] > 0
    assert static["model"]["n"] > moved["model"]["n"]
    # an untrained predictor copies the newest frame: it is exactly "nothing moves"
    assert moved["model"]["mean_px"] == pytest.approx(moved["baseline"]["mean_px"])
    assert 0 <= moved["true_readout"]["pck5"] <= 1


def test_object_moved_weight_adds_the_loss_of_the_objects_that_moved(sim, tmp_path):
    from dexwm_model.datasets.objects import OBJECT_MOVED_PX
    from dexwm_model.losses.hand_consistency import hand_consistency_loss
    from dexwm_model.training.objective import PIXEL_CENTRE_OFFSET

    model = build_world_model(ModelSpec(**TINY_MODEL), seed=2)
    model.add_object_head(object_head_config({"depth": 1, "width": 32, "heads": 2}), seed=0)
    with torch.no_grad():
        model.object_head.out.bias.normal_()
    ds = _dataset(sim, tmp_path, frames=8)  # clips spread over up to 4 s: the pushed ball moves in most of them
    cache = LatentCache.for_encoder(tmp_path / "cache", model.encoder)
    cache.ensure({"sim": ds}, model.encoder, CPU)
    batch = collate_training([LatentClipDataset(ds, cache)[i] for i in range(6)])
    plain = WorldModelObjective(model, "finetune", rollout_steps=2, object_loss=True)
    weighted = WorldModelObjective(model, "finetune", rollout_steps=2, object_loss=True, object_moved_weight=2.0)
    with torch.no_grad():
        extra = weighted(batch)["total"] - plain(batch)["total"]
        z = plain.latents(batch)
        c = z.shape[1] - 2
        pred = model.predictor.rollout(z[:, :c], batch["times"][:, :c].double(), batch["actions"][:, c - 1:],
                                       batch["times"][:, c:].double() - batch["times"][:, c - 1:-1].double())
        uv = batch["object_px"][:, c:].flatten(0, 1) - PIXEL_CENTRE_OFFSET
        seen = (batch["object_px"][:, c - 1:c] - PIXEL_CENTRE_OFFSET).expand(-1, 2, -1, -1).flatten(0, 1)
        moved = batch["object_valid"][:, c:].flatten(0, 1) & ((uv - seen).norm(dim=-1) > OBJECT_MOVED_PX)
        assert 0 < int(moved.sum()) < int(batch["object_valid"][:, c:].sum())  # some moved, the cube never
        expect = 2.0 * plain.object_weight * hand_consistency_loss(model.object_head(pred.flatten(0, 1)), uv, moved,
                                                                   plain.object_sigma)
    torch.testing.assert_close(extra, expect, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="object_moved_weight"):
        WorldModelObjective(model, "pretrain", object_moved_weight=1.0)
