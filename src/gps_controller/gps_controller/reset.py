"""Moving the robot to a condition's initial state before a trial (plain Python, no rclpy).

Modes: ``sim_service`` asks the simulation (gps_sim/reset) and waits for a joint state at the reset
configuration (and the new target pose); ``pd`` moves a real robot with a joint-space PD law whose
every torque goes through the safety layer; ``none`` only waits for a first joint state.
Waits use the steady clock: under sim time a lockstep simulation's clock does not move until the
first command, so ROS-time waits would never end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from gps_controller.params import ControllerParams
from gps_controller.safety import SafetyLayer
from gps_controller.trial import Sensors

#: call_reset(condition, condition_set, seed, timeout_s) -> (error or '', joint positions after the reset)
ResetCall = Callable[[int, str, int, float], tuple[str, np.ndarray | None]]


class Resetter:
    def __init__(self, params: ControllerParams, sensors: Sensors, safety: SafetyLayer,
                 publish: Callable[[np.ndarray], None], call_reset: ResetCall,
                 alive: Callable[[], bool] = lambda: True):
        self.p, self.sensors, self.safety = params, sensors, safety
        self.publish, self.call_reset, self.alive = publish, call_reset, alive

    def reset(self, condition: int, condition_set: str, seed: int, q0: np.ndarray) -> str:
        """'' when the robot is at the condition's initial state, else the reason."""
        mode, s = self.p.reset_mode, self.sensors
        if mode == "none":  # right after start-up the subscription may not have matched the robot yet
            end = time.monotonic() + self.p.reset_timeout
            while s.joint_rx is None and time.monotonic() < end and self.alive():
                time.sleep(0.01)
            return "" if s.joint_rx is not None else "no joint state received"
        if mode == "pd":
            return self.pd_reset(q0)
        seq_before, target_before = s.joint_seq, s.target_seq
        error, q_reset = self.call_reset(condition, condition_set, seed, self.p.reset_timeout)
        if error:
            return error
        if q_reset is None or q_reset.shape != q0.shape:
            q_reset = q0
        need_target = self.p.target_source == "topic"
        end = time.monotonic() + self.p.reset_settle_timeout
        while time.monotonic() < end and self.alive():
            if (s.joint_seq > seq_before and np.max(np.abs(s.q - q_reset)) < 0.02
                    and (not need_target or s.target_seq > target_before)):
                return ""
            time.sleep(0.002)
        return (f"no joint state at the reset configuration (and target pose) within "
                f"{self.p.reset_settle_timeout:g} s")

    def pd_reset(self, q0: np.ndarray) -> str:
        """Joint-space PD move to q0 (a real robot); every torque goes through the safety layer."""
        p, s = self.p, self.sensors
        end = time.monotonic() + p.pd_reset_max_time
        while time.monotonic() < end and self.alive():
            fault = self.safety.check_fresh(time.perf_counter(), s.joint_rx)
            if fault:
                self.publish(self.safety.zero)
                return fault
            q, qd = s.q, s.qd
            if np.max(np.abs(q - q0)) < p.pd_reset_tolerance and np.max(np.abs(qd)) < 5 * p.pd_reset_tolerance:
                self.publish(self.safety.zero)
                return ""
            self.publish(self.safety.filter(p.pd_reset_kp * (q0 - q) - p.pd_reset_kd * qd, q).torque)
            time.sleep(p.period)
        self.publish(self.safety.zero)
        return f"PD reset did not reach the initial angles within {p.pd_reset_max_time:g} s"


def service_reset(client) -> ResetCall:
    """A :data:`ResetCall` through an rclpy client of gps_sim/reset (waits on the steady clock)."""
    from gps_msgs.srv import ResetCondition

    def call(condition: int, condition_set: str, seed: int, timeout: float):
        if not client.wait_for_service(timeout_sec=timeout):
            return "service gps_sim/reset not available", None
        done = threading.Event()
        future = client.call_async(ResetCondition.Request(condition=int(condition), condition_set=condition_set,
                                                          seed=int(seed)))
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            return f"gps_sim/reset did not answer within {timeout:g} s", None
        result = future.result()
        if result is None or not result.success:
            return f"gps_sim/reset refused: {getattr(result, 'message', 'no response')}", None
        return "", np.asarray(result.joint_positions, dtype=np.float64)
    return call


def wait_for_reply(sensors: Sensors, joint_seq: int, timeout: float) -> bool:
    """Lockstep: wait for the state the last command produced, so it is not mistaken for the next
    trial's post-reset state. True when it came."""
    end = time.monotonic() + timeout
    while sensors.joint_seq == joint_seq and time.monotonic() < end:
        time.sleep(0.005)
    return sensors.joint_seq != joint_seq


class RejectionLog:
    """Counts rejected messages per kind and says when to log (at most once per ``interval`` s per
    kind, steady clock), so a flood costs a counter increment, not a log line."""

    def __init__(self, interval: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.interval, self.clock = interval, clock
        self.counts: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def reject(self, kind: str) -> bool:
        """Count one rejection of ``kind``; True when this one should be logged."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = self.clock()
        if now - self._last.get(kind, -np.inf) >= self.interval:
            self._last[kind] = now
            return True
        return False
