"""The GPU paths: the planner on CUDA (float32 and bf16 autocast, eager and torch.compile) against the CPU planner,
and one training step on CUDA. Marked ``cuda``: skipped where no GPU is visible (CI), run first by
``scripts/gpu_check.sh``."""

import numpy as np
import pytest
import torch

from dexwm_planner.planners import PlanObservation, Planner
from test_mpc import IMAGE, small_planner_config, tiny_world_model

GPU = "cuda"
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(GPU == "cuda" and not torch.cuda.is_available(), reason="no CUDA device visible")]


def _observation(model, seed: int = 0) -> PlanObservation:
    rng = np.random.default_rng(seed)
    frames = torch.from_numpy(rng.integers(0, 256, (5, IMAGE, IMAGE, 3), dtype=np.uint8))
    with torch.no_grad():
        z = model.encode(frames)
    joints = torch.zeros(23, dtype=torch.float64)
    return PlanObservation(context=z[:4], times=torch.arange(4, dtype=torch.float64) * 0.2, joints=joints,
                           goal=z[4])


def _planner(model, device: str, dtype: str, compile_: bool = False) -> Planner:
    cfg = small_planner_config(samples=16, iterations=2)
    cfg = cfg.replace(runtime={"device": device, "dtype": dtype, "compile": compile_})
    return Planner(model, cfg)


def _samples(planner: Planner, obs: PlanObservation, n: int = 16) -> torch.Tensor:
    mean, std, _ = planner.initial_distribution(torch.as_tensor(obs.joints))
    g = torch.Generator().manual_seed(0)
    return (mean.cpu() + std.cpu() * torch.randn((n,) + tuple(mean.shape), generator=g)).float()


def _costs(planner: Planner, obs: PlanObservation, plans: torch.Tensor) -> torch.Tensor:
    return planner.evaluate(planner.prepare(obs), plans).double().cpu()


@pytest.fixture(scope="module")
def model():
    return tiny_world_model()


def test_float32_costs_on_cuda_match_the_cpu(model):
    obs = _observation(model)
    cpu = _planner(model, "cpu", "float32")
    plans = _samples(cpu, obs)
    a = _costs(cpu, obs, plans)
    gpu = _planner(model.to(GPU), GPU, "float32")
    b = _costs(gpu, obs, plans)
    torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    model.to("cpu")


@pytest.mark.parametrize("compile_", [False, True])
def test_bf16_autocast_plans_are_finite_and_close_to_float32(model, compile_):
    obs = _observation(model)
    ref = _planner(model.to(GPU), GPU, "float32")
    bf16 = _planner(model, GPU, "bfloat16", compile_)
    assert bf16.autocast_dtype == torch.bfloat16
    plans = _samples(ref, obs)
    a, b = _costs(ref, obs, plans), _costs(bf16, obs, plans)
    assert torch.isfinite(b).all()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.95  # bf16 keeps the ranking of the samples
    result = bf16.plan(obs)
    assert np.isfinite(result.cost) and result.waypoints.shape == (2, 23) and np.isfinite(result.waypoints).all()
    model.to("cpu")


def test_one_training_step_on_cuda_lowers_nothing_to_nan(model):
    from dexwm_model.training import WorldModelObjective

    m = tiny_world_model().to(GPU).train()
    objective = WorldModelObjective(m, "pretrain")
    b, k = 2, 5
    rng = np.random.default_rng(0)
    with torch.no_grad():  # the encoder's own tokens, as the latent cache stores them
        z = m.encoder(torch.from_numpy(rng.integers(0, 256, (b * k, IMAGE, IMAGE, 3), dtype=np.uint8)).to(GPU))
    batch = {"latents": z.reshape(b, k, *z.shape[1:]), "hand_loss": torch.ones(b, dtype=torch.bool, device=GPU), "times": torch.arange(k).float().expand(b, k).to(GPU) * 0.2,
             "actions": 0.01 * torch.randn(b, k, 132, device=GPU),
             "keypoints_px": torch.rand(b, k, 12, 2, device=GPU) * IMAGE,
             "keypoints_valid": torch.ones(b, k, 12, dtype=torch.bool, device=GPU)}
    with torch.autocast(torch.device(GPU).type, dtype=torch.bfloat16):
        losses = objective(batch)
    losses["total"].backward()
    assert torch.isfinite(losses["total"]) and all(torch.isfinite(p.grad).all() for p in m.predictor.parameters()
                                                   if p.grad is not None)
