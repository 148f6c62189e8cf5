"""The goal-image-conditioned Diffusion Policy: (current image, goal image, current joints) -> a chunk of the next
``horizon`` absolute joint targets (23 each), sampled by denoising.

Observation embedding. Both images go through the *frozen* image encoder the world-model planner uses
(``dexwm_vit``, ``checkpoints/encoder_sim_vit``: 8 x 8 patch tokens of width 192). Why this encoder and not a CNN
trained with the policy: the baseline then sees exactly the visual representation DexWM plans in, so the comparison
is between planning in a world model and imitating the data directly; and the tokens of every training frame are
computed once, which makes training on one CPU core feasible (a CNN trained end to end would re-encode two images
per sample per step). The tokens are pooled by a learned projection that keeps the spatial layout (each token
-> ``token_features`` numbers, the grid flattened, then a linear layer to ``image_features``): mean pooling would
throw away *where* the hand and the objects are, which is what a goal image specifies. Current and goal image share
the projection; the two embeddings and the normalised joints are concatenated into the condition.

Denoising. DDPM training (diffusers ``DDPMScheduler``, squared-cosine betas; the network predicts the clean chunk or
the noise, ``scheduler.prediction_type``) on chunks normalised per joint to [-1, 1]; sampling with ``DDIMScheduler``
(same schedule, ``inference_steps`` deterministic steps from Gaussian noise) and ``clip_sample`` keeping the chunk
in the data's range.

Checkpoint = a folder with ``config.yaml`` (format, every architectural and schedule setting, training record) and
``model.safetensors`` (all weights, the frozen encoder's and the normalisation statistics included, so the folder
alone rebuilds the policy), as for the world model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from dexwm_robot.config import ConfigError, from_dict
from dexwm_model.encoders.base import ImageEncoder
from dexwm_model.encoders.factory import build_encoder
from dexwm_model.kinematics.panda_allegro import NUM_ROBOT_JOINTS
from dexwm_model.checkpoint_folder import (  # noqa: F401  (CONFIG_NAME, WEIGHTS_NAME: re-exported)
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_folder,
    check_format,
    read_config,
    write_checkpoint_files,
)
from dexwm_model.weights_file import BadWeights, expected_tensors, read_checked_state
from dexwm_planner.baselines.diffusion_policy.config import PolicyModelConfig, SchedulerConfig
from dexwm_planner.baselines.diffusion_policy.normalizer import MinMaxNormalizer
from dexwm_planner.baselines.diffusion_policy.unet1d import ConditionalUnet1D

FORMAT = "dexwm-diffusion-policy"
FORMAT_VERSION = 1


class PolicyCheckpointError(BadWeights, FileNotFoundError):
    """A diffusion-policy checkpoint folder is missing, incomplete, damaged or inconsistent."""


class TokenPool(nn.Module):
    """Encoder tokens ``(B, P, D)`` -> one image embedding ``(B, E)``, keeping the token grid's layout."""

    def __init__(self, num_tokens: int, token_dim: int, token_features: int, out_features: int) -> None:
        super().__init__()
        self.num_tokens = int(num_tokens)
        self.norm = nn.LayerNorm(token_dim)
        self.per_token = nn.Linear(token_dim, token_features)
        self.mix = nn.Sequential(nn.Mish(), nn.Linear(num_tokens * token_features, out_features), nn.Mish())

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 3 or tokens.shape[1] != self.num_tokens:
            raise ValueError(f"TokenPool: expected tokens (B, {self.num_tokens}, D), found shape {tuple(tokens.shape)}")
        return self.mix(self.per_token(self.norm(tokens.float())).flatten(1))


class PolicyNet(nn.Module):
    """The trainable part: token pooling and the FiLM-conditioned noise predictor."""

    def __init__(self, cfg: PolicyModelConfig, num_tokens: int, token_dim: int, action_dim: int) -> None:
        super().__init__()
        self.pool = TokenPool(num_tokens, token_dim, cfg.token_features, cfg.image_features)
        obs_dim = 2 * cfg.image_features + action_dim
        self.unet = ConditionalUnet1D(action_dim, obs_dim, cfg.unet_channels, cfg.time_features, cfg.kernel_size,
                                      cfg.groups)

    def observation(self, current_tokens: Tensor, goal_tokens: Tensor, joints_normalized: Tensor) -> Tensor:
        """The condition ``(B, 2 E + A)``: pooled current image, pooled goal image, normalised joints."""
        return torch.cat([self.pool(current_tokens), self.pool(goal_tokens), joints_normalized.float()], dim=-1)

    def forward(self, noisy: Tensor, steps: Tensor, obs: Tensor) -> Tensor:
        return self.unet(noisy, steps, obs)


def make_schedulers(cfg: SchedulerConfig):
    """diffusers ``(DDPMScheduler, DDIMScheduler)`` sharing one noise schedule and prediction type (samples clipped
    to [-1, 1])."""
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(num_train_timesteps=cfg.train_timesteps, beta_schedule=cfg.beta_schedule, clip_sample=True,
                  prediction_type=cfg.prediction_type)
    return DDPMScheduler(**common), DDIMScheduler(**common, set_alpha_to_one=True, steps_offset=0)


