"""Weights files: every loader refuses NaN / inf, wrong shapes and wrong dtypes with one error type naming the file
and the tensor; no writer stores a non-finite tensor; the CLIs report a bad checkpoint without a traceback."""

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from dexwm_cli.main import main as dexwm_main
from dexwm_model.decoder import LatentDecoder
from dexwm_model.encoders.sim_vit import EncoderWeightsCorrupt, SimViTEncoder, save_sim_vit, sha256_file
from dexwm_model.training import ModelSpec, build_world_model
from dexwm_model.weights_file import (BadWeights, check_state, describe_non_finite, expected_tensors,
                                      non_finite_tensors, read_checked_state)
from dexwm_model.world_model import CheckpointError, WorldModel
from test_sim_encoder import micro_arch
from test_training_helpers import TINY_MODEL, datasets_file, tiny_config, write_episodes

PREDICTOR_TENSOR = "predictor.blocks.0.self_attn.qkv.weight"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = build_world_model(ModelSpec(**TINY_MODEL), seed=3)
    folder = tmp_path_factory.mktemp("wm") / "model"
    model.save(folder)
    return model, folder


def _damaged_copy(folder, dst, change):
    """A copy of a world-model folder whose weights file went through ``change(state) -> state``."""
    shutil.copytree(folder, dst)
    state = load_file(str(dst / "model.safetensors"))
    save_file(change(dict(state)), str(dst / "model.safetensors"))
    return dst


def _with_nan(state, name=PREDICTOR_TENSOR):
    t = state[name].clone()
    t.view(-1)[:3] = float("nan")
    state[name] = t
    return state


def test_check_state_names_the_tensor_and_the_problem():
    expected = {"a": (torch.Size([2, 3]), torch.float32), "b": (torch.Size([4]), torch.float32)}
    good = {"a": torch.zeros(2, 3), "b": torch.ones(4)}
    check_state(good, expected, "f.safetensors", "config.yaml")
    cases = [
        ({"a": torch.zeros(2, 3)}, r"f.safetensors: weights do not match config.yaml: missing \['b'\], unexpected \[\]"),
        ({**good, "c": torch.zeros(1)}, r"missing \[\], unexpected \['c'\]"),
        ({**good, "a": torch.zeros(3, 2)}, r"tensor 'a' has shape \(3, 2\), the architecture needs \(2, 3\)"),
        ({**good, "b": torch.ones(4, dtype=torch.float64)}, r"tensor 'b' has dtype float64, the architecture needs "
                                                            r"float32"),
        ({**good, "b": torch.tensor([1.0, float("inf"), float("nan"), 0.0])},
         r"1 tensor\(s\) hold NaN or inf: 'b' \(2 of 4 values\); refusing non-finite weights"),
    ]
    for state, message in cases:
        with pytest.raises(BadWeights, match=message):
            check_state(state, expected, "f.safetensors", "config.yaml")
    bad = non_finite_tensors({f"t{i}": torch.full((2,), float("nan")) for i in range(5)})
    assert [b[0] for b in bad] == ["t0", "t1", "t2", "t3", "t4"]
    assert describe_non_finite(bad).endswith("and 2 more")
    assert non_finite_tensors({"steps": torch.tensor([3, 4])}) == []  # integer tensors cannot be non-finite


def test_world_model_with_nan_weights_is_refused_naming_the_tensor(saved, tmp_path):
    _, folder = saved
    d = _damaged_copy(folder, tmp_path / "nan", _with_nan)
    with pytest.raises(CheckpointError, match=rf"nan/model.safetensors: 1 tensor\(s\) hold NaN or inf: "
                                              rf"'{PREDICTOR_TENSOR}' \(3 of \d+ values\)"):
        WorldModel.load(d)
    assert isinstance(CheckpointError("x"), BadWeights)


