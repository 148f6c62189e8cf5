"""``dexwm data check DIR``: validate every episode file in a folder and report (JSON on stdout)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dexwm_model.data.episode import TMP_SUFFIX, EpisodeFormatError, EpisodeReader, list_episodes


# what every check reads; what only --deep reads (a damaged frames chunk is found only by decompressing it)
CHECKED = ("structure (datasets, dtypes, shapes)", "values (finite, time axis, camera, keypoints, quaternions)",
           "robot (joint names and order, joint limits)", "attributes")
SKIPPED_WITHOUT_DEEP = "frames were not decompressed (only their headers were read); run with --deep to read them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="folder holding episode files (*.h5)")
    parser.add_argument("--deep", action="store_true", help="also decompress every frame (slower)")


def check_directory(directory: str | Path, deep: bool = False) -> dict:
    """Validate all ``*.h5`` episodes in ``directory``; returns counts, totals and one error line per bad file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a folder")
    files = list_episodes(directory)
    ok, frames, size, kinds, errors = 0, 0, 0, {}, []
    for path in files:
        try:
            with EpisodeReader(path, deep=deep) as r:
                ok += 1
                frames += r.num_frames
                size += path.stat().st_size
                kinds[r.meta.episode_kind] = kinds.get(r.meta.episode_kind, 0) + 1
        except EpisodeFormatError as exc:
            errors.append(str(exc))
    return {
        "dir": str(directory), "episodes": len(files), "valid": ok, "invalid": len(errors), "errors": errors,
        "unfinished_tmp": sorted(p.name for p in directory.glob(f"*{TMP_SUFFIX}")), "kinds": kinds,
        "frames": frames, "bytes": size, "bytes_per_frame": round(size / frames, 1) if frames else None,
        "deep": deep, "checked": list(CHECKED) + (["frames decompress"] if deep else []),
        "skipped": [] if deep else [SKIPPED_WITHOUT_DEEP],
    }


def run(args: argparse.Namespace) -> int:
    try:
        report = check_directory(args.dir, deep=args.deep)
    except FileNotFoundError as exc:
        print(f"dexwm data check: {exc}", file=sys.stderr)
        return 2
    for line in report["errors"]:
        print(f"INVALID {line}", file=sys.stderr)
    print(json.dumps(report, indent=2))
    for line in report["skipped"]:
        print(f"dexwm data check: skipped: {line}", file=sys.stderr)
    if report["episodes"] == 0:
        print(f"dexwm data check: no episode files (*.h5) in {args.dir}", file=sys.stderr)
        return 1
    return 0 if report["invalid"] == 0 else 1
