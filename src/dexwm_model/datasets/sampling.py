"""Irregular frame sampling inside a time window, as in DexWM training.

A clip is ``k`` frame indices ``i_0 < i_1 < ... < i_{k-1}`` of an episode whose frame times are ``times``, with
``times[i_{k-1}] - times[i_0] <= window_s`` and ``times[i_{j+1}] - times[i_j] >= min_gap_s``. The gaps are random
(a uniformly drawn subset of the frames inside the window), so the predictor sees irregular time steps.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-9  # s; slack on time comparisons (frame times are often multiples of 1/fps)
_SUBSET_TRIES = 32  # uniform-subset draws before falling back to the constructive draw


def _next_index(times: np.ndarray, min_gap_s: float) -> np.ndarray:
    """For each frame, the first later frame at least ``min_gap_s`` after it (``len(times)`` if none)."""
    n = len(times)
    nxt = np.searchsorted(times, times + min_gap_s - _EPS, side="left")
    return np.maximum(nxt, np.arange(1, n + 1))


def _chain(nxt: np.ndarray, start: np.ndarray, steps: int) -> np.ndarray:
    """Index reached from each ``start`` after ``steps`` greedy hops (``n`` = ran off the end)."""
    n = len(nxt)
    ext = np.append(nxt, n)  # hopping from n stays at n
    cur = np.asarray(start).copy()
    for _ in range(steps):
        cur = ext[np.minimum(cur, n)]
    return cur


def clip_starts(times: np.ndarray, k: int, window_s: float, min_gap_s: float) -> np.ndarray:
    """Indices of the frames a clip of ``k`` frames can start at (sorted; empty if the episode is too short)."""
    t = np.asarray(times, dtype=np.float64)
    n = len(t)
    if n < k:
        return np.zeros(0, dtype=np.int64)
    if k == 1:
        return np.arange(n, dtype=np.int64)
    starts = np.arange(n)
    end = _chain(_next_index(t, min_gap_s), starts, k - 1)
    ok = end < n
    ok[ok] = t[end[ok]] - t[starts[ok]] <= window_s + _EPS
    return starts[ok].astype(np.int64)


def sample_clip(times: np.ndarray, start: int, k: int, window_s: float, min_gap_s: float,
                rng: np.random.Generator) -> np.ndarray:
    """``k`` increasing frame indices starting at ``start`` that satisfy the window and gap rules.

    ``start`` must be one of :func:`clip_starts`. The other ``k - 1`` frames are a uniformly random subset of the
    frames inside the window when such a draw meets the gap rule within a few tries; otherwise each next frame is
    drawn uniformly among those that still leave room for the rest.
    """
    t = np.asarray(times, dtype=np.float64)
    n = len(t)
    last = int(np.searchsorted(t, t[start] + window_s + _EPS, side="right")) - 1  # last frame inside the window
    if k == 1:
        return np.array([start], dtype=np.int64)
    candidates = np.arange(start + 1, last + 1)
    if len(candidates) < k - 1:
        raise ValueError(f"no clip of {k} frames starts at frame {start} ({len(candidates) + 1} frames in the window)")
    for _ in range(_SUBSET_TRIES):
        pick = np.sort(rng.choice(candidates, size=k - 1, replace=False))
        idx = np.concatenate(([start], pick))
        if np.all(np.diff(t[idx]) >= min_gap_s - _EPS):
            return idx.astype(np.int64)
    nxt = _next_index(t, min_gap_s)
    idx = [start]
    for j in range(1, k):
        lo = int(nxt[idx[-1]])
        options = np.arange(lo, last + 1)
        if j < k - 1:  # keep only frames from which the remaining k-1-j greedy hops still end inside the window
            options = options[_chain(nxt, options, k - 1 - j) <= last]
        if len(options) == 0:
            raise ValueError(f"no clip of {k} frames with gaps >= {min_gap_s} s fits in {window_s} s from frame "
                             f"{start} (of {n})")
        idx.append(int(rng.choice(options)))
    return np.asarray(idx, dtype=np.int64)


def start_slots(times: np.ndarray, starts: np.ndarray, stride_s: float) -> list[np.ndarray]:
    """Split the valid ``starts`` into consecutive time slots of ``stride_s`` (the clips of one episode per epoch).

    Slot ``j`` holds the starts with ``t0 + j * stride_s <= time < t0 + (j + 1) * stride_s`` (``t0``: first valid
    start); empty slots are dropped, so every slot yields a clip.
    """
    if len(starts) == 0:
        return []
    t = np.asarray(times, dtype=np.float64)[starts]
    slot = np.floor((t - t[0]) / stride_s + _EPS).astype(np.int64)
    bounds = np.flatnonzero(np.diff(slot)) + 1
    return [s for s in np.split(starts, bounds) if len(s)]
