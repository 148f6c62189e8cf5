"""Open-loop evaluation: roll the world model forward from real context frames with the recorded actions and
compare every predicted frame with the real one.

For each episode, ``rollouts_per_episode`` start points are spread evenly over it. A rollout sees
``context_frames`` real frames ``context_step_s`` apart, then predicts ``horizon_s / step_s`` frames ``step_s``
apart (both snapped to the episode's frame spacing; shorter when the episode is) autoregressively, each from the
recorded 132-d action between consecutive frames. Per horizon step it reports, for the model and for the
"nothing moves" baseline (every future frame predicted as the newest context frame):

* ``latent_mse``: mean squared error of the latent tokens (the quantity the model is trained on);
* ``cosine``: mean cosine similarity between predicted and true tokens;
* ``pck``: the share of hand keypoints (wrist + 5 fingertips per hand; valid, inside the crop, on samples with hand
  labels) that the hand head reads out of the PREDICTED latent within 2.5 / 5 / 10 / 20 px (the thresholds of
  ``hand_head.pck_thresholds_px``) of the ground-truth pixels, in the encoder's input image.

``true_readout`` gives the hand head's PCK on the true latents of the same frames: the ceiling the head allows.

A model with an object head also gets ``objects``: the object head's pixel error (mean, median, PCK@5) read out of
the predicted latents, the newest context latent (nothing moves) and the true latents, over all predicted frames,
separately for objects that MOVED (more than ``OBJECT_MOVED_PX`` from where they were in the newest context frame)
and those that stayed. Whether the model beats "nothing moves" on moved objects says whether its predictions carry
object motion (what a planner needs to push or grasp); the static ones say whether it keeps objects in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from dexwm_model.datasets.objects import OBJECT_MOVED_PX
from dexwm_model.training.config import EvalConfig
from dexwm_model.training.objective import PIXEL_CENTRE_OFFSET
from dexwm_model.world_model import WorldModel

EVAL_FORMAT = "dexwm-open-loop-eval"
EVAL_VERSION = 1


@dataclass
class RolloutPlan:
    """Frame indices of the rollouts of one episode: ``indices`` (R, C + H); the first C are context."""

    source: str
    episode: int
    name: str
    context: int
    horizon: int
    indices: np.ndarray


def _stride(times: np.ndarray, seconds: float) -> int:
    dt = float(np.median(np.diff(times))) if len(times) > 1 else seconds
    return max(1, int(round(seconds / dt))) if dt > 0 else 1


def plan_episode(times: np.ndarray, cfg: EvalConfig, max_context: int) -> tuple[int, int, np.ndarray] | None:
    """(context frames, horizon steps, rollout frame indices (R, C + H)) for an episode with frame ``times``;
    None when the episode cannot hold one context frame and one predicted frame."""
    n = len(times)
    s_ctx, s_pred = _stride(times, cfg.context_step_s), _stride(times, cfg.step_s)
    want_h = max(1, int(round(cfg.horizon_s / cfg.step_s)))
    c = min(cfg.context_frames, max_context)
    while c >= 1:
        first_last_ctx = (c - 1) * s_ctx  # the newest context frame's smallest index
        room = n - 1 - first_last_ctx
        h = min(want_h, room // s_pred)
        if h >= 1:
            break
        c -= 1
    else:
        return None
    lo, hi = (c - 1) * s_ctx, n - 1 - h * s_pred
    starts = np.unique(np.round(np.linspace(lo, hi, cfg.rollouts_per_episode)).astype(np.int64))
    ctx = starts[:, None] + s_ctx * np.arange(-(c - 1), 1)[None, :]
    fut = starts[:, None] + s_pred * np.arange(1, h + 1)[None, :]
    return c, h, np.concatenate([ctx, fut], axis=1)


@dataclass
class _Acc:
    """Per-step sums of one method."""

    horizon: int
    thresholds: tuple[float, ...]
    sq: np.ndarray = field(init=False)
    elems: np.ndarray = field(init=False)
    cos: np.ndarray = field(init=False)
    tokens: np.ndarray = field(init=False)
    hits: np.ndarray = field(init=False)
    kps: np.ndarray = field(init=False)
    rollouts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        h, k = self.horizon, len(self.thresholds)
        self.sq, self.elems = np.zeros(h), np.zeros(h)
        self.cos, self.tokens = np.zeros(h), np.zeros(h)
        self.hits, self.kps = np.zeros((h, k)), np.zeros(h)
        self.rollouts = np.zeros(h)

    def add_latents(self, pred: Tensor, true: Tensor) -> None:
        """pred, true: (N, H, P, d)."""
        h = pred.shape[1]
        diff = (pred.double() - true.double()) ** 2
        self.sq[:h] += diff.sum(dim=(0, 2, 3)).cpu().numpy()
        self.elems[:h] += pred.shape[0] * pred.shape[2] * pred.shape[3]
        cos = torch.nn.functional.cosine_similarity(pred.double(), true.double(), dim=-1)  # (N, H, P)
        self.cos[:h] += cos.sum(dim=(0, 2)).cpu().numpy()
        self.tokens[:h] += pred.shape[0] * pred.shape[2]
        self.rollouts[:h] += pred.shape[0]

    def add_keypoints(self, pred_uv: Tensor, true_uv: Tensor, valid: Tensor) -> None:
        """(N, H, 12, 2) pixel positions in the same convention, valid (N, H, 12)."""
        h = pred_uv.shape[1]
        dist = torch.linalg.vector_norm(pred_uv.double() - true_uv.double(), dim=-1)  # (N, H, 12)
        for j, thr in enumerate(self.thresholds):
            self.hits[:h, j] += ((dist <= thr) & valid).sum(dim=(0, 2)).cpu().numpy()
        self.kps[:h] += valid.sum(dim=(0, 2)).cpu().numpy()

    def step(self, i: int, latents: bool = True) -> dict:
        out: dict = {}
        if latents:
            out["latent_mse"] = self.sq[i] / self.elems[i] if self.elems[i] else None
            out["cosine"] = self.cos[i] / self.tokens[i] if self.tokens[i] else None
        out["pck"] = {_key(t): (self.hits[i, j] / self.kps[i] if self.kps[i] else None)
                      for j, t in enumerate(self.thresholds)}
        return out


def _key(threshold: float) -> str:
    return f"{float(threshold):g}"


class _ObjectErrors:
    """Pixel errors of the object head per read-out ("model", "baseline", "true_readout") and moved / static."""

    def __init__(self) -> None:
        self.errors: dict[str, list[np.ndarray]] = {}

    def add(self, method: str, moved: Tensor, err: Tensor, valid: Tensor) -> None:
        for name, sel in (("moved", valid & moved), ("static", valid & ~moved)):
            self.errors.setdefault(f"{name}/{method}", []).append(err[sel].double().cpu().numpy())

    def report(self) -> dict:
        out: dict = {"moved_threshold_px": OBJECT_MOVED_PX}
        for key, parts in self.errors.items():
            kind, method = key.split("/")
            e = np.concatenate(parts) if parts else np.zeros(0)
            out.setdefault(kind, {})[method] = {
                "n": int(e.size), "mean_px": float(e.mean()) if e.size else None,
                "median_px": float(np.median(e)) if e.size else None,
                "pck5": float((e <= 5.0).mean()) if e.size else None}
        return out


def _read_points(read, latents: Tensor, chunk: int) -> Tensor:
    """``read`` (a model's ``hand_keypoints`` or ``object_keypoints``) over latents ``(..., P, d)`` in chunks ->
    pixels ``(..., K, 2)`` in continuous coordinates of the encoder's input image (the dataset convention)."""
    flat = latents.reshape(-1, *latents.shape[-2:])
    outs = [read(flat[lo:lo + chunk])[0] + PIXEL_CENTRE_OFFSET for lo in range(0, flat.shape[0], chunk)]
    out = torch.cat(outs)
    return out.view(*latents.shape[:-2], *out.shape[1:])


def read_objects(model: WorldModel, latents: Tensor, chunk: int = 64) -> Tensor:
    """Object centres ``(..., M, 2)`` read by the object head (as :func:`read_keypoints`)."""
    return _read_points(model.object_keypoints, latents, chunk)


def read_keypoints(model: WorldModel, latents: Tensor, chunk: int = 64) -> Tensor:
    """Hand keypoints ``(..., 12, 2)`` read by the hand head from latents ``(..., P, d)``, in continuous pixel
    coordinates of the encoder's input image (the dataset convention)."""
    return _read_points(model.hand_keypoints, latents, chunk)


@torch.no_grad()
def evaluate(model: WorldModel, datasets: dict, cfg: EvalConfig, device: torch.device,
             progress: bool = False) -> dict:
    """Open-loop evaluation over ``datasets`` (source -> latent or pixel clip dataset with ``episode_clip``).
    Returns the report (JSON-ready: missing values are None)."""
    model.eval()
    max_ctx = model.config.predictor.max_context
    thresholds = tuple(float(t) for t in model.config.hand_head.pck_thresholds_px)
    plans: list[RolloutPlan] = []
    skipped: list[dict] = []
    for name, ds in datasets.items():
        base = getattr(ds, "source_dataset", ds)
        skipped += [{"source": name, "episode": ep, "why": why} for ep, why in getattr(base, "skipped", [])]
        for e, entry in enumerate(base.episodes[: cfg.max_episodes or None]):
            plan = plan_episode(np.asarray(entry.times), cfg, max_ctx)
            if plan is None:
                skipped.append({"source": name, "episode": entry.name, "why": f"{len(entry.times)} frames: too "
                                "short for one context frame and one predicted step"})
                continue
            c, h, idx = plan
            plans.append(RolloutPlan(name, e, entry.name, c, h, idx))
    if not plans:
        raise ValueError("evaluate: no episode is long enough for a rollout"
                         + (f" (skipped: {skipped[:3]})" if skipped else ""))
    horizon = max(p.horizon for p in plans)
    acc = {m: _Acc(horizon, thresholds) for m in ("model", "baseline", "true_readout")}
    if model.object_head is not None:
        acc["objects"] = _ObjectErrors()
    times_sum = np.zeros(horizon)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(p.indices) for p in plans), desc="open-loop rollouts", unit="rollout")
    for plan in plans:
        ds = datasets[plan.source]
        for lo in range(0, len(plan.indices), cfg.batch_size):
            samples = [ds.episode_clip(plan.episode, row) for row in plan.indices[lo:lo + cfg.batch_size]]
            _evaluate_batch(model, samples, plan.context, device, acc, times_sum)
            if bar is not None:
                bar.update(len(samples))
    if bar is not None:
        bar.close()
    steps = []
    for i in range(horizon):
        n = int(acc["model"].rollouts[i])
        steps.append({"step": i + 1, "time_s": round((i + 1) * cfg.step_s, 6),
                      "mean_time_s": times_sum[i] / n if n else None, "rollouts": n,
                      "keypoints": int(acc["model"].kps[i]),
                      "model": acc["model"].step(i), "baseline": acc["baseline"].step(i),
                      "true_readout": acc["true_readout"].step(i, latents=False)})
    last = steps[-1]
    summary = {}
    for method in ("model", "baseline"):
        mses = [s[method]["latent_mse"] for s in steps if s[method]["latent_mse"] is not None]
        summary[method] = {"latent_mse_mean": float(np.mean(mses)) if mses else None,
                           "latent_mse_final": last[method]["latent_mse"], "cosine_final": last[method]["cosine"],
                           "pck_final": last[method]["pck"]}
    if "objects" in acc:
        summary["objects"] = acc["objects"].report()
    return _clean({
        "format": EVAL_FORMAT, "format_version": EVAL_VERSION, "step_s": cfg.step_s, "horizon_s": cfg.horizon_s,
        "horizon_steps": horizon, "context_frames": max(p.context for p in plans),
        "pck_thresholds_px": list(thresholds), "image_size": list(model.image_size),
        "episodes": len(plans), "rollouts": int(sum(len(p.indices) for p in plans)), "skipped_episodes": skipped,
        "steps": steps, "summary": summary,
    })


