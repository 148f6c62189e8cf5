"""Checkpoint folders: ``config.yaml`` + ``model.safetensors``, for the encoder, the latent decoder, the world model
and the Diffusion Policy alike.

Writing: :func:`write_checkpoint_folder` replaces the whole folder in one atomic step (encoder, decoder: the
config records the weights file's sha256); :func:`write_checkpoint_files` writes the two files as temporary files
renamed into place, leaving the rest of the folder as it is (world model, Diffusion Policy: a world-model folder
may also hold a bundled decoder). Both refuse tensors holding NaN or inf.

Reading: :func:`check_folder` (the folder and its two files exist), :func:`read_config` (a YAML mapping),
:func:`check_format` (``format`` / ``format_version``), :func:`check_weights_sha256`, :func:`read_folder_config`
(all four), and the tensors through :func:`dexwm_model.weights_file.read_checked_state`. Every check raises the
caller's own error type, so each model keeps its exceptions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml
from torch import Tensor

from dexwm_model.weights_file import check_finite_state

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.safetensors"


# ---------------------------------------------------------------------------------------------------- writing
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_folder_atomic(out: str | Path, writers: dict[str, Callable[[Path], None]]) -> Path:
    """Create folder ``out`` holding the files ``name -> writer(path)`` as one atomic step.

    Everything is written into a fresh sibling folder first, flushed, then renamed onto ``out`` (a previous
    ``out`` is moved aside and deleted only after the new folder is in place), so ``out`` never holds a mix of
    old and new files or a half-written file.
    """
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.with_name(f".{out.name}.tmp-{tag}")
    old = out.with_name(f".{out.name}.old-{tag}")
    tmp.mkdir()
    try:
        for name, write in writers.items():
            write(tmp / name)
            os.chmod(tmp / name, 0o644)  # some writers (safetensors) create 0600 files; these are shared artefacts
            fd = os.open(tmp / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if out.exists():
            if not out.is_dir():
                raise FileExistsError(f"{out} exists and is not a folder; not overwriting it")
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


def write_weights(path: str | Path, state: Mapping[str, Tensor], fmt: str, version: int) -> None:
    """A safetensors file of ``state`` with the format in its metadata."""
    from safetensors.torch import save_file

    save_file(dict(state), str(path), metadata={"format": fmt, "format_version": str(version)})


def write_checkpoint_folder(out: str | Path, state: Mapping[str, Tensor], make_config: Callable[[str], dict],
                            fmt: str, version: int, what: str, error: type[Exception]) -> Path:
    """Folder ``out`` (replaced atomically) with ``model.safetensors`` of ``state`` and ``config.yaml`` =
    ``make_config(sha256 of the weights file)``; ``error`` when a tensor is not finite (nothing written)."""
    check_finite_state(state, f"{what} for {out}", error)
    digest: dict[str, str] = {}

    def weights(path: Path) -> None:
        write_weights(path, state, fmt, version)
        digest["sha256"] = sha256_file(path)

    def config(path: Path) -> None:
        path.write_text(yaml.safe_dump(make_config(digest["sha256"]), sort_keys=False))

    return write_folder_atomic(out, {WEIGHTS_NAME: weights, CONFIG_NAME: config})


def write_checkpoint_files(folder: str | Path, state: Mapping[str, Tensor], config: dict, fmt: str, version: int,
                           what: str, error: type[Exception]) -> Path:
    """``config.yaml`` + ``model.safetensors`` in ``folder`` (created if needed; other files left alone), each
    written to a temporary file and renamed into place; ``error`` when a tensor is not finite (nothing written)."""
    folder = Path(folder)
    check_finite_state(state, f"{what} for {folder}", error)  # never write a diverged model
    folder.mkdir(parents=True, exist_ok=True)
    tmp_cfg, tmp_w = folder / (CONFIG_NAME + ".tmp"), folder / (WEIGHTS_NAME + ".tmp")
    tmp_cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    write_weights(tmp_w, state, fmt, version)
    tmp_cfg.replace(folder / CONFIG_NAME)
    tmp_w.replace(folder / WEIGHTS_NAME)
    return folder


# ---------------------------------------------------------------------------------------------------- reading
def check_folder(folder: Path, how_to_make: str, error: type[Exception], label: str = "") -> None:
    """``folder`` is a folder holding ``config.yaml`` and ``model.safetensors``, else ``error`` saying which is
    missing (``label``: what the folder is, e.g. "world-model checkpoint", in front of its path)."""
    where = f"{label} {folder}" if label else f"{folder}"
    if not folder.exists():
        raise error(f"{where}: no such folder (missing {CONFIG_NAME} and {WEIGHTS_NAME}; {how_to_make})")
    if not folder.is_dir():
        raise error(f"{where}: not a folder; expected a folder holding {CONFIG_NAME} and {WEIGHTS_NAME} "
                    f"({how_to_make})")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise error(f"{where}: missing {name} (a checkpoint folder holds {CONFIG_NAME} and {WEIGHTS_NAME}; "
                        f"{how_to_make})")


def read_config(folder: Path, error: type[Exception]) -> dict[str, Any]:
    """``folder/config.yaml`` as a mapping, else ``error``."""
    path = folder / CONFIG_NAME
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping, found {type(data).__name__}")
    return data


def check_format(data: Mapping[str, Any], path: Path, fmt: str, version: int, error: type[Exception]) -> None:
    if data.get("format") != fmt:
        raise error(f"{path}: not a {fmt} config ('format' must be '{fmt}', found {data.get('format')!r})")
    if data.get("format_version") != version:
        raise error(f"{path}: format_version {data.get('format_version')!r} is not supported (this code reads "
                    f"{version})")


def check_weights_sha256(folder: Path, data: Mapping[str, Any], error: type[Exception]) -> None:
    """The weights file is the one the config recorded (``weights_sha256``)."""
    expected = data.get("weights_sha256")
    if not isinstance(expected, str):
        raise error(f"{folder / CONFIG_NAME}: missing 'weights_sha256'")
    found = sha256_file(folder / WEIGHTS_NAME)
    if found != expected:
        raise error(f"{folder / WEIGHTS_NAME}: sha256 {found[:16]}... does not match weights_sha256 "
                    f"{expected[:16]}... in {CONFIG_NAME} (file damaged or replaced)")


def read_folder_config(folder: Path, fmt: str, version: int, how_to_make: str, missing: type[Exception],
                       corrupt: type[Exception]) -> dict[str, Any]:
    """Check ``folder`` holds ``config.yaml`` (of format ``fmt``) and the ``model.safetensors`` it records; return
    the config (``missing``: a folder or file is not there; ``corrupt``: the rest)."""
    check_folder(folder, how_to_make, missing)
    data = read_config(folder, corrupt)
    check_format(data, folder / CONFIG_NAME, fmt, version, corrupt)
    check_weights_sha256(folder, data, corrupt)
    return data
