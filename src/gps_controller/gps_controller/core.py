"""The controller without ROS: robot model, sensors, pushed policies, trials, run-time parameters.

:class:`ControllerCore` is what gps_controller's node wires to topics and services; everything here
is tested without rclpy (message types are plain classes). Each method either succeeds or raises
ValueError (MessageValidationError, PolicyFormatError and ParameterError are ValueErrors) with the
reason that goes back to the caller.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from gps_controller import conversions as conv
from gps_controller import params as P
from gps_controller.observation import JointReorder, StateAssembler, resize_image
from gps_controller.reset import RejectionLog
from gps_controller.safety import SafetyLayer
from gps_controller.trial import Policies, Sensors, Trial, prepare_trial, time_policy, validate_condition_set


class InFlight:
    """Counts the service handlers running, so a shutdown can let them answer before it destroys anything."""

    def __init__(self):
        self._cond = threading.Condition()
        self.active = 0

    def __enter__(self):
        with self._cond:
            self.active += 1

    def __exit__(self, *exc):
        with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.active == 0, timeout)


def answers_always(handler):
    """Every request gets a response: any exception becomes success=False with the reason.
    (For a node method; the node's ``core.in_flight`` counts the running handlers.)"""
    @functools.wraps(handler)
    def wrapped(self, request, response):
        try:
            with self.core.in_flight:
                return handler(self, request, response)
        except Exception as exc:  # noqa: BLE001 - a service thread must survive any request
            reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            response.success, response.message = False, reason[:2000]
            self.get_logger().warning(f"{handler.__name__.strip('_')} rejected: {response.message}")
            return response
    return wrapped


class ControllerCore:
    def __init__(self, params: P.ControllerParams):
        from gps_core.tasks import load_task

        self.p = p = params
        self.task = load_task(p.task)
        self.conditions = validate_condition_set(self.task, p.condition_set)
        self.dU, self.horizon = len(p.joint_names), p.horizon or self.task.horizon
        if p.horizon == 0 and self.horizon > p.max_horizon:
            raise P.ParameterError(f"max_horizon: {p.max_horizon} is below task {p.task!r}'s horizon {self.horizon}")
        kin = self._kinematics(self.task.ee_points)
        self.assembler = StateAssembler(kin, self.task.target_points)
        self._assemblers = {None: self.assembler}  # per grasp (a condition may hold the object differently)
        self.dX = self.dO = 2 * self.dU + 18
        self.safety = SafetyLayer(p.effort_limits, p.lower_limits or kin.joint_lower, p.upper_limits or kin.joint_upper,
                                  p.joint_limit_margin, p.stale_timeout or 2.0 * p.period, tuple(p.joint_names))
        self.reorder = JointReorder(p.joint_names, strict=p.strict_joint_names)
        self.sensors, self.policies, self.rejections = Sensors(), Policies(), RejectionLog()
        self.lock = threading.Lock()  # policies, the current trial, run-time parameters
        self.trial: Trial | None = None
        self.in_flight = InFlight()
        try:
            import torch
            torch.set_num_threads(p.torch_threads)
        except ImportError:  # a controller with only linear-Gaussian policies needs no torch
            pass

    # ------------------------------------------------------------------ sensors
    def joint_state(self, names, positions, velocities, rx: float, stamp: float) -> None:
        """Store a joint state (JointOrderError, a ValueError, when it cannot be mapped)."""
        q, qd = self.reorder(names, positions, velocities)
        self.sensors.set_joints(q, qd, rx, stamp)

    def image(self, raw: bytes, rx: float) -> None:
        """Store a serialized sensor_msgs/Image: one wider or taller than ``max_image_side`` is
        rejected before it is deserialized; the rest are centre-cropped and resized to image_size."""
        from rclpy.serialization import deserialize_message  # pure (de)serialization, no node
        from sensor_msgs.msg import Image

        h, w = conv.peek_image_size(raw)
        if max(h, w) > self.p.max_image_side:
            raise conv.MessageValidationError("image", f"{w}x{h} exceeds max_image_side {self.p.max_image_side}")
        msg = deserialize_message(raw, Image)
        img = conv.image_from_msg(msg)
        s = min(h, w)  # centre-crop to a square (the reference crops 320x240 to 240x240)
        img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        self.sensors.set_image(np.ascontiguousarray(resize_image(img, self.p.image_size, self.p.image_size)), rx,
                               msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

    def _kinematics(self, ee_points):
        p = self.p
        if p.robot_model == "mujoco":
            from gps_controller.observation import MujocoKinematics
            return MujocoKinematics(ee_points)
        from gps_controller.observation import PinocchioKinematics
        return PinocchioKinematics(p.robot_model, p.tool_frame, ee_points, p.joint_names)

    def assembler_for(self, condition: int) -> StateAssembler:
        """The state assembler of a condition: its EE points move with the condition's grasp (toy hammer)."""
        from gps_core.tasks import condition_ee_points

        grasp = getattr(self.conditions[condition], "grasp", None) if condition < len(self.conditions) else None
        key = None if grasp is None else tuple(float(v) for v in grasp)
        if key not in self._assemblers:
            self._assemblers[key] = StateAssembler(self._kinematics(condition_ee_points(self.task, grasp)),
                                                   self.task.target_points)
        return self._assemblers[key]

    # ------------------------------------------------------------------ trials and pushes
    def prepare(self, request) -> Trial:
        """Bind a RunTrial request to its policy and noise and make it the current trial."""
        p = self.p
        with self.lock:
            if self.trial is not None:
                raise ValueError("a trial is already running")
            self.trial = prepare_trial(
                request, conditions=self.conditions, condition_set=p.condition_set, policies=self.policies,
                dU=self.dU, default_horizon=self.horizon, max_horizon=p.max_horizon, safety=self.safety,
                assembler=self.assembler_for(request.condition), period=p.period, deadline_slack=p.deadline_slack,
                max_consecutive_misses=p.max_consecutive_deadline_misses, periodic=p.trigger_mode == "timer",
                target_from_task=p.target_source == "task",
                image_perturbation=(p.image_noise_std, p.image_blur))
            return self.trial

    def set_linear_gaussian(self, condition: int, msg) -> str:
        if condition >= len(self.conditions):
            raise conv.MessageValidationError(
                "condition", f"unknown condition {condition}; this robot's task has {len(self.conditions)}")
        policy = conv.linear_gaussian_from_msg(msg, self.dX, self.dU)
        if policy.T > self.p.max_horizon:
            raise conv.MessageValidationError("horizon", f"{policy.T} exceeds max_horizon {self.p.max_horizon}")
        with self.lock:
            self.policies.linear_gaussian[int(condition)] = policy
        return f"condition {condition}: T={policy.T}"

    def set_policy(self, architecture: str, weights, sha256: str, iteration: int = 0) -> tuple[int, str]:
        """Validate, time and install a neural policy; (parameter count, message)."""
        from gps_controller.policies.neural import count_parameters
        from gps_controller.policies.serialization import deserialize_policy

        blob = conv.check_weights_payload(architecture, weights, sha256)
        policy = deserialize_policy(architecture, blob, sha256)
        size = self.p.image_size
        d_in = self.dX if policy.observes == "state" else self.dO
        if policy.obs_dim != d_in or policy.action_dim != self.dU:
            raise ValueError(f"architecture: policy maps {policy.obs_dim} inputs ({policy.observes}) to "
                             f"{policy.action_dim} torques; this controller has {d_in} and dU={self.dU}")
        policy.set_inference_precision(self.p.precision)
        if policy.uses_images and tuple(policy.image_shape) != (size, size, 3):
            raise ValueError(f"architecture: policy expects images {policy.image_shape}, "
                             f"this controller's image_size is {size}x{size}x3")
        budget = self.p.inference_budget * self.p.period
        ok, best = time_policy(policy.eval(), self.dO, tuple(policy.image_shape) if policy.uses_images else None,
                               budget)
        if not ok:
            raise ValueError(f"policy too slow: {best * 1e3:.1f} ms per step at best on a dummy observation, over "
                             f"the {budget * 1e3:.1f} ms budget (inference_budget {self.p.inference_budget:g} x "
                             f"period {self.p.period * 1e3:.1f} ms)")
        with self.lock:
            self.policies.neural = policy
        return int(count_parameters(policy)), (f"{policy.kind} from iteration {iteration} ({best * 1e3:.1f} ms per "
                                               f"step, {policy.inference_precision})")

    # ------------------------------------------------------------------ run-time parameters
    def check_parameters(self, changes: dict) -> dict:
        """Typed run-time changes, or ParameterError (read-only parameter, bad value, trial running)."""
        typed = P.check_runtime_update(self.p, changes, self.trial is not None)
        if "condition_set" in typed:
            validate_condition_set(self.task, typed["condition_set"])
        return typed

    def apply_parameters(self, changes: dict) -> dict:
        typed = {k: P.check_value(k, v) for k, v in changes.items() if k in P.RUNTIME}
        with self.lock:
            self.p = self.p.replace(**typed)
            if "condition_set" in typed:
                self.conditions = validate_condition_set(self.task, self.p.condition_set)
        return typed