def _evaluate_batch(model: WorldModel, samples: list[dict], c: int, device: torch.device, acc: dict,
                    times_sum: np.ndarray) -> None:
    if "latents" in samples[0]:
        tokens = torch.stack([s["latents"] for s in samples]).to(device, torch.float32)
    else:
        frames = torch.stack([s["frames"] for s in samples]).to(device)
        b, k = frames.shape[:2]
        tokens = model.encoder.encode_pixels(frames.flatten(0, 1)).to(torch.float32)
        tokens = tokens.view(b, k, *tokens.shape[1:])
    z = model.projection(tokens)
    times = torch.stack([s["times"] for s in samples]).to(device, torch.float64)
    actions = torch.stack([s["actions"] for s in samples]).to(device, torch.float32)
    uv = torch.stack([s["keypoints_px"] for s in samples]).to(device)
    hand = torch.tensor([bool(s["hand_loss"]) for s in samples], device=device)
    valid = torch.stack([s["keypoints_valid"] for s in samples]).to(device) & hand[:, None, None]
    dts = times[:, c:] - times[:, c - 1:-1]
    pred = model.predictor.rollout(z[:, :c], times[:, :c], actions[:, c - 1:], dts)  # (N, H, P, d)
    true = z[:, c:]
    h = true.shape[1]
    base = z[:, c - 1:c].expand(-1, h, -1, -1)
    acc["model"].add_latents(pred, true)
    acc["baseline"].add_latents(base, true)
    true_uv, true_valid = uv[:, c:], valid[:, c:]
    acc["model"].add_keypoints(read_keypoints(model, pred), true_uv, true_valid)
    base_uv = read_keypoints(model, z[:, c - 1]).unsqueeze(1).expand(-1, h, -1, -1)
    acc["baseline"].add_keypoints(base_uv, true_uv, true_valid)
    acc["true_readout"].add_keypoints(read_keypoints(model, true), true_uv, true_valid)
    if "objects" in acc and "object_px" in samples[0]:
        ouv = torch.stack([s["object_px"] for s in samples]).to(device)
        ovalid = torch.stack([s["object_valid"] for s in samples]).to(device)
        truth, tvalid = ouv[:, c:], ovalid[:, c:] & ovalid[:, c - 1:c]
        moved = torch.linalg.vector_norm(truth - ouv[:, c - 1:c], dim=-1) > OBJECT_MOVED_PX
        last = read_objects(model, z[:, c - 1]).unsqueeze(1).expand(-1, h, -1, -1)
        for method, uvx in (("model", read_objects(model, pred)), ("baseline", last),
                            ("true_readout", read_objects(model, true))):
            acc["objects"].add(method, moved, torch.linalg.vector_norm(uvx - truth, dim=-1), tvalid)
    times_sum[:h] += (times[:, c:] - times[:, c - 1:c]).sum(dim=0).cpu().numpy()


def _clean(obj):
    """Floats NaN / inf -> None, numpy scalars -> Python (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
