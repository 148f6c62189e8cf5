"""Training checkpoints: a loadable :class:`WorldModel` folder plus the state needed to resume exactly.

``<out>/checkpoints/step_<N>/`` holds ``config.yaml`` + ``model.safetensors`` (``WorldModel.save``; the folder
loads with ``WorldModel.load`` like any model) and ``training_state.pt``: optimiser, learning-rate scheduler,
step, RNG states, the training config and the data it was trained on. ``<out>/checkpoints/latest`` names the
newest complete one (written after the folder is complete, atomically).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dexwm_model.world_model import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, WorldModel

STATE_NAME = "training_state.pt"
LATEST_NAME = "latest"
STATE_FORMAT = "dexwm-training-state"
STATE_VERSION = 1


def checkpoints_dir(out: str | os.PathLike) -> Path:
    return Path(out) / "checkpoints"


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: str | os.PathLike, model: WorldModel, state: dict[str, Any], keep: int) -> Path:
    """Write ``step_<state['step']>`` under ``<out>/checkpoints`` (complete before it gets its final name), point
    ``latest`` at it, and delete all but the newest ``keep`` step checkpoints."""
    root = checkpoints_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    name = step_name(int(state["step"]))
    final = root / name
    tmp = root / (name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    torch.save({"format": STATE_FORMAT, "format_version": STATE_VERSION, **state}, tmp / STATE_NAME)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = root / (LATEST_NAME + ".tmp")
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, root / LATEST_NAME)
    steps = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_resume(path: str | os.PathLike) -> Path:
    """A checkpoint folder from ``path``: a ``step_*`` folder itself, or a run folder / its ``checkpoints`` folder
    (then the one ``latest`` names)."""
    p = Path(path).expanduser()
    if (p / STATE_NAME).is_file():
        return p
    for root in (checkpoints_dir(p), p):
        latest = root / LATEST_NAME
        if latest.is_file():
            target = root / latest.read_text().strip()
            if not (target / STATE_NAME).is_file():
                raise CheckpointError(f"{latest} names {target.name}, which has no {STATE_NAME} (incomplete or "
                                      "deleted checkpoint)")
            return target
    if not p.exists():
        raise CheckpointError(f"resume: {p} does not exist")
    raise CheckpointError(f"resume: {p} is neither a training checkpoint (a folder with {STATE_NAME}, "
                          f"{CONFIG_NAME} and {WEIGHTS_NAME}) nor a run folder with checkpoints/{LATEST_NAME}")


def load_training_state(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder}: missing {STATE_NAME} (not a training checkpoint; a model folder alone "
                              "can initialise fine-tuning with --init but cannot be resumed)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several unrelated types for a corrupt pickle / zip
        raise CheckpointError(f"{path}: unreadable training state ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a {STATE_FORMAT} file")
    if state.get("format_version") != STATE_VERSION:
        raise CheckpointError(f"{path}: format_version {state.get('format_version')!r} is not supported "
                              f"(this code reads {STATE_VERSION})")
    return state
