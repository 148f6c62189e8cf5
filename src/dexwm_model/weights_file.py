"""Reading and writing ``.safetensors`` weights against the tensors an architecture needs.

Every weights loader of the project (world model, encoder, latent decoder, Diffusion Policy) reads its file through
:func:`read_checked_state`, and every writer checks its tensors with :func:`check_finite_state` first, so a file
that cannot be used as it is fails the same way everywhere: one error type (:class:`BadWeights`, subclassed by each
loader's own error), a message naming the file, the tensor and what was expected against what was found. A
checkpoint holding NaN or inf is refused on read and never written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor


class BadWeights(Exception):
    """A weights file (or the tensors about to be written to one) cannot be used: unreadable, tensors missing or
    unexpected, a wrong shape or dtype, or non-finite values. Each loader's error type subclasses this one."""


def expected_tensors(module: torch.nn.Module) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """``name -> (shape, dtype)`` of every tensor in ``module.state_dict()`` (what a weights file must hold)."""
    return {k: (v.shape, v.dtype) for k, v in module.state_dict().items()}


def _shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)


def non_finite_tensors(state: Mapping[str, Tensor]) -> list[tuple[str, int, int]]:
    """``(name, non-finite count, numel)`` of each floating tensor in ``state`` that holds NaN or inf."""
    bad = []
    for name, value in state.items():
        if torch.is_floating_point(value) or torch.is_complex(value):
            n = int((~torch.isfinite(value.detach())).sum())
            if n:
                bad.append((name, n, value.numel()))
    return bad


def describe_non_finite(bad: list[tuple[str, int, int]], limit: int = 3) -> str:
    shown = ", ".join(f"'{name}' ({n} of {numel} values)" for name, n, numel in bad[:limit])
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"{len(bad)} tensor(s) hold NaN or inf: {shown}{more}"


def check_finite_state(state: Mapping[str, Tensor], where: str | Path,
                       error: type[BadWeights] = BadWeights) -> None:
    """Raise ``error`` naming ``where`` and the first tensors if any floating tensor of ``state`` is not finite."""
    bad = non_finite_tensors(state)
    if bad:
        raise error(f"{where}: {describe_non_finite(bad)}; refusing non-finite weights")


def check_state(state: Mapping[str, Tensor], expected: Mapping[str, tuple[torch.Size, torch.dtype]],
                where: str | Path, against: str, error: type[BadWeights] = BadWeights) -> None:
    """Check ``state`` holds exactly the tensors ``expected`` (names, shapes, dtypes) and only finite values;
    ``against`` names what describes the architecture (e.g. ``config.yaml``)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        def cut(names: list[str]) -> str:
            return f"{names[:5]}{' ...' if len(names) > 5 else ''}"

        raise error(f"{where}: weights do not match {against}: missing {cut(missing)}, unexpected "
                    f"{cut(unexpected)}")
    for name, (shape, dtype) in expected.items():
        found = state[name]
        if _shape(found.shape) != _shape(shape):
            raise error(f"{where}: weights do not match {against}: tensor '{name}' has shape "
                        f"{_shape(found.shape)}, the architecture needs {_shape(shape)}")
        if found.dtype != dtype:
            raise error(f"{where}: weights do not match {against}: tensor '{name}' has dtype "
                        f"{str(found.dtype).replace('torch.', '')}, the architecture needs "
                        f"{str(dtype).replace('torch.', '')}")
    check_finite_state(state, where, error)


def read_checked_state(path: str | Path, expected: Mapping[str, tuple[torch.Size, torch.dtype]], against: str,
                       error: type[BadWeights] = BadWeights, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read the safetensors file ``path`` and :func:`check_state` it; every problem raises ``error``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise error(f"{path}: unreadable weights file ({exc})") from None
    check_state(state, expected, path, against, error)
    return state
