"""EgoDex (Apple Vision Pro / ARKit hand tracking) -> the 42 keypoints and camera poses of the action space.

An EgoDex episode is ``<task>/<n>.hdf5`` (+ ``<n>.mp4``) with ``transforms/<joint>`` (N x 4 x 4, world pose of
each ARKit joint), ``transforms/camera`` (N x 4 x 4, camera-to-world) and optional ``confidences/<joint>`` (N).
EgoDex's own tooling projects ``inv(transforms/camera) @ joint`` straight through the intrinsics, so its
camera frame is already the optical one (+z forward, +y down) used throughout this package.

Each hand's 21 points are the ARKit joints: the wrist (``leftHand`` / ``rightHand``), then per finger (thumb,
index, middle, ring, little) ``Knuckle``, ``IntermediateBase``, ``IntermediateTip``, ``Tip``; the metacarpals
are left out. Joint names are ``<hand><Finger><Part>``, e.g. ``leftThumbKnuckle``, ``rightIndexFingerTip``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from dexwm_model.actions._arrays import as_tensor
from dexwm_model.actions.space import HANDS
from dexwm_model.actions.trajectory import KeypointTrajectory
from dexwm_robot.hand_layout import FINGER_PARTS, HAND_FINGERS_21

# the one mapping table: our layout names -> ARKit joint-name pieces
EGODEX_WRIST = "Hand"
EGODEX_FINGERS = {"thumb": "Thumb", "index": "IndexFinger", "middle": "MiddleFinger", "ring": "RingFinger",
                  "little": "LittleFinger"}
EGODEX_PARTS = {"knuckle": "Knuckle", "ibase": "IntermediateBase", "itip": "IntermediateTip", "tip": "Tip"}
EGODEX_CAMERA = "camera"


def egodex_joint_names(hand: str) -> tuple[str, ...]:
    """The 21 ARKit joint names of ``hand`` ("left"/"right") in the layout order of ``hand_layout``."""
    if hand not in HANDS:
        raise ValueError(f"hand must be one of {HANDS}, found {hand!r}")
    return (f"{hand}{EGODEX_WRIST}",) + tuple(
        f"{hand}{EGODEX_FINGERS[finger]}{EGODEX_PARTS[part]}" for finger in HAND_FINGERS_21 for part in FINGER_PARTS
    )


# the 42 joints, left hand then right hand
EGODEX_KEYPOINT_JOINTS = egodex_joint_names("left") + egodex_joint_names("right")


def _read(group: Mapping[str, Any], name: str, where: str) -> np.ndarray:
    try:
        value = group[name]
    except KeyError:
        available = sorted(group.keys()) if hasattr(group, "keys") else []
        hint = f"; it has {len(available)} entries, e.g. {available[:6]}" if available else ""
        raise KeyError(f"EgoDex {where}: joint '{name}' not found{hint}") from None
    return np.asarray(value)  # reads a whole h5py dataset


def egodex_keypoints(transforms: Mapping[str, Any]) -> torch.Tensor:
    """``transforms`` (the ``transforms`` group of an EgoDex file, or a dict joint -> (N, 4, 4)) -> world
    keypoint positions ``(N, 42, 3)`` (float64)."""
    cols = []
    n = None
    for name in EGODEX_KEYPOINT_JOINTS:
        T = _read(transforms, name, "transforms")
        if T.ndim != 3 or T.shape[1:] != (4, 4):
            raise ValueError(f"EgoDex transforms/{name}: expected shape (N, 4, 4), found {T.shape}")
        if n is None:
            n = T.shape[0]
        elif T.shape[0] != n:
            raise ValueError(f"EgoDex transforms/{name}: {T.shape[0]} frames, but earlier joints have {n}")
        cols.append(T[:, :3, 3])
    return torch.from_numpy(np.stack(cols, axis=1).astype(np.float64))


def egodex_confidences(confidences: Mapping[str, Any]) -> torch.Tensor:
    """``confidences`` group (joint -> (N,)) -> ``(N, 42)`` in keypoint order."""
    cols = [_read(confidences, name, "confidences").reshape(-1) for name in EGODEX_KEYPOINT_JOINTS]
    lengths = {c.shape[0] for c in cols}
    if len(lengths) != 1:
        raise ValueError(f"EgoDex confidences: joints have different frame counts {sorted(lengths)}")
    return torch.from_numpy(np.stack(cols, axis=1).astype(np.float64))


def egodex_camera_poses(transforms: Mapping[str, Any]) -> torch.Tensor:
    """``transforms/camera`` -> camera-to-world poses ``(N, 4, 4)`` (float64)."""
    T = _read(transforms, EGODEX_CAMERA, "transforms")
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise ValueError(f"EgoDex transforms/{EGODEX_CAMERA}: expected shape (N, 4, 4), found {T.shape}")
    return as_tensor(T.astype(np.float64), "transforms/camera")


def egodex_trajectory(episode: Mapping[str, Any] | str | Path) -> KeypointTrajectory:
    """An EgoDex episode (an open ``h5py.File``, a dict with ``transforms`` [and ``confidences``], or the path of
    an ``.hdf5`` file) -> :class:`KeypointTrajectory` (hand-consistency loss applies, camera moves)."""
    if isinstance(episode, (str, Path)):
        import h5py

        path = Path(episode)
        if not path.is_file():
            raise FileNotFoundError(f"EgoDex episode not found: {path}")
        with h5py.File(path, "r") as f:
            return egodex_trajectory(f)
    if "transforms" not in episode:
        raise KeyError("EgoDex episode: no 'transforms' group (expected transforms/<joint> and transforms/camera)")
    transforms = episode["transforms"]
    keypoints = egodex_keypoints(transforms)
    cameras = egodex_camera_poses(transforms)
    if cameras.shape[0] != keypoints.shape[0]:
        raise ValueError(f"EgoDex: transforms/camera has {cameras.shape[0]} frames, the hand joints "
                         f"{keypoints.shape[0]}")
    confidence = egodex_confidences(episode["confidences"]) if "confidences" in episode else None
    return KeypointTrajectory(keypoints=keypoints, camera_poses=cameras, hand_consistency=True, source="egodex",
                              fixed_camera=False, confidence=confidence)
