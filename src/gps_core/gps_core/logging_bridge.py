"""Python `logging` -> a ROS node's logger (and so the console and /rosout), for the library code the
nodes run (trajectory optimization, storage, policies log through `logging.getLogger(__name__)`).

Each node's main calls install_ros_logging(node) once. rclpy-free: the node is only used through its
get_logger(), so this module imports nothing from ROS.
"""

from __future__ import annotations

import logging


class RosLogHandler(logging.Handler):
    """Forwards each record to the node's logger at the matching severity, named after its Python logger
    (CRITICAL -> fatal, ERROR -> error, WARNING -> warning, INFO -> info, below -> debug)."""

    def __init__(self, node, level: int = logging.INFO):
        super().__init__(level)
        self.node_logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {self.format(record)}"
            # rclpy keeps one logging context per call site (file, line, bytecode offset) and refuses
            # another severity from a site that logged before ("Logger severity cannot be changed
            # between calls"), so every severity has a call of its own here.
            level, log = record.levelno, self.node_logger
            if level >= logging.CRITICAL:
                log.fatal(text)
            elif level >= logging.ERROR:
                log.error(text)
            elif level >= logging.WARNING:
                log.warning(text)
            elif level >= logging.INFO:
                log.info(text)
            else:
                log.debug(text)
        except Exception:  # a log line must never take the node down
            self.handleError(record)


def install_ros_logging(node, level: int = logging.INFO) -> RosLogHandler:
    """Route the root Python logger to `node`'s ROS logger (replacing an earlier RosLogHandler)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, RosLogHandler):
            root.removeHandler(h)
    handler = RosLogHandler(node, level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return handler
