"""Latent -> image decoder for visualising world-model latents (:class:`LatentDecoder`; ``dexwm train decoder``)."""

from pathlib import Path

from dexwm_model.decoder.model import DecoderArch, LatentDecoder

BUNDLED_DECODER = "decoder"  # a world-model checkpoint folder may carry the decoder of its encoder here


def decoder_folder(decoder: str, checkpoint: str) -> str:
    """The decoder folder to use: ``decoder`` when given, else the one bundled in the world-model ``checkpoint``
    (``<checkpoint>/decoder``) when there is one, else ``""`` (no imagined frames)."""
    if decoder.strip():
        return decoder.strip()
    bundled = Path(checkpoint).expanduser() / BUNDLED_DECODER if checkpoint.strip() else None
    return str(bundled) if bundled is not None and (bundled / "config.yaml").is_file() else ""


__all__ = ["BUNDLED_DECODER", "DecoderArch", "LatentDecoder", "decoder_folder"]
