"""``dexwm demo reach|grasp|place [--episode K] [--save-video PATH]``: the scripted demonstrator on one episode.

Runs the demonstration of one suite episode in simulation (verified grasp synthesis for grasp and place, IK
reaching for reach), evaluates the task's success test every control tick and prints one JSON line: success,
held ticks, distances, simulated duration and wall time. ``--save-video`` records the task camera at every
control tick (``.gif`` with Pillow; ``.mp4`` when PyAV is installed).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=("reach", "grasp", "place"))
    parser.add_argument("--episode", type=int, default=0, help="episode index in config/suites/<task>.json")
    parser.add_argument("--save-video", metavar="PATH", help="write the camera view of every tick (.gif or .mp4)")
    parser.add_argument("--suite", metavar="FILE", help="suite file (default: the committed one)")


def save_video(frames: list, path: str | Path, fps: float) -> None:
    path = Path(path)
    if not frames:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    elif suffix == ".mp4":
        try:
            import av
        except ImportError as exc:
            raise SystemExit("writing .mp4 needs PyAV (`pip install av`); use a .gif path instead") from exc
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=int(round(fps)))
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    else:
        raise SystemExit(f"--save-video: unsupported extension '{path.suffix}' (use .gif or .mp4)")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexwm_hw.sim.robot import PandaAllegroSim
    from dexwm_planner.tasks.config import load_tasks_config
    from dexwm_planner.tasks.episodes import run_episode
    from dexwm_planner.tasks.suite import load_suite, select

    cfg = load_tasks_config()
    suite = load_suite(args.task, args.suite)
    (entry,) = select(suite, [args.episode])
    sim = PandaAllegroSim(render=bool(args.save_video))
    frames: list = []
    on_tick = (lambda s: frames.append(s.render())) if args.save_video else None
    try:
        _, outcome = run_episode(sim, args.task, entry, cfg, on_tick=on_tick, render_goal=False)
        if args.save_video:
            save_video(frames, args.save_video, 1.0 / sim.control_dt)
            outcome["video"] = str(args.save_video)
    finally:
        sim.close()
    print(json.dumps(outcome))
    return 0 if outcome["success"] else 1
