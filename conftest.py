"""Session-wide test settings: keep DDS traffic of a test run to itself."""

import os
import random

import pytest

# A test-session ROS_DOMAIN_ID and localhost-only discovery, so parallel runs never cross.
# Child processes started by tests inherit these.
if "GPS_TEST_DOMAIN_ID" not in os.environ:
    os.environ["GPS_TEST_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_DOMAIN_ID"] = os.environ["GPS_TEST_DOMAIN_ID"]


def xdist_worker_domain(session_domain: int, worker: str, workers: int) -> int:
    """The ROS domain of pytest-xdist worker ``worker`` ("gw0", "gw1", ...) of ``workers``: the workers run side
    by side, so each has a domain of its own, spaced so that no rig's neighbouring domain
    (controller_rig.subprocess_env: session domain + offset, modulo 230) is another worker's; with 2 workers
    they are 115 apart (tests/test_test_domains.py checks every rig offset against that)."""
    return (session_domain + int(worker.removeprefix("gw")) * (230 // max(1, workers))) % 230


if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw"):  # scripts/test.sh runs the suite on both cores
    os.environ["ROS_DOMAIN_ID"] = str(xdist_worker_domain(int(os.environ["GPS_TEST_DOMAIN_ID"]),
                                                          os.environ["PYTEST_XDIST_WORKER"],
                                                          int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture
def ros_env() -> dict:
    """Environment for node/peer subprocesses: this session's domain, and the source tree on PYTHONPATH."""
    here = os.path.dirname(os.path.abspath(__file__))
    src = [os.path.join(here, "src", p) for p in ("gps_core", "gps_sim", "gps_trainer", "gps_controller")]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(src + [env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env
