"""The sampling-based optimiser core shared by every planner: CEM and MPPI over bounded sequences.

The decision variable is a sequence ``(T, D)`` (for the robot: T joint waypoints of D = 23 joints). Each
iteration draws ``N`` samples from a diagonal Gaussian ``mean + std * eps`` (optionally the mean itself as
sample 0), clamps them to the box ``[low, high]`` (so every evaluated sample is feasible), evaluates all of
them with ONE call of a batched cost function ``(N, T, D) -> (N,)`` and refits the Gaussian:

* CEM: mean and (population) std of the ``K`` lowest-cost samples (the elites);
* MPPI: weights ``softmax(-(c - min c) / lambda)`` (costs optionally scaled to [0, 1] first), mean and std of
  the weighted samples (or the std kept fixed).

With ``fine_fraction > 0`` that share of the samples is drawn with the std scaled by ``fine_scale``: a narrow
cloud around the mean beside the wide one, so small corrections near a good plan are tried every iteration (our
addition; 0 = one Gaussian). A ``proposal`` sequence (the planner's goal-pose line, ``proposal_fraction``) puts that
share of the first ``proposal_iterations`` iterations' samples (default: the first only) around it instead of the
mean (the proposal itself among them), so CEM / MPPI refit toward it only when it scores better. Either way the std is floored per dimension and the update can be smoothed with the previous distribution.
The best sample seen in any iteration is returned. Nothing here knows about robots or world models: a
quadratic cost plugs in just the same (the tests do).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from dexwm_planner.planners.config import SearchConfig

CostFn = Callable[[Tensor], Tensor]


@dataclass
class IterationStats:
    iteration: int
    elite_costs: list[float]  # costs of the K best samples of this iteration, ascending
    mean_cost: float  # over all samples of this iteration
    best_cost: float  # best of this iteration
    best_so_far: float  # best over this and all earlier iterations
    mean_std: float  # mean of the sampling std used by this iteration
    seconds: float  # wall time of the iteration (sampling, evaluation, refit)
    effective_samples: float | None = None  # MPPI: 1 / sum(w^2)


@dataclass
class OptimizerResult:
    best: Tensor  # (T, D): lowest-cost sample seen
    best_cost: float
    mean: Tensor  # (T, D): the final distribution
    std: Tensor
    iterations: list[IterationStats] = field(default_factory=list)


class SamplingOptimizer:
    """CEM / MPPI over sequences ``(T, D)`` in the box ``[low, high]`` (per-dimension bounds ``(D,)``).

    ``std_floor`` ``(D,)``: lower bound of the refitted std. ``config``: the ``planner`` section (method,
    samples, iterations, include_mean, cem / mppi settings).
    """

    def __init__(self, config: SearchConfig, low: Tensor, high: Tensor, std_floor: Tensor) -> None:
        low, high, std_floor = (torch.as_tensor(x) for x in (low, high, std_floor))
        if low.dim() != 1 or high.shape != low.shape or std_floor.shape != low.shape:
            raise ValueError(f"low, high and std_floor must be vectors of one length (D,), found "
                             f"{tuple(low.shape)}, {tuple(high.shape)} and {tuple(std_floor.shape)}")
        if not bool((low <= high).all()):
            bad = (low > high).nonzero().flatten().tolist()
            raise ValueError(f"low must not exceed high; it does in dimension(s) {bad}")
        if bool((std_floor < 0).any()):
            raise ValueError("std_floor must be >= 0 in every dimension")
        self.config = config
        self.low, self.high, self.std_floor = low, high, std_floor

    @property
    def dim(self) -> int:
        return self.low.shape[0]

    def clamp(self, x: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(x, self.high.to(x)), self.low.to(x))

    def sample(self, mean: Tensor, std: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` clamped samples ``(n, T, D)`` of ``N(mean, std^2)`` (sample 0 = the mean with ``include_mean``)."""
        eps = torch.randn((n,) + tuple(mean.shape), generator=generator, device=mean.device, dtype=mean.dtype)
        fine = int(round(self.config.fine_fraction * n))
        if fine > 0:
            eps[n - fine:] *= self.config.fine_scale
        if self.config.include_mean:
            eps[0] = 0.0
        return self.clamp(torch.addcmul(mean, std, eps))

    def propose(self, samples: Tensor, proposal: Tensor, std: Tensor, generator: torch.Generator | None) -> Tensor:
        """Replace the last ``proposal_fraction`` of ``samples (n, T, D)`` by draws around ``proposal (T, D)``, the
        first of them the proposal itself (clamped)."""
        n = samples.shape[0]
        m = int(round(self.config.proposal_fraction * n))
        if m <= 0:
            return samples
        eps = torch.randn((m,) + tuple(proposal.shape), generator=generator, device=samples.device,
                          dtype=samples.dtype)
        eps[0] = 0.0
        samples = samples.clone()
        samples[n - m:] = self.clamp(torch.addcmul(proposal.to(samples), std, eps))
        return samples

    def run(self, cost_fn: CostFn, mean: Tensor, std: Tensor, generator: torch.Generator | None = None,
            on_iteration: Callable[[IterationStats], None] | None = None,
            proposal: Tensor | None = None) -> OptimizerResult:
        """Minimise ``cost_fn`` starting from ``N(mean, std^2)`` (both ``(T, D)``); ``proposal`` (optional,
        ``(T, D)``): a sequence the first ``proposal_iterations`` iterations also sample around
        (``proposal_fraction``)."""
        cfg = self.config
        if mean.dim() != 2 or mean.shape[1] != self.dim or std.shape != mean.shape:
            raise ValueError(f"mean and std must both have shape (T, {self.dim}), found {tuple(mean.shape)} and "
                             f"{tuple(std.shape)}")
        if not bool(torch.isfinite(mean).all()) or not bool(torch.isfinite(std).all()) or bool((std < 0).any()):
            raise ValueError("mean must be finite and std finite and >= 0")
        dev, dt = mean.device, mean.dtype
        low, high, floor = self.low.to(dev, dt), self.high.to(dev, dt), self.std_floor.to(dev, dt)
        mean = self.clamp(mean.clone())
        std = torch.maximum(std.clone(), floor)
        n, k = cfg.samples, cfg.elites
        best, best_cost = mean.clone(), float("inf")
        stats: list[IterationStats] = []
        for it in range(cfg.iterations):
            t0 = time.perf_counter()
            samples = self.sample(mean, std, n, generator)
            if it < cfg.proposal_iterations and proposal is not None:
                samples = self.propose(samples, proposal, std, generator)
            costs = cost_fn(samples)
            if tuple(costs.shape) != (n,):
                raise ValueError(f"cost function returned shape {tuple(costs.shape)}, expected ({n},)")
            costs = costs.to(dt)
            costs = torch.where(torch.isnan(costs), torch.full_like(costs, float("inf")), costs)
            order = torch.topk(costs, k, largest=False).indices  # ascending
            elite_costs = costs[order]
            if not bool(torch.isfinite(elite_costs[0])):
                raise FloatingPointError(f"iteration {it}: every sample has a non-finite cost")
            it_best = float(elite_costs[0])
            if it_best < best_cost:
                best_cost, best = it_best, samples[order[0]].clone()
            ess = None
            if cfg.method == "cem":
                elites = samples[order]
                new_mean = elites.mean(0)
                new_std = elites.std(0, correction=0)
                a = cfg.cem.smoothing
            else:
                m = cfg.mppi
                finite = torch.isfinite(costs)
                c = torch.where(finite, costs - elite_costs[0], torch.zeros_like(costs))
                if m.normalize_costs:
                    span = c.max()
                    c = c / torch.where(span > 0, span, torch.ones_like(span))
                logits = torch.where(finite, -c / m.temperature, torch.full_like(c, -float("inf")))
                w = torch.softmax(logits, dim=0)
                ess = float(1.0 / (w * w).sum())
                wv = w.view(n, 1, 1)
                new_mean = (wv * samples).sum(0)
                new_std = ((wv * (samples - new_mean) ** 2).sum(0)).sqrt() if m.adapt_std else std
                a = m.smoothing
            mean_std = float(std.mean())
            mean = torch.clamp((1.0 - a) * new_mean + a * mean, low, high)
            std = torch.maximum((1.0 - a) * new_std + a * std, floor)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            finite_costs = costs[torch.isfinite(costs)]
            st = IterationStats(iteration=it, elite_costs=[float(x) for x in elite_costs.tolist()],
                                mean_cost=float(finite_costs.mean()), best_cost=it_best, best_so_far=best_cost,
                                mean_std=mean_std, seconds=time.perf_counter() - t0, effective_samples=ess)
            stats.append(st)
            if on_iteration is not None:
                on_iteration(st)
        return OptimizerResult(best=best, best_cost=best_cost, mean=mean, std=std, iterations=stats)
