"""``dexwm_vit``: the project's own small ViT, trained self-supervised on simulator frames (no pretrained weights).

Architecture (:class:`SimViTArch`, presets in ``config/encoder_training.yaml`` section ``architecture``): a
112 x 112 crop cut into 14 x 14 patches -> an 8 x 8 token grid (P = 64); a linear patch embedding plus fixed 2-D
sine-cosine position embeddings; ``depth`` pre-norm transformer blocks; a final LayerNorm. The tokens are that
LayerNorm's output (normalised patch tokens, no CLS token), as the paper takes them from DINOv2.

:class:`SimViTBackbone` is the trainable network (the self-supervised recipe in :mod:`dexwm_model.encoders.ssl`
trains it); :class:`SimViTEncoder` wraps a backbone as the frozen :class:`ImageEncoder`.

A trained encoder is a folder (:func:`save_sim_vit` writes it atomically): ``config.yaml`` (format, architecture,
sha256 of the weights, how it was trained) and ``model.safetensors`` (the backbone's weights). It is built through
the factory with ``kind: dexwm_vit`` and ``weights: <folder>`` (null: the embedded ``checkpoints/encoder_sim_vit``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dexwm_robot.config import ConfigError, config_dir, from_dict, load_yaml
from dexwm_model.encoders.base import EncoderWeightsMissing, ImageEncoder
from dexwm_model.encoders.factory import EncoderConfig, register_encoder
from dexwm_model.checkpoint_folder import (  # noqa: F401  (sha256_file, write_folder_atomic: re-exported)
    CONFIG_NAME,
    WEIGHTS_NAME,
    sha256_file,
    write_checkpoint_folder,
    write_folder_atomic,
)
from dexwm_model.checkpoint_folder import read_folder_config as read_checkpoint_config
from dexwm_model.weights_file import BadWeights, read_checked_state

KIND = "dexwm_vit"
FORMAT = "dexwm-vit-encoder"
FORMAT_VERSION = 1
TRAINING_CONFIG_FILE = "encoder_training.yaml"
DEFAULT_FOLDER_NAME = "encoder_sim_vit"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EncoderWeightsCorrupt(BadWeights, ValueError):
    """An encoder (or decoder) folder exists but its files are unreadable or inconsistent."""


# ------------------------------------------------------------------------------------------------ architecture
@dataclass
class SimViTArch:
    """One ViT architecture: crop size, patch size, width, depth, heads, MLP ratio."""

    image_size: list[int] = field(default_factory=lambda: [112, 112])
    patch_size: int = 14
    width: int = 192
    depth: int = 4
    heads: int = 3
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6
    name: str = "custom"

    def __post_init__(self) -> None:
        where = f"dexwm_vit architecture '{self.name}'"
        for key in ("patch_size", "width", "depth", "heads"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{where}: {key} must be a positive integer, found {v!r}")
        if (not isinstance(self.image_size, (list, tuple)) or len(self.image_size) != 2
                or not all(isinstance(v, int) and v > 0 for v in self.image_size)):
            raise ConfigError(f"{where}: image_size must be [height, width] positive integers, found "
                              f"{self.image_size!r}")
        self.image_size = [int(v) for v in self.image_size]
        if any(v % self.patch_size for v in self.image_size):
            raise ConfigError(f"{where}: image_size {self.image_size} must be a multiple of patch_size "
                              f"{self.patch_size}")
        if self.width % self.heads:
            raise ConfigError(f"{where}: width {self.width} is not divisible by heads {self.heads}")
        if self.width % 4:
            raise ConfigError(f"{where}: width must be a multiple of 4 (2-D sin-cos position embedding), found "
                              f"{self.width}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"{where}: mlp_ratio must be > 0, found {self.mlp_ratio!r}")

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def num_tokens(self) -> int:
        h, w = self.grid
        return h * w


@dataclass
class ArchitectureSection:
    """Section ``architecture`` of ``config/encoder_training.yaml``: named presets and the default one."""

    default: str
    presets: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        if self.default not in self.presets:
            raise ConfigError(f"{TRAINING_CONFIG_FILE} architecture.default: '{self.default}' is not one of the "
                              f"presets {sorted(self.presets)}")


def load_architecture(name: str | None = None, file: str | Path = TRAINING_CONFIG_FILE) -> SimViTArch:
    """The preset ``name`` (None: the default preset) of ``config/encoder_training.yaml``."""
    data = load_yaml(file)
    if "architecture" not in data:
        raise ConfigError(f"{file}: missing section 'architecture'")
    section = from_dict(ArchitectureSection, data["architecture"], f"{Path(file).name}:architecture")
    key = section.default if name is None else name
    if key not in section.presets:
        raise ConfigError(f"dexwm_vit: unknown architecture preset {key!r} (encoder.size); presets in "
                          f"{Path(file).name}: {sorted(section.presets)} (or null for the default)")
    return from_dict(SimViTArch, {**section.presets[key], "name": key}, f"{Path(file).name}:architecture.{key}")


def sincos_2d(grid: Sequence[int], dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding ``(H * W, dim)``: half the channels encode the row, half the column."""
    h, w = (int(v) for v in grid)
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    parts = []
    for coord in (rows.reshape(-1), cols.reshape(-1)):
        ang = coord[:, None] * omega[None, :]
        parts += [torch.sin(ang), torch.cos(ang)]
    return torch.cat(parts, dim=1).to(torch.float32)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))`` (GELU)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        hidden = int(round(width * mlp_ratio))
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def init_vit_weights(module: nn.Module) -> None:
    """Xavier-uniform linear layers with zero bias, unit LayerNorms (the usual ViT / MAE initialisation)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SimViTBackbone(nn.Module):
    """The trainable ViT: normalised pixels ``(B, 3, H, W)`` -> LayerNorm'd patch tokens ``(B, P, width)``.

    :meth:`forward` optionally takes ``keep`` ``(B, K)`` token indices: only those patches are embedded and run
    through the blocks (masked-autoencoder training); tokens come back in the order of ``keep``.
    """

    def __init__(self, arch: SimViTArch) -> None:
        super().__init__()
        self.arch = arch
        p, d = arch.patch_size, arch.width
        self.patch_embed = nn.Linear(3 * p * p, d)
        self.register_buffer("pos_embed", sincos_2d(arch.grid, d), persistent=False)
        self.blocks = nn.ModuleList(Block(d, arch.heads, arch.mlp_ratio, arch.layer_norm_eps)
                                    for _ in range(arch.depth))
        self.norm = nn.LayerNorm(d, eps=arch.layer_norm_eps)
        init_vit_weights(self)

    def patchify(self, pixels: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, P, 3 * p * p)``, patches row-major, each flattened as (row, col, channel)."""
        b, c, h, w = pixels.shape
        p = self.arch.patch_size
        if (h, w) != tuple(self.arch.image_size) or c != 3:
            raise ValueError(f"dexwm_vit: expected pixels of shape (B, 3, {self.arch.image_size[0]}, "
                             f"{self.arch.image_size[1]}), found {tuple(pixels.shape)}")
        x = pixels.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def forward(self, pixels: Tensor, keep: Tensor | None = None) -> Tensor:
        patches = self.patchify(pixels)
        pos = self.pos_embed.to(pixels.dtype)
        if keep is not None:  # embed only the kept patches
            patches = torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
            pos = pos[keep]
        x = self.patch_embed(patches) + pos
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


