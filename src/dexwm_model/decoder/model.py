"""Latent -> image decoder (visualisation only, as in the paper): tokens ``(B, P, d)`` -> RGB images.

Architecture: a linear map of each token to the decoder width plus fixed 2-D sin-cos positions, ``depth``
transformer blocks over the token grid, a per-token linear head to that patch's pixels (``3 * p * p``), and a
small residual 3 x 3 convolutional refinement over the whole image that smooths the seams between patches (its
last layer starts at zero, so an untrained refinement is the identity). Outputs are pixels in [0, 1] (clamped
only when converting to ``uint8`` in :meth:`LatentDecoder.decode`).

A trained decoder is a folder (``config.yaml`` + ``model.safetensors``, written atomically) that also records the
sha256 of the encoder weights it was trained on, so :meth:`LatentDecoder.check_encoder` can refuse a decoder
paired with a different encoder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dexwm_robot.config import ConfigError, from_dict
from dexwm_model.encoders.base import ImageEncoder
from dexwm_model.checkpoint_folder import CONFIG_NAME, WEIGHTS_NAME, write_checkpoint_folder
from dexwm_model.encoders.sim_vit import (
    Block,
    EncoderWeightsCorrupt,
    init_vit_weights,
    load_state,
    read_folder_config,
    sincos_2d,
)

FORMAT = "dexwm-latent-decoder"
FORMAT_VERSION = 1


@dataclass
class DecoderArch:
    """Input tokens ``(P = gh * gw, in_dim)`` -> images ``image_size``; transformer ``width`` / ``depth`` / ``heads``."""

    in_dim: int
    grid: list[int] = field(default_factory=lambda: [8, 8])
    image_size: list[int] = field(default_factory=lambda: [112, 112])
    width: int = 192
    depth: int = 3
    heads: int = 3
    mlp_ratio: float = 4.0
    refine_channels: int = 32
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for key in ("in_dim", "width", "depth", "heads"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"decoder architecture: {key} must be a positive integer, found {v!r}")
        self.grid = [int(v) for v in self.grid]
        self.image_size = [int(v) for v in self.image_size]
        if len(self.grid) != 2 or len(self.image_size) != 2 or min(self.grid + self.image_size) < 1:
            raise ConfigError(f"decoder architecture: grid and image_size must be [h, w] positive integers, found "
                              f"{self.grid!r} and {self.image_size!r}")
        if self.image_size[0] % self.grid[0] or self.image_size[1] % self.grid[1] or \
                self.image_size[0] // self.grid[0] != self.image_size[1] // self.grid[1]:
            raise ConfigError(f"decoder architecture: image_size {self.image_size} must be the grid {self.grid} "
                              f"times one square patch size")
        if self.width % self.heads or self.width % 4:
            raise ConfigError(f"decoder architecture: width {self.width} must be a multiple of 4 and of heads "
                              f"{self.heads}")

    @property
    def patch_size(self) -> int:
        return self.image_size[0] // self.grid[0]

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


class LatentDecoder(nn.Module):
    def __init__(self, arch: DecoderArch, info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.arch = arch
        self.info = dict(info or {})
        p, w = arch.patch_size, arch.width
        self.embed = nn.Linear(arch.in_dim, w)
        self.register_buffer("pos", sincos_2d(arch.grid, w), persistent=False)
        self.blocks = nn.ModuleList(Block(w, arch.heads, arch.mlp_ratio, arch.layer_norm_eps)
                                    for _ in range(arch.depth))
        self.norm = nn.LayerNorm(w, eps=arch.layer_norm_eps)
        self.head = nn.Linear(w, 3 * p * p)
        init_vit_weights(self)
        nn.init.constant_(self.head.bias, 0.5)  # start at mid-grey
        c = arch.refine_channels
        if c > 0:
            self.refine = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, 3, 3, padding=1))
            nn.init.zeros_(self.refine[2].weight)
            nn.init.zeros_(self.refine[2].bias)
        else:
            self.refine = None

    @classmethod
    def for_encoder(cls, encoder: ImageEncoder, width: int = 192, depth: int = 3, heads: int = 3,
                    mlp_ratio: float = 4.0, refine_channels: int = 32) -> "LatentDecoder":
        arch = DecoderArch(in_dim=encoder.dim, grid=list(encoder.grid), image_size=list(encoder.image_size),
                           width=width, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                           refine_channels=refine_channels)
        return cls(arch)

    def _check(self, latents: Tensor) -> None:
        want = (self.arch.num_tokens, self.arch.in_dim)
        if latents.ndim != 3 or tuple(latents.shape[1:]) != want:
            raise ValueError(f"LatentDecoder: expected latents of shape (B, {want[0]}, {want[1]}), found "
                             f"{tuple(latents.shape)}")

    def forward(self, latents: Tensor) -> Tensor:
        """Latents ``(B, P, in_dim)`` -> images ``(B, 3, H, W)``, values nominally in [0, 1] (not clamped)."""
        self._check(latents)
        x = self.embed(latents) + self.pos.to(latents.dtype)
        for blk in self.blocks:
            x = blk(x)
        x = self.head(self.norm(x))
        b = x.shape[0]
        gh, gw = self.arch.grid
        p = self.arch.patch_size
        img = x.view(b, gh, gw, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(b, 3, gh * p, gw * p)
        if self.refine is not None:
            img = img + self.refine(img)
        return img

    @torch.no_grad()
    def decode(self, latents: Tensor | np.ndarray) -> np.ndarray:
        """Latents ``(B, P, in_dim)`` (tensor or array) -> ``uint8`` RGB images ``(B, H, W, 3)``."""
        lat = torch.as_tensor(latents)
        if not lat.is_floating_point():
            raise TypeError(f"LatentDecoder.decode: expected float latents, found dtype {lat.dtype}")
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        img = self(lat.to(param.device, param.dtype))
        self.train(was_training)
        return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    # ------------------------------------------------------------------------------------------ persistence
    def check_encoder(self, encoder: ImageEncoder) -> None:
        """Raise ``ValueError`` unless ``encoder`` produces the tokens this decoder was trained on."""
        if encoder.dim != self.arch.in_dim or list(encoder.grid) != self.arch.grid:
            raise ValueError(f"decoder expects tokens of width {self.arch.in_dim} on a {self.arch.grid} grid; the "
                             f"encoder gives width {encoder.dim} on {list(encoder.grid)}")
        info = getattr(encoder, "info", {})
        want, have = self.info.get("encoder_tensors_sha256"), info.get("tensors_sha256")
        if want:  # the encoder's tensors, wherever they were loaded from
            if want != have:
                raise ValueError(f"decoder was trained on encoder tensors {want[:16]}..., this encoder's are "
                                 f"{(have or 'unknown')[:16]}...; train a decoder for it with `dexwm train decoder`")
            return
        want, have = self.info.get("encoder_weights_sha256"), info.get("weights_sha256")  # older decoders: the file
        if want and want != have:
            raise ValueError(f"decoder was trained on encoder weights {want[:16]}..., this encoder's are "
                             f"{(have or 'unknown')[:16]}...; train a decoder for it with `dexwm train decoder`")

    def save(self, out: str | Path, info: dict[str, Any] | None = None) -> Path:
        state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in self.state_dict().items()}
        info = {**self.info, **(info or {})}

        def config(sha256: str) -> dict:
            return {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": dataclasses.asdict(self.arch),
                    "weights_sha256": sha256, **info}

        folder = write_checkpoint_folder(out, state, config, FORMAT, FORMAT_VERSION, "latent decoder",
                                         EncoderWeightsCorrupt)  # refuses non-finite tensors before writing
        self.info = info
        return folder

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> "LatentDecoder":
        folder = Path(folder).expanduser()
        data = read_folder_config(folder, FORMAT, FORMAT_VERSION,
                                  "train one with `dexwm train decoder --encoder DIR --data DIR --out FOLDER`")
        try:
            arch = from_dict(DecoderArch, data.get("architecture"), f"{folder / CONFIG_NAME}:architecture")
        except ConfigError as exc:
            raise EncoderWeightsCorrupt(str(exc)) from None
        info = {k: v for k, v in data.items() if k not in ("format", "format_version", "architecture",
                                                            "weights_sha256")}
        model = cls(arch, info)
        with torch.device("meta"):
            expected = {k: (v.shape, torch.float32) for k, v in cls(arch).state_dict().items()}
        model.load_state_dict(load_state(folder / WEIGHTS_NAME, expected), strict=True)
        return model.to(map_location).eval()
