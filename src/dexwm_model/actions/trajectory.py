"""A sequence of 42 world-frame keypoints and camera poses, from any data source, and its actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dexwm_model.actions._arrays import as_tensor, check_shape
from dexwm_model.actions.keypoint_action import fixed_camera_action, take_frames, trajectory_actions
from dexwm_model.actions.space import NUM_KEYPOINTS

SOURCES = ("egodex", "droid", "allegro")


@dataclass
class KeypointTrajectory:
    """``T`` frames of keypoints and camera poses from one episode.

    ``keypoints``: world positions ``(T, 42, 3)`` (left hand 21, right hand 21; an absent hand is zeros);
    ``camera_poses``: camera-to-world ``(T, 4, 4)``, optical frame; ``hand_consistency``: whether the
    hand-consistency (heat-map) loss applies to samples of this trajectory (False for parallel-jaw grippers,
    whose dummy keypoints are not visible hand points); ``fixed_camera``: the camera never moves, so the camera
    part of every action is exactly zero; ``confidence``: optional per-keypoint tracking confidence ``(T, 42)``.
    """

    keypoints: torch.Tensor
    camera_poses: torch.Tensor
    hand_consistency: bool
    source: str
    fixed_camera: bool = False
    confidence: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.keypoints = as_tensor(self.keypoints, "keypoints")
        self.camera_poses = as_tensor(self.camera_poses, "camera_poses").to(self.keypoints.dtype)
        if self.keypoints.ndim != 3:
            raise ValueError(f"keypoints: expected shape (T, {NUM_KEYPOINTS}, 3), found {tuple(self.keypoints.shape)}")
        check_shape(self.keypoints, "keypoints", (NUM_KEYPOINTS, 3))
        n = self.keypoints.shape[0]
        if tuple(self.camera_poses.shape) != (n, 4, 4):
            raise ValueError(f"camera_poses: expected shape ({n}, 4, 4) to match {n} keypoint frames, "
                             f"found {tuple(self.camera_poses.shape)}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, found {self.source!r}")
        if self.confidence is not None:
            self.confidence = as_tensor(self.confidence, "confidence")
            if tuple(self.confidence.shape) != (n, NUM_KEYPOINTS):
                raise ValueError(f"confidence: expected shape ({n}, {NUM_KEYPOINTS}), found "
                                 f"{tuple(self.confidence.shape)}")

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def actions(self, k1: Any, k2: Any) -> torch.Tensor:
        """Actions ``(*k.shape, 132)`` from frames ``k1`` to frames ``k2`` (ints or equal-shape index arrays)."""
        if not self.fixed_camera:
            return trajectory_actions(self.keypoints, self.camera_poses, k1, k2)
        i1, i2 = torch.as_tensor(k1), torch.as_tensor(k2)
        if i1.shape != i2.shape:
            raise ValueError(f"k1 and k2 must have the same shape, found {tuple(i1.shape)} and {tuple(i2.shape)}")
        kp = self.keypoints
        return fixed_camera_action(take_frames(kp, i1, 0, "k1"), take_frames(kp, i2, 0, "k2"),
                                   take_frames(self.camera_poses, i1, 0, "k1"))
