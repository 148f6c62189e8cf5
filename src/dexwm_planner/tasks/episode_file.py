"""One suite episode as files, for running it outside the benchmark harness (``dexwm launch`` on the simulator).

``write_episode_files(task, index, folder)`` regenerates suite episode ``index`` of ``task`` (scene seed, start
joints, the scripted demonstration's end state and its goal image, exactly as ``dexwm suite build`` does) and
writes

* ``episode.json``: :meth:`EpisodeSpec.to_dict` plus ``"format"`` and ``"goal_image"`` (the PNG's file name);
* ``goal.png``: the goal image of the task camera.

The simulator node starts from it (``seed``, ``start_joints``) and the planner node gives the RunTask goal its
success-test inputs (target object, goal position, goal hand keypoints). :func:`read_episode_file` checks a file
and says precisely what is wrong with a damaged one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EPISODE_FILE_FORMAT = "dexwm-episode-goal/1"
EPISODE_FILE = "episode.json"
GOAL_IMAGE_FILE = "goal.png"
NUM_JOINTS = 23


class EpisodeFileError(ValueError):
    """An episode file that cannot be used (missing, not JSON, wrong format or values)."""


def write_episode_files(task: str, index: int, folder: str | Path) -> tuple[Path, Path]:
    """Build suite episode ``index`` of ``task`` in a fresh simulator and write its two files into ``folder``.

    Raises ``ValueError`` when the suite has no such episode or its demonstration did not produce a goal image."""
    from PIL import Image

    from dexwm_hw.sim.robot import PandaAllegroSim
    from dexwm_planner.tasks import suite as S
    from dexwm_planner.tasks.config import load_tasks_config

    cfg = load_tasks_config()
    entries = S.select(S.load_suite(task), [int(index)])
    sim = PandaAllegroSim(render=True)
    ((spec, outcome),) = S.build_suite(task, entries, sim, cfg, render=True)
    if spec.goal_image is None:
        raise ValueError(f"{task} suite episode {index}: the scripted demonstration failed, there is no goal image "
                         f"({outcome})")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    image_path = out / GOAL_IMAGE_FILE
    Image.fromarray(spec.goal_image).save(image_path)
    data = {"format": EPISODE_FILE_FORMAT, "goal_image": GOAL_IMAGE_FILE, **spec.to_dict()}
    json_path = out / EPISODE_FILE
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(json_path)
    return json_path, image_path


def read_episode_file(path: str | Path) -> dict:
    """The checked content of an ``episode.json``: ``task``, ``index``, ``seed`` (int), ``object`` (str),
    ``start_joints`` / ``goal_joints`` (23,), ``goal_object_position`` (3,), ``goal_keypoints`` (5, 3) as arrays,
    and ``goal_image`` as an absolute path."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise EpisodeFileError(f"episode file {p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EpisodeFileError(f"episode file {p}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != EPISODE_FILE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise EpisodeFileError(f"episode file {p}: expected format {EPISODE_FILE_FORMAT!r}, found {found!r}")
    shapes = {"start_joints": (NUM_JOINTS,), "goal_joints": (NUM_JOINTS,), "goal_object_position": (3,),
              "goal_keypoints": (5, 3)}
    out = dict(data)
    for key in ("task", "index", "seed", "object", "goal_image", *shapes):
        if key not in data:
            raise EpisodeFileError(f"episode file {p}: missing key {key!r}")
    if data["task"] not in ("reach", "grasp", "place"):
        raise EpisodeFileError(f"episode file {p}: task must be reach, grasp or place, found {data['task']!r}")
    for key in ("index", "seed"):
        if isinstance(data[key], bool) or not isinstance(data[key], int) or not 0 <= data[key] < 2**31:
            raise EpisodeFileError(f"episode file {p}: {key} must be an integer in 0..2147483647, found "
                                   f"{data[key]!r}")
    for key, shape in shapes.items():
        try:
            value = np.asarray(data[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise EpisodeFileError(f"episode file {p}: {key} must be numbers, found {data[key]!r}") from None
        if value.shape != shape or not np.all(np.isfinite(value)):
            raise EpisodeFileError(f"episode file {p}: {key} must be {shape} finite numbers, found shape "
                                   f"{value.shape}")
        out[key] = value
    image = Path(data["goal_image"])
    out["goal_image"] = image if image.is_absolute() else (p.parent / image).resolve()
    return out


def read_goal_image(path: str | Path) -> np.ndarray:
    """A goal image file (PNG / JPEG) as (H, W, 3) uint8 RGB; ``OSError`` / ``ValueError`` when it cannot be read."""
    from PIL import Image

    with Image.open(Path(path).expanduser()) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
