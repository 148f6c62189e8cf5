"""Rewrite the Python include paths that the ROS message wheels' CMake files hard-code (the wheel build
machine's ``/opt/python/...``) to this interpreter's, so interface packages can be built against the venv."""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy


def main() -> int:
    prefix = Path(sys.prefix)
    py_inc = sysconfig.get_paths()["include"]
    np_inc = numpy.get_include()
    pattern_np = re.compile(r"/opt/python/cp\d+-cp\d+[^;\"\s]*?/numpy/(?:_core|core)/include")
    pattern_py = re.compile(r"/opt/python/cp\d+-cp\d+/include/python3\.\d+")
    changed = 0
    for path in prefix.rglob("*.cmake"):
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if "/opt/python/" not in text:
            continue
        new = pattern_py.sub(py_inc, pattern_np.sub(np_inc, text))
        if new != text:
            path.write_text(new)
            changed += 1
    print(f"[setup] repaired Python include paths in {changed} CMake file(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