# -------------------------------------------------------------------------------------------- frozen encoder
class SimViTEncoder(ImageEncoder):
    """Frozen ``dexwm_vit``: images -> normalised patch tokens ``(B, 64, width)`` at 112 x 112 (no CLS)."""

    def __init__(self, backbone: SimViTBackbone, resize_short: int | None = None, source: str = "",
                 dtype: str | torch.dtype = "float32", info: dict[str, Any] | None = None) -> None:
        arch = backbone.arch
        super().__init__(dim=arch.width, patch_size=arch.patch_size, image_size=arch.image_size,
                         resize_short=resize_short)
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {sorted(DTYPES)}, found {dtype!r}")
            dtype = DTYPES[dtype]
        self.backbone = backbone.to(dtype)
        self.arch = arch
        self.source = source
        self.info = dict(info or {})
        self.freeze()

    @property
    def is_pretrained(self) -> bool:
        return not self.source.startswith("random-init")

    @classmethod
    def random_init(cls, arch: SimViTArch, seed: int = 0, resize_short: int | None = None,
                    dtype: str | torch.dtype = "float32") -> "SimViTEncoder":
        """RANDOM weights (reproducible from ``seed``; the global RNG is untouched): baselines and tests."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = SimViTBackbone(arch)
        return cls(backbone, resize_short, source=f"random-init(seed={seed})", dtype=dtype)

    @classmethod
    def from_folder(cls, folder: str | Path, resize_short: int | None = None,
                    dtype: str | torch.dtype = "float32") -> "SimViTEncoder":
        arch, state, info = load_sim_vit_folder(folder)
        backbone = SimViTBackbone(arch)
        backbone.load_state_dict(state, strict=True)
        info = {**info, "tensors_sha256": tensors_sha256(backbone)}
        return cls(backbone, resize_short, source=str(folder), dtype=dtype, info=info)

    def encode_pixels(self, pixel_values: Tensor) -> Tensor:
        dtype = next(self.backbone.parameters()).dtype
        with torch.no_grad():
            return self.backbone(pixel_values.to(dtype))


# ------------------------------------------------------------------------------------------------ persistence
def tensors_sha256(backbone: SimViTBackbone) -> str:
    """sha256 over the backbone's tensors (sorted names, dtype, shape, float32 bytes): the encoder's identity,
    whether its weights come from an encoder folder or from inside a world-model checkpoint. (The file's own
    sha256 cannot serve: safetensors writes its metadata in a per-process order, so equal weights can give two
    different files.)"""
    import hashlib

    digest = hashlib.sha256()
    for name, value in sorted(backbone.state_dict().items()):
        t = value.detach().to(torch.float32).contiguous().cpu()
        digest.update(f"{name}|{tuple(t.shape)}|float32|".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def save_sim_vit(backbone: SimViTBackbone, out: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write ``config.yaml`` + ``model.safetensors`` for ``backbone`` atomically into folder ``out``."""
    state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in backbone.state_dict().items()}

    def config(sha256: str) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": KIND,
                "architecture": dataclasses.asdict(backbone.arch), "weights_sha256": sha256,
                "num_parameters": int(sum(v.numel() for v in state.values())), "training": info or {}}

    return write_checkpoint_folder(out, state, config, FORMAT, FORMAT_VERSION, "encoder", EncoderWeightsCorrupt)


