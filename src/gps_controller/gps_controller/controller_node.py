"""gps_controller: the 20 Hz torque controller node.

Runs a linear-Gaussian local controller (on the full state x_t) or the neural policy (on the
observation o_t = image + robot configuration) and publishes torques on
``effort_controller/commands`` (std_msgs/Float64MultiArray, ros2_control's JointGroupEffortController
convention, joint order = ``joint_names``).

Topics (relative names, so a namespace selects the robot; /gps/rollouts is shared by all robots)
  sub  joint_states (sensor_msgs/JointState), camera/image_raw (sensor_msgs/Image rgb8/bgr8),
       gps/target_pose (geometry_msgs/PoseStamped; instrumented training state)
  pub  effort_controller/commands, /gps/rollouts (gps_msgs/Rollout, RELIABLE depth 50),
       gps/feature_points/image (sensor_msgs/Image, overlay), gps/feature_points (MarkerArray)
Services
  gps_controller/run_trial (RunTrial): reset to the condition, run T steps, publish the Rollout, answer.
  gps_controller/set_linear_gaussian (SetLinearGaussian), gps_controller/set_policy_weights
  (SetPolicyWeights): validated; a rejected push keeps what was there.
Client
  gps_sim/reset (ResetCondition) with ``reset_mode: sim_service``; ``pd`` moves the arm with a
  joint-space PD law instead (real robot); ``none`` does not reset (benchmarks).

Trigger modes: ``timer`` ticks on a ROS-time timer at ``control_rate_hz``; ``observation`` ticks when
a new joint state (and, when the trial needs images, a new image) has arrived since the last
command: the lockstep simulation advances one period per command and then publishes.

Safety (``gps_controller.safety``) is always on: effort clamp, NaN/Inf -> zero torque + abort,
joint-limit guard, stale joint states/camera -> zero torque + abort, deadline misses counted.

Threading (parameter ``executor``): ``single`` (default) spins the control path (sensor callbacks,
the control timer, the watchdog, the gps_sim/reset client) in a SingleThreadedExecutor on the main
thread, and the services (run_trial, which blocks until the ticks finish the trial, and set_*) on a
companion node ``<name>_services`` (same namespace, same service names) in a MultiThreadedExecutor on
a worker thread: the 20 Hz path never waits behind a thread pool, and a blocked run_trial never
holds up its executor (docs/benchmarks.md has the measurements). ``multi`` (the earlier layout) spins everything in one MultiThreadedExecutor; the sensor
callbacks, the timer and the watchdog share one mutually exclusive group (each tick sees consistent
data), run_trial, the reset client and the set_* services each have their own.

Parameters: see config/controller.yaml (every parameter is documented there).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from visualization_msgs.msg import MarkerArray

from gps_controller import conversions as conv
from gps_controller.observation import (
    JointOrderError,
    JointReorder,
    MujocoKinematics,
    PinocchioKinematics,
    StateAssembler,
    resize_image,
)
from gps_controller.overlay import draw_feature_points, feature_point_markers
from gps_controller.qos import COMMAND_QOS, LATEST_QOS, ROLLOUT_QOS, SENSOR_QOS
from gps_controller.safety import DeadlineCounter, SafetyLayer
from gps_msgs.msg import Rollout
from gps_msgs.srv import ResetCondition, RunTrial, SetLinearGaussian, SetPolicyWeights

PR2_RIGHT_ARM = [
    "r_shoulder_pan_joint", "r_shoulder_lift_joint", "r_upper_arm_roll_joint", "r_elbow_flex_joint",
    "r_forearm_roll_joint", "r_wrist_flex_joint", "r_wrist_roll_joint",
]
TRIGGER_MODES = ("timer", "observation")
RESET_MODES = ("sim_service", "pd", "none")
EXECUTORS = ("single", "multi")
TARGET_SOURCES = ("topic", "task")


@dataclass
class Trial:
    """One run_trial in progress; written by the ticks (sensor group), read by run_trial when done."""

    request: RunTrial.Request
    horizon: int
    policy_type: str
    act: object  # callable(x, o, image, t, noise_t) -> (u, feature points or None)
    noise: np.ndarray  # (T, dU)
    need_image: bool
    target_pose: np.ndarray | None  # fixed target (target_source: task), else None = from the topic
    condition_set: str = "train"  # the set request.condition indexes (the parameter when the trial was prepared)
    joint_angles: np.ndarray | None = None  # the condition's initial joint angles
    joint_seq: int = 0  # last joint-state sequence number used by a tick
    image_seq: int = 0
    step: int = 0
    started: bool = False
    states: list = field(default_factory=list)
    observations: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    stamps: list = field(default_factory=list)
    images: list = field(default_factory=list)
    latencies: list = field(default_factory=list)  # observation receipt -> command publish (s)
    stamp_latencies: list = field(default_factory=list)  # joint-state header stamp -> command publish (s)
    deadline: DeadlineCounter | None = None
    aborted: bool = False
    abort_reason: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class ControllerNode(Node):
    def __init__(self, **kwargs):
        super().__init__("gps_controller", **kwargs)
        p = self._declare_parameters()
        self._p = p
        self.period = 1.0 / p["control_rate_hz"]
        self.dU = len(p["joint_names"])

        from gps_core.tasks import load_task

        self.task = load_task(p["task"])
        self.conditions = self.task.condition_list(p["condition_set"])
        self.horizon = p["horizon"] if p["horizon"] > 0 else self.task.horizon
        if p["robot_model"] == "mujoco":
            kin = MujocoKinematics(self.task.ee_points)
        else:
            kin = PinocchioKinematics(p["robot_model"], p["tool_frame"], self.task.ee_points, p["joint_names"])
        self.assembler = StateAssembler(kin, self.task.target_points)
        self.dX = self.dO = 2 * self.dU + 18
        lower = np.array(p["joint_lower_limits"]) if p["joint_lower_limits"] else kin.joint_lower
        upper = np.array(p["joint_upper_limits"]) if p["joint_upper_limits"] else kin.joint_upper
        stale = p["stale_timeout"] if p["stale_timeout"] > 0 else 2.0 * self.period
        self.safety = SafetyLayer(p["effort_limits"], lower, upper, p["joint_limit_margin"], stale,
                                  tuple(p["joint_names"]))
        if self.safety.num_joints != self.dU:
            raise ValueError(f"effort_limits has {self.safety.num_joints} entries for {self.dU} joints")
        self.reorder = JointReorder(p["joint_names"], strict=p["strict_joint_names"])

        # Latest sensor data (written and read in the sensor group only).
        self._q = self._qd = None
        self._joint_stamp = 0.0
        self._joint_rx: float | None = None  # perf_counter at receipt
        self._joint_seq = 0
        self._image: np.ndarray | None = None
        self._image_rx: float | None = None
        self._image_seq = 0
        self._image_stamp = None
        self._target: np.ndarray | None = None
        self._target_seq = 0
        self._rejected_joint_msgs = 0
        self._reset_image_seq = 0

        # Policies (swapped under the lock; a trial keeps the reference it started with).
        self._lock = threading.Lock()
        self._lg: dict[int, object] = {}
        self._neural = None
        self._trial: Trial | None = None

        self.sensor_group = MutuallyExclusiveCallbackGroup()
        self.trial_group = MutuallyExclusiveCallbackGroup()
        self.config_group = MutuallyExclusiveCallbackGroup()
        self.client_group = MutuallyExclusiveCallbackGroup()

        self.cmd_pub = self.create_publisher(Float64MultiArray, p["command_topic"], COMMAND_QOS)
        self.rollout_pub = self.create_publisher(Rollout, p["rollout_topic"], ROLLOUT_QOS)
        self.overlay_pub = self.create_publisher(Image, p["overlay_topic"], LATEST_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, p["feature_points_topic"], LATEST_QOS)
        self.create_subscription(JointState, p["joint_states_topic"], self._on_joint_state, SENSOR_QOS,
                                 callback_group=self.sensor_group)
        self.create_subscription(Image, p["image_topic"], self._on_image, SENSOR_QOS,
                                 callback_group=self.sensor_group)
        self.create_subscription(PoseStamped, p["target_pose_topic"], self._on_target_pose, SENSOR_QOS,
                                 callback_group=self.sensor_group)
        # The services live on a companion node with executor: single (see the module docstring). It
        # takes no command-line arguments (a __node remap would name it like this node); its namespace
        # is this node's, so the service names resolve exactly as they would here.
        if p["executor"] == "single":
            self.service_node = rclpy.create_node(
                f"{self.get_name()}_services", namespace=self.get_namespace(), context=self.context,
                use_global_arguments=False, start_parameter_services=False)
        else:
            self.service_node = None
        host = self.service_node or self
        host.create_service(RunTrial, "gps_controller/run_trial", self._on_run_trial,
                            callback_group=self.trial_group)
        host.create_service(SetLinearGaussian, "gps_controller/set_linear_gaussian", self._on_set_linear_gaussian,
                            callback_group=self.config_group)
        host.create_service(SetPolicyWeights, "gps_controller/set_policy_weights", self._on_set_policy_weights,
                            callback_group=self.config_group)
        self.reset_client = self.create_client(ResetCondition, "gps_sim/reset", callback_group=self.client_group)
        if p["trigger_mode"] == "timer":
            self.create_timer(self.period, self._on_control_timer, callback_group=self.sensor_group)
        self.create_timer(min(self.period, self.safety.stale_timeout) / 2.0, self._on_watchdog,
                          callback_group=self.sensor_group)
        # condition_set may change at run time (e.g. `gps eval --through-nodes` evaluates each set in
        # turn): validated, refused while a trial runs; a trial keeps the set it was prepared with.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f"ready: {self.dU} joints, {p['control_rate_hz']:g} Hz ({p['trigger_mode']}), task {self.task.name!r} "
            f"({len(self.conditions)} conditions), T={self.horizon}, reset {p['reset_mode']}, "
            f"stale timeout {self.safety.stale_timeout * 1e3:.0f} ms")

    # ------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> dict:
        defaults = {
            "joint_names": PR2_RIGHT_ARM,
            "strict_joint_names": True,
            "control_rate_hz": 20.0,
            "effort_limits": [30.0, 30.0, 30.0, 30.0, 30.0, 10.0, 10.0],
            "joint_lower_limits": [0.0],
            "joint_upper_limits": [0.0],
            "joint_limit_margin": 0.05,
            "joint_states_topic": "joint_states",
            "image_topic": "camera/image_raw",
            "target_pose_topic": "gps/target_pose",
            "command_topic": "effort_controller/commands",
            "rollout_topic": "/gps/rollouts",
            "overlay_topic": "gps/feature_points/image",
            "feature_points_topic": "gps/feature_points",
            "camera_frame": "head_mount_kinect_rgb_optical_frame",
            "camera_hfov_deg": 57.0,
            "image_size": 64,
            "trigger_mode": "timer",
            "stale_timeout": 0.0,
            "deadline_slack": 0.5,
            "task": "reach",
            "condition_set": "train",
            "target_source": "topic",
            "robot_model": "mujoco",
            "tool_frame": "r_gripper_tool_frame",
            "horizon": 0,
            "max_horizon": 10000,
            "reset_mode": "sim_service",
            "reset_timeout": 10.0,
            "reset_settle_timeout": 3.0,
            "pd_reset_kp": 20.0,
            "pd_reset_kd": 5.0,
            "pd_reset_tolerance": 0.02,
            "pd_reset_max_time": 10.0,
            "publish_overlay": True,
            "torch_threads": 1,
            "executor": "single",
        }
        p = {}
        for name, value in defaults.items():
            p[name] = self.declare_parameter(name, value).value
        # [0.0] is the "unset" marker of the limit arrays (ROS parameters cannot be empty typed arrays).
        for name in ("joint_lower_limits", "joint_upper_limits"):
            p[name] = [] if list(p[name]) == [0.0] else [float(v) for v in p[name]]
        p["joint_names"] = list(p["joint_names"])
        p["effort_limits"] = [float(v) for v in p["effort_limits"]]
        if p["trigger_mode"] not in TRIGGER_MODES:
            raise ValueError(f"trigger_mode must be one of {TRIGGER_MODES}, got {p['trigger_mode']!r}")
        if p["reset_mode"] not in RESET_MODES:
            raise ValueError(f"reset_mode must be one of {RESET_MODES}, got {p['reset_mode']!r}")
        if p["executor"] not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {p['executor']!r}")
        if p["target_source"] not in TARGET_SOURCES:
            raise ValueError(f"target_source must be one of {TARGET_SOURCES}, got {p['target_source']!r}")
        if not p["control_rate_hz"] > 0:
            raise ValueError("control_rate_hz must be > 0")
        try:
            import torch

            torch.set_num_threads(max(1, int(p["torch_threads"])))
        except ImportError:  # a controller with only linear-Gaussian policies needs no torch
            pass
        return p

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Accept a new ``condition_set`` (a known set with conditions in this task) when no trial is
        running. (Every other parameter is read once at start-up; setting one later has no effect.)"""
        from gps_core.tasks import CONDITION_SETS

        updates = {}
        for param in params:
            if param.name != "condition_set":
                continue
            value = param.value
            if not isinstance(value, str) or value not in CONDITION_SETS:
                return SetParametersResult(successful=False,
                                           reason=f"condition_set must be one of {list(CONDITION_SETS)}, got {value!r}")
            conditions = self.task.condition_list(value)
            if not conditions:
                return SetParametersResult(successful=False,
                                           reason=f"task {self.task.name!r} has no {value!r} conditions")
            updates[value] = conditions
        if not updates:
            return SetParametersResult(successful=True)
        with self._lock:
            if self._trial is not None:
                return SetParametersResult(successful=False, reason="a trial is running; retry when it is done")
            for value, conditions in updates.items():
                self._p["condition_set"], self.conditions = value, conditions
        self.get_logger().info(f"condition_set: {self._p['condition_set']} ({len(self.conditions)} conditions)")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ sensor callbacks
    def _on_joint_state(self, msg: JointState) -> None:
        rx = time.perf_counter()
        try:
            q, qd = self.reorder(msg.name, msg.position, msg.velocity)
        except JointOrderError as exc:
            self._rejected_joint_msgs += 1
            self.get_logger().warning(f"rejected: {exc}", throttle_duration_sec=2.0)
            return
        self._q, self._qd, self._joint_rx = q, qd, rx
        self._joint_stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self._joint_seq += 1
        self._maybe_tick_on_observation(rx)

    def _on_image(self, msg: Image) -> None:
        rx = time.perf_counter()
        try:
            img = conv.image_from_msg(msg)
        except conv.MessageValidationError as exc:
            self.get_logger().warning(f"rejected image: {exc}", throttle_duration_sec=2.0)
            return
        h, w = img.shape[:2]
        if h != w:  # centre-crop to a square (the reference crops 320x240 to 240x240)
            s = min(h, w)
            img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        size = self._p["image_size"]
        self._image = np.ascontiguousarray(resize_image(img, size, size))
        self._image_rx = rx
        self._image_stamp = msg.header.stamp
        self._image_seq += 1
        self._maybe_tick_on_observation(rx)

    def _on_target_pose(self, msg: PoseStamped) -> None:
        try:
            self._target = conv.pose_to_array(msg.pose, "target_pose")
            self._target_seq += 1
        except conv.MessageValidationError as exc:
            self.get_logger().warning(f"rejected target pose: {exc}", throttle_duration_sec=2.0)

    def _maybe_tick_on_observation(self, rx: float | None) -> None:
        """``rx``: receipt time of the observation completing the tick; None when the watchdog starts a
        trial on data that arrived before it (that step's latency is then not recorded)."""
        trial = self._trial
        if self._p["trigger_mode"] != "observation" or trial is None or not trial.started or trial.done.is_set():
            return
        if self._joint_seq == trial.joint_seq:
            return
        if trial.need_image and self._image_seq == trial.image_seq:
            return
        self._tick(trial, rx)

    def _on_control_timer(self) -> None:
        trial = self._trial
        if trial is not None and trial.started and not trial.done.is_set():
            self._tick(trial, time.perf_counter())

    def _on_watchdog(self) -> None:
        trial = self._trial
        if trial is None or not trial.started or trial.done.is_set():
            return
        now = time.perf_counter()
        fault = self.safety.check_fresh(now, self._joint_rx, self._image_rx, trial.need_image)
        if fault:
            self._abort(trial, fault)
        else:  # observation mode: data that arrived before the trial started triggers its first step
            self._maybe_tick_on_observation(None)

    # ------------------------------------------------------------------ control
    def _publish_torque(self, u: np.ndarray) -> None:
        self.cmd_pub.publish(Float64MultiArray(data=[float(v) for v in u]))

    def _abort(self, trial: Trial, reason: str) -> None:
        self._publish_torque(self.safety.zero)
        trial.aborted, trial.abort_reason = True, reason
        self.get_logger().error(f"trial aborted at step {trial.step}: {reason}")
        trial.done.set()

    def _tick(self, trial: Trial, obs_time: float | None) -> None:
        """One control step: check freshness, assemble x/o, act, make safe, publish, record."""
        measured = obs_time is not None
        if obs_time is None:
            obs_time = time.perf_counter()
        fault = self.safety.check_fresh(time.perf_counter(), self._joint_rx, self._image_rx, trial.need_image)
        if fault:
            self._abort(trial, fault)
            return
        t = trial.step
        q, qd, image = self._q, self._qd, self._image
        target = trial.target_pose if trial.target_pose is not None else self._target
        if target is None and trial.policy_type == "linear_gaussian":
            self._abort(trial, f"no target pose received on {self._p['target_pose_topic']} (the state x needs it)")
            return
        x, o = self.assembler.assemble(q, qd, target)
        try:
            u, points = trial.act(x, o, image, t, trial.noise[t])
        except Exception as exc:  # a policy must never take the controller down
            self._abort(trial, f"policy failed at step {t}: {exc}")
            return
        result = self.safety.filter(u, q)
        if result.fault:
            self._abort(trial, result.fault)
            return
        self._publish_torque(result.torque)
        published = time.perf_counter()
        trial.joint_seq, trial.image_seq = self._joint_seq, self._image_seq
        trial.latencies.append(published - obs_time if measured else np.nan)
        trial.deadline.record(published, obs_time, periodic=self._p["trigger_mode"] == "timer")
        trial.states.append(x)
        trial.observations.append(o)
        trial.actions.append(result.torque)
        now = self.get_clock().now().nanoseconds * 1e-9
        trial.stamps.append(now)
        trial.stamp_latencies.append(now - self._joint_stamp if measured else np.nan)
        if trial.request.record_images:
            trial.images.append(image)
        trial.step = t + 1
        if trial.step >= trial.horizon:
            trial.done.set()
        if points is not None and self._p["publish_overlay"]:
            self._publish_overlay(image, points)

    def _publish_overlay(self, image: np.ndarray, points: np.ndarray) -> None:
        stamp = self.get_clock().now().to_msg()
        if self.overlay_pub.get_subscription_count() > 0:
            self.overlay_pub.publish(conv.image_to_msg(draw_feature_points(image, points), stamp,
                                                       self._p["camera_frame"]))
        if self.marker_pub.get_subscription_count() > 0:
            self.marker_pub.publish(feature_point_markers(points, self._p["camera_frame"], stamp,
                                                          self._p["camera_hfov_deg"]))

    # ------------------------------------------------------------------ run_trial
    def _on_run_trial(self, request: RunTrial.Request, response: RunTrial.Response) -> RunTrial.Response:
        try:
            trial = self._prepare_trial(request)
        except (conv.MessageValidationError, ValueError) as exc:
            response.success, response.message = False, str(exc)
            self.get_logger().warning(f"run_trial rejected: {exc}")
            return response
        with self._lock:
            self._trial = trial  # from here on, condition_set changes are refused
        error = self._reset(request, trial)
        if error:
            self._trial = None
            response.success, response.message = False, f"reset failed: {error}"
            self.get_logger().error(response.message)
            return response
        trial.joint_seq = self._joint_seq - 1  # the post-reset state counts as new
        trial.image_seq = self._image_seq - 1 if self._image_seq > self._reset_image_seq else self._image_seq
        trial.deadline.reset()
        trial.started = True
        while not trial.done.wait(0.1):
            if not rclpy.ok():
                break
        self._trial = None
        if self._p["trigger_mode"] == "timer" and not trial.aborted:
            self._publish_torque(self.safety.zero)  # a real robot holds the last command: release it
        elif self._p["trigger_mode"] == "observation" and not trial.aborted:
            self._drain_last_observation(trial)
        return self._finish_trial(trial, response)

    def _drain_last_observation(self, trial: Trial) -> None:
        """Lockstep: the last command makes the simulation publish one more state; wait for it so it
        is not mistaken for the next trial's post-reset state."""
        deadline = time.monotonic() + min(1.0, self.safety.stale_timeout)
        while self._joint_seq == trial.joint_seq and time.monotonic() < deadline:
            time.sleep(0.005)

    def _prepare_trial(self, request: RunTrial.Request) -> Trial:
        with self._lock:
            condition_set, conditions = self._p["condition_set"], self.conditions
        conv.check_run_trial_request(request, len(conditions), self._p["max_horizon"])
        horizon = request.horizon or self.horizon
        rng = np.random.default_rng(request.seed)
        with self._lock:
            if request.policy_type == "linear_gaussian":
                policy = self._lg.get(request.condition)
                if policy is None:
                    raise ValueError(f"no linear-Gaussian controller for condition {request.condition}; "
                                     "push one with set_linear_gaussian first")
                if policy.T < horizon:
                    raise ValueError(f"horizon: {horizon} steps requested but the controller of condition "
                                     f"{request.condition} has {policy.T}")
                smoothing = policy.noise_smoothing_std
            else:
                policy = self._neural
                if policy is None:
                    raise ValueError("no neural policy: push one with set_policy_weights first")
                smoothing = 0.0
        if request.use_noise:
            from gps_core.linear_gaussian import smooth_noise

            noise = smooth_noise(rng, horizon, self.dU, smoothing)
        else:
            noise = np.zeros((horizon, self.dU))
        use_noise = bool(request.use_noise)
        if request.policy_type == "linear_gaussian":
            def act(x, o, image, t, n):
                return policy.act(x, t, n if use_noise else None), None
            needs_policy_image = False
        else:
            def act(x, o, image, t, n):
                return policy.act(o, image if policy.uses_images else None, n if use_noise else None,
                                  return_features=True)
            needs_policy_image = policy.uses_images
        target = None
        if self._p["target_source"] == "task":
            target = np.asarray(conditions[request.condition].target_pose, dtype=np.float64)
        return Trial(request=request, horizon=horizon, policy_type=request.policy_type, act=act, noise=noise,
                     need_image=needs_policy_image or bool(request.record_images), target_pose=target,
                     condition_set=condition_set,
                     joint_angles=np.asarray(conditions[request.condition].joint_angles, dtype=np.float64),
                     deadline=DeadlineCounter(self.period, self._p["deadline_slack"]))

    def _reset(self, request: RunTrial.Request, trial: Trial | None = None) -> str:
        """Move to the condition's initial state (in the trial's condition set); '' on success, else
        the reason."""
        mode = self._p["reset_mode"]
        self._reset_image_seq = self._image_seq
        if mode == "none":
            # Right after start-up the joint-state subscription may not have matched the robot yet.
            deadline = time.monotonic() + self._p["reset_timeout"]
            while self._joint_rx is None and time.monotonic() < deadline and rclpy.ok():
                time.sleep(0.01)
            return "" if self._joint_rx is not None else "no joint state received"
        if trial is not None and trial.joint_angles is not None:
            q0, condition_set = trial.joint_angles, trial.condition_set
        else:
            q0 = np.asarray(self.conditions[request.condition].joint_angles, dtype=np.float64)
            condition_set = self._p["condition_set"]
        if mode == "pd":
            return self._pd_reset(q0)
        if not self.reset_client.wait_for_service(timeout_sec=self._p["reset_timeout"]):
            return "service gps_sim/reset not available"
        seq_before, target_before = self._joint_seq, self._target_seq
        req = ResetCondition.Request(condition=int(request.condition), condition_set=condition_set,
                                     seed=int(request.seed))
        done = threading.Event()
        future = self.reset_client.call_async(req)
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(self._p["reset_timeout"]):
            self.reset_client.remove_pending_request(future)
            return f"gps_sim/reset did not answer within {self._p['reset_timeout']:g} s"
        result = future.result()
        if result is None or not result.success:
            return f"gps_sim/reset refused: {getattr(result, 'message', 'no response')}"
        q_reset = np.asarray(result.joint_positions, dtype=np.float64)
        if q_reset.shape != (self.dU,):
            q_reset = q0
        # Wait for a joint state published after the reset, at the reset configuration, and (the
        # simulation publishes it with every state) the new condition's target pose.
        need_target = self._p["target_source"] == "topic"
        deadline = time.monotonic() + self._p["reset_settle_timeout"]
        while time.monotonic() < deadline:
            if (self._joint_seq > seq_before and np.max(np.abs(self._q - q_reset)) < 0.02
                    and (not need_target or self._target_seq > target_before)):
                return ""
            time.sleep(0.002)
        return (f"no joint state at the reset configuration (and target pose) within "
                f"{self._p['reset_settle_timeout']:g} s")

    def _pd_reset(self, q0: np.ndarray) -> str:
        """Joint-space PD move to q0 for a real robot (every torque goes through the safety layer)."""
        kp, kd, tol = self._p["pd_reset_kp"], self._p["pd_reset_kd"], self._p["pd_reset_tolerance"]
        end = time.monotonic() + self._p["pd_reset_max_time"]
        while time.monotonic() < end:
            fault = self.safety.check_fresh(time.perf_counter(), self._joint_rx)
            if fault:
                self._publish_torque(self.safety.zero)
                return fault
            q, qd = self._q, self._qd
            if np.max(np.abs(q - q0)) < tol and np.max(np.abs(qd)) < 5 * tol:
                self._publish_torque(self.safety.zero)
                return ""
            self._publish_torque(self.safety.filter(kp * (q0 - q) - kd * qd, q).torque)
            time.sleep(self.period)
        self._publish_torque(self.safety.zero)
        return f"PD reset did not reach the initial angles within {self._p['pd_reset_max_time']:g} s"

    def _finish_trial(self, trial: Trial, response: RunTrial.Response) -> RunTrial.Response:
        steps = trial.step
        response.steps, response.aborted = steps, trial.aborted
        request = trial.request
        if steps == 0:
            response.success = False
            response.message = f"aborted before the first step: {trial.abort_reason}"
            return response
        ns = self.get_namespace().strip("/")
        rollout_id = f"{ns}/{request.iteration}/{request.condition}/{request.sample_index}/{uuid.uuid4().hex[:8]}"
        data = conv.RolloutData(
            states=np.array(trial.states), actions=np.array(trial.actions),
            observations=np.array(trial.observations), noise=np.array(trial.noise[:steps]),
            stamps=np.array(trial.stamps),
            images=np.array(trial.images, dtype=np.uint8) if request.record_images else None,
            condition=request.condition, iteration=request.iteration, sample_index=request.sample_index,
            policy_type=trial.policy_type, seed=request.seed if request.use_noise else 0, robot_namespace=ns,
            rollout_id=rollout_id, deadline_misses=trial.deadline.misses, aborted=trial.aborted,
            abort_reason=trial.abort_reason, end_stamp=self.get_clock().now().nanoseconds * 1e-9,
        )
        try:
            msg = conv.rollout_to_msg(data)
        except conv.MessageValidationError as exc:
            response.success, response.message = False, f"could not pack the rollout: {exc}"
            return response
        self.rollout_pub.publish(msg)
        lat = np.array(trial.latencies) * 1e3
        slat = np.array(trial.stamp_latencies) * 1e3
        if np.all(np.isnan(lat)):
            lat = slat = np.zeros(1)
        self.get_logger().info(
            f"rollout {rollout_id}: {steps} steps, {trial.policy_type}, latency p50 {np.nanpercentile(lat, 50):.2f} ms "
            f"p99 {np.nanpercentile(lat, 99):.2f} ms (from joint-state stamp: p50 {np.nanpercentile(slat, 50):.2f} ms "
            f"p99 {np.nanpercentile(slat, 99):.2f} ms), deadline misses {trial.deadline.misses}"
            + (f", ABORTED: {trial.abort_reason}" if trial.aborted else ""))
        response.success, response.rollout_id = True, rollout_id
        response.message = trial.abort_reason
        return response

    # ------------------------------------------------------------------ policy pushes
    def _on_set_linear_gaussian(self, request, response):

        try:
            if request.condition >= len(self.conditions):
                raise conv.MessageValidationError(
                    "condition", f"unknown condition {request.condition}; this robot's task has {len(self.conditions)}")
            policy = conv.linear_gaussian_from_msg(request.controller, self.dX, self.dU)
        except ValueError as exc:  # MessageValidationError is a ValueError
            response.success, response.message = False, str(exc)
            self.get_logger().warning(f"set_linear_gaussian rejected: {exc}")
            return response
        with self._lock:
            self._lg[int(request.condition)] = policy
        response.success, response.message = True, f"condition {request.condition}: T={policy.T}"
        return response

    def _on_set_policy_weights(self, request, response):
        try:
            from gps_controller.policies.neural import count_parameters
            from gps_controller.policies.serialization import deserialize_policy

            blob = conv.check_weights_payload(request.architecture, request.weights, request.sha256)
            policy = deserialize_policy(request.architecture, blob, request.sha256)
            if policy.obs_dim != self.dO or policy.action_dim != self.dU:
                raise ValueError(f"architecture: policy maps {policy.obs_dim} observations to {policy.action_dim} "
                                 f"torques; this controller has dO={self.dO}, dU={self.dU}")
            size = self._p["image_size"]
            if policy.uses_images and policy.image_shape != (size, size, 3):
                raise ValueError(f"architecture: policy expects images {policy.image_shape}, "
                                 f"this controller's image_size is {size}x{size}x3")
            policy.eval()
        except (ValueError, ImportError) as exc:
            response.success, response.message, response.num_parameters = False, str(exc), 0
            self.get_logger().warning(f"set_policy_weights rejected: {exc}")
            return response
        with self._lock:
            self._neural = policy
        response.success, response.num_parameters = True, int(count_parameters(policy))
        response.message = f"{policy.kind} from iteration {request.iteration}"
        return response

    def release(self) -> None:
        """Zero torque on the way out (ros2_control would otherwise hold the last command)."""
        trial = self._trial
        if trial is not None and not trial.done.is_set():
            trial.aborted, trial.abort_reason = True, "controller shutting down"
            trial.done.set()
        try:
            self._publish_torque(self.safety.zero)
        except Exception:  # the context may already be shut down
            pass


def _spin_quietly(executor) -> None:
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    service_executor = None
    try:
        node = ControllerNode()
        if node.service_node is None:
            executor = MultiThreadedExecutor(num_threads=4)
            executor.add_node(node)
            executor.spin()
        else:
            service_executor = MultiThreadedExecutor(num_threads=2)
            service_executor.add_node(node.service_node)
            threading.Thread(target=_spin_quietly, args=(service_executor,), name="gps_controller_services",
                             daemon=True).start()
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.release()
            if service_executor is not None:
                service_executor.shutdown(timeout_sec=1.0)
            if node.service_node is not None:
                node.service_node.destroy_node()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
