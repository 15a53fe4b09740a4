"""Spinning a node so that no message can end it.

An exception out of a callback ends ``rclpy.spin`` and with it the node. Our own callbacks check what they
receive, but not every callback is ours: rclpy's time source converts each /clock message itself and
raised on one with negative seconds, which took gps_tf and the controller down (and the controller's main
reported it as an invalid configuration). Whatever a callback raises is logged in one line, naming the
exception and where it was raised, and the node keeps serving. Plain Python (gps_core imports no rclpy):
the executor and the logger are rclpy's, passed in.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["shutting_down", "spin_guarded", "spin_once_guarded"]


def shutting_down(executor: Any) -> bool:
    """True once the executor's context or the executor itself is shut down (``Executor.spin``'s own
    test, whose second half is a private flag)."""
    return not executor.context.ok() or bool(getattr(executor, "_is_shutdown", False))


def spin_once_guarded(executor: Any, logger: Any, timeout_sec: float = 0.1) -> bool:
    """``executor.spin_once``; an exception from a callback is logged (at most once a second) and swallowed.
    Returns False when something was raised: while shutting down (rclpy's ExternalShutdownException, or the
    teardown racing a callback) that is the end of spinning, and nothing is logged. KeyboardInterrupt passes."""
    try:
        executor.spin_once(timeout_sec=timeout_sec)
    except Exception as exc:  # noqa: BLE001 - no message may end the node
        if shutting_down(executor):
            return False
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
        logger.error(f"a callback raised {type(exc).__name__}: {exc}{where}; the node goes on",
                     throttle_duration_sec=1.0)
        return False
    return True


def spin_guarded(executor: Any, logger: Any, should_stop: Callable[[], bool] = lambda: False,
                 timeout_sec: float = 0.1) -> None:
    """Spin ``executor`` until it or its context shuts down or ``should_stop()``, through callback exceptions."""
    while not shutting_down(executor) and not should_stop():
        spin_once_guarded(executor, logger, timeout_sec)
