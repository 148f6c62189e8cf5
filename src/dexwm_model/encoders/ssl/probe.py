"""Linear probes: how much of the hand pose and the object layout a frozen encoder's tokens hold, linearly.

On frames of simulator episodes, closed-form ridge regressions map frozen features to (a) the 2-D pixel positions
of hand keypoints (wrist + 4 fingertips, from each episode's ``keypoints_pixels``) and (b) the 2-D pixel positions
of the objects' centres (``object_poses`` projected through the episode's camera). Probes are fitted on the
training episodes (the ridge strength chosen on a held-back share of them, split by episode) and scored on
separate held-out episodes: R^2 (averaged over the coordinates) and mean pixel error (Euclidean distance in the
episode's frame, 224 x 224 for our simulator). Frames where a target point lies outside the image are left out.

Feature sets compared: the trained encoder's tokens (flattened ``P * d`` and mean-pooled ``d``), the same
architecture with random weights, and raw RGB pixels downsampled to ``raw_pixels_size``. For the tokens there is
also a per-token probe (:func:`evaluate_token_probe`): one linear map shared by all tokens, from a token to the
Gaussian heat of each target point at that token's patch, read out as positions. It has ``P`` times more rows
than the flattened probe, which matters for objects: a training set holds one object layout per episode.

``python -m dexwm_model.encoders.ssl.probe --encoder FOLDER --train DIR --test DIR [--out report.json]``
prints (and writes) one JSON report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dexwm_model.data.episode import EpisodeReader
from dexwm_model.encoders.base import ImageEncoder
from dexwm_model.encoders.ssl import config as ssl_config
from dexwm_model.encoders.ssl.config import ProbeConfig
from dexwm_model.encoders.ssl.frames import episode_files


# --------------------------------------------------------------------------------------------------- ridge
@dataclass
class RidgeModel:
    """``y = (x - x_mean) @ weight + y_mean``."""

    weight: np.ndarray  # (D, K)
    x_mean: np.ndarray  # (D,)
    y_mean: np.ndarray  # (K,)
    alpha: float
    lam: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=self.weight.dtype) - self.x_mean) @ self.weight + self.y_mean


class _RidgePath:
    """Eigen-decomposition of the centred training data, so the solution for many ridge strengths is cheap.

    Primal (``D <= N``): ``W = V diag(1 / (s + lam)) V^T X^T Y`` with ``X^T X = V S V^T``; dual (``D > N``):
    ``W = X^T U diag(1 / (s + lam)) U^T Y`` with ``X X^T = U S U^T``. ``lam = alpha * trace(X^T X) / N`` (alpha
    relative to the mean squared norm of a centred sample, so one alpha grid fits features of any scale).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise ValueError(f"ridge: expected x (N, D) and y (N, K) with the same N, found {x.shape} and {y.shape}")
        if len(x) < 2:
            raise ValueError(f"ridge: need at least 2 samples, found {len(x)}")
        self.x_mean, self.y_mean = x.mean(0), y.mean(0)
        self.xc, yc = x - self.x_mean, y - self.y_mean
        self.n, self.d = x.shape
        self.scale = float(np.einsum("ij,ij->", self.xc, self.xc)) / self.n
        self.primal = self.d <= self.n
        # the heavy algebra runs in torch (float64), so it obeys torch.set_num_threads
        xt = torch.from_numpy(self.xc)
        gram = xt.T @ xt if self.primal else xt @ xt.T
        s, vecs = torch.linalg.eigh(gram)
        self.s = np.clip(s.numpy(), 0.0, None)
        self.vecs = vecs.numpy()
        self.proj = self.vecs.T @ (self.xc.T @ yc if self.primal else yc)  # (r, K)

    def lam(self, alpha: float) -> float:
        return float(alpha) * max(self.scale, 1e-300)

    def model(self, alpha: float) -> RidgeModel:
        lam = self.lam(alpha)
        coef = self.vecs @ (self.proj / (self.s + lam)[:, None])
        weight = coef if self.primal else self.xc.T @ coef
        return RidgeModel(weight, self.x_mean, self.y_mean, float(alpha), lam)


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> RidgeModel:
    """Closed-form ridge regression with intercept (see :class:`_RidgePath` for ``alpha``)."""
    return _RidgePath(x, y).model(alpha)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per output column (1 - SSE / SST around the true values' mean)."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    sse = ((y_true - y_pred) ** 2).sum(0)
    sst = ((y_true - y_true.mean(0)) ** 2).sum(0)
    return 1.0 - sse / np.maximum(sst, 1e-300)


def mean_point_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean Euclidean distance between 2-D points laid out as ``(u0, v0, u1, v1, ...)`` per row."""
    d = np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)
    return float(np.linalg.norm(d.reshape(len(d), -1, 2), axis=-1).mean())


def fit_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              alphas: Sequence[float], groups: dict[str, slice] | None = None
              ) -> tuple[dict[str, RidgeModel], dict[str, dict[float, float]]]:
    """Ridge probes for the target column ``groups`` (name -> columns of y; default one group of all columns):
    per group, alpha is chosen by validation R^2, then refit on fit + validation rows (one eigen-decomposition
    per fit, shared by all groups). Returns the models and the validation R^2 of every alpha, per group."""
    groups = groups or {"all": slice(0, y_fit.shape[1])}
    path = _RidgePath(x_fit, y_fit)
    scores: dict[str, dict[float, float]] = {g: {} for g in groups}
    for a in alphas:
        r2 = r2_score(y_val, path.model(a).predict(x_val))
        for g, cols in groups.items():
            scores[g][float(a)] = float(r2[cols].mean())
    del path
    full = _RidgePath(np.concatenate([x_fit, x_val]), np.concatenate([y_fit, y_val]))
    models = {}
    for g, cols in groups.items():
        m = full.model(max(scores[g], key=scores[g].get))
        models[g] = RidgeModel(m.weight[:, cols], m.x_mean, m.y_mean[cols], m.alpha, m.lam)
    return models, scores


# -------------------------------------------------------------------------------------------------- targets
def project_points(points_world: np.ndarray, pose_world: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """World points ``(T, N, 3)`` -> pixels ``(T, N, 2)`` through camera poses ``T_wc (T, 4, 4)`` (optical frame:
    x right, y down, z forward) and intrinsics ``(3, 3)``; NaN for points not in front of the camera."""
    R, t = pose_world[:, :3, :3], pose_world[:, :3, 3]
    pc = np.einsum("tji,tnj->tni", R, points_world - t[:, None, :])
    z = pc[..., 2:3]
    K = intrinsics
    uv = pc[..., :2] / np.where(z > 1e-6, z, np.nan) * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    uv[..., 0] += K[0, 1] * pc[..., 1] / np.where(z[..., 0] > 1e-6, z[..., 0], np.nan)
    return uv


@dataclass
class ProbeData:
    frames: np.ndarray  # (N, H, W, 3) uint8
    hand: np.ndarray  # (N, 2 * k) pixel (u, v) of the chosen hand keypoints
    objects: np.ndarray  # (N, 2 * n_objects) pixel (u, v) of the object centres
    episode: np.ndarray  # (N,) index into files
    files: list[Path]
    image_hw: tuple[int, int]
    object_names: tuple[str, ...]


def load_probe_data(dirs: Sequence[str | Path], hand_keypoints: Sequence[int], stride: int = 1) -> ProbeData:
    """Frames and probe targets of every ``stride``-th frame of the episodes in ``dirs``."""
    files = episode_files(dirs)
    frames, hand, objects, episode = [], [], [], []
    names: tuple[str, ...] | None = None
    hw = None
    for i, path in enumerate(files):
        with EpisodeReader(path) as r:
            idx = np.arange(0, r.num_frames, stride)
            if names is None:
                names, hw = r.object_names, (r.height, r.width)
            elif r.object_names != names or (r.height, r.width) != hw:
                raise ValueError(f"{path}: objects {r.object_names} / image {r.height}x{r.width} differ from the "
                                 f"first episode's {names} / {hw[0]}x{hw[1]}; probe episodes must share a scene")
            frames.append(r.frames()[idx])
            hand.append(r.keypoints_pixels[idx][:, list(hand_keypoints)].reshape(len(idx), -1))
            obj = project_points(r.object_poses[idx, :, :3], r.camera_pose_world[idx], r.camera_intrinsics)
            objects.append(obj.reshape(len(idx), -1))
            episode.append(np.full(len(idx), i))
    return ProbeData(np.concatenate(frames), np.concatenate(hand), np.concatenate(objects), np.concatenate(episode),
                     files, hw, names or ())


def inside(uv: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Rows whose points ``(u0, v0, u1, v1, ...)`` are all finite and inside the image."""
    pts = uv.reshape(len(uv), -1, 2)
    ok = np.isfinite(pts).all(-1) & (pts[..., 0] >= 0) & (pts[..., 0] < hw[1]) & (pts[..., 1] >= 0) & \
        (pts[..., 1] < hw[0])
    return ok.all(-1)


# ------------------------------------------------------------------------------------------------- features
@torch.no_grad()
def token_features(encoder: ImageEncoder, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Frozen tokens ``(N, P, d)`` (float32) of uint8 frames ``(N, H, W, 3)``."""
    out = [encoder(frames[i : i + batch_size]).float().cpu().numpy() for i in range(0, len(frames), batch_size)]
    return np.concatenate(out)


def pixel_features(frames: np.ndarray, size: int, batch_size: int = 512) -> np.ndarray:
    """RGB in [0, 1] resized (antialiased) to ``size x size`` and flattened: ``(N, 3 * size^2)``."""
    out = []
    for i in range(0, len(frames), batch_size):
        x = torch.from_numpy(frames[i : i + batch_size]).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.reshape(len(x), -1).numpy())
    return np.concatenate(out)


def split_episodes(episode: np.ndarray, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (fit, val) over rows, whole episodes held back for validation."""
    eps = np.unique(episode)
    n_val = max(1, int(round(len(eps) * val_fraction)))
    if n_val >= len(eps):
        raise ValueError(f"probe: need at least 2 training episodes to hold some back for validation, found "
                         f"{len(eps)}")
    val_eps = np.random.default_rng(seed).choice(eps, size=n_val, replace=False)
    val = np.isin(episode, val_eps)
    return ~val, val


def evaluate_features(f_train: np.ndarray, f_test: np.ndarray, train: ProbeData, test: ProbeData,
                      cfg: ProbeConfig, seed: int = 0) -> dict[str, dict]:
    """Both probes (hand, objects) on one feature set, fitted on ``train``, scored on ``test``.

    Rows: frames where every target point (hand and objects) is inside the image, so both probes share one
    decomposition per fit."""
    ok_tr, ok_te = usable_rows(train), usable_rows(test)
    fit, val = split_episodes(train.episode, cfg.val_fraction, seed)
    fit, val = fit & ok_tr, val & ok_tr
    y_tr, y_te = np.concatenate([train.hand, train.objects], 1), np.concatenate([test.hand, test.objects], 1)
    nh = train.hand.shape[1]
    groups = {"hand": slice(0, nh), "objects": slice(nh, y_tr.shape[1])}
    models, val_scores = fit_probe(f_train[fit], y_tr[fit], f_train[val], y_tr[val], cfg.alphas, groups)
    out: dict[str, dict] = {}
    for target, cols in groups.items():
        pred = models[target].predict(f_test[ok_te])
        truth = y_te[ok_te][:, cols]
        out[target] = {"r2": round(float(r2_score(truth, pred).mean()), 4),
                       "mean_px_error": round(mean_point_error(truth, pred), 2), "alpha": models[target].alpha,
                       "val_r2": round(val_scores[target][models[target].alpha], 4),
                       "features": int(f_train.shape[1]), "train_frames": int(ok_tr.sum()),
                       "test_frames": int(ok_te.sum())}
    return out


def usable_rows(data: ProbeData) -> np.ndarray:
    return inside(data.hand, data.image_hw) & inside(data.objects, data.image_hw)


def patch_centres(grid: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """Centres ``(P, 2)`` (u, v) of the token grid's patches in the episode frame's pixels (row-major tokens).

    The encoder sees the whole frame (square frames resized to the crop), so patch (i, j) covers
    ``[j, j + 1) * W / gw`` by ``[i, i + 1) * H / gh``."""
    gh, gw = grid
    h, w = image_hw
    jj, ii = np.meshgrid(np.arange(gw), np.arange(gh))
    return np.stack([(jj.reshape(-1) + 0.5) * w / gw, (ii.reshape(-1) + 0.5) * h / gh], axis=1)


def heat_targets(points: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """Points ``(N, 2K)`` -> per-token Gaussian heat ``(N, P, K)`` at the patch centres (std ``sigma`` px)."""
    pts = points.reshape(len(points), 1, -1, 2)
    d2 = ((pts - centres[None, :, None, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2.0 * sigma**2))


def heat_readout(heat: np.ndarray, centres: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Predicted heat ``(N, P, K)`` -> points ``(N, 2K)``: the heat-weighted mean of the patch centres in the 3 x 3
    neighbourhood of each map's arg-max (negative heat clipped to 0)."""
    n, p, k = heat.shape
    gh, gw = grid
    best = heat.argmax(1)  # (N, K)
    bi, bj = best // gw, best % gw
    ii, jj = np.arange(p) // gw, np.arange(p) % gw
    near = (np.abs(ii[None, :, None] - bi[:, None, :]) <= 1) & (np.abs(jj[None, :, None] - bj[:, None, :]) <= 1)
    wts = np.clip(heat, 0.0, None) * near
    wsum = wts.sum(1, keepdims=True)
    wts = np.where(wsum > 0, wts / np.where(wsum > 0, wsum, 1.0), near / near.sum(1, keepdims=True))
    pts = np.einsum("npk,pc->nkc", wts, centres)
    return pts.reshape(n, 2 * k)


def evaluate_token_probe(tok_train: np.ndarray, tok_test: np.ndarray, train: ProbeData, test: ProbeData,
                         grid: tuple[int, int], cfg: ProbeConfig, seed: int = 0) -> dict[str, dict]:
    """Token-level probes: ONE linear map shared by all tokens, token (d) -> Gaussian heat of each target point at
    that token's patch (std = one patch); positions read out from the 8 x 8 heat maps (:func:`heat_readout`).

    This asks whether each token says linearly what lies in (and next to) its patch; it has P times more rows
    than the flattened probe, so it can be fit even though the training data hold only one object layout per
    episode."""
    ok_tr, ok_te = usable_rows(train), usable_rows(test)
    fit, val = split_episodes(train.episode, cfg.val_fraction, seed)
    fit, val = fit & ok_tr, val & ok_tr
    centres = patch_centres(grid, train.image_hw)
    sigma = train.image_hw[1] / grid[1]
    nh = train.hand.shape[1] // 2
    y_tr = heat_targets(np.concatenate([train.hand, train.objects], 1), centres, sigma)
    k = y_tr.shape[-1]
    d = tok_train.shape[-1]
    groups = {"hand": slice(0, nh), "objects": slice(nh, k)}
    models, val_scores = fit_probe(tok_train[fit].reshape(-1, d), y_tr[fit].reshape(-1, k),
                                   tok_train[val].reshape(-1, d), y_tr[val].reshape(-1, k), cfg.alphas, groups)
    out: dict[str, dict] = {}
    truth_all = np.concatenate([test.hand, test.objects], 1)[ok_te]
    for target, cols in groups.items():
        heat = models[target].predict(tok_test[ok_te].reshape(-1, d)).reshape(int(ok_te.sum()), -1,
                                                                               cols.stop - cols.start)
        truth = truth_all[:, 2 * cols.start : 2 * cols.stop]
        pred = heat_readout(heat, centres, grid)
        heat_true = heat_targets(truth, centres, sigma)
        out[target] = {"heat_r2": round(float(r2_score(heat_true.reshape(-1, heat.shape[-1]),
                                                       heat.reshape(-1, heat.shape[-1])).mean()), 4),
                       "mean_px_error": round(mean_point_error(truth, pred), 2), "alpha": models[target].alpha,
                       "val_heat_r2": round(val_scores[target][models[target].alpha], 4), "features": int(d),
                       "sigma_px": round(float(sigma), 2), "train_frames": int(ok_tr.sum()),
                       "test_frames": int(ok_te.sum())}
    return out


def baseline_error(train: ProbeData, test: ProbeData) -> dict[str, float]:
    """Mean pixel error of always predicting the training mean (what R^2 = 0 means in pixels)."""
    res = {}
    for target in ("hand", "objects"):
        y_tr, y_te = getattr(train, target), getattr(test, target)
        ok_tr, ok_te = usable_rows(train), usable_rows(test)
        mean = y_tr[ok_tr].mean(0, keepdims=True)
        res[target] = round(mean_point_error(y_te[ok_te], np.repeat(mean, ok_te.sum(), 0)), 2)
    return res


def run_probe(encoder: ImageEncoder, random_encoder: ImageEncoder | None, train: ProbeData, test: ProbeData,
              cfg: ProbeConfig, log: Callable[[str], None] | None = None) -> dict:
    """The full comparison (trained tokens, random-weight tokens, raw pixels) as a JSON-ready dict."""
    say = log or (lambda s: None)
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    encoders = [("trained", encoder)] + ([("random_init", random_encoder)] if random_encoder is not None else [])
    for name, enc in encoders:
        t0 = time.perf_counter()
        tok_tr = token_features(enc, train.frames, cfg.batch_size)
        tok_te = token_features(enc, test.frames, cfg.batch_size)
        timings[f"{name}_encode_ms_per_frame"] = round(
            (time.perf_counter() - t0) * 1e3 / (len(train.frames) + len(test.frames)), 3)
        say(f"{name}: tokens {tok_tr.shape}")
        results[f"{name}_flat"] = evaluate_features(tok_tr.reshape(len(tok_tr), -1), tok_te.reshape(len(tok_te), -1),
                                                    train, test, cfg)
        say(f"{name}_flat: {json.dumps(results[f'{name}_flat'])}")
        results[f"{name}_pooled"] = evaluate_features(tok_tr.mean(1), tok_te.mean(1), train, test, cfg)
        say(f"{name}_pooled: {json.dumps(results[f'{name}_pooled'])}")
        results[f"{name}_per_token"] = evaluate_token_probe(tok_tr, tok_te, train, test, enc.grid, cfg)
        say(f"{name}_per_token: {json.dumps(results[f'{name}_per_token'])}")
    px_tr = pixel_features(train.frames, cfg.raw_pixels_size)
    px_te = pixel_features(test.frames, cfg.raw_pixels_size)
    results["raw_pixels"] = evaluate_features(px_tr, px_te, train, test, cfg)
    say(f"raw_pixels: {json.dumps(results['raw_pixels'])}")
    return {"results": results, "predict_train_mean_px_error": baseline_error(train, test), "timings": timings,
            "pixel_units": f"pixels of the episodes' {train.image_hw[0]}x{train.image_hw[1]} frames",
            "hand_keypoints_21": list(cfg.hand_keypoints), "objects": list(train.object_names),
            "train_episodes": len(train.files), "test_episodes": len(test.files),
            "probe_config": dataclasses.asdict(cfg)}


# ---------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="linear probes of a dexwm_vit encoder (hand keypoints, objects)")
    p.add_argument("--encoder", required=True, help="trained dexwm_vit folder")
    p.add_argument("--train", action="append", required=True, metavar="DIR", help="episodes the probes are fit on")
    p.add_argument("--test", action="append", required=True, metavar="DIR", help="held-out episodes (scored)")
    p.add_argument("--out", default=None, help="write the JSON report here too")
    p.add_argument("--random-seed", type=int, default=0, help="seed of the random-weight baseline encoder")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default; see train.threads "
                   "in encoder_training.yaml for why 1)")
    p.add_argument("--config", default=ssl_config.CONFIG_FILE)
    args = p.parse_args(argv)
    from dexwm_model.encoders.sim_vit import SimViTEncoder

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg: ProbeConfig = ssl_config.load("probe", args.config)
    t0 = time.perf_counter()
    encoder = SimViTEncoder.from_folder(args.encoder)
    random_encoder = SimViTEncoder.random_init(encoder.arch, seed=args.random_seed)
    train = load_probe_data(args.train, cfg.hand_keypoints, cfg.stride)
    test = load_probe_data(args.test, cfg.hand_keypoints, cfg.stride)
    report = run_probe(encoder, random_encoder, train, test, cfg, log=lambda s: print(s, file=sys.stderr))
    report.update({"encoder": str(Path(args.encoder).resolve()), "train_data": args.train, "test_data": args.test,
                   "seconds": round(time.perf_counter() - t0, 1)})
    text = json.dumps(report, indent=1)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
