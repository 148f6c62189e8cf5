"""A new :class:`WorldModel` from a training recipe's ``model`` section (overrides of ``config/model.yaml``)."""

from __future__ import annotations

import dataclasses

import torch

from dexwm_model.config import ConfigError, from_dict, load_yaml
from dexwm_model.datasets.objects import object_catalogue
from dexwm_model.encoders.factory import build_encoder, load_encoder_config
from dexwm_model.predictor.config import (MODEL_CONFIG_FILE, ObjectHeadConfig, load_hand_head_config,
                                         load_predictor_config)
from dexwm_model.training.config import ModelSpec
from dexwm_model.world_model import WorldModel, WorldModelConfig

_ARCH_KEYS = ("depth", "width", "heads")


def _replace(where: str, loader, **overrides):
    try:
        return loader(**overrides)
    except TypeError as exc:  # dataclasses.replace with an unknown field
        raise ConfigError(f"{where}: {exc}") from None


def world_model_config(spec: ModelSpec) -> tuple[WorldModelConfig, object]:
    """The :class:`WorldModelConfig` of ``spec`` and the (frozen) encoder it needs, built once here."""
    enc_cfg = _replace("model.encoder", load_encoder_config, **spec.encoder)
    encoder = build_encoder(enc_cfg)
    pred = dict(spec.predictor)
    size = pred.pop("size", None)
    pred_cfg = _replace("model.predictor", lambda **o: load_predictor_config(size, **o), **pred)
    if any(k in pred for k in _ARCH_KEYS):  # a preset changed in depth / width / heads is no longer that preset
        pred_cfg = dataclasses.replace(pred_cfg, size=f"custom({size})")
    hand_cfg = _replace("model.hand_head", load_hand_head_config, **spec.hand_head)
    latent = spec.latent_dim if spec.latent_dim is not None else int(encoder.dim)
    return WorldModelConfig(encoder=enc_cfg, predictor=pred_cfg, hand_head=hand_cfg, latent_dim=latent), encoder


def object_head_config(overrides: dict) -> ObjectHeadConfig:
    """``config/model.yaml`` ``object_head`` with ``overrides``; its objects are the scene's catalogue."""
    base = load_yaml(MODEL_CONFIG_FILE).get("object_head")
    if not isinstance(base, dict):
        raise ConfigError(f"{MODEL_CONFIG_FILE}: missing section 'object_head'")
    data = {**base, **overrides}
    data.setdefault("objects", list(object_catalogue()))
    return from_dict(ObjectHeadConfig, data, f"{MODEL_CONFIG_FILE}:object_head")


def build_world_model(spec: ModelSpec, seed: int = 0) -> WorldModel:
    """A freshly initialised world model (predictor, head and projection drawn from ``seed``)."""
    cfg, encoder = world_model_config(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WorldModel(cfg, encoder=encoder)
    return model


def describe(model: WorldModel) -> dict:
    def count(m):
        return sum(p.numel() for p in m.parameters())

    cfg = model.config
    return {"encoder": {"kind": cfg.encoder.kind, "image_size": list(model.image_size), "grid": list(model.grid),
                        "dim": int(model.encoder.dim), "parameters": count(model.encoder)},
            "latent_dim": cfg.latent_dim, "projection_parameters": count(model.projection),
            "predictor": {**{k: getattr(cfg.predictor, k) for k in ("size", "depth", "width", "heads",
                                                                      "max_context")},
                          "parameters": count(model.predictor)},
            "hand_head": {**{k: getattr(cfg.hand_head, k) for k in ("depth", "width", "heads", "loss_weight")},
                          "parameters": count(model.hand_head)},
            "object_head": ({"objects": list(cfg.object_head.objects), "loss_weight": cfg.object_head.loss_weight,
                             "parameters": count(model.object_head)} if model.object_head is not None else None)}