def test_world_model_shape_or_dtype_mismatch_is_refused_before_loading(saved, tmp_path):
    _, folder = saved

    def transposed(state):
        state[PREDICTOR_TENSOR] = state[PREDICTOR_TENSOR].t().contiguous()
        return state

    d = _damaged_copy(folder, tmp_path / "shape", transposed)
    with pytest.raises(CheckpointError, match=rf"shape/model.safetensors: weights do not match config.yaml: tensor "
                                              rf"'{PREDICTOR_TENSOR}' has shape"):
        WorldModel.load(d)
    d = _damaged_copy(folder, tmp_path / "dtype", lambda s: {**s, PREDICTOR_TENSOR: s[PREDICTOR_TENSOR].half()})
    with pytest.raises(CheckpointError, match=rf"tensor '{PREDICTOR_TENSOR}' has dtype float16"):
        WorldModel.load(d)
    # a config width that does not match the weights
    wide = tmp_path / "wide"
    shutil.copytree(folder, wide)
    cfg = yaml.safe_load((wide / "config.yaml").read_text())
    cfg["hand_head"]["width"] = cfg["hand_head"]["width"] * 2
    (wide / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match=r"wide/model.safetensors: weights do not match config.yaml: tensor "
                                              r"'hand_head\..*' has shape"):
        WorldModel.load(wide)
    # a config key missing altogether
    del cfg["latent_dim"]
    (wide / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(Exception, match=r"config.yaml: missing key\(s\) \['latent_dim'\]"):
        WorldModel.load(wide)


def test_no_writer_stores_non_finite_weights(saved, tmp_path):
    model, _ = saved
    broken = build_world_model(ModelSpec(**TINY_MODEL), seed=3)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        dict(broken.named_parameters())[PREDICTOR_TENSOR].view(-1)[0] = float("inf")
    with pytest.raises(CheckpointError, match=rf"refusing non-finite weights"):
        broken.save(tmp_path / "out")
    assert not (tmp_path / "out").exists()

    enc = SimViTEncoder.random_init(micro_arch(), seed=0)
    with torch.no_grad():
        next(enc.backbone.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(EncoderWeightsCorrupt, match="refusing non-finite weights"):
        save_sim_vit(enc.backbone, tmp_path / "enc")
    assert not (tmp_path / "enc").exists()

    good = SimViTEncoder.random_init(micro_arch(), seed=0)
    dec = LatentDecoder.for_encoder(good, width=32, depth=1, heads=2, mlp_ratio=2.0, refine_channels=4)
    with torch.no_grad():
        next(dec.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(EncoderWeightsCorrupt, match="refusing non-finite weights"):
        dec.save(tmp_path / "dec")
    assert not (tmp_path / "dec").exists()


def test_encoder_and_decoder_files_with_nan_are_refused(tmp_path):
    enc = SimViTEncoder.random_init(micro_arch(), seed=0)
    out = save_sim_vit(enc.backbone, tmp_path / "enc")
    name = sorted(load_file(str(out / "model.safetensors")))[0]
    state = load_file(str(out / "model.safetensors"))
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(out / "model.safetensors"))
    meta = yaml.safe_load((out / "config.yaml").read_text())
    meta["weights_sha256"] = sha256_file(out / "model.safetensors")  # consistent file: only the values are wrong
    (out / "config.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(EncoderWeightsCorrupt, match=rf"enc/model.safetensors: 1 tensor\(s\) hold NaN or inf: "
                                                    rf"'{name}'"):
        SimViTEncoder.from_folder(out)

    dec = LatentDecoder.for_encoder(enc, width=32, depth=1, heads=2, mlp_ratio=2.0, refine_channels=4)
    dout = dec.save(tmp_path / "dec")
    state = load_file(str(dout / "model.safetensors"))
    key = sorted(state)[-1]
    state[key] = torch.full_like(state[key], float("-inf"))
    save_file(state, str(dout / "model.safetensors"))
    meta = yaml.safe_load((dout / "config.yaml").read_text())
    meta["weights_sha256"] = sha256_file(dout / "model.safetensors")
    (dout / "config.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(EncoderWeightsCorrupt, match=rf"dec/model.safetensors: 1 tensor\(s\) hold NaN or inf: '{key}'"):
        LatentDecoder.load(dout)


def test_read_checked_state_reports_an_unreadable_file(tmp_path):
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"\x00" * 7)
    with pytest.raises(BadWeights, match=r"w.safetensors: unreadable weights file"):
        read_checked_state(p, expected_tensors(torch.nn.Linear(2, 2)), "config.yaml")


def test_clis_refuse_a_nan_checkpoint_without_a_traceback(saved, tmp_path, capsys):
    _, folder = saved
    nan = _damaged_copy(folder, tmp_path / "nan", _with_nan)
    sim = write_episodes(tmp_path / "sim", lengths=(20, 20))
    code = dexwm_main(["eval", "--checkpoint", str(nan), "--data", f"sim:{sim}", "--out", str(tmp_path / "ev"),
                       "--datasets", str(datasets_file(tmp_path)), "--no-cache", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "hold NaN or inf" in err and PREDICTOR_TENSOR in err and "Traceback" not in err
    assert not (tmp_path / "ev").exists()

    cfg_file = tmp_path / "train_test.yaml"
    cfg = tiny_config(tmp_path, mode="finetune", rollout_steps=2, max_steps=2)
    cfg_file.write_text(yaml.safe_dump({"tiny": cfg.to_dict()}))
    code = dexwm_main(["train", "world-model", "--config", str(cfg_file), "--section", "tiny", "--data",
                       f"sim:{sim}", "--init", str(nan), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "hold NaN or inf" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "final").exists()


def test_eval_fails_when_its_metrics_are_not_finite(saved, tmp_path, capsys):
    """Finite but huge weights overflow the predictor's output: the report holds nulls and the command fails."""
    _, folder = saved

    def overflow(state):
        for k in state:
            if k.startswith("predictor.") and k.endswith("weight") and state[k].ndim == 2:
                state[k] = torch.full_like(state[k], 3e38)
        return state

    huge = _damaged_copy(folder, tmp_path / "huge", overflow)
    sim = write_episodes(tmp_path / "sim", lengths=(20, 20))
    out = tmp_path / "ev"
    code = dexwm_main(["eval", "--checkpoint", str(huge), "--data", f"sim:{sim}", "--out", str(out), "--datasets",
                       str(datasets_file(tmp_path)), "--no-cache", "--device", "cpu", "--horizon-s", "1.0",
                       "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3 and "are not finite" in err and "latent_mse_mean" in err
    assert json.loads((out / "eval.json").read_text())["summary"]["model"]["latent_mse_mean"] is None
