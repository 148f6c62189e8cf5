"""DINOv2 ViT-S/B/L/G-14 (transformers ``Dinov2Model``) as the frozen encoder.

Tokens are the normalised patch tokens of the last layer (the model's final layer norm applied, CLS token
dropped), as in the paper. Position embeddings (trained on a 37 x 37 grid) are interpolated to the crop's grid
by the model itself, so non-square crops such as 224 x 392 (16 x 28 tokens) work.

Weights are loaded strictly offline: from a local directory in transformers format (``config.json`` +
``model.safetensors``, as written by ``save_pretrained``) or from a Hugging Face id that is already in the local
Hugging Face cache (``local_files_only=True``). Nothing is downloaded at run time; missing weights raise
:class:`EncoderWeightsMissing` saying where we looked and how to provide them. A randomly initialised encoder
(for tests, benchmarks, or training everything from scratch without released weights) is only ever built through
:meth:`Dinov2Encoder.random_init` / :meth:`Dinov2Encoder.from_config` (config ``random_init: true``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from dexwm_model.encoders.base import EncoderWeightsMissing, ImageEncoder

if TYPE_CHECKING:  # pragma: no cover
    from transformers import Dinov2Config, Dinov2Model

log = logging.getLogger(__name__)

# architecture of the released checkpoints (patch 14, MLP ratio 4, 518 px pre-training resolution)
DINOV2_ARCH: dict[str, dict[str, Any]] = {
    "S": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "B": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "L": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "G": dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True),
}
DINOV2_HF_IDS = {"S": "facebook/dinov2-small", "B": "facebook/dinov2-base", "L": "facebook/dinov2-large",
                 "G": "facebook/dinov2-giant"}
PRETRAIN_IMAGE_SIZE = 518
PATCH_SIZE = 14
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_size(size: str) -> str:
    key = str(size).upper()
    if key not in DINOV2_ARCH:
        raise ValueError(f"DINOv2 size must be one of {sorted(DINOV2_ARCH)} (ViT-S/B/L/G-14), found {size!r}")
    return key


def dinov2_config(size: str = "S", **overrides: Any) -> "Dinov2Config":
    """The transformers config of the released ViT-``size``/14 (``overrides`` change any field)."""
    from transformers import Dinov2Config

    arch = dict(DINOV2_ARCH[_check_size(size)], patch_size=PATCH_SIZE, image_size=PRETRAIN_IMAGE_SIZE, mlp_ratio=4,
                layerscale_value=1.0, layer_norm_eps=1e-6, drop_path_rate=0.0)
    arch.update(overrides)
    return Dinov2Config(**arch)


def _looks_like_path(source: str) -> bool:
    # Hugging Face ids look like "owner/name"; anything else is meant as a folder
    return source.startswith(("/", ".", "~")) or source.count("/") != 1


def _missing(source: str, where: list[str], size: str | None) -> EncoderWeightsMissing:
    hf_id = DINOV2_HF_IDS[size] if size else "facebook/dinov2-large"
    return EncoderWeightsMissing(
        f"DINOv2 weights '{source}' not found (looked in: {'; '.join(where)}). Nothing is downloaded at run time. "
        f"To provide them, on a machine with internet run\n"
        f"  python -c \"from transformers import Dinov2Model; "
        f"Dinov2Model.from_pretrained('{hf_id}').save_pretrained('/path/to/dinov2')\"\n"
        f"(or `hf download {hf_id} --local-dir /path/to/dinov2`), copy that folder here and set `weights: "
        f"/path/to/dinov2` in section `encoder` of config/model.yaml; or fill the Hugging Face cache "
        f"($HF_HOME) with that id. To run without pretrained weights set `random_init: true` (a frozen random "
        f"encoder: for tests, benchmarks, or models trained from scratch on its tokens)."
    )


def load_dinov2_backbone(source: str | Path, size: str | None = None) -> "Dinov2Model":
    """A pretrained ``Dinov2Model`` from a local directory or a cached Hugging Face id, strictly offline."""
    from transformers import Dinov2Model

    key = _check_size(size) if size is not None else None
    src = str(source)
    path = Path(src).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _missing(src, [f"{path} (a folder, but without config.json: not in transformers format)"], key)
        where = [str(path)]
        target = str(path)
    elif _looks_like_path(src) or path.exists():
        raise _missing(src, [f"{path} (no such folder)"], key)
    else:
        from huggingface_hub.constants import HF_HUB_CACHE

        where = [f"the Hugging Face cache {HF_HUB_CACHE} (id '{src}')"]
        target = src
    try:
        model = Dinov2Model.from_pretrained(target, local_files_only=True)
    except OSError as exc:
        detail = [f"transformers said: {str(exc).splitlines()[0]}"] if path.is_dir() else []
        raise _missing(src, where + detail, key) from exc
    if key is not None and model.config.hidden_size != DINOV2_ARCH[key]["hidden_size"]:
        raise ValueError(f"DINOv2 weights '{src}' have width {model.config.hidden_size}, but size '{key}' needs "
                         f"{DINOV2_ARCH[key]['hidden_size']}; fix `size` or `weights` in the encoder config")
    return model


class Dinov2Encoder(ImageEncoder):
    """Frozen DINOv2: images -> last-layer normalised patch tokens ``(B, Hp * Wp, hidden_size)``, no CLS."""

    def __init__(self, backbone: "Dinov2Model", image_size: int | Sequence[int] = (224, 224),
                 resize_short: int | None = None, source: str = "", dtype: str | torch.dtype = "float32") -> None:
        cfg = backbone.config
        patch = cfg.patch_size if isinstance(cfg.patch_size, int) else int(cfg.patch_size[0])
        super().__init__(dim=cfg.hidden_size, patch_size=patch, image_size=image_size, resize_short=resize_short)
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {sorted(DTYPES)}, found {dtype!r}")
            dtype = DTYPES[dtype]
        self.backbone = backbone.to(dtype)
        self.source = source
        self.freeze()

    # -------------------------------------------------------------------------------------------- building
    @classmethod
    def from_pretrained(cls, source: str | Path | None = None, size: str | None = None,
                        image_size: int | Sequence[int] = (224, 224), resize_short: int | None = None,
                        dtype: str | torch.dtype = "float32") -> "Dinov2Encoder":
        """Pretrained weights from a local folder or a cached HF id (``None``: the id of ``size``), offline."""
        if source is None:
            if size is None:
                raise ValueError("give the weights' source (folder or Hugging Face id) or a size (S/B/L/G)")
            source = DINOV2_HF_IDS[_check_size(size)]
        backbone = load_dinov2_backbone(source, size)
        return cls(backbone, image_size, resize_short, source=str(source), dtype=dtype)

    @classmethod
    def from_config(cls, config: "Dinov2Config", image_size: int | Sequence[int] = (224, 224),
                    resize_short: int | None = None, seed: int = 0,
                    dtype: str | torch.dtype = "float32") -> "Dinov2Encoder":
        """RANDOMLY initialised encoder of any ``Dinov2Config`` (reproducible from ``seed``; global RNG untouched)."""
        from transformers import Dinov2Model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = Dinov2Model(config)
        log.warning("DINOv2 encoder with RANDOM weights (seed %d, width %d, %d layers): no pretrained features",
                    seed, config.hidden_size, config.num_hidden_layers)
        return cls(backbone, image_size, resize_short, source=f"random-init(seed={seed})", dtype=dtype)

    @classmethod
    def random_init(cls, size: str = "S", image_size: int | Sequence[int] = (224, 224),
                    resize_short: int | None = None, seed: int = 0, dtype: str | torch.dtype = "float32",
                    **config_overrides: Any) -> "Dinov2Encoder":
        """RANDOMLY initialised ViT-``size``/14 with the released architecture (explicit; never a fallback)."""
        return cls.from_config(dinov2_config(size, **config_overrides), image_size, resize_short, seed, dtype)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the backbone in transformers format (loadable with :meth:`from_pretrained`)."""
        out = Path(directory)
        self.backbone.save_pretrained(out)
        return out

    @property
    def is_pretrained(self) -> bool:
        return not self.source.startswith("random-init")

    # -------------------------------------------------------------------------------------------- running
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.backbone.parameters()).dtype
        with torch.no_grad():
            out = self.backbone(pixel_values=pixel_values.to(dtype)).last_hidden_state
        return out[:, 1:, :]
