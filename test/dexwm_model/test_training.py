"""World-model training: latent cache, objective, schedule, batching, the trainer (loss decreases, exact resume),
the hand-loss ablation switch and the command line."""

import dataclasses
import json
import math
import os

import pytest
import torch

from dexwm_cli.main import main as dexwm_main
from dexwm_model.config import ConfigError
from dexwm_model.datasets import ClipTransform, SimEpisodes
from dexwm_model.datasets.config import load_datasets_config
from dexwm_model.training import (
    LatentCache,
    LatentClipDataset,
    ModelSpec,
    StepBatchSampler,
    TrainRequest,
    WorldModelObjective,
    build_world_model,
    collate_training,
    encoder_identity,
    load_train_config,
    lr_factor,
    parse_data_specs,
    train,
)
from dexwm_model.training.checkpoint import load_training_state, resolve_resume
from dexwm_model.training.data import build_clip_data
from dexwm_model.world_model import CheckpointError, WorldModel
from test_training_helpers import TINY_MODEL, datasets_file, tiny_config, write_episodes

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return write_episodes(tmp_path_factory.mktemp("sim") / "episodes")


@pytest.fixture(scope="module")
def tiny_model():
    return build_world_model(ModelSpec(**TINY_MODEL), seed=0)


def _sim_dataset(root, tmp_path, frames=5):
    cfg = load_datasets_config(datasets_file(tmp_path))
    clip = dataclasses.replace(cfg.clip, context_frames=frames - 1)
    return SimEpisodes(root, cfg.sim, clip)


# -------------------------------------------------------------------------------------------------- latent cache
def test_latent_cache_serves_the_pixel_path_clips(sim, tmp_path, tiny_model):
    enc = tiny_model.encoder
    ds = _sim_dataset(sim, tmp_path)
    cache = LatentCache.for_encoder(tmp_path / "cache", enc)
    counts = cache.ensure({"sim": ds}, enc, CPU, batch=16)
    assert counts == {"episodes": 2, "cached": 0, "built": 2, "rebuilt": 0}
    latent = LatentClipDataset(ds, cache)
    pixel = SimEpisodes(sim, ds.config, ds.clip, transform=ClipTransform(enc.preprocess))
    assert len(latent) == len(pixel) > 10
    for i in (0, 7, len(pixel) - 1):
        a, b = latent[i], pixel[i]
        assert torch.equal(a["frame_indices"], b["frame_indices"])  # the same frames are drawn
        assert a["latents"].dtype == torch.float16 and a["latents"].shape == (5, 16, 32)
        with torch.no_grad():
            expect = enc.encode_pixels(b["frames"])
        torch.testing.assert_close(a["latents"].float(), expect, atol=2e-2, rtol=1e-2)
        for key in ("times", "actions", "keypoints_px", "keypoints_valid"):
            torch.testing.assert_close(a[key], b[key], msg=key)
        assert a["image_size"] == b["image_size"] == (56, 56) and a["hand_loss"] is True
        assert a["keypoints_valid"][:, 6:].all() and not a["keypoints_valid"][:, :6].any()
    # a second pass reuses every entry; a changed episode file is re-encoded; another encoder has another folder
    assert cache.ensure({"sim": ds}, enc, CPU)["cached"] == 2
    ep0 = sim / "episode_000000.h5"
    st = ep0.stat()
    os.utime(ep0, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.status("sim", ds.episodes[0]).startswith("stale")
    with pytest.raises(Exception, match="stale: the episode's files changed"):
        LatentClipDataset(ds, cache)
    assert cache.ensure({"sim": ds}, enc, CPU) == {"episodes": 2, "cached": 1, "built": 0, "rebuilt": 1}
    other = build_world_model(ModelSpec(**{**TINY_MODEL, "encoder": {**TINY_MODEL["encoder"], "seed": 4}})).encoder
    assert encoder_identity(other) != encoder_identity(enc) == cache.encoder_id


# --------------------------------------------------------------------------------------------------- objective
def _batch(sim, tmp_path, model, frames=5, n=6):
    ds = _sim_dataset(sim, tmp_path, frames)
    cache = LatentCache.for_encoder(tmp_path / "cache", model.encoder)
    cache.ensure({"sim": ds}, model.encoder, CPU)
    latent = LatentClipDataset(ds, cache)
    return collate_training([latent[i] for i in range(n)])


def test_all_targets_last_prediction_equals_last_mode(sim, tmp_path, tiny_model):
    batch = _batch(sim, tmp_path, tiny_model)
    torch.manual_seed(0)
    for p in tiny_model.predictor.parameters():  # leave the exact-copy initialisation
        p.data.add_(0.05 * torch.randn_like(p))
    obj_all = WorldModelObjective(tiny_model, "pretrain", targets="all")
    z = obj_all.latents(batch)
    with torch.no_grad():
        pred, true, j = obj_all._all_targets(z, batch["times"].double(), batch["actions"])
        c = z.shape[1] - 1
        last = tiny_model.predictor(z[:, :c], batch["times"][:, :c].double(), batch["actions"][:, c - 1],
                                    (batch["times"][:, c] - batch["times"][:, c - 1]).double())
        first = tiny_model.predictor(z[:, :1], batch["times"][:, :1].double(), batch["actions"][:, 0],
                                     (batch["times"][:, 1] - batch["times"][:, 0]).double())
    pred = pred.view(z.shape[0], c, *pred.shape[1:])
    torch.testing.assert_close(pred[:, -1], last, atol=1e-5, rtol=1e-5)  # masked padding has no influence
    torch.testing.assert_close(pred[:, 0], first, atol=1e-5, rtol=1e-5)
    assert j.tolist() == list(range(1, c + 1))
    losses = obj_all(batch)
    assert losses["predictions"].item() == z.shape[0] * c


def test_finetune_objective_rolls_out_autoregressively(sim, tmp_path, tiny_model):
    batch = _batch(sim, tmp_path, tiny_model, frames=6)
    obj = WorldModelObjective(tiny_model, "finetune", rollout_steps=3)
    assert obj.required_frames(3) == 6
    losses = obj(batch)
    z = obj.latents(batch)
    t = batch["times"].double()
    with torch.no_grad():
        pred = tiny_model.predictor.rollout(z[:, :3], t[:, :3], batch["actions"][:, 2:], t[:, 3:] - t[:, 2:-1])
    expect = torch.mean((pred - z[:, 3:]) ** 2)
    torch.testing.assert_close(losses["latent"], expect)
    assert losses["predictions"].item() == 6 * 3
    torch.testing.assert_close(losses["total"], losses["latent"] + 100.0 * losses["hand"])


def _predictor_grads(objective, batch):
    objective.model.zero_grad(set_to_none=True)
    objective(batch)["total"].backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in objective.model.predictor.parameters()]


