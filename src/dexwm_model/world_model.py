"""The world model as one object: frozen image encoder -> (projection) -> CDiT predictor, plus the
hand-consistency head that reads hand keypoints out of any latent. This is what training produces, what a
checkpoint holds and what the planner and the world-model node load.

Checkpoint = a folder with ``config.yaml`` (every architectural setting, so the folder is self-describing) and
``model.safetensors`` (all weights, the encoder's included, so no other file is needed at run time).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dexwm_model.config import ConfigError, from_dict
from dexwm_model.encoders.base import ImageEncoder
from dexwm_model.encoders.factory import EncoderConfig, build_encoder
from dexwm_model.encoders.projection import TokenProjection
from dexwm_model.encoders.sim_vit import SimViTBackbone, tensors_sha256
from dexwm_model.losses.hand_consistency import heatmap_keypoints
from dexwm_model.predictor.cdit import CDiTPredictor, ContextCache
from dexwm_model.predictor.config import HandDepthHeadConfig, HandHeadConfig, ObjectHeadConfig, PredictorConfig
from dexwm_model.predictor.hand_head import HandDepthHead, HandHeatmapHead, ObjectHeatmapHead
from dexwm_model.checkpoint_folder import (  # noqa: F401  (CONFIG_NAME, WEIGHTS_NAME: re-exported)
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_folder,
    read_config,
    write_checkpoint_files,
)
from dexwm_model.weights_file import BadWeights, expected_tensors, read_checked_state

FORMAT = "dexwm-world-model"
FORMAT_VERSION = 1


class CheckpointError(BadWeights, FileNotFoundError):
    """A world-model checkpoint folder is missing, incomplete or inconsistent."""


@dataclasses.dataclass
class WorldModelConfig:
    encoder: EncoderConfig
    predictor: PredictorConfig
    hand_head: HandHeadConfig
    latent_dim: int  # width of the tokens the predictor reads and writes (= encoder width unless projected)
    object_head: ObjectHeadConfig | None = None  # optional: object centres read out of latents (planning cost)
    hand_depth_head: HandDepthHeadConfig | None = None  # optional: camera depth of the hand keypoints (our addition)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "world model config") -> "WorldModelConfig":
        data = dict(data)
        if data.pop("format", None) != FORMAT:
            raise ConfigError(f"{where}: not a {FORMAT} config (missing or wrong 'format')")
        version = data.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ConfigError(f"{where}: format_version {version!r} is not supported (this code reads {FORMAT_VERSION})")
        return from_dict(cls, data, where)


class WorldModel(nn.Module):
    def __init__(self, config: WorldModelConfig, encoder: ImageEncoder | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else build_encoder(config.encoder)
        self.encoder.freeze()
        d = config.latent_dim
        self.projection = TokenProjection(self.encoder.dim, d)
        self.predictor = CDiTPredictor(config.predictor, d, self.encoder.grid)
        self.hand_head = HandHeatmapHead(config.hand_head, d, self.encoder.grid, self.encoder.image_size)
        self.object_head = None
        if config.object_head is not None:
            self.add_object_head(config.object_head)
        self.hand_depth_head = None
        if config.hand_depth_head is not None:
            self.add_hand_depth_head(config.hand_depth_head)

    def add_hand_depth_head(self, cfg: HandDepthHeadConfig, seed: int | None = None) -> None:
        """Attach a freshly initialised hand depth head (trained by `dexwm train hand-depth`)."""
        if seed is not None:
            torch.manual_seed(int(seed))
        self.hand_depth_head = HandDepthHead(cfg, self.config.latent_dim, self.encoder.grid, self.encoder.image_size)
        self.config = dataclasses.replace(self.config, hand_depth_head=cfg)

    def add_object_head(self, cfg: ObjectHeadConfig, seed: int | None = None) -> None:
        """Attach a freshly initialised object head (a model trained without one gains it for fine-tuning)."""
        if seed is not None:
            torch.manual_seed(int(seed))
        self.object_head = ObjectHeatmapHead(cfg, self.config.latent_dim, self.encoder.grid, self.encoder.image_size)
        self.config = dataclasses.replace(self.config, object_head=cfg)

    # -- properties ------------------------------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        return self.encoder.image_size

    @property
    def grid(self) -> tuple[int, int]:
        return self.encoder.grid

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    # -- the pieces the planner uses -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Any) -> Tensor:
        """Images (B, H, W, 3) uint8 (any size: the encoder resizes and crops) -> latents (B, P, latent_dim)."""
        return self.projection(self.encoder(images))

    def encode_context(self, latents: Tensor, times: Tensor, mask: Tensor | None = None) -> ContextCache:
        return self.predictor.encode_context(latents, times, mask)

    def predict(self, cache: ContextCache, last: Tensor, action: Tensor, dt: Tensor | float) -> Tensor:
        return self.predictor.predict(cache, last, action, dt)

    def hand_keypoints(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """(B, P, d) -> pixel positions (B, 12, 2) in the encoder's input image and confidences (B, 12)."""
        return heatmap_keypoints(self.hand_head(latents), self.config.hand_head.refine_radius_px)

    def hand_depths(self, latents: Tensor, uv: Tensor | None = None) -> Tensor:
        """(B, P, d) -> camera depths (B, 12) in metres of the hand keypoints, read at ``uv`` (B, 12, 2) or, by
        default, where the hand head finds them."""
        if self.hand_depth_head is None:
            raise ValueError("this world model has no hand depth head (train one: `dexwm train hand-depth`)")
        if uv is None:
            uv = self.hand_keypoints(latents)[0]
        head = self.hand_depth_head
        return head.read(head(latents), uv)

    def object_keypoints(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """(B, P, d) -> object centres (B, M, 2) pixels of the encoder's input image and confidences (B, M)."""
        if self.object_head is None:
            raise ValueError("this world model has no object head (train one: train.yaml `object_head`, e.g. "
                             "--section cpu_fast_objects)")
        return heatmap_keypoints(self.object_head(latents), self.config.object_head.refine_radius_px)

    # -- persistence -----------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        return write_checkpoint_files(folder, state, self.config.to_dict(), FORMAT, FORMAT_VERSION, "world model",
                                      CheckpointError)

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> "WorldModel":
        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        check_folder(folder, "train one with `dexwm train`", CheckpointError, label="world-model checkpoint")
        data = read_config(folder, CheckpointError)
        config = WorldModelConfig.from_dict(data, str(cfg_path))
        # the encoder's weights are in the checkpoint: build its architecture without loading any other file
        enc_cfg = dataclasses.replace(config.encoder, weights=None, random_init=True)
        model = cls(dataclasses.replace(config, encoder=enc_cfg))
        model.config = config
        state = read_checked_state(w_path, expected_tensors(model), cfg_path.name, CheckpointError, map_location)
        model.load_state_dict(state, strict=True)
        backbone = getattr(model.encoder, "backbone", None)
        if isinstance(backbone, SimViTBackbone):  # so a latent decoder can check it was trained on these weights
            model.encoder.info = {**getattr(model.encoder, "info", {}), "tensors_sha256": tensors_sha256(backbone)}
        return model.to(map_location).eval()
