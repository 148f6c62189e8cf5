"""Hand-consistency head, heat-map targets, masked loss, keypoint read-out and PCK."""

import math

import pytest
import torch

from dexwm_model.losses import gaussian_heatmaps, hand_consistency_loss, heatmap_keypoints, keypoint_mask, pck
from dexwm_model.predictor import HandHeatmapHead, load_hand_head_config


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_uv(b, k, height, width, seed=0, margin=6.0):
    g = torch.Generator().manual_seed(seed)
    u = margin + (width - 1 - 2 * margin) * torch.rand(b, k, generator=g, dtype=torch.float64)
    v = margin + (height - 1 - 2 * margin) * torch.rand(b, k, generator=g, dtype=torch.float64)
    return torch.stack([u, v], dim=-1)


def test_config_section():
    cfg = load_hand_head_config()
    assert cfg.sigma_px == 2.0 and cfg.loss_weight == 100.0 and cfg.depth == 2
    assert list(cfg.pck_thresholds_px) == [2.5, 5.0, 10.0, 20.0]


def test_gaussian_targets_peak_at_the_keypoint():
    uv = torch.tensor([[[10.0, 5.0], [3.25, 7.5], [100.0, 2.0]]], dtype=torch.float64)
    valid = torch.tensor([[True, True, False]])
    maps = gaussian_heatmaps(uv, valid, 12, 20, 2.0)
    assert maps.shape == (1, 3, 12, 20)
    assert maps[0, 0, 5, 10] == 1.0 and maps[0, 0].argmax() == 5 * 20 + 10  # row v = 5, column u = 10
    assert math.isclose(maps[0, 0, 5, 12].item(), math.exp(-4 / 8), rel_tol=1e-12)  # 2 px right of the centre
    assert torch.equal(maps[0, 2], torch.zeros(12, 20))  # invalid keypoint: empty map
    assert math.isclose(maps[0, 1, 7, 3].item(), math.exp(-(0.25**2 + 0.5**2) / 8), rel_tol=1e-12)


def test_keypoint_mask_excludes_outside_and_invalid():
    uv = torch.tensor([[[0.0, 0.0], [19.0, 11.0], [19.5, 3.0], [-0.1, 3.0], [4.0, float("nan")], [4.0, 4.0]]])
    valid = torch.tensor([[True, True, True, True, True, False]])
    assert keypoint_mask(uv, valid, 12, 20).tolist() == [[True, True, False, False, False, False]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_readout_recovers_subpixel_location(dtype):
    cfg = load_hand_head_config()
    uv = random_uv(4, 12, 48, 64, seed=1)
    maps = gaussian_heatmaps(uv, torch.ones(4, 12, dtype=torch.bool), 48, 64, cfg.sigma_px).to(dtype)
    est, conf = heatmap_keypoints(maps, cfg.refine_radius_px)
    err = (est.double() - uv).norm(dim=-1)
    assert err.max() < 0.5, err.max()
    coarse, _ = heatmap_keypoints(maps, 0)  # plain arg-max: up to ~0.7 px off
    assert err.mean() < (coarse.double() - uv).norm(dim=-1).mean()
    assert conf.min() > 0.8 and conf.max() <= 1.0


def test_readout_ignores_a_distant_second_blob():
    uv = torch.tensor([[[20.3, 14.6]]], dtype=torch.float64)
    maps = gaussian_heatmaps(uv, torch.ones(1, 1, dtype=torch.bool), 32, 48, 2.0)
    maps = maps + 0.6 * gaussian_heatmaps(
        torch.tensor([[[40.0, 5.0]]], dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool), 32, 48, 2.0
    )
    est, _ = heatmap_keypoints(maps, 4)
    assert (est - uv).norm() < 0.5


def test_loss_zero_for_perfect_prediction_and_masked_keypoints_are_ignored():
    height, width, sigma = 24, 32, 2.0
    uv = random_uv(2, 12, height, width, seed=2)
    uv[0, 3] = torch.tensor([-5.0, 4.0], dtype=torch.float64)  # outside the image
    uv[1, 7] = torch.tensor([float("nan"), float("nan")])  # unknown
    valid = torch.ones(2, 12, dtype=torch.bool)
    valid[1, :6] = False  # e.g. left hand absent
    counted = keypoint_mask(uv, valid, height, width)
    target = gaussian_heatmaps(torch.nan_to_num(uv), counted, height, width, sigma)
    assert hand_consistency_loss(target, uv, valid, sigma).item() == 0.0

    pred = (target + 0.1 * torch.randn_like(target)).requires_grad_(True)
    with torch.no_grad():  # garbage (even NaN) in the maps of masked keypoints
        pred[~counted] = torch.randn_like(pred[~counted]) * 50
        pred[1, 0] = float("nan")
    loss = hand_consistency_loss(pred, uv, valid, sigma)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.equal(pred.grad[~counted], torch.zeros_like(pred.grad[~counted]))
    assert (pred.grad[counted].abs().sum(dim=(-2, -1)) > 0).all()
    expected = ((pred.detach() - target) ** 2)[counted].mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-12, atol=0)

    nothing = torch.zeros(2, 12, dtype=torch.bool)
    assert hand_consistency_loss(pred.detach(), uv, nothing, sigma).item() == 0.0