def test_no_hand_loss_switch_removes_the_hand_gradient_from_the_predictor(sim, tmp_path):
    model = build_world_model(ModelSpec(**TINY_MODEL), seed=1)
    torch.manual_seed(1)
    for p in list(model.predictor.parameters()) + list(model.hand_head.parameters()):
        p.data.add_(0.05 * torch.randn_like(p))  # non-zero head output, non-identity predictor
    batch = _batch(sim, tmp_path, model)
    with_hand = WorldModelObjective(model, "pretrain", hand_loss=True)
    without = WorldModelObjective(model, "pretrain", hand_loss=False)
    g_with = _predictor_grads(with_hand, batch)
    g_without = _predictor_grads(without, batch)
    head_grad = [p.grad.abs().sum() for p in model.hand_head.parameters()]
    # the latent MSE alone
    model.zero_grad(set_to_none=True)
    z = without.latents(batch)
    t = batch["times"].double()
    pred = model.predictor(z[:, :4], t[:, :4], batch["actions"][:, 3], t[:, 4] - t[:, 3])
    torch.mean((pred - z[:, 4]) ** 2).backward()
    g_latent = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.predictor.parameters()]
    for a, b in zip(g_without, g_latent):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)
    assert sum(float((a - b).abs().sum()) for a, b in zip(g_with, g_latent)) > 1e-3
    assert all(g > 0 for g in head_grad)  # the head still learns its read-out
    l_with, l_without = with_hand(batch), without(batch)
    torch.testing.assert_close(l_with["total"], l_without["total"])  # same value, different gradient path



