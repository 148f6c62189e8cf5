"""One rerun recording per task goal in a folder (the planner node's ``recording_dir``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def open_goal_recording(folder: str, task: str, goal_id: str, mpc, decoder: str, checkpoint: str,
                        goal_image: np.ndarray):
    """A :class:`~dexwm_planner.recording.RunRecording` named ``<task>_<date-time>_<goal_id>`` in ``folder``, its
    goal logged; the decoder: ``decoder`` or the checkpoint's bundled one (none if neither). ``ValueError`` naming
    ``recording_dir`` when the folder cannot be written."""
    from dexwm_model.decoder import decoder_folder
    from dexwm_planner.recording.run_recording import RunRecording

    name = f"{task}_{time.strftime('%Y%m%d-%H%M%S')}_{goal_id}"
    try:
        found = decoder_folder(decoder, checkpoint) or None
        recording = RunRecording(Path(folder).expanduser() / f"{name}.rrd", mpc, decoder=found, name=name)
    except OSError as exc:
        raise ValueError(f"parameter recording_dir: cannot write a recording in {folder}: {exc}") from exc
    recording.log_goal(goal_image)
    return recording
