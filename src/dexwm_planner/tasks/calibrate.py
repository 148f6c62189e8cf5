"""Calibrate the cheap grasp score against simulated outcomes (how ``grasp.score_weights`` were obtained).

``python -m dexwm_planner.tasks.calibrate --seeds 20:26 --per-object 30 --out survey.jsonl`` samples candidates
uniformly from every object's ranked list, verifies each in simulation (the same lift the demonstrator runs),
records its score terms and the outcome, then fits a logistic regression of success on the terms
(L2-regularised, plain gradient descent) and prints the weights as JSON, with the per-object ROC AUC of the
fitted and of the configured weights (leave-one-seed-out for the fitted ones).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

TERMS = ("thumb", "fingers", "antipodal", "off_axis", "contact_height", "table", "palm_gap", "palm_gap_tall")


def survey(seeds: range, per_object: int, out_path: str | None = None) -> list[dict]:
    from dexwm_hw.sim.robot import PandaAllegroSim
    from dexwm_planner.tasks.grasp import GraspSynthesizer

    sim = PandaAllegroSim(render=False)
    gs = GraspSynthesizer(sim)
    records = []
    out = open(out_path, "w") if out_path else None
    for seed in seeds:
        for name in sim.object_names:
            sim.reset(seed)
            ranked = gs.rank(name, np.random.default_rng(seed))
            rng = np.random.default_rng([seed, 7])
            for i in rng.choice(len(ranked), size=min(per_object, len(ranked)), replace=False):
                c = ranked[int(i)]
                built = gs.lift_waypoints(c, name)
                if built is None:
                    continue
                ok, rise = gs.verify_lift(built[0], name, built[2])
                f = {k: np.array([v]) for k, v in c.detail.items()}
                terms = {k: float(v[0]) for k, v in gs.score_terms(f).items()}
                rec = {"seed": seed, "object": name, "ok": bool(ok), "rise": rise, **c.as_dict(), "terms": terms}
                records.append(rec)
                if out:
                    out.write(json.dumps(rec) + "\n")
                    out.flush()
    if out:
        out.close()
    return records


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 4000,
                 lr: float = 0.1) -> np.ndarray:
    """Weights (last entry: bias) of an L2-regularised logistic regression."""
    Xb = np.c_[X, np.ones(len(X))]
    w = np.zeros(Xb.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(Xb @ w)))
        w -= lr * (Xb.T @ (p - y) + l2 * np.r_[w[:-1], 0.0]) / len(y)
    return w


def auc(score: np.ndarray, y: np.ndarray) -> float:
    y = y.astype(bool)
    if y.all() or not y.any():
        return float("nan")
    pos, neg = score[y], score[~y]
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="20:26", help="scene seeds, START:STOP")
    ap.add_argument("--per-object", type=int, default=30)
    ap.add_argument("--out", help="also write the survey records (JSON lines)")
    ap.add_argument("--records", nargs="*", help="fit on existing survey files instead of running a survey")
    args = ap.parse_args(argv)
    if args.records:
        records = [json.loads(line) for p in args.records for line in open(p) if line.strip()]
    else:
        a, b = (int(v) for v in args.seeds.split(":"))
        records = survey(range(a, b), args.per_object, args.out)
    if not records:
        print("no survey records", file=sys.stderr)
        return 1
    X = np.array([[r["terms"][k] for k in TERMS] for r in records])
    y = np.array([r["ok"] for r in records], dtype=np.float64)
    seeds = np.array([r["seed"] for r in records])
    objects = np.array([r["object"] for r in records])
    w = fit_logistic(X, y)
    from dexwm_planner.tasks.config import load_tasks_config

    current = np.array([load_tasks_config().grasp.score_weights.get(k, 0.0) for k in TERMS])
    cv: dict[str, list[float]] = {}
    for s in np.unique(seeds):
        ws = fit_logistic(X[seeds != s], y[seeds != s])
        for o in np.unique(objects):
            m = (seeds == s) & (objects == o)
            if m.any():
                cv.setdefault(str(o), []).append(auc(X[m] @ ws[:-1], y[m]))
    result = {
        "records": len(records), "success_rate": round(float(y.mean()), 3),
        "weights": {k: round(float(v), 2) for k, v in zip(TERMS, w[:-1])},
        "auc_fitted_leave_one_seed_out": {k: round(float(np.nanmean(v)), 3) for k, v in cv.items()},
        "auc_configured": {str(o): round(auc(X[objects == o] @ current, y[objects == o]), 3)
                           for o in np.unique(objects)},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
