"""Session-wide test settings: keep DDS traffic of a test run to itself."""

import os
import random

# A test-session ROS_DOMAIN_ID and localhost-only discovery, so parallel runs never cross.
# Child processes started by tests inherit these.
if "GPS_TEST_DOMAIN_ID" not in os.environ:
    os.environ["GPS_TEST_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ["ROS_DOMAIN_ID"] = os.environ["GPS_TEST_DOMAIN_ID"]
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")
