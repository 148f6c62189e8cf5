"""Writing an open-loop evaluation: ``eval.json`` and PNG plots (model vs the "nothing moves" baseline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

PLOTS = ("embedding_error.png", "pck.png")


def _series(report: dict, method: str, getter) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for s in report["steps"]:
        v = getter(s[method])
        if v is not None:
            xs.append(s["time_s"])
            ys.append(v)
    return xs, ys


def non_finite_metrics(report: dict) -> list[str]:
    """Names of the model's summary metrics that are missing or were not finite (written as null)."""
    model = (report.get("summary") or {}).get("model") or {}
    names = [k for k in ("latent_mse_mean", "latent_mse_final", "cosine_final") if model.get(k) is None]
    pck = model.get("pck_final") or {}
    names += [f"pck_final.{k}" for k, v in pck.items() if v is None]
    return names if model else ["summary.model"]


def write_report(report: dict, out: str | os.PathLike) -> list[Path]:
    """``out/eval.json`` plus the plots; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / "eval.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, allow_nan=False))
    os.replace(tmp, path)
    written.append(path)

    styles = {"model": dict(color="tab:blue", marker="o", ms=3), "baseline": dict(color="tab:gray", ls="--")}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, style in styles.items():
        axes[0].plot(*_series(report, method, lambda m: m["latent_mse"]), label=method, **style)
        axes[1].plot(*_series(report, method, lambda m: m["cosine"]), label=method, **style)
    axes[0].set(title="embedding error (latent MSE)", xlabel="prediction horizon [s]", ylabel="MSE")
    axes[1].set(title="cosine similarity to the true latent", xlabel="prediction horizon [s]", ylabel="cosine")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / PLOTS[0], dpi=110)
    plt.close(fig)
    written.append(out / PLOTS[0])

    thresholds = [f"{float(t):g}" for t in report["pck_thresholds_px"]]
    fig, axes = plt.subplots(1, len(thresholds), figsize=(3.2 * len(thresholds), 3.4), squeeze=False)
    for ax, thr in zip(axes[0], thresholds):
        for method, style in styles.items():
            ax.plot(*_series(report, method, lambda m, t=thr: m["pck"][t]), label=method, **style)
        ax.plot(*_series(report, "true_readout", lambda m, t=thr: m["pck"][t]), label="head on true latent",
                color="tab:green", ls=":")
        ax.set(title=f"PCK@{thr} px", xlabel="prediction horizon [s]", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of keypoints")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / PLOTS[1], dpi=110)
    plt.close(fig)
    written.append(out / PLOTS[1])
    return written
