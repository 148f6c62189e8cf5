"""End-to-end training step: predictor + hand head, latent MSE + lambda x hand-consistency loss."""

import pytest
import torch

from dexwm_model.losses import world_model_loss
from dexwm_model.predictor import CDiTPredictor, HandHeatmapHead, load_hand_head_config, load_predictor_config


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_training_steps_reduce_the_combined_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    grid, d, image = (4, 4), 32, (16, 16)
    predictor = CDiTPredictor(load_predictor_config("tiny"), input_dim=d, grid=grid)
    head_cfg = load_hand_head_config(depth=1, width=32, heads=4)
    head = HandHeatmapHead(head_cfg, input_dim=d, grid=grid, image_size=image)

    b, c = 4, 8
    latents = torch.randn(b, c + 1, 16, d)  # c context frames + the target frame
    times = torch.cumsum(0.1 + 0.4 * torch.rand(b, c + 1), dim=1)
    actions = 0.05 * torch.randn(b, 132)
    uv = 2 + 11 * torch.rand(b, 12, 2)
    valid = torch.ones(b, 12, dtype=torch.bool)
    valid[:, :6] = False  # right hand only, like robot data
    valid[0] = False  # a sample with no hand keypoints at all
    mask = torch.ones(b, c, dtype=torch.bool)
    mask[1, :3] = False

    params = list(predictor.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    history = []
    for _ in range(25):
        pred = predictor(latents[:, :c], times[:, :c], actions, times[:, c] - times[:, c - 1], mask=mask)
        loss = world_model_loss(
            pred, latents[:, c], head(pred), uv, valid, hand_weight=head_cfg.loss_weight, sigma=head_cfg.sigma_px
        )
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        history.append((loss.total.item(), loss.latent.item(), loss.hand.item()))
        torch.testing.assert_close(loss.total, loss.latent + 100.0 * loss.hand)
    (t0, l0, h0), (t1, l1, h1) = history[0], history[-1]
    assert t1 < 0.8 * t0 and l1 < l0 and h1 < 0.5 * h0, history
    for p in params:  # every parameter (incl. zero-initialised gates) took part
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert all(blk.modulation.weight.abs().max() > 0 for blk in predictor.blocks)
