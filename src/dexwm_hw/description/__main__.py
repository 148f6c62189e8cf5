"""``python -m dexwm_hw.description [--output PATH] [--check]``: (re)write or check ``urdf/panda_allegro.urdf``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def main(argv: list[str] | None = None) -> int:
    from dexwm_hw.description.generate import URDF_FILE, build_urdf, write_urdf

    default = Path(__file__).resolve().parents[3] / "urdf" / URDF_FILE
    parser = argparse.ArgumentParser(prog="python -m dexwm_hw.description", description=__doc__)
    parser.add_argument("--output", type=Path, default=default, help=f"URDF file to write (default {default})")
    parser.add_argument("--check", action="store_true",
                        help="do not write: exit 1 if the file differs from what the current scene generates")
    args = parser.parse_args(argv)
    if args.check:
        current = args.output.read_text() if args.output.is_file() else None
        if current != build_urdf():
            print(f"{args.output} is out of date with the simulator's scene: run python -m dexwm_hw.description",
                  file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    print(f"wrote {write_urdf(args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