class DiffusionPolicy(nn.Module):
    """Frozen encoder + :class:`PolicyNet` + action / joint normalisers + the DDPM / DDIM schedulers."""

    def __init__(self, config: PolicyModelConfig, scheduler: SchedulerConfig,
                 encoder: ImageEncoder | None = None) -> None:
        super().__init__()
        self.config = config
        self.scheduler_config = scheduler
        self.encoder = encoder if encoder is not None else build_encoder(config.encoder)
        self.encoder.freeze()
        self.action_dim = NUM_ROBOT_JOINTS
        self.net = PolicyNet(config, self.encoder.num_tokens, self.encoder.dim, self.action_dim)
        self.action_norm = MinMaxNormalizer(self.action_dim, config.min_half_range)
        self.joint_norm = MinMaxNormalizer(self.action_dim, config.min_half_range)
        self.train_scheduler, self.sample_scheduler = make_schedulers(scheduler)

    @property
    def horizon(self) -> int:
        return self.config.horizon

    # -- the pieces training and the closed loop use ------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Any) -> Tensor:
        """Images (B, H, W, 3) uint8 (any size: the encoder resizes and crops) -> tokens (B, P, D)."""
        return self.encoder(images)

    def loss(self, current_tokens: Tensor, goal_tokens: Tensor, joints: Tensor, actions: Tensor,
             generator: torch.Generator | None = None) -> Tensor:
        """Denoising MSE of one batch (against the noise or the clean chunk, per ``prediction_type``):
        ``actions`` (B, H, 23) rad, ``joints`` (B, 23) rad."""
        b = actions.shape[0]
        if actions.shape[1:] != (self.horizon, self.action_dim):
            raise ValueError(f"loss: expected actions (B, {self.horizon}, {self.action_dim}), found "
                             f"{tuple(actions.shape)}")
        dev = actions.device
        x0 = self.action_norm.normalize(actions.float())
        noise = torch.randn(x0.shape, generator=generator, device=dev)
        steps = torch.randint(0, self.scheduler_config.train_timesteps, (b,), generator=generator, device=dev)
        noisy = self.train_scheduler.add_noise(x0, noise, steps)
        obs = self.net.observation(current_tokens, goal_tokens, self.joint_norm.normalize(joints.float()))
        target = noise if self.scheduler_config.prediction_type == "epsilon" else x0
        return nn.functional.mse_loss(self.net(noisy, steps, obs), target)

    @torch.no_grad()
    def sample(self, current_tokens: Tensor, goal_tokens: Tensor, joints: Tensor,
               generator: torch.Generator | None = None, inference_steps: int | None = None) -> Tensor:
        """DDIM-sample action chunks (B, H, 23) in radians (deterministic given the generator's state)."""
        b = current_tokens.shape[0]
        dev = current_tokens.device
        obs = self.net.observation(current_tokens, goal_tokens, self.joint_norm.normalize(joints.float()))
        sched = self.sample_scheduler
        sched.set_timesteps(inference_steps or self.scheduler_config.inference_steps, device=dev)
        x = torch.randn((b, self.horizon, self.action_dim), generator=generator, device=dev)
        for t in sched.timesteps:
            x = sched.step(self.net(x, t.expand(b), obs), t, x, eta=0.0).prev_sample
        return self.action_norm.unnormalize(x)

    # -- persistence -----------------------------------------------------------------------------------------------
    def to_config_dict(self, training: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "model": dataclasses.asdict(self.config),
                "scheduler": dataclasses.asdict(self.scheduler_config), "training": training or {}}

    def save(self, folder: str | Path, training: dict[str, Any] | None = None) -> Path:
        """Write ``config.yaml`` + ``model.safetensors`` (temporary files renamed into place)."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        return write_checkpoint_files(folder, state, self.to_config_dict(training), FORMAT, FORMAT_VERSION,
                                      "diffusion policy", PolicyCheckpointError)

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> "DiffusionPolicy":
        """Rebuild a saved policy from its folder alone; every problem raises :class:`PolicyCheckpointError`."""
        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        check_folder(folder, "train one with `dexwm train diffusion-policy`", PolicyCheckpointError,
                     label="diffusion-policy checkpoint")
        data = read_config(folder, PolicyCheckpointError)
        check_format(data, cfg_path, FORMAT, FORMAT_VERSION, PolicyCheckpointError)
        try:
            model_cfg = from_dict(PolicyModelConfig, data.get("model"), f"{cfg_path}:model")
            sched_cfg = from_dict(SchedulerConfig, data.get("scheduler"), f"{cfg_path}:scheduler")
        except ConfigError as exc:
            raise PolicyCheckpointError(str(exc)) from exc
        # the encoder's weights are in the checkpoint: build its architecture without reading any other file
        enc_cfg = dataclasses.replace(model_cfg.encoder, weights=None, random_init=True)
        policy = cls(dataclasses.replace(model_cfg, encoder=enc_cfg), sched_cfg)
        policy.config = model_cfg
        state = read_checked_state(w_path, expected_tensors(policy), CONFIG_NAME, PolicyCheckpointError, map_location)
        policy.load_state_dict(state, strict=True)
        return policy.to(map_location).eval()

    @staticmethod
    def read_training_record(folder: str | Path) -> dict[str, Any]:
        """The ``training`` section of a checkpoint's ``config.yaml`` (empty if absent)."""
        data = yaml.safe_load((Path(folder) / CONFIG_NAME).read_text()) or {}
        return dict(data.get("training") or {})
