"""gps_controller: the 20 Hz torque controller node, ROS wiring only. The logic lives in plain classes:
gps_controller.core (sensors, policies, run-time parameters), .trial (the trial state machine), .reset,
.params (typed parameters; config/controller.yaml documents them). Topics and services: DESIGN.md.

Nothing waits on ROS time: a trial's first step is started by a guard condition and the stale-data
watchdog runs on the steady clock (under use_sim_time a lockstep simulation's /clock only moves when
a command arrives); ``trigger_mode: timer`` ticks on a ROS-time timer (realtime sims, a real robot).
"""

from __future__ import annotations

import faulthandler
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time
from sensor_msgs.msg import Image, JointState, TimeReference
from std_msgs.msg import Float64MultiArray
from visualization_msgs.msg import MarkerArray

from gps_controller import conversions as conv
from gps_controller import params as P
from gps_controller.core import ControllerCore, answers_always
from gps_controller.overlay import publish_feature_points
from gps_controller.qos import (
    COMMAND_QOS,
    COMMAND_STAMPS_QOS,
    LATEST_QOS,
    ROLLOUT_QOS,
    SENSOR_QOS,
    sensor_qos,
)
from gps_controller.reset import Resetter, service_reset, wait_for_reply
from gps_controller.trial import Trial
from gps_core.logging_bridge import install_ros_logging
from gps_core.node_params import refuse_undeclared
from gps_core.spin import spin_guarded, spin_once_guarded
from gps_msgs.msg import Rollout
from gps_msgs.srv import ResetCondition, RunTrial, SetLinearGaussian, SetPolicyWeights


