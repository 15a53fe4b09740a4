"""Spinning a node so that no message can end it.

An exception out of a callback ends ``rclpy.spin`` and with it the node. Our own callbacks check what they
receive, but not every callback is ours: rclpy's time source converts each /clock message itself and
raised on one with negative seconds, which took gps_tf and the controller down (and the controller's main
reported it as an invalid configuration). Whatever a callback raises is logged in one line, naming the
exception and where it was raised, and the node keeps serving.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rclpy.executors import ExternalShutdownException

__all__ = ["spin_guarded", "spin_once_guarded"]


def spin_once_guarded(executor: Any, logger: Any, timeout_sec: float = 0.1) -> bool:
    """``executor.spin_once``; an exception from a callback is logged (at most once a second) and
    swallowed. Shutdown (ExternalShutdownException, KeyboardInterrupt, or any exception once the context is
    shut down, raised as ExternalShutdownException) still ends the caller's loop.
    Returns False when a callback raised."""
    try:
        executor.spin_once(timeout_sec=timeout_sec)
    except (KeyboardInterrupt, ExternalShutdownException):
        raise
    except Exception as exc:  # noqa: BLE001 - no message may end the node
        if not executor.context.ok():  # shutting down: what failed was the teardown racing a callback
            raise ExternalShutdownException() from exc
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
        logger.error(f"a callback raised {type(exc).__name__}: {exc}{where}; the node goes on",
                     throttle_duration_sec=1.0)
        return False
    return True


def spin_guarded(executor: Any, logger: Any, should_stop: Callable[[], bool] = lambda: False,
                 timeout_sec: float = 0.1) -> None:
    """Spin ``executor`` until its context or the executor itself shuts down or ``should_stop()``, through
    callback exceptions (as ``Executor.spin``, whose loop tests the same private flag)."""
    try:
        while executor.context.ok() and not getattr(executor, "_is_shutdown", False) and not should_stop():
            spin_once_guarded(executor, logger, timeout_sec)
    except ExternalShutdownException:
        pass
