"""Encoder preprocessing applied to a sample: frames resized + cropped + normalised, keypoints mapped alike."""

from __future__ import annotations

from typing import Sequence

import torch

from dexwm_model.encoders.preprocess import ImagePreprocessor


class ClipTransform:
    """Apply :class:`ImagePreprocessor` to a sample's frames and :meth:`ImagePreprocessor.map_pixels` to its keypoints.

    After it, ``frames`` is float32 ``(K, 3, h, w)`` (ImageNet-normalised), ``keypoints_px`` are in the crop,
    ``keypoints_valid`` is also False where a keypoint falls outside the crop, ``image_size`` is ``(h, w)`` and
    ``source_image_size`` keeps the original size.
    """

    def __init__(self, preprocessor: ImagePreprocessor) -> None:
        self.preprocessor = preprocessor

    @classmethod
    def for_size(cls, image_size: int | Sequence[int], resize_short: int | None = None) -> "ClipTransform":
        return cls(ImagePreprocessor(image_size=image_size, resize_short=resize_short))

    @classmethod
    def from_encoder_config(cls, config=None) -> "ClipTransform":
        """The preprocessing of the encoder in ``config/model.yaml`` (or the given ``EncoderConfig``)."""
        from dexwm_model.encoders.factory import load_encoder_config

        cfg = load_encoder_config() if config is None else config
        return cls.for_size(tuple(cfg.image_size), cfg.resize_short)

    def __call__(self, sample: dict) -> dict:
        frames = sample["frames"]
        if not (isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8 and frames.ndim == 4
                and frames.shape[-1] == 3):
            raise ValueError(f"ClipTransform: expected uint8 frames (K, H, W, 3), found "
                             f"{getattr(frames, 'dtype', type(frames))} {tuple(getattr(frames, 'shape', ()))}")
        in_hw = tuple(int(v) for v in frames.shape[1:3])
        out = dict(sample)
        with torch.no_grad():
            out["frames"] = self.preprocessor(frames, layout="hwc").cpu()
        h, w = self.preprocessor.image_size
        for px_key, valid_key in (("keypoints_px", "keypoints_valid"), ("object_px", "object_valid")):
            if px_key not in sample:  # object keypoints are optional in a sample
                continue
            uv = self.preprocessor.map_pixels(sample[px_key].to(torch.float64), in_hw).to(torch.float32)
            inside = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
            out[px_key] = uv
            out[valid_key] = sample[valid_key] & inside
        out["image_size"] = (int(h), int(w))
        out["source_image_size"] = in_hw
        return out
