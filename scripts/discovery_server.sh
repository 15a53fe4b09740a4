#!/usr/bin/env bash
# A Fast DDS discovery server, for networks that block multicast (docs/networking.md):
#
#   bash scripts/discovery_server.sh [ADDRESS] [PORT] [SERVER_ID]    # defaults: 0.0.0.0 11811 0
#
# then every host of the stack gives its nodes ROS_DISCOVERY_SERVER=<this host's address>:PORT (the
# launch file's discovery_server:= argument does it for the nodes it starts). Runs in the foreground
# (Ctrl-C stops it).
#
# A ROS 2 distro has `fastdds discovery`; the PyPI wheels ship eProsima's `fast-discovery-server`
# executable in the venv's bin/ without the library path it needs (libfastrtps in the venv's lib/,
# its OpenSSL and TinyXML2 in site-packages/ros_fastrtps.libs), so this script supplies it.
set -eo pipefail
ADDRESS=${1:-0.0.0.0}
PORT=${2:-11811}
SERVER_ID=${3:-0}
VENV=${GPS_VENV:-${VIRTUAL_ENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}}
if [ -x "$VENV/bin/fast-discovery-server" ]; then
  LIBS="$VENV/lib"
  for d in "$VENV"/lib/python3*/site-packages/ros_fastrtps.libs; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
  LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$VENV/bin/fast-discovery-server" \
    -i "$SERVER_ID" -l "$ADDRESS" -p "$PORT"
elif command -v fastdds >/dev/null; then
  exec fastdds discovery -i "$SERVER_ID" -l "$ADDRESS" -p "$PORT"
else
  echo "[discovery_server] no fast-discovery-server in $VENV/bin and no fastdds on PATH" >&2
  exit 1
fi
