#!/usr/bin/env bash
# Set up franka-sim (a MuJoCo server speaking the real Franka network protocol) for the direct libfranka path's
# tests and for trying that path without a robot. franka-sim pins numpy 1.26, which the project venv (numpy 2,
# ROS wheels) cannot hold, so it lives in its own venv: $FRANKA_SIM_VENV (default .venv-franka-sim, git-ignored).
# The client side, pylibfranka (libfranka's official bindings), goes into the project venv ($DEXWM_VENV or .venv).
# Idempotent: a second run only checks the stamp and exits. Prints the franka-sim venv's python on success.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIM_VENV="${FRANKA_SIM_VENV:-$ROOT/.venv-franka-sim}"
PROJECT_VENV="${DEXWM_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
FRANKA_SIM_VERSION="1.1.7"      # speaks robot server protocol 10 (libfranka >= 0.18)
PYLIBFRANKA_VERSION="0.21.3"
STAMP="$SIM_VENV/.dexwm-franka-sim"
log() { printf '[setup_franka_sim] %s\n' "$*" >&2; }

want="franka-sim==$FRANKA_SIM_VERSION"
if [ ! -x "$SIM_VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "creating $SIM_VENV with $want"
  "$PY" -m venv "$SIM_VENV"
  "$SIM_VENV/bin/python" -m pip install -q --disable-pip-version-check "$want"
  "$SIM_VENV/bin/python" -c "import franka_sim.franka_sim_server" >/dev/null
  echo "$want" > "$STAMP"
fi

if [ -x "$PROJECT_VENV/bin/python" ] && ! "$PROJECT_VENV/bin/python" -c "import pylibfranka" 2>/dev/null; then
  log "installing pylibfranka==$PYLIBFRANKA_VERSION into $PROJECT_VENV"
  "$PROJECT_VENV/bin/python" -m pip install -q --disable-pip-version-check "pylibfranka==$PYLIBFRANKA_VERSION"
fi
echo "$SIM_VENV/bin/python"
