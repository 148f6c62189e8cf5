"""Let torch functions also take and give numpy arrays."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import numpy as np
import torch

F = TypeVar("F", bound=Callable[..., Any])


def as_tensor(x: Any, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` as a floating torch tensor (on ``like``'s device/dtype when given and ``x`` is not a tensor)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name}: expected an array or tensor, found {type(x).__name__} ({exc})") from exc
        if arr.dtype == object:
            raise TypeError(f"{name}: expected a numeric array, found dtype object")
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            arr = arr.copy()  # (not np.ascontiguousarray: it turns 0-d arrays into 1-d)
        t = torch.from_numpy(arr)
        if like is not None:
            t = t.to(device=like.device, dtype=like.dtype if like.is_floating_point() else None)
    if not t.is_floating_point():
        t = t.to(torch.float64 if like is None or not like.is_floating_point() else like.dtype)
    return t


def check_shape(t: torch.Tensor, name: str, tail: tuple[int, ...]) -> None:
    """Raise a clear error unless the trailing dimensions of ``t`` are ``tail``."""
    n = len(tail)
    if t.ndim < n or tuple(t.shape[t.ndim - n :]) != tail:
        want = "(..., " + ", ".join(map(str, tail)) + ")"
        raise ValueError(f"{name}: expected shape {want}, found {tuple(t.shape)}")


def numpy_compatible(fn: F) -> F:
    """Run ``fn`` on tensors; if no argument was a torch tensor but some were numpy arrays, return numpy."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = list(args) + list(kwargs.values())
        any_torch = any(isinstance(v, torch.Tensor) for v in values)
        any_numpy = any(isinstance(v, np.ndarray) for v in values)
        out = fn(*args, **kwargs)
        if any_torch or not any_numpy:
            return out
        return _to_numpy(out)

    return wrapper  # type: ignore[return-value]


def _to_numpy(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.detach().cpu().numpy()
    if isinstance(out, tuple):
        return tuple(_to_numpy(o) for o in out)
    return out


def to_tensors(**named: Any) -> list[torch.Tensor]:
    """Convert several inputs to tensors of one floating dtype and device (the first torch input's, if any)."""
    like = next((v for v in named.values() if isinstance(v, torch.Tensor)), None)
    ts = [as_tensor(v, k, like) for k, v in named.items()]
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    device = like.device if like is not None else ts[0].device
    return [t.to(device=device, dtype=dtype) for t in ts]
