"""Frozen image encoders: RGB frames -> patch tokens (the world model's state), plus a width projection.

:class:`ImageEncoder` is the interface, :class:`Dinov2Encoder` the DINOv2 implementation (transformers is
imported only when one is built), :func:`build_encoder` builds one from ``config/model.yaml`` section ``encoder``.
"""

from dexwm_model.encoders.base import EncoderWeightsMissing, ImageEncoder
from dexwm_model.encoders.dinov2 import Dinov2Encoder
from dexwm_model.encoders.factory import ENCODERS, EncoderConfig, build_encoder, load_encoder_config, register_encoder
from dexwm_model.encoders.preprocess import IMAGENET_MEAN, IMAGENET_STD, CropGeometry, ImagePreprocessor
from dexwm_model.encoders.projection import TokenProjection
from dexwm_model.encoders.sim_vit import SimViTEncoder  # noqa: F401  (registers encoder kind "dexwm_vit")

__all__ = [
    "ENCODERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CropGeometry",
    "Dinov2Encoder",
    "EncoderConfig",
    "EncoderWeightsMissing",
    "ImageEncoder",
    "ImagePreprocessor",
    "TokenProjection",
    "build_encoder",
    "load_encoder_config",
    "register_encoder",
]
