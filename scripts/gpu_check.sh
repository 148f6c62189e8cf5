#!/usr/bin/env bash
# One prepared GPU check (issue 11): cuda tests, planning at paper settings (XL + ViT-L/14, bf16, eager and
# compiled, vs the reference pattern), the closed loop on the simulator with the GPU planner, training throughput.
# Writes JSON into one folder and prints a summary; fits 9 minutes on one H100 (--budget-s).
#   scripts/gpu_check.sh --out docs/benchmarks/gpu_<name>      # on a GPU machine
#   scripts/gpu_check.sh --dry-run --out /tmp/gpu_check        # tiny sizes on the CPU (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec .venv/bin/python -m dexwm_planner.benchmark.gpu_check "$@"
