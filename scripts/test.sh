#!/usr/bin/env bash
# The test suite, set-up included: lint (ruff), then every test (unit, numerical, learning,
# real DDS between processes). Extra arguments go to pytest, e.g. `-m "not slow"`.
set -eo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck disable=SC1091
. scripts/setup.sh
# The upstream `ros2` CLI and `ros2 launch` (a kit beside the repository, never copied into it): the
# launch and installed-package tests drive the real tools. GPS_ROS2_TOOLS overrides where it is.
KIT=${GPS_ROS2_TOOLS:-}
if [ -z "$KIT" ]; then
  for cand in "$ROOT/../shared/ros2-tools" "$ROOT/shared/ros2-tools"; do
    if [ -f "$cand/install.sh" ]; then KIT=$(cd "$cand" && pwd); break; fi
  done
fi
if [ -n "$KIT" ] && [ -f "$KIT/install.sh" ]; then
  echo "[test] ros2-tools kit: $KIT"
  kit_env=$(bash "$KIT/install.sh")
  eval "$kit_env"
else
  export GPS_ROS2_TOOLS_MISSING="no ros2-tools kit (no install.sh in ${GPS_ROS2_TOOLS:-$ROOT/../shared/ros2-tools or $ROOT/shared/ros2-tools})"
  echo "[test] $GPS_ROS2_TOOLS_MISSING: the ros2 launch / ros2 CLI tests are skipped"
fi
echo "[test] ruff"
ruff check .
echo "[test] pytest"
# GPS_TEST_WORKERS=2 runs the files on both cores (pytest-xdist; each file whole on one worker, each worker on a
# ROS domain of its own, conftest.py): 16 min instead of 28, but with two workers side by side the `ros2 launch`
# stacks of the launch and network-namespace tests did not stop within their 30 s on Ctrl-C (8 failures, each
# passing alone), so the default is still one test at a time.
exec python -m pytest -q -n "${GPS_TEST_WORKERS:-0}" --dist loadfile "$@"
