"""The controller's safety layer: plain numpy, no ROS, always on.

Every torque vector the controller publishes goes through :meth:`SafetyLayer.filter`:

1. NaN/Inf anywhere -> all-zero torque and a fault ("policy output non-finite ..."): the trial aborts.
2. Joint-limit guard: within ``joint_limit_margin`` of a limit (or beyond it), a torque component
   pushing the joint further out is zeroed (pulling back in is allowed).
3. Clamp to the effort limits.

So the published command is always finite and inside [-effort_limit, effort_limit].

:meth:`SafetyLayer.check_fresh` is the stale-data watchdog: joint states (and the camera, when the
trial uses images) older than ``stale_timeout`` seconds -> a fault ("joint states stale ...",
"camera stale ...").  :class:`DeadlineCounter` counts control periods whose command came late.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SafetyResult:
    """Output of :meth:`SafetyLayer.filter`: the torque to publish and, on a fault, why."""

    torque: np.ndarray
    fault: str = ""  # non-empty: the trial must abort (the torque is then all zeros)
    clamped: bool = False  # some component exceeded its effort limit
    limited_joints: tuple[int, ...] = ()  # joints whose torque the joint-limit guard zeroed


class SafetyLayer:
    """Effort clamp, NaN/Inf guard, joint-limit guard and stale-data watchdog for ``n`` joints.

    ``effort_limits`` (n,) > 0; ``joint_lower``/``joint_upper`` (n,) may be -inf/inf (continuous
    joints); ``joint_limit_margin`` in rad; ``stale_timeout`` in seconds.
    """

    def __init__(self, effort_limits, joint_lower=None, joint_upper=None, joint_limit_margin: float = 0.05,
                 stale_timeout: float = 0.1, joint_names: tuple[str, ...] | None = None):
        self.effort_limits = np.asarray(effort_limits, dtype=np.float64).reshape(-1)
        n = self.effort_limits.size
        if n == 0 or not np.all(np.isfinite(self.effort_limits)) or np.any(self.effort_limits <= 0):
            raise ValueError(f"effort_limits must be finite and > 0, got {self.effort_limits.tolist()}")
        self.joint_lower = np.full(n, -np.inf) if joint_lower is None else np.asarray(joint_lower, np.float64)
        self.joint_upper = np.full(n, np.inf) if joint_upper is None else np.asarray(joint_upper, np.float64)
        if self.joint_lower.shape != (n,) or self.joint_upper.shape != (n,):
            raise ValueError(f"joint limits must have {n} entries each")
        if np.any(np.isnan(self.joint_lower)) or np.any(np.isnan(self.joint_upper)):
            raise ValueError("joint limits must not be NaN (use +-inf for continuous joints)")
        if np.any(self.joint_lower >= self.joint_upper):
            raise ValueError("every joint's lower limit must be below its upper limit")
        if not (np.isfinite(joint_limit_margin) and joint_limit_margin >= 0):
            raise ValueError(f"joint_limit_margin must be finite and >= 0, got {joint_limit_margin}")
        if not (np.isfinite(stale_timeout) and stale_timeout > 0):
            raise ValueError(f"stale_timeout must be finite and > 0, got {stale_timeout}")
        self.margin = float(joint_limit_margin)
        self.stale_timeout = float(stale_timeout)
        self.joint_names = tuple(joint_names) if joint_names else tuple(f"joint{i}" for i in range(n))
        self.zero = np.zeros(n)

    @property
    def num_joints(self) -> int:
        return self.effort_limits.size

    def filter(self, torque, q=None) -> SafetyResult:
        """The torque to publish for a policy's output ``torque`` at joint angles ``q`` (None: no guard)."""
        u = np.asarray(torque, dtype=np.float64).reshape(-1)
        if u.shape != (self.num_joints,):
            return SafetyResult(self.zero.copy(), f"policy output has {u.size} torques, expected {self.num_joints}")
        if not np.all(np.isfinite(u)):
            bad = [self.joint_names[i] for i in np.flatnonzero(~np.isfinite(u))]
            return SafetyResult(self.zero.copy(), f"policy output non-finite (NaN/Inf) torque for {', '.join(bad)}")
        u = u.copy()
        limited: tuple[int, ...] = ()
        if q is not None:
            q = np.asarray(q, dtype=np.float64).reshape(-1)
            if q.shape != (self.num_joints,) or not np.all(np.isfinite(q)):
                return SafetyResult(self.zero.copy(), "joint angles non-finite or of the wrong size")
            high = (q >= self.joint_upper - self.margin) & (u > 0)
            low = (q <= self.joint_lower + self.margin) & (u < 0)
            out = high | low
            u[out] = 0.0
            limited = tuple(int(i) for i in np.flatnonzero(out))
        clamped = bool(np.any(np.abs(u) > self.effort_limits))
        u = np.clip(u, -self.effort_limits, self.effort_limits)
        return SafetyResult(u, "", clamped, limited)

    def check_fresh(self, now: float, joint_stamp: float | None, image_stamp: float | None = None,
                    need_image: bool = False) -> str:
        """'' when the data is fresh at time ``now``; otherwise the abort reason.

        Stamps are receive times on the same clock as ``now``; None means nothing received yet.
        """
        if joint_stamp is None:
            return "joint states stale: none received"
        age = now - joint_stamp
        if age > self.stale_timeout:
            return f"joint states stale: last one {age * 1e3:.0f} ms ago (timeout {self.stale_timeout * 1e3:.0f} ms)"
        if need_image:
            if image_stamp is None:
                return "camera stale: no image received"
            age = now - image_stamp
            if age > self.stale_timeout:
                return f"camera stale: last image {age * 1e3:.0f} ms ago (timeout {self.stale_timeout * 1e3:.0f} ms)"
        return ""


class DeadlineCounter:
    """Counts late commands: a command is late when it is published more than one period after its
    observation arrived (the computation overran the period), or, in a periodic (timer) loop, when
    more than ``1 + slack`` periods passed since the previous command (a tick was skipped)."""

    def __init__(self, period: float, slack: float = 0.5):
        if not period > 0 or not slack >= 0:
            raise ValueError("period must be > 0 and slack >= 0")
        self.period = float(period)
        self.slack = float(slack)
        self.misses = 0
        self.consecutive = 0  # late commands in a row (K of them abort a trial)
        self._last: float | None = None

    def reset(self) -> None:
        self.misses = 0
        self.consecutive = 0
        self._last = None

    def record(self, publish_time: float, observation_time: float | None = None, periodic: bool = True) -> bool:
        """Record a command published at ``publish_time``; returns True when it was late."""
        late = False
        if observation_time is not None and publish_time - observation_time > self.period:
            late = True
        if periodic and self._last is not None and publish_time - self._last > (1.0 + self.slack) * self.period:
            late = True
        self._last = publish_time
        self.misses += int(late)
        self.consecutive = self.consecutive + 1 if late else 0
        return late
