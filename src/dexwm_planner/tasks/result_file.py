"""The result file of a task run outside the benchmark (the planner node's start-up task, ``dexwm launch``):
one JSON object, written atomically (a temporary file renamed over it)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def task_result_record(task: str, success: bool, reason: str, message: str, steps: int, duration_s: float,
                       final_cost: float, metrics: dict[str, float]) -> dict:
    """The file's fields: task, success, reason, message, steps, duration_s, final_cost (None: not finite),
    metrics."""
    return {"task": task, "success": bool(success), "reason": reason, "message": message, "steps": int(steps),
            "duration_s": round(duration_s, 3),
            "final_cost": None if not math.isfinite(final_cost) else round(float(final_cost), 6),
            "metrics": {n: float(v) for n, v in metrics.items()}}


def write_result_file(path: str | Path, record: dict) -> Path:
    """Write ``record`` to ``path`` (its folder created); ``OSError`` when that fails."""
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out)
    return out