def test_hand_head_input_encoded_reads_the_target_frames_latents(sim, tmp_path):
    """hand_head_input 'encoded': the hand loss is the head on the encoder's latents of the target frame (the goal image
    at plan time), so it gives the predictor no gradient and does not depend on the prediction."""
    from dexwm_model.losses.hand_consistency import hand_consistency_loss
    from dexwm_model.training.objective import PIXEL_CENTRE_OFFSET

    model = build_world_model(ModelSpec(**TINY_MODEL), seed=1)
    torch.manual_seed(1)
    for p in list(model.predictor.parameters()) + list(model.hand_head.parameters()):
        p.data.add_(0.05 * torch.randn_like(p))
    batch = _batch(sim, tmp_path, model)
    encoded = WorldModelObjective(model, "pretrain", hand_head_input="encoded")
    predicted = WorldModelObjective(model, "pretrain", hand_head_input="predicted")
    z = encoded.latents(batch)
    uv = batch["keypoints_px"][:, 4].to(torch.float32) - PIXEL_CENTRE_OFFSET
    valid = batch["keypoints_valid"][:, 4] & batch["hand_loss"][:, None]
    expected = hand_consistency_loss(model.hand_head(z[:, 4]), uv, valid, encoded.sigma)
    out = encoded(batch)
    torch.testing.assert_close(out["hand"], expected.detach())
    assert float((out["hand"] - predicted(batch)["hand"]).abs()) > 1e-6  # not the head on the prediction
    g_encoded = _predictor_grads(encoded, batch)
    g_latent_only = _predictor_grads(WorldModelObjective(model, "pretrain", hand_loss=False), batch)
    for a, b in zip(g_encoded, g_latent_only):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.hand_head.parameters())
    with pytest.raises(ValueError, match="hand_head_input"):
        WorldModelObjective(model, "pretrain", hand_head_input="goal")

# ------------------------------------------------------------------------------------------ schedule, batching
def test_learning_rate_schedule_warmup_cosine_floor():
    f = [lr_factor(s, 10, 110, 0.01) for s in range(110)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(110, 10, 110, 0.01) == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))


def test_step_batch_sampler_partitions_global_batches_and_resumes():
    full = StepBatchSampler(50, 8, rank=0, world=1, accum=1, seed=3, epoch=2)
    assert len(full) == 6
    batches = list(full)
    assert all(len(b) == 8 for b in batches) and len({i for b in batches for i in b}) == 48
    r0 = list(StepBatchSampler(50, 8, rank=0, world=2, accum=2, seed=3, epoch=2))
    r1 = list(StepBatchSampler(50, 8, rank=1, world=2, accum=2, seed=3, epoch=2))
    assert all(len(b) == 2 for b in r0 + r1)
    for s in range(6):  # the ranks' micro-batches of step s make up exactly the single-process batch s
        assert r0[2 * s] + r0[2 * s + 1] + r1[2 * s] + r1[2 * s + 1] == batches[s]
    assert list(StepBatchSampler(50, 8, 0, 1, 1, 3, 2, start_step=4)) == batches[4:]
    assert list(StepBatchSampler(50, 8, 0, 1, 1, 3, 3)) != batches
    with pytest.raises(ValueError, match="fewer than one batch of 64"):
        StepBatchSampler(50, 64, 0, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="multiple of processes x accumulation"):
        StepBatchSampler(50, 6, 0, 2, 2, 0, 0)


