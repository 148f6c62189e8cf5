"""Training frames for the self-supervised encoder: read from episode files, resized once, augmented per batch.

Frames are read from ``dexwm-episode`` files (:class:`~dexwm_model.data.EpisodeReader`), resized and cropped to the
encoder's input exactly as its :class:`~dexwm_model.encoders.ImagePreprocessor` does (antialiased bilinear), and
kept in memory as ``uint8 (N, 3, h, w)`` (37 kB per 112 x 112 frame). Augmentation (:func:`augment`) runs on whole
batches: a random zoom / shift (affine resampling, so only ever up-sampling) on a share of the samples, and small
brightness / contrast changes. No flips: the camera is fixed, left and right mean something.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dexwm_model.data.episode import EpisodeReader, list_episodes
from dexwm_model.encoders.preprocess import ImagePreprocessor
from dexwm_model.encoders.ssl.config import AugmentConfig


class NoFramesFound(FileNotFoundError):
    """The data folders given hold no episode files."""


@dataclass
class FrameSet:
    """Frames ``(N, 3, h, w)`` uint8 and, per frame, the index of its episode in ``episodes`` and its frame index."""

    frames: Tensor
    episode: np.ndarray
    frame_index: np.ndarray
    episodes: list[Path]

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def episode_files(dirs: Iterable[str | os.PathLike]) -> list[Path]:
    """All episode files in the given folders (a file may be given directly), sorted within each folder."""
    files: list[Path] = []
    for d in dirs:
        p = Path(d).expanduser()
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = list_episodes(p)
            if not found:
                raise NoFramesFound(f"{p}: no episode files (*.h5) in this folder; generate some with "
                                    f"`dexwm data sim --episodes N --out {p}`")
            files += found
        else:
            raise NoFramesFound(f"{p}: no such file or folder (expected a folder of dexwm-episode files)")
    if not files:
        raise NoFramesFound("no data folders given")
    return files


def resize_uint8(frames: np.ndarray | Tensor, preprocess: ImagePreprocessor) -> Tensor:
    """``(n, H, W, 3)`` uint8 -> ``(n, 3, h, w)`` uint8 resized / cropped as the encoder's preprocessing does."""
    x = preprocess.to_chw(frames, "hwc")
    g = preprocess.geometry(x.shape[-2:])
    if g.resized_hw != g.in_hw:
        x = F.interpolate(x, size=g.resized_hw, mode="bilinear", align_corners=False, antialias=preprocess.antialias)
    ch, cw = g.out_hw
    x = x[:, :, g.top : g.top + ch, g.left : g.left + cw]
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def load_frames(dirs: Sequence[str | os.PathLike], preprocess: ImagePreprocessor, stride: int = 1,
                max_frames: int = 0, seed: int = 0, progress: bool = False) -> FrameSet:
    """Every ``stride``-th frame of every episode in ``dirs``, resized to the encoder's input (see module doc).

    ``max_frames > 0`` keeps a random subset of that size (chosen with ``seed``) to bound memory.
    """
    files = episode_files(dirs)
    chunks, ep_idx, fr_idx = [], [], []
    it = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc="reading episodes", unit="ep")
    for i, path in enumerate(it):
        with EpisodeReader(path) as reader:
            idx = np.arange(0, reader.num_frames, stride)
            frames = reader.frames()[idx]
        chunks.append(resize_uint8(frames, preprocess))
        ep_idx.append(np.full(len(idx), i))
        fr_idx.append(idx)
    frames_t = torch.cat(chunks)
    episode = np.concatenate(ep_idx)
    frame_index = np.concatenate(fr_idx)
    if 0 < max_frames < len(frames_t):
        keep = np.sort(np.random.default_rng(seed).choice(len(frames_t), size=max_frames, replace=False))
        frames_t, episode, frame_index = frames_t[torch.from_numpy(keep)], episode[keep], frame_index[keep]
    return FrameSet(frames_t, episode, frame_index, files)


def augment(batch: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """uint8 ``(B, 3, h, w)`` -> float ``(B, 3, h, w)`` in [0, 1], randomly zoomed / shifted and recoloured."""
    x = batch.to(torch.float32) / 255.0
    b, dev = x.shape[0], x.device

    def uniform(lo: float, hi: float, n: int = b) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator).to(dev)

    crop = torch.rand(b, generator=generator).to(dev) < cfg.crop_probability
    if bool(crop.any()):
        area = uniform(cfg.scale[0], cfg.scale[1])
        aspect = uniform(1 - cfg.aspect_jitter, 1 + cfg.aspect_jitter)
        sx = torch.clamp(area * aspect.sqrt(), max=1.0)
        sy = torch.clamp(area / aspect.sqrt(), max=1.0)
        tx = (1 - sx) * uniform(-1, 1)
        ty = (1 - sy) * uniform(-1, 1)
        one = torch.ones_like(sx)
        sx, sy = torch.where(crop, sx, one), torch.where(crop, sy, one)
        tx, ty = torch.where(crop, tx, 0 * tx), torch.where(crop, ty, 0 * ty)
        zero = torch.zeros_like(sx)
        theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.brightness > 0:
        x = x * uniform(1 - cfg.brightness, 1 + cfg.brightness).view(b, 1, 1, 1)
    if cfg.contrast > 0:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * uniform(1 - cfg.contrast, 1 + cfg.contrast).view(b, 1, 1, 1) + mean
    return x.clamp_(0.0, 1.0)


__all__ = ["FrameSet", "NoFramesFound", "augment", "episode_files", "load_frames", "resize_uint8"]
