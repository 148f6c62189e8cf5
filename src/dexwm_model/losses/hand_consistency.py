"""Hand-consistency loss: Gaussian heat-map targets, the masked MSE, keypoint read-out and PCK.

Pixel convention (OpenCV): ``uv[..., 0]`` is the column ``u`` and ``uv[..., 1]`` the row ``v``; the centre
of pixel (row i, column j) is at ``(u, v) = (j, i)``. A keypoint counts as inside the image when
``0 <= u <= W - 1`` and ``0 <= v <= H - 1``. Keypoint order: :data:`dexwm_model.predictor.hand_head.NUM_HEATMAPS`
maps, left wrist + 5 tips, then right wrist + 5 tips.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check_uv(uv: Tensor, valid: Tensor, name: str = "uv") -> None:
    if uv.dim() != 3 or uv.shape[-1] != 2 or not uv.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor of shape (B, K, 2), found {uv.dtype} {tuple(uv.shape)}")
    if tuple(valid.shape) != tuple(uv.shape[:2]) or valid.dtype != torch.bool:
        raise ValueError(
            f"valid: expected a bool tensor of shape {tuple(uv.shape[:2])}, found {valid.dtype} {tuple(valid.shape)}"
        )


def keypoint_mask(uv: Tensor, valid: Tensor, height: int, width: int) -> Tensor:
    """(B, K) bool: valid, finite and inside the image."""
    _check_uv(uv, valid)
    u, v = uv[..., 0], uv[..., 1]
    inside = (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)  # False for NaN
    return valid & inside


def gaussian_heatmaps(uv: Tensor, valid: Tensor, height: int, width: int, sigma: float) -> Tensor:
    """Targets (B, K, H, W): ``exp(-|p - uv|^2 / (2 sigma^2))`` (peak 1) for valid keypoints, 0 elsewhere."""
    _check_uv(uv, valid)
    if height < 1 or width < 1 or sigma <= 0:
        raise ValueError(f"gaussian_heatmaps: need height, width >= 1 and sigma > 0, found {height}, {width}, {sigma}")
    safe = torch.where(valid[..., None], uv, torch.zeros((), dtype=uv.dtype, device=uv.device))
    cols = torch.arange(width, dtype=uv.dtype, device=uv.device)
    rows = torch.arange(height, dtype=uv.dtype, device=uv.device)
    du2 = (cols - safe[..., 0:1]) ** 2  # (B, K, W)
    dv2 = (rows - safe[..., 1:2]) ** 2  # (B, K, H)
    maps = torch.exp(-(dv2[..., :, None] + du2[..., None, :]) / (2.0 * sigma * sigma))
    return maps * valid[..., None, None].to(uv.dtype)


def hand_consistency_loss(heatmaps: Tensor, uv: Tensor, valid: Tensor, sigma: float) -> Tensor:
    """Masked MSE between predicted heat-maps (B, K, H, W) and Gaussian targets at ``uv`` (B, K, 2) pixels.

    Keypoints that are invalid or outside the image contribute exactly zero loss and zero gradient. The mean
    runs over the pixels of the counted maps; with no counted keypoint the loss is 0.
    """
    if heatmaps.dim() != 4 or tuple(heatmaps.shape[:2]) != tuple(uv.shape[:2]):
        raise ValueError(
            f"heatmaps: expected shape {tuple(uv.shape[:2])} + (H, W) to match uv, found {tuple(heatmaps.shape)}"
        )
    height, width = heatmaps.shape[-2:]
    heatmaps = heatmaps.to(torch.promote_types(heatmaps.dtype, torch.float32))  # bf16/fp16 maps: loss in fp32
    counted = keypoint_mask(uv, valid, height, width)
    target = gaussian_heatmaps(uv.to(heatmaps.dtype), counted, height, width, sigma)
    zero = torch.zeros((), dtype=heatmaps.dtype, device=heatmaps.device)
    diff = torch.where(counted[..., None, None], heatmaps - target, zero)  # masked before squaring: no NaN path
    n = counted.sum().clamp(min=1).to(diff.dtype)
    return (diff * diff).sum() / (n * height * width)


def heatmap_keypoints(heatmaps: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """Read keypoints out of heat-maps (B, K, H, W): arg-max, refined by the centroid of the positive heat in a
    ``(2 radius + 1)^2`` window around it (local soft-argmax; config ``hand_head.refine_radius_px``).
    Returns ``uv`` (B, K, 2) pixels and the peak value (B, K) as confidence."""
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps: expected shape (B, K, H, W), found {tuple(heatmaps.shape)}")
    if radius < 0:
        raise ValueError(f"radius: expected >= 0, found {radius}")
    b, k, height, width = heatmaps.shape
    h = heatmaps.detach().float() if heatmaps.dtype in (torch.float16, torch.bfloat16) else heatmaps.detach()
    conf, idx = h.flatten(2).max(dim=-1)
    row = torch.div(idx, width, rounding_mode="floor").to(h.dtype)
    col = (idx % width).to(h.dtype)
    rows = torch.arange(height, dtype=h.dtype, device=h.device)
    cols = torch.arange(width, dtype=h.dtype, device=h.device)
    in_rows = (rows - row[..., None]).abs() <= radius  # (B, K, H)
    in_cols = (cols - col[..., None]).abs() <= radius  # (B, K, W)
    w = h.clamp(min=0) * (in_rows[..., :, None] & in_cols[..., None, :]).to(h.dtype)
    mass = w.sum(dim=(-2, -1))
    u = (w.sum(dim=-2) * cols).sum(-1) / mass.clamp(min=torch.finfo(h.dtype).tiny)
    v = (w.sum(dim=-1) * rows).sum(-1) / mass.clamp(min=torch.finfo(h.dtype).tiny)
    has_mass = mass > 0
    uv = torch.stack([torch.where(has_mass, u, col), torch.where(has_mass, v, row)], dim=-1)
    return uv, conf


def pck(
    pred_uv: Tensor, true_uv: Tensor, valid: Tensor, thresholds: Sequence[float] = (2.5, 5.0, 10.0, 20.0)
) -> dict[float, float]:
    """Percentage of correct keypoints: for each threshold (pixels), the fraction of valid keypoints whose
    predicted position lies within that distance of the truth. NaN when no keypoint is valid."""
    _check_uv(true_uv, valid, "true_uv")
    if tuple(pred_uv.shape) != tuple(true_uv.shape):
        raise ValueError(f"pred_uv: expected shape {tuple(true_uv.shape)} like true_uv, found {tuple(pred_uv.shape)}")
    dist = torch.linalg.vector_norm(pred_uv.double() - true_uv.double(), dim=-1)
    n = int(valid.sum())
    out = {}
    for thr in thresholds:
        hits = int(((dist <= float(thr)) & valid).sum())
        out[float(thr)] = hits / n if n else float("nan")
    return out
