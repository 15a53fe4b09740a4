#!/usr/bin/env bash
# The main job: train on the embedded MuJoCo arm through the ROS 2 nodes and show the result.
# Set-up included (first run: a few minutes). Extra arguments go to `gps demo`.
set -eo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck disable=SC1091
. scripts/setup.sh
exec python -m gps_trainer.cli demo "$@"
