"""The frozen image-encoder interface: RGB images -> patch tokens ``(B, P, d)``."""

from __future__ import annotations

import abc
from typing import Any, Sequence

import torch
from torch import nn

from dexwm_model.encoders.preprocess import ImagePreprocessor


class EncoderWeightsMissing(FileNotFoundError):
    """Pretrained encoder weights were asked for but are not on this machine (nothing is downloaded at run time)."""


class ImageEncoder(nn.Module, metaclass=abc.ABCMeta):
    """Frozen encoder: images ``(B, H, W, 3)`` / ``(B, 3, H, W)`` (uint8 or float in [0, 1]) -> tokens ``(B, P, dim)``.

    Subclasses implement :meth:`encode_pixels` on preprocessed pixels. ``grid = (Hp, Wp)`` is the token grid of
    the crop ``image_size``, tokens in row-major order (``P = Hp * Wp``). Parameters never get gradients and the
    module stays in eval mode whatever ``train()`` is called with.
    """

    def __init__(self, dim: int, patch_size: int, image_size: int | Sequence[int] = (224, 224),
                 resize_short: int | None = None) -> None:
        super().__init__()
        self.dim = int(dim)
        self.patch_size = int(patch_size)
        self.preprocess = ImagePreprocessor(image_size, resize_short)
        h, w = self.preprocess.image_size
        if h % self.patch_size or w % self.patch_size:
            p = self.patch_size
            near = (max(p, h // p * p), max(p, w // p * p))
            raise ValueError(f"image_size {(h, w)} must be a multiple of the patch size {p} in both directions "
                             f"(e.g. {near})")

    @property
    def image_size(self) -> tuple[int, int]:
        return self.preprocess.image_size

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.preprocess.image_size
        return h // self.patch_size, w // self.patch_size

    @property
    def num_tokens(self) -> int:
        hp, wp = self.grid
        return hp * wp

    @abc.abstractmethod
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised pixels ``(B, 3, H, W)`` of size ``image_size`` -> tokens ``(B, P, dim)``."""

    def forward(self, images: Any, layout: str = "auto") -> torch.Tensor:
        pixels = self.preprocess(images, layout)
        tokens = self.encode_pixels(pixels)
        expected = (pixels.shape[0], self.num_tokens, self.dim)
        if tuple(tokens.shape) != expected:
            raise RuntimeError(f"{type(self).__name__} returned tokens of shape {tuple(tokens.shape)}, expected "
                               f"{expected}")
        return tokens

    def freeze(self) -> "ImageEncoder":
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "ImageEncoder":
        # frozen: always eval (no dropout / drop-path), whatever the surrounding model does
        return super().train(False)