def read_folder_config(folder: Path, fmt: str, version: int, how_to_make: str) -> dict[str, Any]:
    """Check ``folder`` holds ``config.yaml`` (of format ``fmt``) and ``model.safetensors``; return the config
    (:func:`dexwm_model.checkpoint_folder.read_folder_config` with the encoder's errors)."""
    return read_checkpoint_config(folder, fmt, version, how_to_make, EncoderWeightsMissing, EncoderWeightsCorrupt)


def load_state(path: Path, expected: dict[str, tuple[torch.Size, torch.dtype]]) -> dict[str, Tensor]:
    """Read a safetensors file and check it holds exactly the tensors ``expected`` (names, shapes, dtypes), all
    finite (:func:`dexwm_model.weights_file.read_checked_state`)."""
    return read_checked_state(path, expected, CONFIG_NAME, EncoderWeightsCorrupt)


def load_sim_vit_folder(folder: str | Path) -> tuple[SimViTArch, dict[str, Tensor], dict[str, Any]]:
    """Validate a ``dexwm_vit`` folder; return its architecture, state dict and the rest of its config."""
    folder = Path(folder).expanduser()
    how = "train one with `dexwm train encoder --data DIR --out FOLDER`"
    data = read_folder_config(folder, FORMAT, FORMAT_VERSION, how)
    try:
        arch = from_dict(SimViTArch, data.get("architecture"), f"{folder / CONFIG_NAME}:architecture")
    except ConfigError as exc:
        raise EncoderWeightsCorrupt(str(exc)) from None
    with torch.device("meta"):
        expected = {k: (v.shape, torch.float32) for k, v in SimViTBackbone(arch).state_dict().items()}
    state = load_state(folder / WEIGHTS_NAME, expected)
    return arch, state, data


