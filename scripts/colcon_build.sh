#!/usr/bin/env bash
# Build this checkout in a ROS 2 colcon workspace: run from the workspace root with the clone in src/dexwm
# (or pass its path first); further arguments go to `colcon build`.
#   cd ~/ws && src/dexwm/scripts/colcon_build.sh --symlink-install
# Builds dexwm (ament_python) and dexwm_interfaces (ament_cmake); our tf2_msgs only when no tf2_msgs is found
# (a full ROS install has the real one, which ours must never shadow).
set -euo pipefail
src="src/dexwm"
if [ $# -gt 0 ] && [ -f "$1/package.xml" ]; then src="$1"; shift; fi
[ -f "$src/package.xml" ] || { echo "colcon_build.sh: no package.xml in $src (run from the workspace root)" >&2; exit 2; }
paths=("$src" "$src/src/dexwm_interfaces")
if ! python3 -c "import tf2_msgs.msg" 2>/dev/null; then
  paths+=("$src/src/tf2_msgs")
fi
exec colcon build --base-paths "${paths[@]}" "$@"
