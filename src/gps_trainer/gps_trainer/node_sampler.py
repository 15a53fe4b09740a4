"""The :class:`~gps_trainer.loop.Sampler` over the ROS nodes: trials run by the controller nodes
(``<ns>/gps_controller/run_trial``, one trial in flight per robot, spread over every configured
namespace), their Rollouts arriving on ``/gps/rollouts`` and stored durably (RolloutStore) before use.

Before each phase it pushes what the robots need (``set_linear_gaussian`` for every condition, or
``set_policy_weights``), so a controller restarted between phases is brought up to date; a trial that
fails because its robot lost them (restarted mid-phase) is retried after a push. Trials that are already
stored (a resumed iteration) are not run again. Each trial runs T + 1 steps with the seed of
:func:`gps_trainer.sim_sampler.trial_seed`, as :class:`~gps_trainer.sim_sampler.SimSampler` does.

What is stored (issue 13): only a Rollout that answers an outstanding trial of this phase, from the
robot that trial was sent to, with the experiment's dimensions, not aborted; anything else is rejected
with a logged reason and counted (:class:`TrialBook`). A trial is answered only by a rollout the store
accepted: one it refuses (an id or slot stored already) is rejected too, and the trial stays outstanding.

Robots that stall and robots that are gone (issue 22): while a trial or a push is in flight the sampler
asks the robot's controller node every second whether it answers (:class:`Liveness`: its parameter
service, served by the node's executor between control ticks). A trial fails *unanswered* when its robot
answered nothing (neither the trial nor a probe) for ``service_wait`` seconds; ``robot_failure_limit``
such trials in a row fail the phase, naming the robot (a dead robot: after about that many
``service_wait``). A trial that fails while its robot answers (a stall it came back from, a reset that
timed out, an abort, a lost rollout) costs only itself: it runs again at once, at most
``MAX_TRIAL_ATTEMPTS`` times in all, and the robot's count of unanswered trials starts again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gps_controller import conversions as conv
from gps_controller.policies.neural import GaussianPolicy
from gps_controller.policies.serialization import serialize_policy
from gps_core.kinematics import ArmKinematics
from gps_core.layout import NUM_JOINTS, OBS_DIM, STATE_DIM
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_core.samples import SampleBatch
from gps_core.tasks import condition_ee_points
from gps_trainer.sim_sampler import EVAL_SAMPLE_INDEX, extend_controller, trial_seed

__all__ = ["Liveness", "MAX_TRIAL_ATTEMPTS", "Trial", "TrialBook", "NodeSampler", "SamplingError"]


#: Attempts of one trial whose failures its robot answered (each a stall, an abort, a lost rollout): a
#: stall spoils the trial in flight and at most the next one; a fourth failure of the same trial is a
#: robot that answers but cannot run it, and fails the phase.
MAX_TRIAL_ATTEMPTS = 4
#: How often an in-flight trial's robot is asked whether it answers, and how long one probe may take.
PROBE_PERIOD_S = 1.0
PROBE_TIMEOUT_S = 3.0


class SamplingError(RuntimeError):
    """A phase could not collect its rollouts (the message names the robot and the cause)."""


class Liveness:
    """Whether one robot answers: ``client`` (an rclpy client of its controller's
    ``rcl_interfaces/srv/GetParameters`` service) is called every PROBE_PERIOD_S while :meth:`poll` is
    called; :meth:`silent_since` is how long the robot has answered nothing since a given time (a
    stopped or dead process answers nothing; a busy one answers between its control ticks)."""

    def __init__(self, client: Any, clock: Callable[[], float] = time.monotonic):
        self.client, self.clock = client, clock
        self.last_answer = -float("inf")
        self._probe, self._probe_sent = None, -float("inf")

    def heard(self) -> None:
        """The robot answered something else (a trial, a push)."""
        self.last_answer = self.clock()

    def poll(self) -> None:
        from rcl_interfaces.srv import GetParameters

        now = self.clock()
        if self._probe is not None:
            if self._probe.done():
                if self._probe.result() is not None:
                    self.last_answer = now
                self._probe = None
            elif now - self._probe_sent > PROBE_TIMEOUT_S:  # asked while it did not run: ask again
                self.client.remove_pending_request(self._probe)
                self._probe = None
        if self._probe is None and now - self._probe_sent >= PROBE_PERIOD_S:
            self._probe, self._probe_sent = self.client.call_async(GetParameters.Request(names=["max_horizon"])), now

    def answered_recently(self, since: float) -> bool:
        """The robot answered after ``since``, and within the last probe period and timeout."""
        return self.last_answer > since and self.clock() - self.last_answer <= PROBE_PERIOD_S + PROBE_TIMEOUT_S

    def silent_since(self, since: float) -> float:
        """Seconds since ``since`` (a clock() time) without an answer from the robot."""
        return self.clock() - max(self.last_answer, since)


def ns_key(ns: str) -> str:
    """A namespace as compared: no leading/trailing slashes ('' = the root namespace)."""
    return str(ns).strip().strip("/")


@dataclass(frozen=True)
class Trial:
    iteration: int
    condition: int
    sample_index: int
    policy_type: str = "linear_gaussian"

    @property
    def slot(self) -> tuple[int, int, int, str]:
        return (self.iteration, self.condition, self.sample_index, self.policy_type)


@dataclass
class TrialBook:
    """The trials of the phase in progress and what a Rollout must be to answer one (no ROS: tested
    without DDS). ``dims``: (dX, dU, dO); ``horizon``: T + 1; ``image_size``: (H, W) when images were
    requested, else None."""

    dims: tuple[int, int, int]
    horizon: int
    outstanding: dict[tuple, str] = field(default_factory=dict)  # slot -> robot namespace it was sent to
    image_size: tuple[int, int] | None = None
    rejected: int = 0
    last_rejection: str = ""

    def expect(self, trial: Trial, namespace: str) -> None:
        self.outstanding[trial.slot] = ns_key(namespace)

    def forget(self, trial: Trial) -> None:
        self.outstanding.pop(trial.slot, None)

    def check(self, r: conv.RolloutData) -> str:
        """'' when ``r`` answers an outstanding trial; else why it is rejected."""
        where = f"rollout {r.rollout_id!r} from {r.robot_namespace or '/'!r}"
        if not r.rollout_id:
            return f"{where}: empty rollout_id"
        slot = (r.iteration, r.condition, r.sample_index, r.policy_type)
        sent_to = self.outstanding.get(slot)
        if sent_to is None:
            return f"{where}: no outstanding trial {slot}"
        if ns_key(r.robot_namespace) != sent_to:
            return f"{where}: trial {slot} was sent to {sent_to or '/'!r}"
        if r.aborted:
            return f"{where}: aborted by the controller ({r.abort_reason}); the trial runs again"
        dX, dU, dO = self.dims
        got = (r.states.shape[1], r.actions.shape[1], r.observations.shape[1] if r.observations.size else 0)
        if got != (dX, dU, dO):
            return f"{where}: dimensions (dX, dU, dO) = {got}, the experiment's are {(dX, dU, dO)}"
        if r.horizon != self.horizon:
            return f"{where}: {r.horizon} steps, the trial asked for {self.horizon}"
        if self.image_size is not None:
            if r.images is None or r.images.shape[1:3] != self.image_size:
                shape = None if r.images is None else r.images.shape[1:3]
                return f"{where}: images {shape}, the trial asked for {self.image_size}"
        return ""

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.last_rejection = reason


class NodeSampler:
    """Trials on the controller nodes in ``namespaces``, called from a worker thread of ``node`` (an
    rclpy Node spun by a multi-threaded executor). The node forwards every raw ``/gps/rollouts`` message
    to :meth:`offer`. ``store``: the run directory's RolloutStore. ``should_stop()``: abort a phase
    (shutdown). ``on_progress(received, expected)``: after each stored rollout."""

    def __init__(self, node: Any, namespaces: Sequence[str], store: Any, task: Any, horizon: int, *,
                 image_size: int = 64, record_images: bool = False, base_seed: int = 0,
                 trial_timeout: float = 120.0, service_wait: float = 10.0, robot_failure_limit: int = 2,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_progress: Callable[[int, int], None] = lambda received, expected: None):
        from rcl_interfaces.srv import GetParameters
        from rclpy.callback_groups import ReentrantCallbackGroup

        from gps_msgs.srv import RunTrial, SetLinearGaussian, SetPolicyWeights

        self.node, self.store, self.task = node, store, task
        self.namespaces = [ns_key(ns) for ns in namespaces] or [""]
        self.T = int(horizon or task.horizon)
        self.dX, self.dU, self.dO = STATE_DIM, NUM_JOINTS, OBS_DIM
        self.action_limits = None  # each robot's controller node keeps its effort limits (not sent to the trainer)
        self.image_size, self.record_images, self.base_seed = int(image_size), bool(record_images), int(base_seed)
        self.trial_timeout, self.service_wait = float(trial_timeout), float(service_wait)
        self.robot_failure_limit = int(robot_failure_limit)
        self.should_stop, self.on_progress = should_stop, on_progress
        # EE points per training condition: they move with the condition's grasp (toy hammer)
        self.kinematics = [ArmKinematics(condition_ee_points(task, c.grasp)) for c in task.condition_list("train")]
        self.book = TrialBook((self.dX, self.dU, self.dO), self.T + 1)
        self._lock = threading.Condition()
        self._types = {"run_trial": RunTrial, "set_linear_gaussian": SetLinearGaussian,
                       "set_policy_weights": SetPolicyWeights, "get_parameters": GetParameters}
        group = ReentrantCallbackGroup()
        self.clients = {ns: {name: node.create_client(t, f"{'/' + ns if ns else ''}/gps_controller/{name}",
                                                      callback_group=group)
                             for name, t in self._types.items()}
                        for ns in self.namespaces}
        self._pushed: dict[str, Callable[[str], None]] = {}
        self.liveness = {ns: Liveness(self.clients[ns]["get_parameters"]) for ns in self.namespaces}

    # ------------------------------------------------------------------ Sampler

    def initial_states(self, conditions: Sequence[int]) -> list[np.ndarray]:
        """x_0 of each condition from the task file: the robot starts at rest at its initial joint
        angles (what gps_sim's reset does), EE points relative to the condition's target points."""
        from gps_core.layout import target_points_from_pose

        out = []
        for m in conditions:
            cond = self.task.condition_list("train")[m]
            q = np.asarray(cond.joint_angles, dtype=np.float64)
            rel = self.kinematics[m].ee_points(q) - target_points_from_pose(cond.target_pose, self.task.target_points)
            out.append(np.concatenate([q, np.zeros(7), rel.reshape(-1), np.zeros(9)]))
        return out

    def target_pose(self, condition: int) -> np.ndarray:
        return np.asarray(self.task.condition_list("train")[condition].target_pose, dtype=np.float64)

    def sample(self, iteration: int, controllers: Sequence[LinearGaussianPolicy], samples: int) -> list[SampleBatch]:
        self._push_controllers(controllers)
        trials = [Trial(iteration, m, i) for i in range(samples) for m in range(len(controllers))]
        self._run(trials, use_noise=True, record_images=self.record_images)
        return self._batches(iteration, "linear_gaussian", len(controllers), samples)

    def sample_policy(self, iteration: int, policy: GaussianPolicy, conditions: int, samples: int
                      ) -> list[SampleBatch]:
        self._push_policy(policy, iteration)
        trials = [Trial(iteration, m, i, "neural") for i in range(samples) for m in range(int(conditions))]
        self._run(trials, use_noise=True, record_images=self.record_images or bool(policy.uses_images))
        return self._batches(iteration, "neural", int(conditions), samples)

    def evaluate(self, iteration: int, actor: GaussianPolicy | Sequence[LinearGaussianPolicy],
                 conditions: Sequence[int]) -> list[SampleBatch]:
        if isinstance(actor, GaussianPolicy):
            self._push_policy(actor, iteration)  # the controller feeds it x or o as actor.observes says
            kind, images = "neural", bool(actor.uses_images)
        else:
            self._push_controllers(actor)
            kind, images = "linear_gaussian", False
        trials = [Trial(iteration, int(m), EVAL_SAMPLE_INDEX, kind) for m in conditions]
        self._run(trials, use_noise=False, record_images=images)
        by_slot = {(r.condition, r.sample_index): r for r in self.store.load(iteration, kind)}
        return [self._batch([by_slot[(int(m), EVAL_SAMPLE_INDEX)]], int(m)) for m in conditions]

    def close(self) -> None:
        for clients in self.clients.values():
            for c in clients.values():
                self.node.destroy_client(c)

    # ------------------------------------------------------------------ rollouts in

    def offer(self, cdr: bytes) -> str:
        """A raw Rollout from /gps/rollouts: stored when it answers an outstanding trial; returns '' or
        the reason it was rejected (also counted and kept as ``book.last_rejection``)."""
        from rclpy.serialization import deserialize_message

        from gps_msgs.msg import Rollout

        try:
            data = conv.rollout_from_msg(deserialize_message(cdr, Rollout))
        except Exception as exc:  # bad CDR raises anything
            reason = f"invalid Rollout: {exc}"
        else:
            with self._lock:
                reason = self.book.check(data)
                if not reason:
                    slot = (data.iteration, data.condition, data.sample_index, data.policy_type)
                    try:
                        stored = self.store.add(cdr)
                    except Exception as exc:  # a store failure loses this rollout only: its trial runs again
                        reason = f"rollout {data.rollout_id!r} not stored: {exc}"
                    else:
                        # Only a rollout the store accepted answers its trial: one it refused (its id, or
                        # its slot, is stored already: a duplicate or a forgery) leaves the trial
                        # outstanding for the robot's own rollout.
                        if stored is None:
                            what = f"trial {slot}" if slot in self.store.slots(data.iteration) else "id"
                            reason = (f"rollout {data.rollout_id!r} from {data.robot_namespace or '/'!r}: not "
                                      f"stored, its {what} is stored already")
                        else:
                            self.book.outstanding.pop(slot, None)
                self._lock.notify_all()
        if reason:
            with self._lock:
                self.book.reject(reason)
        return reason

    # ------------------------------------------------------------------ trials out

    def _run(self, trials: list[Trial], use_noise: bool, record_images: bool) -> None:
        """Run every trial not stored yet; one in flight per robot."""
        from gps_msgs.srv import RunTrial

        it = trials[0].iteration if trials else 0
        with self._lock:
            self.book.image_size = (self.image_size, self.image_size) if record_images else None
        stored = self.store.slots(it)
        pending = deque(t for t in trials if t.slot not in stored)
        expected, running = len(trials), {}
        unanswered, repushes = dict.fromkeys(self.namespaces, 0), dict.fromkeys(self.namespaces, 0)
        attempts: dict[tuple, int] = {}
        answered_at: dict[str, float] = {}  # when each robot's trial in flight answered
        self.on_progress(expected - len(pending), expected)
        while pending or running:
            if self.should_stop():
                raise SamplingError("stopped")
            for ns in self.namespaces:
                if ns not in running and pending:
                    trial = pending.popleft()
                    with self._lock:
                        self.book.expect(trial, ns)
                    req = RunTrial.Request(condition=trial.condition, iteration=trial.iteration,
                                           sample_index=trial.sample_index, policy_type=trial.policy_type,
                                           horizon=self.T + 1, use_noise=use_noise, record_images=record_images,
                                           seed=trial_seed(self.base_seed, trial.iteration, trial.condition,
                                                           trial.sample_index))
                    running[ns] = (trial, self.clients[ns]["run_trial"].call_async(req), time.monotonic())
            with self._lock:
                self._lock.wait(timeout=0.02)
                stored = self.store.slots(it)
            for ns, (trial, future, started) in list(running.items()):
                live = self.liveness[ns]
                live.poll()
                cause, answered = None, True
                if future.done():
                    if ns not in answered_at:
                        live.heard()
                        answered_at[ns] = time.monotonic()
                    result = future.result()
                    if not result.success or result.aborted:
                        cause = result.message or "aborted"
                    elif trial.slot not in stored:
                        # The answer can come before the rollout (different DDS entities). A robot that
                        # then answers no liveness probe either is gone with its rollout: it fails like an
                        # unanswered trial (service_wait), not after the whole trial_timeout.
                        if live.silent_since(answered_at[ns]) > self.service_wait:
                            cause, answered = (f"rollout {result.rollout_id} never arrived, and no answer to "
                                               f"liveness probes for {self.service_wait:g} s"), False
                        elif time.monotonic() - started <= self.trial_timeout:
                            continue
                        else:
                            cause = f"rollout {result.rollout_id} never arrived"
                elif live.silent_since(started) > self.service_wait:
                    future.cancel()
                    cause, answered = f"no answer (to the trial or to liveness probes) for {self.service_wait:g} s", False
                elif time.monotonic() - started > self.trial_timeout:
                    future.cancel()
                    cause = f"no answer within {self.trial_timeout:g} s"
                    answered = live.answered_recently(started)  # probes yes, the trial no: a trial that hangs
                else:
                    continue
                del running[ns]
                answered_at.pop(ns, None)
                if cause is None:
                    unanswered[ns] = repushes[ns] = 0
                    attempts.pop(trial.slot, None)
                    self.on_progress(len(stored & {t.slot for t in trials}), expected)
                    continue
                with self._lock:
                    self.book.forget(trial)
                self.node.get_logger().warning(f"trial {trial.slot} on {ns or '/'} failed: {cause}")
                self._count_failure(ns, trial, cause, answered, unanswered, repushes, attempts)
                pending.appendleft(trial)  # the spoiled trial runs again first

    def _count_failure(self, ns: str, trial: Trial, cause: str, answered: bool, unanswered: dict[str, int],
                       repushes: dict[str, int], attempts: dict[tuple, int]) -> None:
        """Book one failed trial; SamplingError when its robot is gone or cannot run it."""
        robot = ns or "/"
        lost_state = "no linear-Gaussian controller" in cause or "no neural policy" in cause
        if lost_state and repushes[ns] < self.robot_failure_limit:
            repushes[ns] += 1  # the robot restarted: bring it up to date, then the trial runs again
            unanswered[ns] = 0
            self._pushed[ns](ns)
        elif not answered:
            unanswered[ns] += 1
            if unanswered[ns] >= self.robot_failure_limit:
                n = unanswered[ns]
                raise SamplingError(f"robot {robot}: no answer to {n} trial{'s' if n > 1 else ''} in a row (the "
                                    f"last {trial.slot}) nor to liveness probes, {self.service_wait:g} s each: is "
                                    f"its controller running?")
        else:
            unanswered[ns] = 0  # it answers: it is there, this trial was spoiled
            attempts[trial.slot] = attempts.get(trial.slot, 0) + 1
            if attempts[trial.slot] >= MAX_TRIAL_ATTEMPTS:
                raise SamplingError(f"robot {robot}: trial {trial.slot} failed {attempts[trial.slot]} times while "
                                    f"the robot answered, the last with: {cause}")

    def _require(self, ns: str) -> None:
        """The robot's services are discovered, within the budget a robot that goes silent mid-phase gets
        (robot_failure_limit x service_wait): a link that drops before the trainer first found the robot
        is the same fault as one that drops later, and a robot slow to be discovered is not gone."""
        service = f"{'/' + ns if ns else ''}/gps_controller/run_trial"
        for attempt in range(1, self.robot_failure_limit + 1):
            if self.clients[ns]["run_trial"].wait_for_service(timeout_sec=self.service_wait):
                break
            if attempt == self.robot_failure_limit or self.should_stop():
                raise SamplingError(f"robot {ns or '/'}: no answer: {service} not available after "
                                    f"{attempt * self.service_wait:.0f} s (is its controller running?)")
            self.node.get_logger().warning(f"robot {ns or '/'}: {service} not available after "
                                           f"{attempt * self.service_wait:.0f} s; waiting up to "
                                           f"{self.robot_failure_limit * self.service_wait:.0f} s")
        max_horizon = self._max_horizon(ns)
        if max_horizon is not None and self.T + 1 > max_horizon:
            raise SamplingError(f"robot {ns or '/'}: the experiment's trials run horizon + 1 = {self.T + 1} steps, "
                                f"over the controller's max_horizon {max_horizon}: shorten the experiment's horizon "
                                f"or raise the controller's max_horizon")

    def _max_horizon(self, ns: str) -> int | None:
        """The controller's ``max_horizon`` parameter (None when it cannot be read: the controller then
        refuses a push or a trial that is too long itself, with its reason)."""
        from rcl_interfaces.msg import ParameterType
        from rcl_interfaces.srv import GetParameters

        client = self.clients[ns]["get_parameters"]
        if not client.wait_for_service(timeout_sec=min(self.service_wait, PROBE_TIMEOUT_S)):
            return None
        future = client.call_async(GetParameters.Request(names=["max_horizon"]))
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not future.done() or future.result() is None:
            client.remove_pending_request(future)
            return None
        self.liveness[ns].heard()
        values = future.result().values
        if len(values) == 1 and values[0].type == ParameterType.PARAMETER_INTEGER:
            return int(values[0].integer_value)
        return None

    def _call(self, ns: str, service: str, request: Any) -> Any:
        """A push: answered, or SamplingError when the robot answers nothing (neither the push nor liveness
        probes) for robot_failure_limit x service_wait, the time an unanswered trial would take to fail the
        phase, or answers probes but not the push within trial_timeout."""
        future = self.clients[ns][service].call_async(request)
        live, started = self.liveness[ns], time.monotonic()
        while not future.done():
            live.poll()
            silent = live.silent_since(started)
            if silent > self.robot_failure_limit * self.service_wait:
                future.cancel()
                raise SamplingError(f"robot {ns or '/'}: no answer to gps_controller/{service} nor to liveness "
                                    f"probes for {silent:.0f} s (is its controller running?)")
            hangs = time.monotonic() - started > self.trial_timeout and live.answered_recently(started)
            if hangs or self.should_stop():
                future.cancel()
                raise SamplingError(f"robot {ns or '/'}: gps_controller/{service} gave no answer within "
                                    f"{self.trial_timeout:.0f} s")
            time.sleep(0.005)
        live.heard()
        return future.result()

    def _push_controllers(self, controllers: Sequence[LinearGaussianPolicy]) -> None:
        from gps_msgs.srv import SetLinearGaussian

        msgs = [conv.linear_gaussian_to_msg(extend_controller(c, self.T + 1)) for c in controllers]

        def push(ns: str) -> None:
            for m, msg in enumerate(msgs):
                res = self._call(ns, "set_linear_gaussian", SetLinearGaussian.Request(condition=m, controller=msg))
                if not res.success:
                    raise SamplingError(f"robot {ns or '/'} refused the controller of condition {m}: {res.message}")

        for ns in self.namespaces:
            self._require(ns)
            push(ns)
            self._pushed[ns] = push

    def _push_policy(self, policy: GaussianPolicy, iteration: int) -> None:
        from gps_msgs.srv import SetPolicyWeights

        arch, weights, sha = serialize_policy(policy)

        def push(ns: str) -> None:
            req = SetPolicyWeights.Request(architecture=arch, weights=conv.to_uint8_array(weights), sha256=sha,
                                           iteration=int(iteration))
            res = self._call(ns, "set_policy_weights", req)
            if not res.success:
                raise SamplingError(f"robot {ns or '/'} refused the policy weights: {res.message}")

        for ns in self.namespaces:
            self._require(ns)
            push(ns)
            self._pushed[ns] = push

    # ------------------------------------------------------------------ rollouts -> batches

    def _batches(self, iteration: int, policy_type: str, conditions: int, samples: int) -> list[SampleBatch]:
        by_slot = {(r.condition, r.sample_index): r for r in self.store.load(iteration, policy_type)}
        missing = [(m, i) for m in range(conditions) for i in range(samples) if (m, i) not in by_slot]
        if missing:
            raise SamplingError(f"iteration {iteration}: no stored rollout for (condition, sample) {missing}")
        return [self._batch([by_slot[(m, i)] for i in range(samples)], m) for m in range(conditions)]

    def _batch(self, rollouts: list[conv.RolloutData], condition: int) -> SampleBatch:
        images = np.stack([r.images for r in rollouts]) if all(r.images is not None for r in rollouts) else None
        kin = self.kinematics[condition]
        jac = np.stack([np.stack([kin.ee_point_jacobians(x[:7]) for x in r.states]) for r in rollouts])
        return SampleBatch(X=np.stack([r.states for r in rollouts]), U=np.stack([r.actions for r in rollouts]),
                           obs=np.stack([r.observations for r in rollouts]), images=images,
                           noise=np.stack([r.noise for r in rollouts]), ee_jacobians=jac, condition=condition)
