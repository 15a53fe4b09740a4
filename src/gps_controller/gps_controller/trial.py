"""The controller's trial state machine: plain Python (no rclpy), unit-tested without ROS.

One ``run_trial`` request becomes a :class:`Trial` (:func:`prepare_trial`: validate, draw the
exploration noise, bind the policy), which the node :meth:`Trial.start`s after the reset and then
:meth:`Trial.tick`s once per control step with the latest :class:`Sensors`. A tick checks
freshness, assembles x_t and o_t, calls the policy, makes the torque safe (gps_controller.safety),
records the step and counts late commands; :meth:`Trial.abort` stops with zero torque; the finished
trial becomes a Rollout (:meth:`Trial.rollout`).

Noise: eps = smooth_noise(default_rng(seed), T, dU, noise_smoothing_std) for a linear-Gaussian
controller (Levine et al. 2016, sec. 4: u_t = K_t x_t + k_t + chol(Sigma_t) eps_t), smoothing 0 for the
neural policy. The trainer's simulator sampler draws exactly this, so both samplers agree bit for bit.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from gps_controller import conversions as conv
from gps_controller.safety import DeadlineCounter, SafetyLayer
from gps_core.linear_gaussian import smooth_noise
from gps_core.ood import frame_rng, perturb_image

#: Observation stamps further than this from the node's clock are on another clock (e.g. sim-time
#: stamps read by a node on wall time): the observation age is then not reported rather than absurd.
SAME_CLOCK_TOLERANCE_S = 60.0


@dataclass
class Sensors:
    """The latest sensor data (written by the control thread's callbacks; read by ticks).

    ``*_rx``: receipt times on the steady clock (perf_counter); ``*_stamp``: the header stamps (s on the
    sender's ROS clock; 0 = not stamped).
    """

    q: np.ndarray | None = None
    qd: np.ndarray | None = None
    joint_rx: float | None = None
    joint_stamp: float = 0.0
    joint_seq: int = 0
    image: np.ndarray | None = None
    image_rx: float | None = None
    image_stamp: float = 0.0
    image_seq: int = 0
    target: np.ndarray | None = None
    target_seq: int = 0

    def set_joints(self, q: np.ndarray, qd: np.ndarray, rx: float, stamp: float) -> None:
        self.q, self.qd, self.joint_rx, self.joint_stamp = q, qd, rx, stamp
        self.joint_seq += 1

    def set_image(self, image: np.ndarray, rx: float, stamp: float = 0.0) -> None:
        self.image, self.image_rx, self.image_stamp = image, rx, stamp
        self.image_seq += 1

    def observation_stamp(self, with_image: bool) -> float:
        """The stamp of the observation a tick uses: its oldest stamped part (NaN when none is stamped)."""
        stamps = [s for s in (self.joint_stamp, self.image_stamp if with_image else 0.0) if s > 0.0]
        return min(stamps) if stamps else math.nan

    def set_target(self, pose: np.ndarray) -> None:
        self.target = pose
        self.target_seq += 1


@dataclass
class TickResult:
    """What a tick asks the node to publish: ``torque`` (always finite and within the limits)."""

    torque: np.ndarray
    fault: str = ""  # non-empty: the trial aborted
    points: np.ndarray | None = None  # feature points (neural policy) for the overlay
    image: np.ndarray | None = None
    observation_stamp: float = math.nan  # the stamp of the observation the torque was computed from


@dataclass
class Trial:
    """One run_trial in progress. ``act(x, o, image, t, eps_t) -> (u, feature points or None)``."""

    request: object  # RunTrial.Request (or any object with its fields)
    horizon: int
    policy_type: str
    act: Callable
    noise: np.ndarray  # (T, dU)
    need_image: bool
    safety: SafetyLayer
    assembler: object  # StateAssembler: assemble(q, qd, target) -> (x, o)
    deadline: DeadlineCounter
    target_pose: np.ndarray | None = None  # fixed target (target_source: task); None = from the topic
    condition_set: str = "train"
    joint_angles: np.ndarray | None = None  # the condition's initial joint angles
    max_consecutive_misses: int = 0  # 0 = never abort for late commands
    periodic: bool = False  # timer mode: a skipped period is a miss too
    # (noise std of 255, blur px of a 64-px image): the image the policy sees is perturbed so (robustness probing;
    # each step's noise from the request's seed and the step); None: the image as received
    image_perturbation: tuple[float, float] | None = None
    joint_seq: int = 0  # last joint-state sequence number a tick used
    image_seq: int = 0
    step: int = 0
    started: bool = False
    aborted: bool = False
    abort_reason: str = ""
    states: list = field(default_factory=list)
    observations: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    stamps: list = field(default_factory=list)
    images: list = field(default_factory=list)
    latencies: list = field(default_factory=list)  # observation receipt -> command publish (s, steady clock)
    # observation stamp -> command publish (s, the node's clock): the age of what the command was computed from
    observation_ages: list = field(default_factory=list)
    observation_stamp: float = math.nan  # of the last tick's observation
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        return self.started and not self.done.is_set()

    def start(self, sensors: Sensors, image_is_fresh: bool) -> None:
        """Begin ticking: the current joint state (the post-reset one) counts as new, and so does the
        current image when ``image_is_fresh`` (it arrived after the reset began)."""
        self.joint_seq = sensors.joint_seq - 1
        self.image_seq = sensors.image_seq - 1 if image_is_fresh else sensors.image_seq
        self.deadline.reset()
        self.started = True

    def ready(self, sensors: Sensors) -> bool:
        """Observation trigger: a joint state (and, when needed, an image) newer than the last tick's."""
        if not self.running or sensors.joint_seq == self.joint_seq:
            return False
        return not (self.need_image and sensors.image_seq == self.image_seq)

    def check_fresh(self, sensors: Sensors, now: float) -> str:
        return self.safety.check_fresh(now, sensors.joint_rx, sensors.image_rx, self.need_image)

    def abort(self, reason: str) -> TickResult:
        """Stop with zero torque (the node publishes it)."""
        if not self.done.is_set():
            self.aborted, self.abort_reason = True, reason
            self.done.set()
        return TickResult(self.safety.zero.copy(), fault=reason)

    def tick(self, sensors: Sensors, now: Callable[[], float], ros_now: float, obs_time: float | None,
             target_topic: str = "gps/target_pose") -> TickResult:
        """One control step. ``now()``: the steady clock; ``ros_now``: the node's clock (s) for the
        rollout stamps; ``obs_time``: receipt time of the observation that triggered the step (None:
        not measured). The caller publishes ``result.torque`` and then calls :meth:`published`."""
        fault = self.check_fresh(sensors, now())
        if fault:
            return self.abort(fault)
        t = self.step
        target = self.target_pose if self.target_pose is not None else sensors.target
        if target is None and self.policy_type == "linear_gaussian":
            return self.abort(f"no target pose received on {target_topic} (the state x needs it)")
        x, o = self.assembler.assemble(sensors.q, sensors.qd, target)
        image = sensors.image
        if self.image_perturbation is not None and image is not None:
            noise_std, blur = self.image_perturbation
            image = perturb_image(image, noise_std, blur, frame_rng(int(self.request.seed), t))
        try:
            u, points = self.act(x, o, image, t, self.noise[t])
        except Exception as exc:  # a policy must never take the controller down
            return self.abort(f"policy failed at step {t}: {type(exc).__name__}: {exc}")
        safe = self.safety.filter(u, sensors.q)
        if safe.fault:
            return self.abort(safe.fault)
        self.joint_seq, self.image_seq = sensors.joint_seq, sensors.image_seq
        self.states.append(x)
        self.observations.append(o)
        self.actions.append(safe.torque)
        self.stamps.append(ros_now)
        self.observation_stamp = sensors.observation_stamp(self.need_image)
        if self.request.record_images:
            self.images.append(image)
        return TickResult(safe.torque, points=points, image=image, observation_stamp=self.observation_stamp)

    def published(self, publish_time: float, obs_time: float | None, ros_publish_time: float | None = None) -> str:
        """Record the publish time of the step's command (``publish_time`` on the steady clock,
        ``ros_publish_time`` on the node's clock: the observation's age); returns an abort reason once
        ``max_consecutive_misses`` commands in a row were late (the caller publishes zero torque)."""
        measured = obs_time is not None
        self.latencies.append(publish_time - obs_time if measured else np.nan)
        age = math.nan if ros_publish_time is None else ros_publish_time - self.observation_stamp
        self.observation_ages.append(age if abs(age) <= SAME_CLOCK_TOLERANCE_S else math.nan)
        self.deadline.record(publish_time, obs_time, periodic=self.periodic)
        self.step += 1
        k = self.max_consecutive_misses
        if k and self.deadline.consecutive >= k:
            self.abort(f"deadline missed {self.deadline.consecutive} times in a row "
                       f"(period {self.deadline.period * 1e3:.1f} ms)")
            return self.abort_reason
        if self.step >= self.horizon:
            self.done.set()
        return ""

    def rollout(self, namespace: str, rollout_id: str, end_stamp: float) -> conv.RolloutData:
        """The recorded steps as a Rollout (call once the trial is done; needs at least one step)."""
        req, steps = self.request, self.step
        return conv.RolloutData(
            states=np.array(self.states[:steps]), actions=np.array(self.actions[:steps]),
            observations=np.array(self.observations[:steps]), noise=np.array(self.noise[:steps]),
            stamps=np.array(self.stamps[:steps]),
            images=np.array(self.images[:steps], dtype=np.uint8) if req.record_images else None,
            condition=req.condition, iteration=req.iteration, sample_index=req.sample_index,
            policy_type=self.policy_type, seed=req.seed if req.use_noise else 0, robot_namespace=namespace,
            rollout_id=rollout_id, deadline_misses=self.deadline.misses, aborted=self.aborted,
            abort_reason=self.abort_reason, end_stamp=end_stamp)

    def summary(self) -> str:
        """Latency percentiles for the log: in-node (observation receipt -> command publish, steady clock)
        and the observation's age at the command's publish (its stamp on the node's clock, when the
        robot's stamps share it)."""
        def pct(values, with_max: bool = False) -> str:
            arr = np.array(values, dtype=np.float64) * 1e3
            arr = arr[np.isfinite(arr)]
            if arr.size == 0:
                return "n/a"
            return (f"p50 {np.percentile(arr, 50):.2f} ms p99 {np.percentile(arr, 99):.2f} ms"
                    + (f" max {arr.max():.2f} ms" if with_max else ""))

        return (f"{self.step} steps, {self.policy_type}, in-node latency {pct(self.latencies)}, "
                f"observation age {pct(self.observation_ages, True)}, deadline misses {self.deadline.misses}"
                + (f", ABORTED: {self.abort_reason}" if self.aborted else ""))


@dataclass
class Policies:
    """The pushed policies: a linear-Gaussian controller per condition and one neural policy."""

    linear_gaussian: dict = field(default_factory=dict)
    neural: object = None


def prepare_trial(request, *, conditions: Sequence, condition_set: str, policies: Policies, dU: int,
                  default_horizon: int, max_horizon: int, safety: SafetyLayer, assembler, period: float,
                  deadline_slack: float, max_consecutive_misses: int, periodic: bool,
                  target_from_task: bool, image_perturbation: tuple[float, float] | None = None) -> Trial:
    """Validate a RunTrial request against this robot and bind its policy and noise; raises
    MessageValidationError / ValueError with the reason. ``image_perturbation``: (noise std, blur) on the
    images the policy sees (None or zeros: none)."""
    conv.check_run_trial_request(request, len(conditions), max_horizon)
    horizon = int(request.horizon or default_horizon)
    if request.policy_type == "linear_gaussian":
        policy = policies.linear_gaussian.get(request.condition)
        if policy is None:
            raise ValueError(f"no linear-Gaussian controller for condition {request.condition}; "
                             "push one with set_linear_gaussian first")
        if policy.T < horizon:
            raise ValueError(f"horizon: {horizon} steps requested but the controller of condition "
                             f"{request.condition} has {policy.T}")
        smoothing = policy.noise_smoothing_std
    else:
        policy = policies.neural
        if policy is None:
            raise ValueError("no neural policy: push one with set_policy_weights first")
        smoothing = 0.0
    use_noise = bool(request.use_noise)
    if use_noise:
        noise = smooth_noise(np.random.default_rng(request.seed), horizon, dU, smoothing)
    else:
        noise = np.zeros((horizon, dU))
    if request.policy_type == "linear_gaussian":
        def act(x, o, image, t, eps):
            return policy.act(x, t, eps if use_noise else None), None
        policy_image = False
    else:
        def act(x, o, image, t, eps):  # the input the policy was trained on (saved with it)
            return policy.act(x if policy.observes == "state" else o, image if policy.uses_images else None,
                              eps if use_noise else None, return_features=True)
        policy_image = bool(policy.uses_images)
    condition = conditions[request.condition]
    return Trial(
        request=request, horizon=horizon, policy_type=request.policy_type, act=act, noise=noise,
        need_image=policy_image or bool(request.record_images), safety=safety, assembler=assembler,
        deadline=DeadlineCounter(period, deadline_slack),
        target_pose=np.asarray(condition.target_pose, dtype=np.float64) if target_from_task else None,
        condition_set=condition_set, joint_angles=np.asarray(condition.joint_angles, dtype=np.float64),
        max_consecutive_misses=max_consecutive_misses, periodic=periodic,
        image_perturbation=image_perturbation if image_perturbation and any(image_perturbation) else None)


def time_policy(policy, obs_dim: int, image_shape: tuple | None, budget_s: float, runs: int = 5,
                clock: Callable[[], float] | None = None) -> tuple[bool, float]:
    """Time ``policy.act`` on a dummy observation (and image): after one warm-up call, up to ``runs``
    calls; accepted as soon as one call takes at most ``budget_s`` (the best case is what the policy
    can do; a loaded machine only makes single calls slower). Returns (accepted, best seconds)."""
    import time

    clock = clock or time.perf_counter
    obs = np.zeros(obs_dim)
    image = np.zeros(image_shape, dtype=np.uint8) if image_shape else None
    policy.act(obs, image, None, return_features=True)
    best = np.inf
    for _ in range(runs):
        t0 = clock()
        policy.act(obs, image, None, return_features=True)
        best = min(best, clock() - t0)
        if best <= budget_s:
            return True, best
    return False, best


def validate_condition_set(task, value: str) -> list:
    """The conditions of ``value`` in ``task``; ValueError when the set is unknown or empty."""
    from gps_core.tasks import CONDITION_SETS, CONDITION_SETS_HELP

    if value not in CONDITION_SETS:
        raise ValueError(f"condition_set must be one of {CONDITION_SETS_HELP}, got {value!r}")
    conditions = task.condition_list(value)
    if not conditions:
        raise ValueError(f"condition_set: task {task.name!r} has no {value!r} conditions")
    return conditions


def describe_rejections(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "none"