class ControllerNode(Node):
    def __init__(self, argv=None, **kwargs):
        super().__init__("gps_controller", **kwargs)
        self.core = core = ControllerCore(self._declare_parameters(sys.argv if argv is None else argv))
        p, self.sensors = core.p, core.sensors
        self.reset_client = self.create_client(ResetCondition, "gps_sim/reset",
                                               callback_group=MutuallyExclusiveCallbackGroup())
        self.resetter = Resetter(p, core.sensors, core.safety, self._publish_torque, service_reset(self.reset_client),
                                 rclpy.ok)
        self._kick_rx: float | None = None

        control, images = MutuallyExclusiveCallbackGroup(), MutuallyExclusiveCallbackGroup()
        self.cmd_pub = self.create_publisher(Float64MultiArray, p.command_topic, COMMAND_QOS)
        self.rollout_pub = self.create_publisher(Rollout, p.rollout_topic, ROLLOUT_QOS)
        self.overlay_pub = self.create_publisher(Image, p.overlay_topic, LATEST_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, p.feature_points_topic, LATEST_QOS)
        self.command_stamps_pub = self.create_publisher(TimeReference, p.command_stamps_topic, COMMAND_STAMPS_QOS)
        lockstep = p.trigger_mode == "observation"  # every state matters: reliable readers (qos.sensor_qos)
        self._joint_sub = self.create_subscription(JointState, p.joint_states_topic, self._on_joint_state,
                                                   sensor_qos(p.joint_states_queue_depth, lockstep),
                                                   callback_group=control)
        self._image_sub = self.create_subscription(Image, p.image_topic, self._on_image,
                                                   sensor_qos(p.image_queue_depth, lockstep), callback_group=images,
                                                   raw=True)
        self.create_subscription(PoseStamped, p.target_pose_topic, self._on_target_pose, SENSOR_QOS,
                                 callback_group=control)
        self._kick = self.create_guard_condition(self._on_kick, callback_group=control)
        if p.trigger_mode == "timer":
            self.create_timer(p.period, self._on_control_timer, callback_group=control)
        self.create_timer(min(p.period, core.safety.stale_timeout) / 2.0, self._on_watchdog, callback_group=control,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.service_node = None if p.executor == "multi" else rclpy.create_node(
            f"{self.get_name()}_services", namespace=self.get_namespace(), context=self.context,
            use_global_arguments=False, start_parameter_services=False)
        host = self.service_node or self
        for srv, name, cb in ((RunTrial, "run_trial", self._on_run_trial),
                              (SetLinearGaussian, "set_linear_gaussian", self._on_set_linear_gaussian),
                              (SetPolicyWeights, "set_policy_weights", self._on_set_policy_weights)):
            host.create_service(srv, f"gps_controller/{name}", cb, callback_group=MutuallyExclusiveCallbackGroup())
        refuse_undeclared(self, SetParametersResult)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.get_logger().info(
            f"ready: {core.dU} joints, {p.control_rate_hz:g} Hz ({p.trigger_mode}), task {core.task.name!r} "
            f"({len(core.conditions)} conditions), T={core.horizon}, reset {p.reset_mode}, "
            f"stale timeout {core.safety.stale_timeout * 1e3:.0f} ms")

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self, argv) -> P.ControllerParams:
        for name, default in vars(P.ControllerParams()).items():
            descriptor = ParameterDescriptor(description=P.SPECS[name][2], read_only=name not in P.RUNTIME,
                                             dynamic_typing=True)
            self.declare_parameter(name, list(default) if isinstance(default, tuple) else default, descriptor)
        values = {name: self.get_parameter(name).value for name in P.SPECS}
        values.update({k: v.value for k, v in self._parameter_overrides.items() if k not in P.SPECS})
        return P.load_params(values, P.param_sources(argv, self.get_name()))

    def _on_set_parameters(self, params) -> SetParametersResult:
        try:
            self.core.check_parameters({x.name: x.value for x in params})
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        changes = self.core.apply_parameters({x.name: x.value for x in params})
        if changes:
            self.get_logger().info(f"parameters set: {changes}")

    # ------------------------------------------------------------------ sensors and ticks
    def _reject(self, kind: str, reason) -> None:
        if self.core.rejections.reject(kind):
            self.get_logger().warning(f"rejected {kind} ({self.core.rejections.counts[kind]} so far): {reason}")

    def _queued(self, sub, depth: int):
        """The messages already waiting in ``sub``'s queue, oldest first (at most ``depth``, the queue's size:
        a flood arriving faster than it is read cannot hold the control thread here). Observation trigger: a
        robot that runs on while a tick was slow has queued newer observations; each supersedes the one in
        hand, so the next command is computed from the newest. Ticking through the queue instead made every
        later command as stale as the backlog (ages of seconds under CPU load; benchmarks/controller_latency.py).
        A lockstep simulation has at most one state in flight, so nothing changes there."""
        if self.core.p.trigger_mode != "observation":
            return
        for _ in range(depth):
            with sub.handle:  # (rclpy's own executor and wait_for_message take messages this way)
                taken = sub.handle.take_message(sub.msg_type, sub.raw)
            if taken is None:
                return
            yield taken[0]

    def _store_joint_state(self, msg: JointState) -> float | None:
        rx = time.perf_counter()
        try:
            self.core.joint_state(msg.name, msg.position, msg.velocity, rx,
                                  msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        except ValueError as exc:
            self._reject("joint_states", exc)
            return None
        return rx

    def _on_joint_state(self, msg: JointState) -> None:
        rx = self._store_joint_state(msg)
        for newer in self._queued(self._joint_sub, self.core.p.joint_states_queue_depth):
            rx = self._store_joint_state(newer) or rx
        if rx is not None:
            self._maybe_tick(rx)

    def _store_image(self, raw: bytes) -> float | None:
        rx = time.perf_counter()
        try:
            self.core.image(raw, rx)
        except Exception as exc:  # noqa: BLE001 - no image can take the control path down
            self._reject("images", exc)
            return None
        return rx

    def _on_image(self, raw: bytes) -> None:
        rx = self._store_image(raw)
        for newer in self._queued(self._image_sub, self.core.p.image_queue_depth):
            rx = self._store_image(newer) or rx
        if rx is not None:
            self._kick_rx = rx  # the tick runs in the control group
            self._kick.trigger()

    def _on_target_pose(self, msg: PoseStamped) -> None:
        try:
            self.sensors.set_target(conv.pose_to_array(msg.pose, "target_pose"))
        except ValueError as exc:
            self._reject("target_pose", exc)

    def _on_kick(self) -> None:
        rx, self._kick_rx = self._kick_rx, None
        self._maybe_tick(rx)

    def _maybe_tick(self, rx: float | None) -> None:
        trial = self.core.trial
        if self.core.p.trigger_mode == "observation" and trial is not None and trial.ready(self.sensors):
            self._tick(trial, rx)

    def _on_control_timer(self) -> None:
        trial = self.core.trial
        if trial is not None and trial.running:
            self._tick(trial, time.perf_counter())

    def _on_watchdog(self) -> None:
        trial = self.core.trial
        if trial is not None and trial.running:
            fault = trial.check_fresh(self.sensors, time.perf_counter())
            if fault:
                self._stop(trial, fault)

    def _stop(self, trial: Trial, reason: str) -> None:
        self._publish_torque(trial.abort(reason).torque)
        self.get_logger().error(f"trial aborted at step {trial.step}: {reason}")

    def _tick(self, trial: Trial, rx: float | None) -> None:
        p = self.core.p
        result = trial.tick(self.sensors, time.perf_counter, self._now(), rx, p.target_pose_topic)
        self._publish_torque(result.torque)
        if result.fault:
            return self.get_logger().error(f"trial aborted at step {trial.step}: {result.fault}")
        published, published_steady = self.get_clock().now(), time.perf_counter()
        self._publish_command_stamp(published, result.observation_stamp)
        fault = trial.published(published_steady, rx, published.nanoseconds * 1e-9)
        if fault:
            return self._stop(trial, fault)
        if result.points is not None and p.publish_overlay:
            publish_feature_points(self.overlay_pub, self.marker_pub, result.image, result.points,
                                   self.get_clock().now().to_msg(), p.camera_frame, p.camera_hfov_deg)

    def _publish_torque(self, u: np.ndarray) -> None:
        self.cmd_pub.publish(Float64MultiArray(data=[float(v) for v in u]))

    def _publish_command_stamp(self, published: Time, observation_stamp: float) -> None:
        """What a latency measurement needs and a Float64MultiArray command cannot carry: when the command
        went out and the stamp of the observation it was computed from (its age = the difference)."""
        msg = TimeReference(source="observation")
        msg.header.stamp = published.to_msg()
        if math.isfinite(observation_stamp):
            ns = int(round(observation_stamp * 1e9))
            msg.time_ref.sec, msg.time_ref.nanosec = divmod(ns, 1_000_000_000)
        self.command_stamps_pub.publish(msg)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ services
    @answers_always
    def _on_run_trial(self, request: RunTrial.Request, response: RunTrial.Response) -> RunTrial.Response:
        trial = self.core.prepare(request)  # from here on, run-time parameter changes are refused
        try:
            image_seq, stale = self.sensors.image_seq, self.core.safety.stale_timeout
            error = self.resetter.reset(request.condition, trial.condition_set, request.seed, trial.joint_angles)
            if error:
                response.success, response.message = False, f"reset failed: {error}"
                self.get_logger().error(response.message)
                return response
            trial.start(self.sensors, image_is_fresh=self.sensors.image_seq > image_seq)
            self._kick.trigger()  # the first step runs on the data the reset produced: no timer involved
            while not trial.done.wait(0.1) and rclpy.ok():
                pass
            if not trial.aborted and self.core.p.trigger_mode == "timer":
                self._publish_torque(self.core.safety.zero)  # a real robot holds the last command: release it
            elif not trial.aborted:  # lockstep: the last command's reply must not pass for the next post-reset state
                wait_for_reply(self.sensors, trial.joint_seq, min(1.0, stale))
            return self._finish(trial, response)
        finally:
            self.core.trial = None

    def _finish(self, trial: Trial, response: RunTrial.Response) -> RunTrial.Response:
        response.steps, response.aborted = trial.step, trial.aborted
        if trial.step == 0:
            response.success, response.message = False, f"aborted before the first step: {trial.abort_reason}"
            return response
        req, ns = trial.request, self.get_namespace().strip("/")
        rollout_id = f"{ns}/{req.iteration}/{req.condition}/{req.sample_index}/{uuid.uuid4().hex[:8]}"
        self.rollout_pub.publish(conv.rollout_to_msg(trial.rollout(ns, rollout_id, self._now())))
        self.get_logger().info(f"rollout {rollout_id}: {trial.summary()}; rejected messages so far: "
                               f"{self.core.rejections.counts or 'none'}")
        response.success, response.rollout_id, response.message = True, rollout_id, trial.abort_reason
        return response

    @answers_always
    def _on_set_linear_gaussian(self, request, response):
        response.message = self.core.set_linear_gaussian(request.condition, request.controller)
        response.success = True
        return response

    @answers_always
    def _on_set_policy_weights(self, request, response):
        response.num_parameters, response.message = self.core.set_policy(
            request.architecture, request.weights, request.sha256, request.iteration)
        response.success = True
        return response

    def release(self, timeout: float = 3.0) -> None:
        """Zero torque on the way out (ros2_control would otherwise hold the last command), then let a
        running run_trial answer before anything is destroyed (rclpy's executor shutdown does not wait)."""
        if self.core.trial is not None:
            self.core.trial.abort("controller shutting down")
        try:
            self._publish_torque(self.core.safety.zero)
        except Exception:  # noqa: BLE001 - the context may already be shut down
            pass
        if self.core.in_flight.active and self.core.in_flight.wait_idle(timeout):
            time.sleep(0.2)  # the executor sends the response after the handler returns


# Bounded shutdown: a controller that does not leave on SIGINT/SIGTERM keeps a robot (and `gps down`, `ros2
# launch`) waiting; the normal path (release's 3 s wait for a trial's answer, 1 s per executor) ends well inside.
SHUTDOWN_GRACE_S = 8.0


def _exit_now(code: int) -> None:
    print(f"[gps_controller] shutdown still waiting after {SHUTDOWN_GRACE_S:g} s (a callback in flight): "
          "exiting now; the zero torque was already sent", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop``; the control loop sees it within one 0.1 s wait and shuts down.

    No exception is thrown into whatever the main thread runs (a KeyboardInterrupt can land inside a
    callback or the executor and be lost, leaving a node deaf to the signal: CI saw an idle controller
    outlive its SIGINT by 15 s). The signals are blocked in every thread and taken by a thread of their own
    (``sigwait``), so they are seen even while the main thread is busy; a handler is installed as well,
    because a process started as a shell's background job inherits SIGINT *ignored*, and a thread created
    before the mask (a library's) would otherwise take the signal under that disposition. Once asked to
    stop, a hard exit is armed past the grace period (``faulthandler``: no GIL needed, and it prints where
    every thread was)."""
    def asked(*_args) -> None:
        if not stop.is_set():
            stop.set()
            faulthandler.dump_traceback_later(SHUTDOWN_GRACE_S + 2.0, exit=True)

    for signum in STOP_SIGNALS:
        signal.signal(signum, asked)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def take() -> None:
        while True:
            signal.sigwait(STOP_SIGNALS)
            asked()

    threading.Thread(target=take, name="gps_controller_signals", daemon=True).start()


def main(args=None) -> None:
    """The node's process: :func:`run`, then an immediate exit with its code. Everything that matters is done
    inside ``run`` (zero torque, nodes destroyed, rclpy shut down) under the shutdown watchdog; the
    interpreter's own finalization after it (torch's and the DDS library's teardown) is not, and CI saw it
    outlast the 10 s hard deadline on a loaded machine, turning a clean stop into exit code 1."""
    code = run(args)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(args=None) -> int:
    # Our own SIGINT/SIGTERM handling (before rclpy starts its threads, which inherit the mask): the zero
    # torque goes out while the context is still valid.
    stop = threading.Event()
    _stop_on_signals(stop)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node, executors, code, services = None, [], 0, None
    try:
        node = ControllerNode(argv=sys.argv if args is None else args)
        if node.service_node is not None:
            executors.append(MultiThreadedExecutor(num_threads=2))
            executors[0].add_node(node.service_node)
            services = threading.Thread(target=spin_guarded, args=(executors[0], node.get_logger()),
                                        name="gps_controller_services", daemon=True)
            services.start()
        executors.append(SingleThreadedExecutor() if node.service_node is not None else MultiThreadedExecutor(4))
        executors[-1].add_node(node)
        install_ros_logging(node)
        while rclpy.ok() and not stop.is_set():  # short waits: a stop request is seen within 0.1 s
            spin_once_guarded(executors[-1], node.get_logger())
    except ValueError as exc:  # ParameterError, an unknown task or condition set: a clear line, no traceback
        print(f"[gps_controller] invalid configuration: {exc}", file=sys.stderr)
        code = 2
    except ExternalShutdownException:
        pass
    finally:
        watchdog = threading.Timer(SHUTDOWN_GRACE_S, _exit_now, args=(code,))
        watchdog.daemon = True  # also covers the interpreter's exit, which joins executor worker threads
        watchdog.start()
        if node is not None:
            node.release()
        for executor in executors:
            executor.shutdown(timeout_sec=1.0)
        if services is not None:  # out of rclpy's wait before its node goes (or the C++ side aborts at exit)
            services.join(timeout=2.0)
        for n in (getattr(node, "service_node", None), node):
            if n is not None:
                n.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    main()
