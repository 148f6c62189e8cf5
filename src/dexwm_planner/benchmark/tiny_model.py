"""A tiny random-initialised world model (56 x 56 input, 2-block predictor): the stand-in for a trained
checkpoint where only timing or plumbing is measured (the planner node's rate bench, the GPU check's dry run,
the node tests)."""

from __future__ import annotations

from pathlib import Path

TINY_MODEL = {"encoder": {"kind": "dexwm_vit", "size": "micro", "image_size": [56, 56], "random_init": True,
                          "seed": 3, "weights": None},
              "predictor": {"size": "tiny", "depth": 2, "width": 32, "heads": 2, "cond_dim": 32, "time_features": 16},
              "hand_head": {"depth": 1, "width": 32, "heads": 2, "mlp_ratio": 2.0}, "latent_dim": None,
              "train_projection": False}


def tiny_checkpoint(folder: Path) -> Path:
    """Save the tiny model (weights from fixed seeds, the heads nudged off their zero init) into ``folder``."""
    import torch

    from dexwm_model.training import ModelSpec, build_world_model

    model = build_world_model(ModelSpec(**TINY_MODEL), seed=5)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in list(model.predictor.parameters()) + list(model.hand_head.parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.save(folder)
