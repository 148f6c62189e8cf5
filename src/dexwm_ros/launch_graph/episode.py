"""The suite episode a simulated run plays when it is given a checkpoint but no goal image.

Both starters call :func:`with_suite_episode` before :func:`~dexwm_ros.launch_graph.graph.describe`: on the
simulator, with a world-model checkpoint, no ``goal_image``, no ``episode_file`` and ``serve`` false, suite episode
``episode`` of the task is regenerated (scene seed, start joints, demonstration, goal image: exactly the benchmark's
episode) into a fresh run folder ``runs/launch/<task>_ep<NNNN>_<time>/`` and ``episode_file`` points at it. The
planner then runs that task once, scored by the paper's success test, and writes ``result.json`` beside it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

RUNS_DIR = Path("runs") / "launch"


def wants_suite_episode(backend: str, arguments: dict[str, Any]) -> bool:
    def text(name: str) -> str:
        value = arguments.get(name)
        return "" if value is None else str(value).strip()

    return (backend == "sim" and bool(text("checkpoint")) and not text("goal_image") and not text("episode_file")
            and text("serve").lower() not in ("true", "1", "yes"))


def with_suite_episode(task: str, backend: str, arguments: dict[str, Any], runs_dir: Path = RUNS_DIR,
                       say=print) -> dict[str, Any]:
    """``arguments`` with ``episode_file`` set to a freshly written suite episode when the run wants one."""
    if not wants_suite_episode(backend, arguments):
        return dict(arguments)
    from dexwm_ros.launch_graph.graph import _as_nonneg_int
    from dexwm_planner.tasks.episode_file import write_episode_files

    index = _as_nonneg_int(arguments.get("episode", 0) if arguments.get("episode") is not None else 0, "episode")
    folder = Path(runs_dir) / f"{task}_ep{index:04d}_{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    json_path, image_path = write_episode_files(task, index, folder)
    say(f"{task} suite episode {index}: start state and goal written to {json_path} (goal image {image_path.name}, "
        f"{time.perf_counter() - t0:.1f} s)")
    return {**arguments, "episode_file": str(json_path.resolve())}