def test_head_output_shape_and_errors():
    cfg = load_hand_head_config(depth=1, width=32, heads=4)
    head = HandHeatmapHead(cfg, input_dim=24, grid=(3, 4), image_size=(21, 28))
    out = head(torch.randn(2, 12, 24))
    assert out.shape == (2, 12, 21, 28) and torch.equal(out, torch.zeros_like(out))  # zero-initialised read-out
    with pytest.raises(ValueError, match=r"whole multiple of the patch grid"):
        HandHeatmapHead(cfg, input_dim=24, grid=(3, 4), image_size=(20, 28))
    with pytest.raises(ValueError, match=r"tokens: expected shape \(B, 12, 24\)"):
        head(torch.randn(2, 13, 24))


def test_pixel_shuffle_places_each_token_on_its_own_patch():
    cfg = load_hand_head_config(depth=1, width=32, heads=4)
    head = HandHeatmapHead(cfg, input_dim=8, grid=(2, 3), image_size=(4, 9))  # patch 2 x 3
    with torch.no_grad():
        head.out.bias.copy_(torch.arange(head.out.bias.numel(), dtype=torch.float32))
    maps = head(torch.randn(1, 6, 8))[0]  # weights are zero: every token emits the bias
    # token output index = (i * pw + j) * 12 + k for pixel (i, j) of the patch and heat-map k
    for k in (0, 5, 11):
        for i in range(2):
            for j in range(3):
                assert torch.all(maps[k, i::2, j::3] == (i * 3 + j) * 12 + k)


def test_tiny_head_overfits_one_example():
    torch.manual_seed(0)
    cfg = load_hand_head_config(depth=2, width=48, heads=4)
    head = HandHeatmapHead(cfg, input_dim=32, grid=(4, 4), image_size=(32, 32))
    tokens = torch.randn(1, 16, 32)
    uv = random_uv(1, 12, 32, 32, seed=3, margin=3.0).float()
    valid = torch.ones(1, 12, dtype=torch.bool)
    valid[0, :6] = False
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        loss = hand_consistency_loss(head(tokens), uv, valid, cfg.sigma_px)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    est, _ = heatmap_keypoints(head(tokens).detach(), cfg.refine_radius_px)
    assert pck(est, uv, valid, (2.5,))[2.5] == 1.0


def test_pck():
    true = torch.zeros(1, 5, 2)
    pred = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [0.0, 9.0], [15.0, 0.0], [100.0, 0.0]]])
    valid = torch.tensor([[True, True, True, True, False]])
    assert pck(pred, true, valid) == {2.5: 0.25, 5.0: 0.5, 10.0: 0.75, 20.0: 1.0}
    assert math.isnan(pck(pred, true, torch.zeros(1, 5, dtype=torch.bool))[5.0])
    with pytest.raises(ValueError, match=r"pred_uv: expected shape \(1, 5, 2\)"):
        pck(pred[:, :4], true, valid)
