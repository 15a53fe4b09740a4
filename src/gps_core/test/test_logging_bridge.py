"""Python logging reaches a ROS node's logger, and through it /rosout (real rclpy)."""

import logging
import time

import pytest

from gps_core.logging_bridge import RosLogHandler, install_ros_logging


class _Recorder:
    def __init__(self):
        self.lines = []

    def get_logger(self):
        return self

    def __getattr__(self, level):
        return lambda text: self.lines.append((level, text))


def test_levels_and_names_forwarded():
    node = _Recorder()
    install_ros_logging(node)
    try:
        log = logging.getLogger("gps_trainer.traj_opt")
        log.info("eta %d", 3)
        log.warning("step clipped")
        log.error("failed")
        log.debug("hidden")
    finally:
        for h in list(logging.getLogger().handlers):
            if isinstance(h, RosLogHandler):
                logging.getLogger().removeHandler(h)
    assert node.lines == [("info", "[gps_trainer.traj_opt] eta 3"), ("warning", "[gps_trainer.traj_opt] step clipped"),
                          ("error", "[gps_trainer.traj_opt] failed")]


def test_installing_twice_keeps_one_handler():
    install_ros_logging(_Recorder())
    install_ros_logging(_Recorder())
    try:
        assert sum(isinstance(h, RosLogHandler) for h in logging.getLogger().handlers) == 1
    finally:
        for h in list(logging.getLogger().handlers):
            if isinstance(h, RosLogHandler):
                logging.getLogger().removeHandler(h)


@pytest.mark.ros
def test_library_log_line_reaches_rosout():
    import rclpy
    from rcl_interfaces.msg import Log

    rclpy.init()
    node = rclpy.create_node("logging_bridge_test")
    listener = rclpy.create_node("rosout_listener")
    got = []
    listener.create_subscription(Log, "/rosout", lambda m: got.append(m), 100)
    handler = install_ros_logging(node)
    try:
        deadline = time.monotonic() + 10
        while not any("bridge check" in m.msg for m in got) and time.monotonic() < deadline:
            logging.getLogger("gps_trainer.storage").warning("bridge check")
            rclpy.spin_once(listener, timeout_sec=0.3)
        hits = [m for m in got if "bridge check" in m.msg]
        assert hits and hits[0].name == "logging_bridge_test" and hits[0].level == Log.WARN
    finally:
        logging.getLogger().removeHandler(handler)
        node.destroy_node()
        listener.destroy_node()
        rclpy.try_shutdown()