# ----------------------------------------------------------------------------------------------------- trainer
def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_training_reduces_the_loss_and_resumes_exactly(sim, tmp_path):
    cfg = tiny_config(tmp_path, max_steps=40, checkpoint_every=20, keep_checkpoints=3)
    roots = {"sim": str(sim)}
    summary = train(TrainRequest(cfg, str(tmp_path / "a"), roots, progress=False))
    a = tmp_path / "a"
    assert summary["steps"] == 40 and summary["samples_per_s"] > 0
    assert summary["data"]["latent_cache"] is True
    records = _records(a / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 41))
    assert all(math.isfinite(r["loss"]) and r["loss"] == pytest.approx(r["latent"] + 100 * r["hand"])
               for r in records)
    assert records[0]["lr"] == pytest.approx(cfg.optim.lr / 2) and records[1]["lr"] == pytest.approx(cfg.optim.lr)
    assert records[-1]["lr"] < 0.1 * cfg.optim.lr
    assert any(p.name.startswith("events.out.tfevents") for p in (a / "tb").iterdir())
    assert sorted(p.name for p in (a / "checkpoints").iterdir()) == ["latest", "step_00000020", "step_00000040"]

    # the loss on the same clips before and after training
    first = build_world_model(cfg.model, cfg.seed)
    final = WorldModel.load(a / "final")
    data = build_clip_data(roots, cfg.data.datasets, 5, final.encoder, CPU, True, cfg.data.cache_dir)
    batch = collate_training([data.train[i] for i in range(len(data.train))])
    with torch.no_grad():
        before = WorldModelObjective(first, "pretrain")(batch)
        after = WorldModelObjective(final, "pretrain")(batch)
    assert after["total"] < 0.92 * before["total"]
    assert after["latent"] < before["latent"] and after["hand"] < before["hand"]

    # resume from step 20 in another folder: steps 21..40 repeat exactly, and so do the final weights
    mid = a / "checkpoints" / "step_00000020"
    assert load_training_state(mid)["step"] == 20 and resolve_resume(a).name == "step_00000040"
    resumed = train(TrainRequest(cfg, str(tmp_path / "b"), roots, resume=str(mid), progress=False))
    assert resumed["resumed_from"] == 20 and resumed["steps"] == 40
    again = _records(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in again] == list(range(21, 41))
    for r1, r2 in zip(records[20:], again):
        for key in ("loss", "latent", "hand", "grad_norm", "lr"):
            assert r1[key] == r2[key], (r1["step"], key, r1[key], r2[key])
    wa = WorldModel.load(a / "final").state_dict()
    wb = WorldModel.load(tmp_path / "b" / "final").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # a changed recipe cannot resume that run
    other = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=1e-3))
    with pytest.raises(ConfigError, match=r"optim.lr: checkpoint 0.003, now 0.001"):
        train(TrainRequest(other, str(tmp_path / "c"), roots, resume=str(mid), progress=False))
    with pytest.raises(CheckpointError, match="does not exist"):
        train(TrainRequest(cfg, str(tmp_path / "c"), roots, resume=str(tmp_path / "nothing"), progress=False))


def test_finetune_needs_a_starting_model(sim, tmp_path):
    cfg = tiny_config(tmp_path, mode="finetune", rollout_steps=2, max_steps=2)
    with pytest.raises(ConfigError, match="no pre-trained model to start from"):
        train(TrainRequest(cfg, str(tmp_path / "ft"), {"sim": str(sim)}, progress=False))


# ------------------------------------------------------------------------------------------ config and the CLI
def test_train_config_sections_and_errors(tmp_path):
    cpu = load_train_config("cpu_default")
    assert cpu.model.encoder["kind"] == "dexwm_vit" and cpu.model.encoder["image_size"] == [112, 112]
    assert cpu.model.predictor["depth"] == 4 and cpu.model.predictor["width"] in (192, 256)
    assert load_train_config("finetune").rollout_steps >= 2 and load_train_config("pretrain").mode == "pretrain"
    with pytest.raises(ConfigError, match=r"no training section 'nope' \(sections: \['cpu_default', 'cpu_fast', "
                                          r"'cpu_fast_finetune', 'cpu_fast_handhead', 'cpu_fast_objects', 'finetune', "
                                          r"'pretrain'\]\)"):
        load_train_config("nope")
    with pytest.raises(ConfigError, match="set exactly one of max_steps and epochs"):
        tiny_config(tmp_path, epochs=2.0)
    with pytest.raises(ConfigError, match="rollout_steps: pretrain predicts one step"):
        tiny_config(tmp_path, rollout_steps=3)
    with pytest.raises(ConfigError, match=r"optim.min_lr \(1.0\) must not exceed optim.lr"):
        tiny_config(tmp_path, optim={"min_lr": 1.0})
    with pytest.raises(ConfigError, match="unknown key"):
        tiny_config(tmp_path, data={"bogus": 1})
    with pytest.raises(ConfigError, match=r"unknown source 'droid'"):
        parse_data_specs(["droid:/x"])
    with pytest.raises(ConfigError, match="expected SOURCE:PATH"):
        parse_data_specs(["/only/a/path"])
    with pytest.raises(ConfigError, match="path not found"):
        parse_data_specs([f"sim:{tmp_path / 'missing'}"])


