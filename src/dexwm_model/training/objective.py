"""The training objective as a module (so DistributedDataParallel can wrap it): batch -> losses.

* ``pretrain``: single-step next-latent regression with teacher forcing. ``targets: last`` predicts the clip's
  last frame from the (irregularly spaced) frames before it; ``targets: all`` predicts every frame ``j >= 1`` from
  frames ``0..j-1`` (left-padded and masked to the context length), K-1 predictions per clip.
* ``finetune``: the last ``rollout_steps`` frames are predicted autoregressively (each prediction joins the
  context, a sliding window of ``max_context`` frames) and every step is in the loss.

Loss = latent MSE + lambda * hand-consistency loss of the hand head applied to the *predicted* latents (lambda =
``hand_head.loss_weight`` of the model). Keypoints that are invalid, outside the crop, or belong to samples with
``hand_loss`` False (DROID) are masked out. With ``hand_loss=False`` (the ablation) the head still learns to read
keypoints, but from detached predictions: the predictor's gradient then comes from the latent MSE alone.

A model with an object head adds ``object_head.loss_weight`` * (the head's heat-map loss on the encoded target
frames -- the read-out the planner uses on observed and goal images -- plus, with ``object_loss``, the same loss
on the predicted latents: object consistency, whose gradient makes the predictor carry where the objects go).
``object_moved_weight`` adds that many times the loss of the MOVED objects alone (further than
``OBJECT_MOVED_PX`` from where they were in the newest observed frame): in exploratory data few objects move, and
the mean over all of them mostly teaches the predictor to keep objects still.
Object keypoints come from the datasets' ``object_px`` / ``object_valid`` (sources without objects: all invalid).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dexwm_model.datasets.objects import OBJECT_MOVED_PX
from dexwm_model.losses.hand_consistency import hand_consistency_loss
from dexwm_model.losses.world_model import latent_loss
from dexwm_model.world_model import WorldModel

# keypoints_px are continuous coordinates (pixel j spans [j, j + 1)); the heat-map loss puts pixel j's centre at j
PIXEL_CENTRE_OFFSET = 0.5


class WorldModelObjective(nn.Module):
    def __init__(self, model: WorldModel, mode: str, targets: str = "last", rollout_steps: int = 1,
                 hand_loss: bool = True, train_projection: bool = False, hand_head_input: str = "predicted",
                 object_loss: bool = False, object_moved_weight: float = 0.0) -> None:
        super().__init__()
        if hand_head_input not in ("predicted", "encoded"):
            raise ValueError(f"hand_head_input must be 'predicted' or 'encoded', found {hand_head_input!r}")
        self.hand_head_input = hand_head_input
        if mode not in ("pretrain", "finetune"):
            raise ValueError(f"mode must be 'pretrain' or 'finetune', found {mode!r}")
        if targets not in ("last", "all"):
            raise ValueError(f"targets must be 'last' or 'all', found {targets!r}")
        self.model = model
        self.mode, self.targets, self.rollout_steps = mode, targets, int(rollout_steps)
        self.hand_loss = bool(hand_loss)
        self.train_projection = bool(train_projection) and not model.projection.is_identity
        self.hand_weight = float(model.config.hand_head.loss_weight)
        self.sigma = float(model.config.hand_head.sigma_px)
        obj = model.config.object_head
        if object_loss and obj is None:
            raise ValueError("object_loss needs a model with an object head (train.yaml object_head)")
        self.object_loss = bool(object_loss)
        if object_moved_weight < 0 or (object_moved_weight > 0 and not object_loss):
            raise ValueError(f"object_moved_weight must be >= 0 and needs object_loss, found {object_moved_weight}")
        self.object_moved_weight = float(object_moved_weight)
        self.object_weight = float(obj.loss_weight) if obj is not None else 0.0
        self.object_sigma = float(obj.sigma_px) if obj is not None else 0.0

    # ------------------------------------------------------------------------------------------------ inputs
    def latents(self, batch: dict) -> Tensor:
        """Projected latents ``(B, K, P, d)`` float32 of a latent batch (``latents``) or a pixel batch (``frames``)."""
        m = self.model
        if "latents" in batch:
            tokens = batch["latents"].to(torch.float32)
        else:
            frames = batch["frames"]
            b, k = frames.shape[:2]
            with torch.no_grad():
                tokens = m.encoder.encode_pixels(frames.flatten(0, 1)).to(torch.float32)
            tokens = tokens.view(b, k, *tokens.shape[1:])
        if m.projection.is_identity:
            return tokens
        if self.train_projection:
            return m.projection(tokens)
        with torch.no_grad():
            return m.projection(tokens)

    def required_frames(self, context: int) -> int:
        """Frames per clip for ``context`` context frames."""
        return context + (self.rollout_steps if self.mode == "finetune" else 1)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, batch: dict) -> dict[str, Tensor]:
        z = self.latents(batch)  # (B, K, P, d)
        times = batch["times"].to(torch.float64)
        actions = batch["actions"].to(torch.float32)
        b, k = z.shape[:2]
        if self.mode == "finetune":
            r = self.rollout_steps
            c = k - r
            if c < 1:
                raise ValueError(f"finetune: clips of {k} frames leave no context for {r} rollout steps")
            dts = times[:, c:] - times[:, c - 1:-1]
            pred = self.model.predictor.rollout(z[:, :c], times[:, :c], actions[:, c - 1:], dts)  # (B, R, P, d)
            target_idx = torch.arange(c, k, device=z.device)
            seen_idx = torch.full_like(target_idx, c - 1)  # the newest frame the rollout saw
            pred = pred.flatten(0, 1)
            true = z[:, c:].flatten(0, 1)
        elif self.targets == "last":
            c = k - 1
            dt = times[:, c] - times[:, c - 1]
            pred = self.model.predictor(z[:, :c], times[:, :c], actions[:, c - 1], dt)
            target_idx = torch.tensor([c], device=z.device)
            seen_idx = target_idx - 1
            true = z[:, c]
        else:
            pred, true, target_idx = self._all_targets(z, times, actions)
            seen_idx = target_idx - 1
        n_t = len(target_idx)
        uv = batch["keypoints_px"][:, target_idx].flatten(0, 1).to(torch.float32) - PIXEL_CENTRE_OFFSET
        valid = batch["keypoints_valid"][:, target_idx] & batch["hand_loss"][:, None, None]
        valid = valid.flatten(0, 1)
        lat = latent_loss(pred, true)
        if self.hand_head_input == "encoded":
            heat = self.model.hand_head(true.detach())
        else:
            heat = self.model.hand_head(pred if self.hand_loss else pred.detach())
        hand = hand_consistency_loss(heat, uv, valid, self.sigma)
        total = lat + self.hand_weight * hand
        out = {"latent": lat.detach(), "hand": hand.detach(), "keypoints": valid.sum().detach().to(torch.float32),
               "predictions": torch.tensor(float(b * n_t), device=z.device)}
        if self.model.object_head is not None:
            if "object_px" not in batch:
                raise ValueError("the model has an object head but the batch has no object keypoints ('object_px')")
            ouv = batch["object_px"][:, target_idx].flatten(0, 1).to(torch.float32) - PIXEL_CENTRE_OFFSET
            ovalid = batch["object_valid"][:, target_idx].flatten(0, 1)
            read = hand_consistency_loss(self.model.object_head(true.detach()), ouv, ovalid, self.object_sigma)
            obj = read
            if self.object_loss:
                heat = self.model.object_head(pred)
                obj = obj + hand_consistency_loss(heat, ouv, ovalid, self.object_sigma)
                if self.object_moved_weight > 0:
                    seen = batch["object_px"][:, seen_idx].flatten(0, 1).to(torch.float32) - PIXEL_CENTRE_OFFSET
                    moved = ovalid & (torch.linalg.vector_norm(ouv - seen, dim=-1) > OBJECT_MOVED_PX)
                    obj = obj + self.object_moved_weight * hand_consistency_loss(heat, ouv, moved, self.object_sigma)
            total = total + self.object_weight * obj
            out["object"] = read.detach()
            out["objects"] = ovalid.sum().detach().to(torch.float32)
        out["total"] = total
        return out

    def _all_targets(self, z: Tensor, times: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher forcing on every frame: target j (1..K-1) sees frames 0..j-1 in the last j of C = K-1 slots."""
        b, k = z.shape[:2]
        c = k - 1
        if c > self.model.predictor.cfg.max_context:
            raise ValueError(f"targets 'all': {c} context slots exceed the predictor's max_context "
                             f"{self.model.predictor.cfg.max_context}")
        j = torch.arange(1, k, device=z.device)  # targets
        s = torch.arange(c, device=z.device)  # slots
        src = s[None, :] - (c - j[:, None])  # (K-1, C): frame index in slot s for target j (< 0: padding)
        mask = src >= 0
        src = src.clamp(min=0)
        ctx = z[:, src]  # (B, K-1, C, P, d)
        ctx_t = times[:, src]
        # padded slots get the first frame's time (kept ordered); they are masked out anyway
        pred = self.model.predictor(ctx.flatten(0, 1), ctx_t.flatten(0, 1), actions[:, j - 1].flatten(0, 1),
                                    (times[:, j] - times[:, j - 1]).flatten(0, 1),
                                    mask=mask[None].expand(b, -1, -1).flatten(0, 1))
        return pred, z[:, 1:].flatten(0, 1), j
