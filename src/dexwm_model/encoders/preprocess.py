"""Image preprocessing for the frozen encoder: resize the short side, centre-crop, ImageNet normalisation.

Follows the paper: the image is scaled so its short side becomes ``resize_short`` (default: the crop's short
side, e.g. 224), then centre-cropped to ``image_size = (H, W)`` (a multiple of the patch size; the paper uses
224 x 392, this project defaults to 224 x 224). If that scale would leave the image smaller than the crop in
either direction (e.g. a 4:3 frame cropped to 224 x 392), the scale grows just enough to cover the crop.
Resizing is bilinear with antialiasing (``align_corners=False``). Pixel values: ``uint8`` 0..255 or floats
in [0, 1]; output ``(B, 3, H, W)`` float32 ``(x - mean) / std``.

The geometry (:meth:`ImagePreprocessor.geometry`) is exposed so that camera intrinsics and 2-D keypoints can
be mapped into the cropped image (:meth:`ImagePreprocessor.adjust_intrinsics`,
:meth:`ImagePreprocessor.map_pixels`); pixel coordinates there are continuous, pixel ``i`` covering
``[i, i + 1)`` (so the image centre is ``W / 2``, as in ``dexwm_hw.sim.camera.intrinsics``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUTS = ("auto", "hwc", "chw")
# float images may overshoot [0, 1] slightly after e.g. resampling; beyond this they are probably 0..255
_FLOAT_RANGE_SLACK = 0.01


@dataclass(frozen=True)
class CropGeometry:
    """How an input of size ``in_hw`` maps to the crop: scale to ``resized_hw``, then cut at ``(top, left)``."""

    in_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    top: int
    left: int
    out_hw: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.resized_hw[1] / self.in_hw[1], self.resized_hw[0] / self.in_hw[0]


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected an int or (height, width), found {value!r}") from exc
    if h <= 0 or w <= 0 or (h, w) != tuple(value):
        raise ValueError(f"{name}: expected positive integers (height, width), found {value!r}")
    return h, w


class ImagePreprocessor(nn.Module):
    """Batch of RGB images -> normalised ``(B, 3, H, W)`` float32 pixels ready for a ViT (see module doc)."""

    def __init__(self, image_size: int | Sequence[int] = (224, 224), resize_short: int | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 antialias: bool = True) -> None:
        super().__init__()
        self.image_size = _pair(image_size, "image_size")
        self.resize_short = min(self.image_size) if resize_short is None else int(resize_short)
        if self.resize_short <= 0:
            raise ValueError(f"resize_short must be positive, found {resize_short!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), found mean={mean!r} std={std!r}")
        self.antialias = antialias
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, resize_short={self.resize_short}"

    # ---------------------------------------------------------------------------------------------- geometry
    def geometry(self, in_hw: Sequence[int]) -> CropGeometry:
        h, w = _pair(in_hw, "input size")
        ch, cw = self.image_size
        scale = max(self.resize_short / min(h, w), ch / h, cw / w)
        rh, rw = max(ch, round(h * scale)), max(cw, round(w * scale))
        return CropGeometry(in_hw=(h, w), resized_hw=(rh, rw), top=(rh - ch) // 2, left=(rw - cw) // 2,
                            out_hw=(ch, cw))

    def adjust_intrinsics(self, K: Any, in_hw: Sequence[int]) -> Any:
        """Intrinsics ``(..., 3, 3)`` of the full image -> those of the preprocessed crop (same type as ``K``)."""
        g = self.geometry(in_hw)
        sx, sy = g.scale_xy
        S = np.array([[sx, 0.0, -g.left], [0.0, sy, -g.top], [0.0, 0.0, 1.0]])
        if isinstance(K, torch.Tensor):
            return torch.as_tensor(S, dtype=K.dtype, device=K.device) @ K
        K = np.asarray(K, dtype=np.float64)
        if K.shape[-2:] != (3, 3):
            raise ValueError(f"K: expected shape (..., 3, 3), found {K.shape}")
        return S @ K

    def map_pixels(self, uv: Any, in_hw: Sequence[int]) -> Any:
        """Pixel coordinates ``(..., 2)`` (u right, v down) in the full image -> in the preprocessed crop."""
        g = self.geometry(in_hw)
        sx, sy = g.scale_xy
        if isinstance(uv, torch.Tensor):
            scale = torch.tensor([sx, sy], dtype=uv.dtype, device=uv.device)
            offset = torch.tensor([g.left, g.top], dtype=uv.dtype, device=uv.device)
            return uv * scale - offset
        uv = np.asarray(uv, dtype=np.float64)
        if uv.shape[-1] != 2:
            raise ValueError(f"uv: expected shape (..., 2), found {uv.shape}")
        return uv * np.array([sx, sy]) - np.array([g.left, g.top])

    # ------------------------------------------------------------------------------------------------ pixels
    def to_chw(self, images: Any, layout: str = "auto") -> torch.Tensor:
        """Images -> ``(B, 3, H, W)`` float32 in [0, 1] on this module's device (no resizing)."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, found {layout!r}")
        if isinstance(images, torch.Tensor):
            x = images
        else:
            arr = np.asarray(images)
            if arr.dtype == object or not (arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating)):
                raise TypeError(f"images: expected uint8 (0..255) or float (0..1) pixels, found dtype {arr.dtype}")
            x = torch.from_numpy(arr if arr.flags.c_contiguous and arr.flags.writeable else arr.copy())
        if x.ndim != 4:
            raise ValueError(f"images: expected a batch (B, H, W, 3) or (B, 3, H, W), found shape {tuple(x.shape)}")
        if layout == "auto":
            hwc, chw = x.shape[-1] == 3, x.shape[1] == 3
            if hwc and chw:
                raise ValueError(f"images: shape {tuple(x.shape)} is ambiguous; pass layout='hwc' or 'chw'")
            if not (hwc or chw):
                raise ValueError(f"images: expected 3 colour channels first or last, found shape {tuple(x.shape)}")
            layout = "hwc" if hwc else "chw"
        if layout == "hwc":
            if x.shape[-1] != 3:
                raise ValueError(f"images: layout 'hwc' needs shape (B, H, W, 3), found {tuple(x.shape)}")
            x = x.permute(0, 3, 1, 2)
        elif x.shape[1] != 3:
            raise ValueError(f"images: layout 'chw' needs shape (B, 3, H, W), found {tuple(x.shape)}")
        x = x.to(self.mean.device)
        if x.dtype == torch.uint8:
            return x.to(torch.float32).div_(255.0)
        if not x.is_floating_point():
            raise TypeError(f"images: expected uint8 (0..255) or float (0..1) pixels, found dtype {x.dtype}")
        x = x.to(torch.float32)
        if x.numel():
            lo, hi = (float(v) for v in torch.aminmax(x.detach()))
            if lo < -_FLOAT_RANGE_SLACK or hi > 1.0 + _FLOAT_RANGE_SLACK:
                raise ValueError(f"images: float pixels must lie in [0, 1], found range [{lo:.3g}, {hi:.3g}] "
                                 "(pass uint8 for 0..255 images)")
        return x

    def forward(self, images: Any, layout: str = "auto") -> torch.Tensor:
        x = self.to_chw(images, layout)
        g = self.geometry(x.shape[-2:])
        if g.resized_hw != g.in_hw:
            x = F.interpolate(x, size=g.resized_hw, mode="bilinear", align_corners=False, antialias=self.antialias)
        ch, cw = g.out_hw
        x = x[:, :, g.top : g.top + ch, g.left : g.left + cw]
        return (x - self.mean) / self.std
