"""``dexwm bench sim``: physics steps/s, control ticks/s and render fps of the simulated robot, as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import mujoco
import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0, help="wall time per measurement")
    parser.add_argument("--seed", type=int, default=0)


def _rate(fn, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def run(args: argparse.Namespace) -> int:
    from dexwm_hw.sim.robot import PandaAllegroSim

    sim = PandaAllegroSim(render=False)
    sim.reset(args.seed)
    model, data = sim.model, sim.data
    steps_per_call = 100

    def physics() -> None:
        for _ in range(steps_per_call):
            mujoco.mj_step(model, data)

    physics_rate = _rate(physics, args.seconds) * steps_per_call
    rng = np.random.default_rng(args.seed)

    def control() -> None:
        if not sim.moving:
            sim.command(sim.clip(sim.joints + rng.normal(0, 0.05, 23)))
        sim.step()

    sim.reset(args.seed)
    control_rate = _rate(control, args.seconds)
    cfg = sim.camera_cfg
    report = {
        "benchmark": "sim",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "mujoco": mujoco.__version__, "gl": os.environ.get("MUJOCO_GL")},
        "model": {"nq": int(model.nq), "nu": int(model.nu), "ngeom": int(model.ngeom),
                  "physics_dt": float(model.opt.timestep)},
        "physics_steps_per_s": round(physics_rate, 1),
        "control_ticks_per_s": round(control_rate, 1),
        "realtime_factor": round(physics_rate * float(model.opt.timestep), 2),
        "render_fps": {},
    }
    for fast in (True, False):
        quality_sim = PandaAllegroSim(camera=dataclasses.replace(sim.camera_cfg, fast_render=fast))
        quality_sim.reset(args.seed)
        fps = _rate(quality_sim.render, args.seconds / 2)
        quality_sim.close()
        report["render_fps"][f"{cfg.width}x{cfg.height}_{'fast' if fast else 'shadows_reflections_msaa'}"] = round(fps, 1)
    print(json.dumps(report, indent=2))
    return 0