def default_weights_dir() -> Path:
    """The embedded default: ``checkpoints/encoder_sim_vit`` beside the ``config/`` folder."""
    return config_dir().parent / "checkpoints" / DEFAULT_FOLDER_NAME


def resolve_weights(weights: str | None) -> Path:
    """``weights`` as a folder: null -> the embedded default; a relative path is tried from the working folder,
    then from the project root (beside ``config/``)."""
    if weights is None:
        return default_weights_dir()
    p = Path(weights).expanduser()
    if p.is_absolute() or p.exists():
        return p
    alt = config_dir().parent / p
    return alt if alt.exists() else p


# ----------------------------------------------------------------------------------------------------- factory
@register_encoder(KIND)
def build_sim_vit(cfg: EncoderConfig) -> ImageEncoder:
    """Factory builder for ``kind: dexwm_vit`` (see the module doc for ``weights``; ``size``: a preset name or
    null; ``image_size`` must be the architecture's crop)."""
    if cfg.random_init:
        if cfg.weights is not None:
            raise ConfigError(f"encoder: random_init is true but weights is set ({cfg.weights!r}); choose one")
        arch = load_architecture(cfg.size)
        enc = SimViTEncoder.random_init(arch, cfg.seed, cfg.resize_short, cfg.dtype)
    else:
        enc = SimViTEncoder.from_folder(resolve_weights(cfg.weights), cfg.resize_short, cfg.dtype)
        if cfg.size is not None and cfg.size != enc.arch.name:
            raise ConfigError(f"encoder.size: {cfg.size!r} but the dexwm_vit weights in {enc.source} have "
                              f"architecture '{enc.arch.name}'; set size to '{enc.arch.name}' or null")
    if list(cfg.image_size) != list(enc.arch.image_size):
        raise ConfigError(f"encoder.image_size: {list(cfg.image_size)} but the dexwm_vit architecture "
                          f"'{enc.arch.name}' was built for {enc.arch.image_size}; set image_size to "
                          f"{enc.arch.image_size}")
    return enc


def num_parameters(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def flops_per_image(arch: SimViTArch) -> float:
    """Multiply-adds x 2 of one full forward pass (all tokens), ignoring norms and activations."""
    n, d = arch.num_tokens, arch.width
    hidden = int(round(d * arch.mlp_ratio))
    per_block = 2 * n * (4 * d * d + 2 * d * hidden) + 2 * 2 * n * n * d
    return float(2 * n * 3 * arch.patch_size**2 * d + arch.depth * per_block)


__all__ = [
    "KIND", "SimViTArch", "SimViTBackbone", "SimViTEncoder", "EncoderWeightsCorrupt", "Block", "load_architecture",
    "save_sim_vit", "load_sim_vit_folder", "build_sim_vit", "default_weights_dir", "write_folder_atomic",
    "sincos_2d", "init_vit_weights", "flops_per_image", "num_parameters",
]
