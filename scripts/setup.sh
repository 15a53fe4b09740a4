#!/usr/bin/env bash
# Set up gps-ros2 on a bare machine: ROS 2 Jazzy from PyPI wheels, torch (CPU),
# MuJoCo and the rest into .venv, then colcon-build the workspace.
# Idempotent: each step is skipped when its inputs have not changed (stamps in .venv/).
# Source it (". scripts/setup.sh") to get the environment in your shell, or run it.
set -eo pipefail
mkdir -p "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/log"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${GPS_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

req_hash=$(hash_of "$ROOT/requirements.txt")
if [ "$(cat "$VENV/.gps-requirements" 2>/dev/null)" != "$req_hash" ]; then
  echo "[setup] installing pinned requirements (first run: about 2-3 minutes)"
  # pip warns once per missing local index folder of this machine's pip config; that is noise.
  pip install -q -r "$ROOT/requirements.txt" 2>&1 | { grep -v "^WARNING: Location" || true; }
  # The ROS wheels' CMake exports name include dirs of the machine they were built on.
  PYINC=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  NPINC=$(python -c "import numpy; print(numpy.get_include())")
  # (nothing left to fix after the first install: grep's "no match" must not stop the set-up)
  { grep -rl "/opt/python/cp311-cp311" "$VENV/share" --include=*.cmake 2>/dev/null || true; } | xargs -r sed -i \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g"
  echo "$req_hash" > "$VENV/.gps-requirements"
fi

export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
# tf2_msgs (the type of /tf) is not on PyPI: build the one-message shim in third_party/ unless a ROS
# distro (or the venv) already has the real package.
BASE_PATHS=(src)
if [ ! -d "$VENV/share/tf2_msgs" ] && [ ! -d "/opt/ros/${ROS_DISTRO:-jazzy}/share/tf2_msgs" ]; then
  BASE_PATHS+=(third_party)
fi
# Everything colcon installs: interfaces, package metadata, and config/, launch/, rviz/ (share/gps_trainer).
src_hash=$(cd "$ROOT" && { { find src third_party -type f \( -name '*.msg' -o -name '*.srv' -o -name 'CMakeLists.txt' \
  -o -name 'package.xml' -o -name 'setup.py' -o -name 'setup.cfg' \) -not -path '*/test/*';
  find config launch rviz -type f; } | sort | xargs cat; echo "${BASE_PATHS[*]}"; } | sha256sum | cut -c1-16)
if [ "$(cat "$ROOT/install/.gps-build" 2>/dev/null)" != "$src_hash" ]; then
  echo "[setup] colcon build"
  (cd "$ROOT" && colcon build --base-paths "${BASE_PATHS[@]}" --event-handlers console_cohesion- \
     --cmake-args -DBUILD_TESTING=OFF \
     > "$ROOT/log/colcon-last.txt" 2>&1 || { cat "$ROOT/log/colcon-last.txt"; exit 1; })
  echo "$src_hash" > "$ROOT/install/.gps-build"
fi

# shellcheck disable=SC1091
. "$ROOT/install/setup.bash"
# The library code is imported from the source tree so edits take effect without a rebuild.
export PYTHONPATH="$ROOT/src/gps_core:$ROOT/src/gps_sim:$ROOT/src/gps_trainer:$ROOT/src/gps_controller${PYTHONPATH:+:$PYTHONPATH}"
export MUJOCO_GL=${MUJOCO_GL:-egl}
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
export GPS_ROOT="$ROOT"
# ament_python installs console scripts under lib/<package> (where `ros2 run` looks); put the `gps`
# CLI on PATH, since there is no `ros2` command on a bare machine.
export PATH="$ROOT/install/gps_trainer/lib/gps_trainer:$PATH"
