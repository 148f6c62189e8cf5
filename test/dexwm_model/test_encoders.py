"""Frozen image encoder: preprocessing, DINOv2 tokens, offline weight loading, projection, config factory."""

import numpy as np
import pytest
import torch

from dexwm_robot.config import ConfigError
from dexwm_model.encoders import (
    Dinov2Encoder,
    EncoderConfig,
    EncoderWeightsMissing,
    ImagePreprocessor,
    TokenProjection,
    build_encoder,
    load_encoder_config,
)
from dexwm_model.encoders.dinov2 import dinov2_config

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def tiny(image_size=(224, 224), seed=0):
    cfg = dinov2_config("S", hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    return Dinov2Encoder.from_config(cfg, image_size=image_size, seed=seed)


@pytest.fixture(scope="module")
def tiny_encoder():
    return tiny()


# ---------------------------------------------------------------------------------------------- preprocessing
def test_centre_crop_and_normalisation_hand_computed():
    img = np.zeros((2, 224, 300, 3), dtype=np.uint8)
    img[..., 0] = np.arange(300, dtype=np.uint8)[None, None, :]  # red = column index (mod 256)
    img[..., 1] = 255
    pre = ImagePreprocessor((224, 224))
    out = pre(img)
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.float32
    # short side already 224: no resize; the crop starts at column (300 - 224) // 2 = 38
    assert out[0, 0, 5, 0].item() == pytest.approx((38 / 255 - 0.485) / 0.229, abs=1e-6)
    assert out[1, 0, 0, 223].item() == pytest.approx(((261 % 256) / 255 - 0.485) / 0.229, abs=1e-6)
    assert torch.allclose(out[:, 1], torch.tensor((1 - 0.456) / 0.224))
    assert torch.allclose(out[:, 2], torch.tensor(-0.406 / 0.225))
    # channels-first uint8 and float in [0, 1] give the same pixels
    chw = torch.from_numpy(img).permute(0, 3, 1, 2)
    assert torch.equal(pre(chw), out)
    assert torch.allclose(pre(img.astype(np.float32) / 255), out, atol=1e-6)


def test_resize_short_side_then_crop():
    img = np.full((1, 448, 700, 3), 100, dtype=np.uint8)
    out = ImagePreprocessor((224, 224))(img)
    assert out.shape == (1, 3, 224, 224)
    assert torch.allclose(out[0, :, 7, 9], torch.from_numpy(((100 / 255 - MEAN) / STD).astype(np.float32)), atol=1e-5)
    pre = ImagePreprocessor((224, 392))
    g = pre.geometry((1080, 1920))
    assert (g.resized_hw, g.top, g.left, g.out_hw) == ((224, 398), 0, 3, (224, 392))
    g = pre.geometry((480, 640))  # 4:3 cannot cover 224 x 392 at short side 224: scale up to width 392
    assert (g.resized_hw, g.top, g.left) == ((294, 392), 35, 0)
    assert ImagePreprocessor((224, 224)).geometry((1080, 1920)).left == 87
    assert ImagePreprocessor((224, 224), resize_short=256).geometry((256, 256)).top == 16


def test_intrinsics_and_pixels_follow_the_crop():
    pre = ImagePreprocessor((224, 224))
    K = np.array([[736.6, 0, 960], [0, 736.6, 540], [0, 0, 1.0]])
    K2 = pre.adjust_intrinsics(K, (1080, 1920))
    np.testing.assert_allclose(K2[:2, 2], [112.0, 112.0], atol=1e-9)  # 960 * 398/1920 - 87, 540 * 224/1080
    np.testing.assert_allclose(K2[0, 0], 736.6 * 398 / 1920)
    np.testing.assert_allclose(pre.map_pixels(np.array([[960.0, 540.0], [0.0, 0.0]]), (1080, 1920)),
                               [[112.0, 112.0], [-87.0, 0.0]])
    assert torch.allclose(pre.adjust_intrinsics(torch.from_numpy(K), (1080, 1920)), torch.from_numpy(K2))


def test_bad_images_are_rejected_clearly():
    pre = ImagePreprocessor()
    with pytest.raises(ValueError, match="ambiguous"):
        pre(np.zeros((2, 3, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"float pixels must lie in \[0, 1\]"):
        pre(np.full((1, 20, 20, 3), 200.0, dtype=np.float32))
    with pytest.raises(ValueError, match="expected a batch"):
        pre(np.zeros((20, 20, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        pre(np.zeros((1, 20, 20, 3), dtype=np.int32))


# --------------------------------------------------------------------------------------------------- tokens
def test_token_grid_and_count(tiny_encoder):
    img = np.random.default_rng(0).integers(0, 256, (2, 240, 320, 3), dtype=np.uint8)
    tok = tiny_encoder(img)
    assert tiny_encoder.grid == (16, 16) and tiny_encoder.patch_size == 14 and tiny_encoder.dim == 32
    assert tok.shape == (2, 256, 32)
    wide = tiny(image_size=(224, 392))
    assert wide.grid == (16, 28) and wide(img).shape == (2, 448, 32)
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        tiny(image_size=(224, 300))


def test_tokens_are_normalised_patch_tokens_without_cls(tiny_encoder):
    img = np.random.default_rng(1).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    tok = tiny_encoder(img)
    with torch.no_grad():
        hidden = tiny_encoder.backbone(pixel_values=tiny_encoder.preprocess(img)).last_hidden_state
    assert hidden.shape[1] == 257 and torch.equal(tok, hidden[:, 1:])
    # the final layer norm is applied (random init: unit weight, zero bias) -> per-token mean 0, std 1
    assert torch.allclose(tok.mean(-1), torch.zeros(1, 256), atol=1e-5)
    assert torch.allclose(tok.std(-1, unbiased=False), torch.ones(1, 256), atol=1e-3)


def test_frozen_no_grads_and_eval(tiny_encoder):
    assert all(not p.requires_grad for p in tiny_encoder.parameters())
    tiny_encoder.train()
    assert not tiny_encoder.training and not tiny_encoder.backbone.training
    img = torch.rand(1, 224, 224, 3, requires_grad=True)
    assert not tiny_encoder(img).requires_grad


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = tiny(seed=3), tiny(seed=3), tiny(seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    img = np.full((1, 224, 224, 3), 7, dtype=np.uint8)
    assert torch.equal(a(img), b(img)) and not torch.equal(a(img), c(img))
    assert not a.is_pretrained and a.source == "random-init(seed=3)"


def test_save_pretrained_round_trip(tmp_path, tiny_encoder):
    tiny_encoder.save_pretrained(tmp_path / "dino")
    loaded = Dinov2Encoder.from_pretrained(tmp_path / "dino")
    assert loaded.is_pretrained and loaded.dim == 32
    img = np.random.default_rng(2).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    assert torch.equal(loaded(img), tiny_encoder(img))
    with pytest.raises(ValueError, match="width 32, but size 'S' needs 384"):
        Dinov2Encoder.from_pretrained(tmp_path / "dino", size="S")


def test_missing_weights_say_where_and_how(tmp_path):
    with pytest.raises(EncoderWeightsMissing) as err:
        Dinov2Encoder.from_pretrained(tmp_path / "absent", size="L")
    msg = str(err.value)
    assert str(tmp_path / "absent") in msg and "no such folder" in msg
    assert "facebook/dinov2-large" in msg and "save_pretrained" in msg and "random_init: true" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderWeightsMissing, match="without config.json"):
        Dinov2Encoder.from_pretrained(tmp_path / "empty")
    with pytest.raises(EncoderWeightsMissing, match="Hugging Face cache .*dexwm-test/no-such-dinov2"):
        Dinov2Encoder.from_pretrained("dexwm-test/no-such-dinov2")


# ----------------------------------------------------------------------------------------- projection, config
def test_token_projection():
    same = TokenProjection(32, 32)
    assert same.is_identity and not list(same.parameters())
    x = torch.randn(2, 5, 32)
    assert same(x) is x
    proj = TokenProjection(32, 48)
    y = proj(x)
    assert y.shape == (2, 5, 48) and y.requires_grad
    assert torch.allclose(y, x @ proj.linear.weight.T + proj.linear.bias)
    with pytest.raises(ValueError, match="width 32, found shape \\(2, 5, 31\\)"):
        proj(torch.randn(2, 5, 31))


def test_config_section_and_factory(tmp_path, tiny_encoder):
    cfg = load_encoder_config()  # the project's config/model.yaml
    assert cfg.kind == "dinov2" and len(cfg.image_size) == 2
    with pytest.raises(EncoderWeightsMissing, match="nowhere"):
        build_encoder(cfg, weights=str(tmp_path / "nowhere"), random_init=False)
    tiny_encoder.save_pretrained(tmp_path / "w")
    enc = build_encoder(EncoderConfig(size="S", image_size=[224, 392], weights=str(tmp_path / "w")), size=None)
    assert enc.grid == (16, 28) and enc.dim == 32
    rnd = build_encoder(EncoderConfig(size="S", random_init=True, seed=1))
    assert rnd.dim == 384 and rnd.grid == (16, 16) and not rnd.is_pretrained
    with pytest.raises(ConfigError, match="random_init is true but weights is set"):
        build_encoder(EncoderConfig(random_init=True, weights="x/y"))
    with pytest.raises(ConfigError, match="unknown encoder 'siglip'"):
        build_encoder(EncoderConfig(kind="siglip"))
    with pytest.raises(ConfigError, match="image_size"):
        EncoderConfig(image_size=[224])
