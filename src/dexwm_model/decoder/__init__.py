"""Latent -> image decoder for visualising world-model latents (:class:`LatentDecoder`; ``dexwm train decoder``)."""

from dexwm_model.decoder.model import DecoderArch, LatentDecoder

__all__ = ["DecoderArch", "LatentDecoder"]
