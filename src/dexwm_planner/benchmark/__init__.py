"""Closed-loop task benchmark (``dexwm bench tasks``): the goal-image MPC (or a baseline) on the fixed reach /
grasp / place suites in simulation, with success rates, Wilson intervals, failure categories and recordings."""

from dexwm_planner.benchmark.harness import BenchConfig, EpisodeResult, load_bench_config, run_closed_loop
from dexwm_planner.benchmark.policies import RandomPolicy, StillPolicy
from dexwm_planner.benchmark.stats import wilson_interval

__all__ = ["BenchConfig", "EpisodeResult", "RandomPolicy", "StillPolicy", "load_bench_config", "run_closed_loop",
           "wilson_interval"]
