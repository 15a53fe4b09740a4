"""Session-wide test settings: keep DDS traffic of a test run to itself."""

import os
import random

import pytest

# A test-session ROS_DOMAIN_ID and localhost-only discovery, so parallel runs never cross.
# Child processes started by tests inherit these.
if "GPS_TEST_DOMAIN_ID" not in os.environ:
    os.environ["GPS_TEST_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_DOMAIN_ID"] = os.environ["GPS_TEST_DOMAIN_ID"]
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
