"""Batching fixed-size samples (``torch.utils.data.DataLoader(..., collate_fn=collate_clips)``)."""

from __future__ import annotations

from typing import Sequence

import torch

TENSOR_KEYS = ("frames", "times", "actions", "keypoints_px", "keypoints_valid", "object_px", "object_valid",
               "frame_indices")
LIST_KEYS = ("source", "episode")


def _describe(sample: dict, i: int) -> str:
    return f"sample {i} ({sample.get('source', '?')} episode {sample.get('episode', '?')!r})"


def collate_clips(samples: Sequence[dict]) -> dict:
    """Stack samples of equal shapes into a batch.

    Tensors gain a leading batch dimension; ``hand_loss`` becomes a bool tensor ``(B,)``; ``source`` and
    ``episode`` become lists; ``image_size`` (and ``source_image_size``, if present) must agree across the batch
    for ``image_size`` — samples of different resolutions need a :class:`ClipTransform` first.
    """
    if not samples:
        raise ValueError("collate_clips: empty batch")
    first = samples[0]
    out: dict = {}
    for key in TENSOR_KEYS:
        if key not in first:
            continue
        ref = first[key]
        for i, s in enumerate(samples):
            if key not in s:
                raise ValueError(f"collate_clips: {_describe(s, i)} has no '{key}' but sample 0 does")
            t = s[key]
            if not isinstance(t, torch.Tensor) or t.shape != ref.shape or t.dtype != ref.dtype:
                raise ValueError(
                    f"collate_clips: {_describe(s, i)} has '{key}' {getattr(t, 'dtype', type(t))} "
                    f"{tuple(getattr(t, 'shape', ()))} but {_describe(first, 0)} has {ref.dtype} {tuple(ref.shape)}"
                    + ("; apply a ClipTransform to batch sources of different resolutions" if key == "frames" else ""))
        out[key] = torch.stack([s[key] for s in samples])
    out["hand_loss"] = torch.tensor([bool(s["hand_loss"]) for s in samples], dtype=torch.bool)
    for key in LIST_KEYS:
        out[key] = [s[key] for s in samples]
    sizes = {tuple(s["image_size"]) for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"collate_clips: samples have different image sizes {sorted(sizes)}; apply a ClipTransform")
    out["image_size"] = sizes.pop()
    if all("source_image_size" in s for s in samples):
        out["source_image_size"] = [tuple(s["source_image_size"]) for s in samples]
    return out
