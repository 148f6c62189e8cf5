"""Latent cache: the frozen encoder's tokens of every frame, computed once and stored per episode.

The encoder never changes during training, so encoding each frame once and training on the stored tokens removes
the encoder (and image decoding) from every training step. Layout, under a cache root::

    <root>/<encoder id>/encoder.json                      what encoder the id stands for
    <root>/<encoder id>/<source>/<episode key>/tokens.npy  float16 (T, P, D): encoder tokens of all T frames
                                              aux.npz     times (T,), keypoints_world (T, 42, 3), camera_poses
                                                          (T, 4, 4), keypoints_px (T, 12, 2) in the encoder's crop,
                                                          keypoints_valid (T, 12), object_px (T, M, 2) and
                                                          object_valid (T, M) (datasets/objects.py)
                                              meta.json   written last: marks the entry complete; source file
                                                          sizes / mtimes to detect a changed episode

The encoder id (:func:`encoder_identity`) hashes the encoder's kind, preprocessing geometry and every weight, so
latents of different encoders (or of the same architecture with other weights) never mix. Keypoints are mapped into
the crop with the encoder's own preprocessing (:class:`dexwm_model.datasets.ClipTransform`), exactly as on the
pixel path. :class:`LatentClipDataset` serves the same clips as its pixel dataset (same frame draws per epoch and
index), with ``latents`` instead of ``frames``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from dexwm_model.actions.trajectory import KeypointTrajectory
from dexwm_model.datasets.base import ClipDataset, EpisodeEntry, checked_objects
from dexwm_model.datasets.objects import no_objects, object_catalogue
from dexwm_model.datasets.transform import ClipTransform
from dexwm_model.encoders.base import ImageEncoder

CACHE_FORMAT = "dexwm-latent-cache"
CACHE_VERSION = 2  # 2: object keypoints in aux.npz
TOKENS_FILE, AUX_FILE, META_FILE = "tokens.npy", "aux.npz", "meta.json"
AUX_KEYS = ("times", "keypoints_world", "camera_poses", "keypoints_px", "keypoints_valid", "object_px",
            "object_valid")


class LatentCacheError(RuntimeError):
    """A latent-cache entry is missing, incomplete or does not belong to the episode / encoder asked for."""


# ------------------------------------------------------------------------------------------------ identity
def encoder_description(encoder: ImageEncoder) -> dict:
    pre = encoder.preprocess
    return {"class": f"{type(encoder).__module__}.{type(encoder).__qualname__}", "dim": int(encoder.dim),
            "patch_size": int(encoder.patch_size), "image_size": list(encoder.image_size),
            "resize_short": int(pre.resize_short), "mean": [round(float(v), 6) for v in pre.mean.flatten()],
            "std": [round(float(v), 6) for v in pre.std.flatten()], "antialias": bool(pre.antialias)}


def encoder_identity(encoder: ImageEncoder) -> str:
    """Hex digest (32 characters) of the encoder's description and all its weights and buffers."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(encoder_description(encoder), sort_keys=True).encode())
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------- entries
def _safe(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return keep.strip("._")[:80] or "episode"


def episode_key(entry: EpisodeEntry) -> str:
    """Folder name of an episode: readable name + hash of its resolved path (names repeat across folders)."""
    digest = hashlib.blake2b(str(Path(entry.path).resolve()).encode(), digest_size=6).hexdigest()
    return f"{_safe(entry.name)}-{digest}"


def _source_files(entry: EpisodeEntry) -> list[Path]:
    files = [Path(entry.path)]
    for key in ("video",):
        value = entry.info.get(key)
        if isinstance(value, (str, os.PathLike)) and Path(value).exists():
            files.append(Path(value))
    return files


def _stamp(entry: EpisodeEntry) -> list[list]:
    out = []
    for p in _source_files(entry):
        if p.is_file():
            st = p.stat()
            out.append([str(p.resolve()), int(st.st_size), int(st.st_mtime_ns)])
        else:  # a folder (rosbag2): its files' sizes and times
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                st = f.stat()
                out.append([str(f.resolve()), int(st.st_size), int(st.st_mtime_ns)])
    return out


class LatentCache:
    """The cache folder of one encoder: ``<root>/<encoder id>``."""

    def __init__(self, root: str | os.PathLike, encoder_id: str, description: dict | None = None) -> None:
        if not encoder_id or any(c not in "0123456789abcdef" for c in encoder_id):
            raise ValueError(f"LatentCache: encoder_id must be a hex digest, found {encoder_id!r}")
        self.root = Path(root).expanduser()
        self.encoder_id = encoder_id
        self.folder = self.root / encoder_id
        self.description = description

    @classmethod
    def for_encoder(cls, root: str | os.PathLike, encoder: ImageEncoder) -> "LatentCache":
        return cls(root, encoder_identity(encoder), encoder_description(encoder))

    def entry_dir(self, source: str, entry: EpisodeEntry) -> Path:
        return self.folder / _safe(source) / episode_key(entry)

    def status(self, source: str, entry: EpisodeEntry) -> str:
        """``ok``, ``missing`` or ``stale: <why>`` for one episode."""
        d = self.entry_dir(source, entry)
        meta_path = d / META_FILE
        if not meta_path.is_file():
            return "missing"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return f"stale: unreadable {META_FILE} ({exc})"
        if meta.get("format") != CACHE_FORMAT or meta.get("format_version") != CACHE_VERSION:
            return "stale: written by another cache format version"
        if meta.get("encoder_id") != self.encoder_id:
            return "stale: written for another encoder"
        if meta.get("num_frames") != len(entry.times):
            return f"stale: {meta.get('num_frames')} frames cached, the episode has {len(entry.times)}"
        if meta.get("source_files") != _stamp(entry):
            return "stale: the episode's files changed since they were encoded"
        if not (d / TOKENS_FILE).is_file() or not (d / AUX_FILE).is_file():
            return "stale: incomplete entry"
        return "ok"

    # ------------------------------------------------------------------------------------------------ build
    def build_episode(self, dataset: ClipDataset, episode: int, encoder: ImageEncoder, device: torch.device,
                      batch: int = 64) -> Path:
        """Encode every frame of ``dataset.episodes[episode]`` and write its entry atomically."""
        entry = dataset.episodes[episode]
        final = self.entry_dir(dataset.source, entry)
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        transform = ClipTransform(encoder.preprocess)
        n = len(entry.times)
        tokens = None
        kw = np.zeros((n, 42, 3), np.float64)
        poses = np.zeros((n, 4, 4), np.float64)
        px = np.zeros((n, 12, 2), np.float32)
        valid = np.zeros((n, 12), bool)
        obj_px, obj_valid = no_objects(n, object_catalogue())
        hand_consistency, fixed_camera, traj_source = True, True, None
        source_hw = None
        try:
            for lo in range(0, n, batch):
                idx = np.arange(lo, min(n, lo + batch), dtype=np.int64)
                loaded = dataset._load(entry, idx)
                o_px, o_valid = checked_objects(entry.path, loaded, len(idx))
                clip = transform({"frames": torch.from_numpy(np.ascontiguousarray(loaded.frames)),
                                  "keypoints_px": torch.as_tensor(np.asarray(loaded.keypoints_px, np.float32)),
                                  "keypoints_valid": torch.as_tensor(np.asarray(loaded.keypoints_valid, bool)),
                                  "object_px": torch.from_numpy(o_px), "object_valid": torch.from_numpy(o_valid)})
                with torch.no_grad():
                    out = encoder.encode_pixels(clip["frames"].to(device)).to("cpu", torch.float16).numpy()
                if tokens is None:
                    tokens = np.lib.format.open_memmap(tmp / TOKENS_FILE, mode="w+", dtype=np.float16,
                                                       shape=(n,) + out.shape[1:])
                tokens[idx] = out
                traj = loaded.trajectory
                kw[idx] = traj.keypoints.to(torch.float64).numpy()
                poses[idx] = traj.camera_poses.to(torch.float64).numpy()
                px[idx] = clip["keypoints_px"].numpy()
                valid[idx] = clip["keypoints_valid"].numpy()
                obj_px[idx] = clip["object_px"].numpy()
                obj_valid[idx] = clip["object_valid"].numpy()
                hand_consistency &= bool(traj.hand_consistency)
                fixed_camera &= bool(traj.fixed_camera)
                traj_source = traj.source
                source_hw = clip["source_image_size"]
            tokens.flush()
            del tokens
            np.savez(tmp / AUX_FILE, times=np.asarray(entry.times, np.float64), keypoints_world=kw,
                     camera_poses=poses, keypoints_px=px, keypoints_valid=valid, object_px=obj_px,
                     object_valid=obj_valid)
            meta = {"format": CACHE_FORMAT, "format_version": CACHE_VERSION, "encoder_id": self.encoder_id,
                    "source": dataset.source, "episode": entry.name, "num_frames": n,
                    "hand_consistency": hand_consistency, "fixed_camera": fixed_camera,
                    "trajectory_source": traj_source, "source_image_size": list(source_hw),
                    "image_size": list(encoder.image_size), "source_files": _stamp(entry)}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def ensure(self, datasets: dict[str, ClipDataset], encoder: ImageEncoder, device: torch.device,
               batch: int = 64, rank: int = 0, world: int = 1, progress: bool = False) -> dict:
        """Build every missing or stale entry of ``datasets`` (source name -> dataset). With ``world`` processes,
        process ``rank`` builds every ``world``-th episode (callers synchronise afterwards). Returns counts."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if rank == 0 and self.description is not None:
            desc = self.folder / "encoder.json"
            if not desc.exists():
                tmp = desc.with_name(f"encoder.json.tmp{os.getpid()}")
                tmp.write_text(json.dumps({"encoder_id": self.encoder_id, **self.description}, indent=1))
                os.replace(tmp, desc)
        todo = []
        counts = {"episodes": 0, "cached": 0, "built": 0, "rebuilt": 0}
        for ds in datasets.values():
            for e, entry in enumerate(ds.episodes):
                # the owner of an episode depends on its position only (another process may be writing it
                # while this one looks, so its status must not decide who builds it)
                owner = counts["episodes"] % world
                counts["episodes"] += 1
                state = self.status(ds.source, entry)
                if state == "ok":
                    counts["cached"] += 1
                elif owner == rank:
                    todo.append((ds, e, state))
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="encoding episodes (latent cache)", unit="ep")
        for ds, e, state in todo:
            self.build_episode(ds, e, encoder, device, batch)
            counts["rebuilt" if state.startswith("stale") else "built"] += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return counts

    # ------------------------------------------------------------------------------------------------- read
    def open_episode(self, source: str, entry: EpisodeEntry) -> "CachedEpisode":
        state = self.status(source, entry)
        if state != "ok":
            raise LatentCacheError(f"latent cache {self.folder}: episode '{entry.name}' ({entry.path}) of source "
                                   f"'{source}' is {state}; build it first (LatentCache.ensure)")
        return CachedEpisode(self.entry_dir(source, entry))


class CachedEpisode:
    """One cache entry: small arrays in memory, tokens memory-mapped (opened lazily, once per process)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta = json.loads((folder / META_FILE).read_text())
        with np.load(folder / AUX_FILE) as aux:
            missing = [k for k in AUX_KEYS if k not in aux.files]
            if missing:
                raise LatentCacheError(f"{folder / AUX_FILE}: missing array(s) {missing}")
            self.aux = {k: aux[k] for k in AUX_KEYS}
        self._tokens = None
        self._pid = None

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None or self._pid != os.getpid():
            self._tokens = np.load(self.folder / TOKENS_FILE, mmap_mode="r")
            self._pid = os.getpid()
            if self._tokens.shape[0] != self.meta["num_frames"] or self._tokens.dtype != np.float16:
                raise LatentCacheError(f"{self.folder / TOKENS_FILE}: expected float16 ({self.meta['num_frames']}, "
                                       f"P, D), found {self._tokens.dtype} {self._tokens.shape}")
        return self._tokens

    def __getstate__(self) -> dict:  # DataLoader workers re-open the memory map themselves
        state = dict(self.__dict__)
        state["_tokens"], state["_pid"] = None, None
        return state


class LatentClipDataset(Dataset):
    """The clips of ``source`` (a :class:`ClipDataset`) read from the latent cache.

    Item ``i`` draws the same frames as ``source[i]`` (same epoch) and returns the package sample contract with
    ``latents`` (float16 ``(K, P, D)`` encoder tokens) in place of ``frames``, keypoints in the encoder's crop (as
    after :class:`ClipTransform`), and ``image_size`` the crop size.
    """

    def __init__(self, source: ClipDataset, cache: LatentCache) -> None:
        self.source_dataset = source
        self.source = source.source
        self.cache = cache
        self.episodes = [cache.open_episode(source.source, entry) for entry in source.episodes]
        for entry, ep in zip(source.episodes, self.episodes):
            if not np.allclose(ep.aux["times"], entry.times, rtol=0, atol=1e-9):
                raise LatentCacheError(f"{ep.folder}: cached frame times differ from {entry.path}")

    @property
    def hand_loss(self) -> bool:
        return self.source_dataset.hand_loss

    def set_epoch(self, epoch: int) -> None:
        self.source_dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.source_dataset.epoch

    def __len__(self) -> int:
        return len(self.source_dataset)

    def __getitem__(self, index: int) -> dict:
        e, idx = self.source_dataset.draw(index)
        return self.episode_clip(e, idx)

    def episode_clip(self, episode: int | str, indices: Sequence[int]) -> dict:
        e = self.source_dataset._episode_number(episode)
        entry, ep = self.source_dataset.episodes[e], self.episodes[e]
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = ep.meta["num_frames"]
        if idx.size < 2 or np.any(np.diff(idx) <= 0) or idx[0] < 0 or idx[-1] >= n:
            raise ValueError(f"{entry.name}: indices must be >= 2 increasing frame numbers in [0, {n}), found "
                             f"{idx.tolist()}")
        k = len(idx)
        aux = ep.aux
        traj = KeypointTrajectory(keypoints=aux["keypoints_world"][idx], camera_poses=aux["camera_poses"][idx],
                                  hand_consistency=bool(ep.meta["hand_consistency"]),
                                  source=ep.meta["trajectory_source"], fixed_camera=bool(ep.meta["fixed_camera"]))
        actions = traj.actions(torch.arange(k - 1), torch.arange(1, k)).to(torch.float32)
        times = aux["times"][idx] - aux["times"][idx[0]]
        return {
            "latents": torch.from_numpy(np.ascontiguousarray(ep.tokens[idx])),
            "times": torch.from_numpy(times.astype(np.float32)),
            "actions": actions,
            "keypoints_px": torch.from_numpy(aux["keypoints_px"][idx].copy()),
            "keypoints_valid": torch.from_numpy(aux["keypoints_valid"][idx].copy()),
            "object_px": torch.from_numpy(aux["object_px"][idx].copy()),
            "object_valid": torch.from_numpy(aux["object_valid"][idx].copy()),
            "hand_loss": bool(self.source_dataset.hand_loss and ep.meta["hand_consistency"]),
            "source": self.source,
            "episode": entry.name,
            "image_size": tuple(int(v) for v in ep.meta["image_size"]),
            "source_image_size": tuple(int(v) for v in ep.meta["source_image_size"]),
            "frame_indices": torch.from_numpy(idx.copy()),
        }


def open_latent_datasets(datasets: dict[str, ClipDataset], cache: LatentCache) -> dict[str, LatentClipDataset]:
    return {name: LatentClipDataset(ds, cache) for name, ds in datasets.items()}


def cached_sources(datasets: Iterable[ClipDataset], cache: LatentCache) -> bool:
    """True when every episode of ``datasets`` has a complete, current entry."""
    return all(cache.status(ds.source, entry) == "ok" for ds in datasets for entry in ds.episodes)