def test_cli_trains_with_no_hand_loss_and_reports_errors(sim, tmp_path, capsys):
    cfg_file = tmp_path / "train_test.yaml"
    import yaml

    cfg = tiny_config(tmp_path, max_steps=2)
    cfg_file.write_text(yaml.safe_dump({"tiny": cfg.to_dict()}))
    out = tmp_path / "run"
    code = dexwm_main(["train", "world-model", "--config", str(cfg_file), "--section", "tiny", "--data",
                       f"sim:{sim}", "--out", str(out), "--no-hand-loss", "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["steps"] == 2 and printed["final"] == str(out / "final")
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["hand_loss"] is False
    assert (out / "final" / "model.safetensors").is_file()
    code = dexwm_main(["train", "world-model", "--config", str(cfg_file), "--section", "tiny", "--data",
                       f"sim:{sim}", "--out", str(out), "--resume", "--max-steps", "3", "--no-progress",
                       "--no-hand-loss"])
    assert code == 0 and json.loads((out / "train_summary.json").read_text())["steps"] == 3
    code = dexwm_main(["train", "world-model", "--config", str(cfg_file), "--section", "tiny", "--data",
                       "sim:/definitely/not/here", "--no-progress"])
    assert code == 2 and "path not found: /definitely/not/here" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- non-finite steps
def _nan_at_steps(monkeypatch, steps):
    """Make the objective's loss NaN on the given (1-based) optimiser steps; returns the call counter."""
    calls = {"n": 0}
    forward = WorldModelObjective.forward

    def poisoned(self, batch):
        calls["n"] += 1
        losses = forward(self, batch)
        if calls["n"] in steps:
            losses = {**losses, "total": losses["total"] * float("nan")}
        return losses

    monkeypatch.setattr(WorldModelObjective, "forward", poisoned)
    return calls


def test_a_non_finite_step_is_skipped_and_reported(sim, tmp_path, monkeypatch, capsys):
    _nan_at_steps(monkeypatch, {3})
    cfg = tiny_config(tmp_path, max_steps=6, optim={"max_skipped_steps": 1})
    summary = train(TrainRequest(cfg, str(tmp_path / "a"), {"sim": str(sim)}, progress=False))
    assert summary["steps"] == 6 and summary["skipped_steps"] == 1
    records = _records(tmp_path / "a" / "metrics.jsonl")
    warnings = [r for r in records if "warning" in r]
    assert len(warnings) == 1 and warnings[0]["step"] == 3 and "skipped step 3" in warnings[0]["warning"]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert losses[3] is None and all(math.isfinite(losses[s]) for s in (1, 2, 4, 5, 6))
    assert "warning: skipped step 3" in capsys.readouterr().err
    final = WorldModel.load(tmp_path / "a" / "final")  # loads: every tensor finite
    assert all(torch.isfinite(p).all() for p in final.parameters())


def test_training_that_stays_non_finite_stops_and_writes_nothing_non_finite(sim, tmp_path, monkeypatch, capsys):
    from dexwm_model.training.trainer import TrainingDiverged

    _nan_at_steps(monkeypatch, set(range(3, 100)))
    cfg = tiny_config(tmp_path, max_steps=8, checkpoint_every=2, optim={"max_skipped_steps": 2})
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 5: loss nan, .*3 step\(s\) in a row .*"
                                               r"optim.max_skipped_steps 2"):
        train(TrainRequest(cfg, str(tmp_path / "run"), {"sim": str(sim)}, progress=False))
    run = tmp_path / "run"
    assert not (run / "final").exists()
    saved = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert saved == ["step_00000002", "step_00000004"]  # step 4 was skipped: its weights are step 2's, finite
    for name in saved:
        WorldModel.load(run / "checkpoints" / name)

    # the CLI: a clear line, exit 3, no traceback
    import yaml

    _nan_at_steps(monkeypatch, set(range(1, 100)))
    cfg_file = tmp_path / "train_test.yaml"
    cfg_file.write_text(yaml.safe_dump({"tiny": tiny_config(tmp_path, max_steps=4).to_dict()}))
    code = dexwm_main(["train", "world-model", "--config", str(cfg_file), "--section", "tiny", "--data",
                       f"sim:{sim}", "--out", str(tmp_path / "cli"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3 and "training diverged at step 4" in err and "Traceback" not in err
    assert not (tmp_path / "cli" / "final").exists()
