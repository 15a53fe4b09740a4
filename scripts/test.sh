#!/usr/bin/env bash
# The test suite, set-up included: lint (ruff), then every test (unit, numerical, learning,
# real DDS between processes). Extra arguments go to pytest, e.g. `-m "not slow"`.
set -eo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck disable=SC1091
. scripts/setup.sh
echo "[test] ruff"
ruff check .
echo "[test] pytest"
exec python -m pytest -q "$@"
