"""Python `logging` -> a ROS node's logger (and so the console and /rosout), for the library code the
nodes run (trajectory optimization, storage, policies log through `logging.getLogger(__name__)`).

Each node's main calls install_ros_logging(node) once. rclpy-free: the node is only used through its
get_logger(), so this module imports nothing from ROS.
"""

from __future__ import annotations

import logging

_LEVELS = ((logging.ERROR, "error"), (logging.WARNING, "warning"), (logging.INFO, "info"))


class RosLogHandler(logging.Handler):
    """Forwards each record to the node's logger at the matching severity, named after its Python logger."""

    def __init__(self, node, level: int = logging.INFO):
        super().__init__(level)
        self.node_logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {self.format(record)}"
            method = "debug"
            for threshold, name in _LEVELS:
                if record.levelno >= threshold:
                    method = name
                    break
            getattr(self.node_logger, method)(text)
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
