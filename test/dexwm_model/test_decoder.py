"""Latent -> image decoder: shapes, uint8 decode, overfitting one image, save/load, encoder pairing, CLI."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from dexwm_cli.main import main as dexwm_main
from dexwm_model.decoder import DecoderArch, LatentDecoder
from dexwm_model.decoder.train import encode_crops, reconstruction_error, train_decoder
from dexwm_model.encoders.sim_vit import EncoderWeightsCorrupt, SimViTArch, SimViTEncoder, save_sim_vit
from dexwm_model.encoders.ssl import config as ssl_config
from dexwm_model.encoders.ssl.frames import resize_uint8

MICRO = SimViTArch(image_size=[56, 56], patch_size=14, width=32, depth=1, heads=2, mlp_ratio=2.0, name="micro")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest and does not stall when other processes hold the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def one_image() -> np.ndarray:
    """A 56x56 'scene': two-tone background, a red square and a blue bar."""
    img = np.zeros((1, 56, 56, 3), np.uint8)
    img[0, :28] = (70, 80, 90)
    img[0, 28:] = (160, 130, 100)
    img[0, 10:24, 30:44] = (220, 30, 30)
    img[0, 36:40, 5:50] = (20, 40, 200)
    return img


@pytest.fixture(scope="module")
def encoder():
    return SimViTEncoder.random_init(MICRO, seed=0)


def small_decoder(encoder, **kw):
    args = dict(width=64, depth=1, heads=2, mlp_ratio=2.0, refine_channels=8)
    args.update(kw)
    return LatentDecoder.for_encoder(encoder, **args)


def test_shapes_uint8_decode_and_input_checks(encoder):
    dec = small_decoder(encoder)
    assert dec.arch.patch_size == 14 and dec.arch.grid == [4, 4]
    lat = encoder(one_image())
    out = dec(lat)
    assert out.shape == (1, 3, 56, 56)
    # untrained: the refinement is the identity and the head starts at mid-grey
    assert torch.allclose(out.mean(), torch.tensor(0.5), atol=0.1)
    img = dec.decode(lat.numpy())
    assert img.shape == (1, 56, 56, 3) and img.dtype == np.uint8
    with pytest.raises(ValueError, match=r"expected latents of shape \(B, 16, 32\), found \(1, 16, 31\)"):
        dec(lat[..., :31])
    with pytest.raises(TypeError, match="expected float latents"):
        dec.decode(np.zeros((1, 16, 32), np.int64))
    with pytest.raises(Exception, match="image_size .* must be the grid"):
        DecoderArch(in_dim=32, grid=[4, 4], image_size=[56, 60])


def test_decoder_overfits_one_image(encoder):
    frames = torch.from_numpy(one_image()).permute(0, 3, 1, 2).contiguous()
    tokens = encode_crops(encoder, frames)
    cfg = dataclasses.replace(ssl_config.load("decoder"), batch_size=1, lr=3e-3, warmup_fraction=0.05)
    dec = small_decoder(encoder)
    before = reconstruction_error(dec, tokens, frames)["mae_0_255"]
    hist = train_decoder(dec, tokens, frames, cfg, steps=150, seed=0)
    after = reconstruction_error(dec, tokens, frames)
    assert hist["final_loss"] < 0.1 * hist["first_loss"], hist
    # thresholds with margin: the same seed lands at 22.8-24.5 dB depending on the machine's BLAS
    assert after["mae_0_255"] < 0.1 * before and after["psnr_db"] > 21, (before, after)


def test_save_load_round_trip_and_encoder_pairing(tmp_path, encoder):
    enc_dir = save_sim_vit(encoder.backbone, tmp_path / "enc")
    paired = SimViTEncoder.from_folder(enc_dir)
    dec = small_decoder(paired)
    torch.nn.init.normal_(dec.refine[2].weight, std=0.1)  # make every part matter
    out = dec.save(tmp_path / "dec", {"encoder_weights_sha256": paired.info["weights_sha256"]})
    loaded = LatentDecoder.load(out)
    lat = paired(one_image())
    np.testing.assert_array_equal(loaded.decode(lat), dec.decode(lat))
    loaded.check_encoder(paired)  # same encoder: fine
    other_dir = save_sim_vit(SimViTEncoder.random_init(MICRO, seed=1).backbone, tmp_path / "enc2")
    with pytest.raises(ValueError, match="trained on encoder weights"):
        loaded.check_encoder(SimViTEncoder.from_folder(other_dir))
    wide = SimViTEncoder.random_init(dataclasses.replace(MICRO, width=48), seed=0)
    with pytest.raises(ValueError, match="expects tokens of width 32"):
        loaded.check_encoder(wide)
    (out / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(EncoderWeightsCorrupt, match="sha256"):
        LatentDecoder.load(out)
    with pytest.raises(FileNotFoundError, match="no such folder .*dexwm train decoder"):
        LatentDecoder.load(tmp_path / "nothing")


def test_cli_train_decoder(tmp_path, capsys):
    from test_sim_encoder import _episode  # the synthetic 56x56 episodes of the encoder tests

    from dexwm_model.data.episode import WriterConfig, write_episode

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        write_episode(data / f"episode_{i:06d}.h5", _episode(i), WriterConfig("gzip", 1))
    enc_dir = save_sim_vit(SimViTEncoder.random_init(MICRO, seed=0).backbone, tmp_path / "enc")
    out = tmp_path / "dec"
    rc = dexwm_main(["train", "decoder", "--encoder", str(enc_dir), "--data", str(data), "--out", str(out),
                     "--steps", "2", "--val-fraction", "0.5", "--no-progress", "--threads", "0"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and "val" in summary and summary["frames"] == 16
    dec = LatentDecoder.load(out)
    enc = SimViTEncoder.from_folder(enc_dir)
    dec.check_encoder(enc)
    frames = resize_uint8(np.zeros((1, 56, 56, 3), np.uint8), enc.preprocess)
    assert dec.decode(encode_crops(enc, frames)).shape == (1, 56, 56, 3)
    rc = dexwm_main(["train", "decoder", "--encoder", str(tmp_path / "none"), "--data", str(data), "--out",
                     str(tmp_path / "x"), "--steps", "1", "--no-progress"])
    assert rc == 2 and "no such folder" in capsys.readouterr().err


def test_a_world_model_checkpoint_may_bundle_its_decoder(tmp_path):
    from dexwm_model.decoder import decoder_folder

    ckpt = tmp_path / "wm"
    (ckpt / "decoder").mkdir(parents=True)
    assert decoder_folder("", str(ckpt)) == ""  # a decoder folder without its config is not a decoder
    (ckpt / "decoder" / "config.yaml").write_text("format: x\n")
    assert decoder_folder("", str(ckpt)) == str(ckpt / "decoder")
    assert decoder_folder(" other ", str(ckpt)) == "other"  # an explicit decoder wins
    assert decoder_folder("", "") == ""
