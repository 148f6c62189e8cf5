"""Training samples from robot episodes (``docs/dataset_format.md``): frozen-encoder tokens of every frame, computed
once, and batches of (current frame, hindsight goal frame, current joints, next ``horizon`` commanded targets).

A sample at frame ``t`` of an episode with frames ``0..T-1`` (``t <= T - 2``):

* observation: the tokens of frame ``t`` and the measured joints at ``t``;
* goal: the tokens of frame ``t + k``, ``k`` uniform in ``1..T-1-t`` (a hindsight goal: a view the episode did
  reach later, anywhere up to its end);
* actions: ``commanded_targets[t + 1 .. t + horizon]`` -- the waypoints the controller was sent after frame ``t``
  -- with the episode's last target repeated past its end (the robot stays there).

``t`` is drawn uniformly over all such frames of all episodes.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from dexwm_model.data.episode import EpisodeReader, list_episodes
from dexwm_model.encoders.base import ImageEncoder


class NoEpisodesFound(FileNotFoundError):
    """The data folders hold no usable episode."""


@dataclass
class TokenDataset:
    """Every frame's tokens, joints and commanded targets, episodes concatenated along the frame axis."""

    tokens: Tensor  # (N, P, D) float16
    joints: Tensor  # (N, 23) float32, measured
    targets: Tensor  # (N, 23) float32, commanded
    episode_end: Tensor  # (N,) int64: global index of the last frame of each frame's episode
    episodes: list[str]  # source file of each episode, in order

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        if not (self.joints.shape[0] == self.targets.shape[0] == self.episode_end.shape[0] == n):
            raise ValueError("TokenDataset: tokens, joints, targets and episode_end must have one row per frame")
        # a sample needs at least one later frame (its goal and its first action)
        self.starts = torch.nonzero(torch.arange(n) < self.episode_end).flatten()
        if self.starts.numel() == 0:
            raise NoEpisodesFound("no episode has two or more frames: nothing to learn from")

    @property
    def num_frames(self) -> int:
        return int(self.tokens.shape[0])

    def batch(self, batch_size: int, horizon: int, generator: torch.Generator) -> dict[str, Tensor]:
        """A random batch: ``current``/``goal`` tokens (B, P, D) float32, ``joints`` (B, 23), ``actions``
        (B, horizon, 23), and the frame indices ``t`` / ``goal_index`` (global)."""
        pick = torch.randint(0, self.starts.numel(), (batch_size,), generator=generator)
        t = self.starts[pick]
        end = self.episode_end[t]
        k = 1 + (torch.rand(batch_size, generator=generator) * (end - t).double()).long().clamp_max(end - t - 1)
        goal = t + k
        idx = torch.minimum(t[:, None] + 1 + torch.arange(horizon)[None], end[:, None])
        return {"current": self.tokens[t].float(), "goal": self.tokens[goal].float(), "joints": self.joints[t],
                "actions": self.targets[idx], "t": t, "goal_index": goal}


def episode_files(dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """All ``*.h5`` episode files of the folders, each folder's sorted by name."""
    files: list[Path] = []
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            raise NoEpisodesFound(f"--data {p}: not a folder (expected a folder of episode files, "
                                  f"`dexwm data sim --out DIR` writes one)")
        found = list_episodes(p)
        if not found:
            raise NoEpisodesFound(f"--data {p}: no episode files (*.h5) in this folder")
        files += found
    return files


@torch.no_grad()
def encode_episodes(files: Sequence[Path], encoder: ImageEncoder, batch: int = 32,
                    progress: bool = True) -> TokenDataset:
    """Read and validate every episode, encode all its frames once with the frozen ``encoder``."""
    tokens, joints, targets, ends, names = [], [], [], [], []
    offset = 0
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        with EpisodeReader(path) as reader:
            ep = reader.load()
        n = ep.num_frames
        toks = [encoder(torch.from_numpy(np.ascontiguousarray(ep.frames[s:s + batch]))).to(torch.float16)
                for s in range(0, n, batch)]
        tokens.append(torch.cat(toks))
        joints.append(torch.from_numpy(ep.joint_positions).float())
        targets.append(torch.from_numpy(ep.commanded_targets).float())
        ends.append(torch.full((n,), offset + n - 1, dtype=torch.long))
        names.append(str(path))
        offset += n
        if progress and ((i + 1) % 20 == 0 or i + 1 == len(files)):
            print(f"encoded {i + 1}/{len(files)} episodes ({offset} frames, {time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    if not names:
        raise NoEpisodesFound("no episode files given")
    return TokenDataset(torch.cat(tokens), torch.cat(joints), torch.cat(targets), torch.cat(ends), names)
