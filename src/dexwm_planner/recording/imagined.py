"""Choosing the latent decoder that turns a world model's predicted latents into imagined frames.

A decoder can draw a world model's predictions only when it was trained on the tokens that model predicts: the
same encoder (``LatentDecoder.check_encoder``: token width, grid and, when both record it, the encoder weights'
digest; a decoder that names its encoder's digest is refused for an encoder that records none) and no learned
projection between encoder tokens and predicted latents. :func:`fitting_decoder` loads a
decoder folder and returns it with ``None`` as the reason, or ``None`` with the reason it does not fit, so a
recording can note once why it has no imagined frames instead of failing the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def decoder_mismatch(decoder: Any, model: Any) -> str | None:
    """Why ``decoder`` (a ``LatentDecoder``) cannot decode ``model``'s (a ``WorldModel``) predictions, or None."""
    try:
        decoder.check_encoder(model.encoder)
    except ValueError as exc:
        return str(exc)
    if not model.projection.is_identity or decoder.arch.in_dim != model.latent_dim:
        return (f"the decoder reads encoder tokens of width {decoder.arch.in_dim}, but the world model predicts "
                f"latents of width {model.latent_dim} through a learned projection")
    return None


def fitting_decoder(decoder: Any, model: Any, device: Any = "cpu") -> tuple[Any | None, str | None]:
    """``(decoder, None)`` when ``decoder`` (a ``LatentDecoder`` or its folder) fits ``model``, else
    ``(None, reason)``. A folder that is missing or not a decoder raises ``ValueError`` (a wrong argument, not a
    mismatch)."""
    from dexwm_model.decoder import LatentDecoder

    if isinstance(decoder, (str, Path)):
        folder = Path(decoder).expanduser()
        if not folder.is_dir():
            raise ValueError(f"decoder {folder}: no such folder (a `dexwm train decoder` output)")
        try:
            decoder = LatentDecoder.load(folder, map_location=device)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ValueError(f"decoder {folder} cannot be loaded: {exc}") from exc
    elif not isinstance(decoder, LatentDecoder):
        raise ValueError(f"decoder: expected a LatentDecoder or its folder, found {type(decoder).__name__}")
    reason = decoder_mismatch(decoder, model)
    return (None, reason) if reason is not None else (decoder.to(device).eval(), None)
