"""Masked autoencoder (MAE) pre-training of the ``dexwm_vit`` backbone.

Per image, a random ``mask_ratio`` share of the patches is hidden; the backbone encodes only the visible ones
(so training costs about a quarter of a full pass); a light transformer decoder gets the visible tokens plus a
learned mask token at every hidden position (with fixed 2-D sin-cos positions) and predicts the hidden patches'
pixels. With ``norm_pix_loss`` each target patch is normalised by its own mean and standard deviation. Loss: mean
squared error over the hidden patches only. Only the backbone is kept afterwards; the decoder is discarded.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dexwm_model.encoders.sim_vit import Block, SimViTBackbone, init_vit_weights, sincos_2d
from dexwm_model.encoders.ssl.config import MAEConfig


def random_masking(batch: int, tokens: int, keep: int, generator: torch.Generator | None,
                   device: torch.device) -> tuple[Tensor, Tensor]:
    """Per sample, ``keep`` random visible token indices ``(B, keep)`` and a mask ``(B, tokens)`` (True = hidden)."""
    noise = torch.rand(batch, tokens, generator=generator).to(device)
    order = noise.argsort(dim=1)
    visible = order[:, :keep].sort(dim=1).values
    mask = torch.ones(batch, tokens, dtype=torch.bool, device=device)
    mask.scatter_(1, visible, False)
    return visible, mask


class MaskedAutoencoder(nn.Module):
    def __init__(self, backbone: SimViTBackbone, cfg: MAEConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        arch = backbone.arch
        p, dw = arch.patch_size, cfg.decoder_width
        self.num_keep = max(1, int(round(arch.num_tokens * (1 - cfg.mask_ratio))))
        self.decoder_embed = nn.Linear(arch.width, dw)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dw))
        self.register_buffer("decoder_pos", sincos_2d(arch.grid, dw), persistent=False)
        self.decoder_blocks = nn.ModuleList(Block(dw, cfg.decoder_heads, cfg.decoder_mlp_ratio, arch.layer_norm_eps)
                                            for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dw, eps=arch.layer_norm_eps)
        self.decoder_pred = nn.Linear(dw, 3 * p * p)
        init_vit_weights(nn.ModuleList([self.decoder_embed, self.decoder_blocks, self.decoder_norm,
                                        self.decoder_pred]))
        nn.init.normal_(self.mask_token, std=0.02)

    def targets(self, pixels: Tensor) -> Tensor:
        t = self.backbone.patchify(pixels)
        if self.cfg.norm_pix_loss:
            mean = t.mean(dim=-1, keepdim=True)
            var = t.var(dim=-1, keepdim=True)
            t = (t - mean) / (var + 1e-6).sqrt()
        return t

    def forward(self, pixels: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised pixels ``(B, 3, H, W)`` -> (loss, predicted patches ``(B, P, 3 p^2)``, mask ``(B, P)``)."""
        b = pixels.shape[0]
        n = self.backbone.arch.num_tokens
        visible, mask = random_masking(b, n, self.num_keep, generator, pixels.device)
        latent = self.backbone(pixels, keep=visible)
        x = self.decoder_embed(latent)
        full = self.mask_token.to(x.dtype).expand(b, n, -1).clone()
        full.scatter_(1, visible.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x)
        full = full + self.decoder_pos.to(x.dtype)
        for blk in self.decoder_blocks:
            full = blk(full)
        pred = self.decoder_pred(self.decoder_norm(full))
        err = (pred - self.targets(pixels)).pow(2).mean(dim=-1)
        loss = (err * mask).sum() / mask.sum()
        return loss, pred, mask
