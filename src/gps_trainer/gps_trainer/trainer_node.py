"""The GPS trainer node: distributes trials over controller namespaces, stores rollouts durably,
runs the algorithm, pushes controllers/weights, checkpoints, publishes /gps/status.

    python -m gps_trainer.trainer_node --ros-args --params-file config/trainer.yaml

Services: ``gps_trainer/start_iteration`` (returns at once; a worker thread runs the iterations),
``gps_trainer/get_status``. Topics: subscribes ``/gps/rollouts`` (raw CDR, stored as received),
publishes ``/gps/status``. Clients per controller namespace ``<ns>/gps_controller/{run_trial,
set_linear_gaussian,set_policy_weights}``.

Restart with the same ``output_dir`` resumes: the latest complete checkpoint is loaded and the
rollouts already recorded for the interrupted iteration are reused (only missing trials run).

With MDGPS / BADMM each iteration also pushes the policy weights to every controller and then evaluates
the policy alone through the nodes (``run_trial`` policy_type "neural", no noise, one trial per
condition; those rollouts are stored too): ``policy_cost`` and ``success_rate`` in the status are the
policy's. Parameters ``init_controllers`` (controllers .npz, checkpoint or output directory of a
trajectory-only run) and ``pretrained_vision`` (pose-pretraining safetensors) start from earlier phases.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import deserialize_message

from gps_controller import conversions as conv
from gps_controller.qos import LATEST_QOS, ROLLOUT_QOS
from gps_msgs.msg import Rollout, TrainerStatus
from gps_msgs.srv import GetStatus, RunTrial, SetLinearGaussian, SetPolicyWeights, StartIteration
from gps_trainer import training
from gps_trainer.storage import CheckpointStore, RolloutStore


def _ns_prefix(ns: str) -> str:
    ns = ns.strip().strip("/")
    return f"/{ns}" if ns else ""


class TrainerError(RuntimeError):
    pass


class TrainerNode(Node):
    def __init__(self):
        super().__init__("gps_trainer")
        p = self.declare_parameter
        self.experiment_path = p("experiment", "config/experiments/reach_traj_opt.yaml").value
        self.output_dir = Path(p("output_dir", "runs/reach").value)
        self.namespaces = list(p("controller_namespaces", [""]).value) or [""]
        samples_override = int(p("samples_per_condition", 0).value)
        self.trial_timeout = float(p("trial_timeout_s", 120.0).value)
        self.service_wait = float(p("service_wait_s", 10.0).value)
        self.max_trial_attempts = int(p("max_trial_attempts", 3).value)
        self.record_images = bool(p("record_images", False).value)
        self.base_seed = int(p("seed", 0).value)
        self.fsync = bool(p("fsync", True).value)
        algorithm_override = p("algorithm", "").value
        init_controllers = str(p("init_controllers", "").value)
        pretrained_vision = str(p("pretrained_vision", "").value)

        self.info = training.load_experiment_info(self.experiment_path)
        if algorithm_override:
            self.info.algorithm = algorithm_override
        if samples_override > 0:
            self.info.samples_per_condition = samples_override
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.rollouts = RolloutStore(self.output_dir, fsync=self.fsync)
        self.checkpoints = CheckpointStore(self.output_dir)
        self.checkpoints.cleanup_temporaries()
        self.metrics = training.MetricsLogger(self.output_dir)
        self.algorithm = training.make_algorithm(self.info, init_controllers, pretrained_vision)
        # A visuomotor policy trains on the images the controllers saw: ask for them.
        self.uses_images = bool(getattr(self.algorithm, "uses_images", False))
        self.record_images = self.record_images or self.uses_images
        self.evaluates_policy = hasattr(self.algorithm, "evaluate")
        self._jacobians = None if self.info.algorithm == "record_only" else training.EEJacobians(self.info.task)

        self._lock = threading.Lock()
        self._rollout_event = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._current_iteration: int | None = None
        self.rejected_rollouts = 0
        self.status = dict(phase="idle", algorithm=self.info.algorithm, experiment=self.info.name, iteration=0,
                           iterations_completed=0, iterations_remaining=0, rollouts_received=0,
                           rollouts_expected=self._expected_rollouts(),
                           cost_per_condition=[], kl_per_condition=[], eta_per_condition=[],
                           step_mult_per_condition=[], policy_loss=math.nan, policy_cost=math.nan,
                           success_rate=math.nan, message="")
        self._resume()

        clients_group = ReentrantCallbackGroup()
        self.clients_by_ns = {
            ns: {
                "run_trial": self.create_client(RunTrial, f"{_ns_prefix(ns)}/gps_controller/run_trial",
                                                callback_group=clients_group),
                "set_linear_gaussian": self.create_client(
                    SetLinearGaussian, f"{_ns_prefix(ns)}/gps_controller/set_linear_gaussian",
                    callback_group=clients_group),
                "set_policy_weights": self.create_client(
                    SetPolicyWeights, f"{_ns_prefix(ns)}/gps_controller/set_policy_weights",
                    callback_group=clients_group),
            }
            for ns in self.namespaces
        }
        self.status_pub = self.create_publisher(TrainerStatus, "/gps/status", LATEST_QOS)
        self.create_subscription(Rollout, "/gps/rollouts", self._on_rollout, ROLLOUT_QOS, raw=True,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        services_group = MutuallyExclusiveCallbackGroup()
        self.create_service(StartIteration, "gps_trainer/start_iteration", self._on_start_iteration,
                            callback_group=services_group)
        self.create_service(GetStatus, "gps_trainer/get_status", self._on_get_status, callback_group=services_group)
        self.create_timer(1.0, self._publish_status, callback_group=services_group)
        self.get_logger().info(
            f"trainer ready: experiment {self.info.name!r} ({self.info.algorithm}), {self.info.num_conditions} "
            f"conditions x {self.info.samples_per_condition} samples, controllers {self.namespaces}, "
            f"output {self.output_dir}, {self.status['iterations_completed']} iterations completed, "
            f"{len(self.rollouts)} rollouts on disk")

    # ------------------------------------------------------------------ state

    def _expected_rollouts(self) -> int:
        """Rollouts per iteration: the samples, plus one policy-alone trial per condition for GPS."""
        M = self.info.num_conditions
        return M * self.info.samples_per_condition + (M if self.evaluates_policy else 0)

    def _resume(self) -> None:
        ckpt = self.checkpoints.latest()
        if ckpt is None:
            self.next_iteration = 0
            return
        self.algorithm.load_state(ckpt.algorithm)
        if ckpt.policy_weights is not None and hasattr(self.algorithm, "load_policy"):
            self.algorithm.load_policy(ckpt.policy_architecture, ckpt.policy_weights)
        self.next_iteration = ckpt.iteration + 1
        metrics = ckpt.metadata.get("metrics", {})
        self._set_status(iterations_completed=self.next_iteration, iteration=self.next_iteration,
                         **_status_metrics(metrics))
        self.get_logger().info(f"resumed from checkpoint of iteration {ckpt.iteration} ({ckpt.path})")

    def _set_status(self, publish: bool = False, **fields) -> None:
        with self._lock:
            self.status.update(fields)
        if publish:
            self._publish_status()

    def _status_msg(self) -> TrainerStatus:
        with self._lock:
            msg = conv.status_to_msg(**self.status)
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    # ------------------------------------------------------------------ callbacks (thin)

    def _publish_status(self) -> None:
        self.status_pub.publish(self._status_msg())

    def _on_get_status(self, request, response):
        response.status = self._status_msg()
        return response

    def _on_start_iteration(self, request, response):
        try:
            conv.check_start_iteration_request(request)
        except conv.MessageValidationError as exc:
            response.accepted, response.message = False, str(exc)
            return response
        if self._worker is not None and self._worker.is_alive():
            response.accepted, response.message = False, "busy: iterations are already running"
            return response
        response.accepted = True
        response.first_iteration = self.next_iteration
        response.message = f"running iterations {self.next_iteration}..{self.next_iteration + request.iterations - 1}"
        self._set_status(iterations_remaining=request.iterations, message=response.message)
        self._worker = threading.Thread(target=self._run_iterations, args=(request.iterations,), daemon=True)
        self._worker.start()
        return response

    def _on_rollout(self, cdr: bytes) -> None:
        reason = self.accept_rollout(cdr)
        if reason:
            self.rejected_rollouts += 1
            self.get_logger().warning(f"rejected rollout: {reason}")

    # ------------------------------------------------------------------ rollouts

    def accept_rollout(self, cdr: bytes) -> str:
        """Validate and store one rollout; returns '' when accepted (or a known duplicate), else the reason."""
        try:
            msg = deserialize_message(cdr, Rollout)
            data = conv.rollout_from_msg(msg)
        except (conv.MessageValidationError, Exception) as exc:  # noqa: B014 (bad CDR raises anything)
            return f"invalid message: {exc}"
        with self._lock:
            current = self._current_iteration
        where = f"{data.rollout_id!r} from {data.robot_namespace!r}"
        if current is None or data.iteration != current:
            return f"{where}: iteration {data.iteration} is not the one being sampled ({current})"
        if data.condition >= self.info.num_conditions:
            return f"{where}: unknown condition {data.condition} (experiment has {self.info.num_conditions})"
        if data.sample_index >= self.info.samples_per_condition and data.policy_type == "linear_gaussian":
            return f"{where}: sample_index {data.sample_index} >= {self.info.samples_per_condition}"
        if data.horizon != self.info.horizon and not data.aborted:
            return f"{where}: horizon {data.horizon} != experiment horizon {self.info.horizon}"
        if data.aborted:
            return f"{where}: trial aborted by the controller ({data.abort_reason}); it will be re-run"
        rec = self.rollouts.add(cdr)
        with self._rollout_event:
            if rec is not None:
                self.status["rollouts_received"] = len(self.rollouts.slots(current))
            self._rollout_event.notify_all()
        return ""

    # ------------------------------------------------------------------ worker

    def _run_iterations(self, count: int) -> None:
        for n in range(count):
            if self._stop.is_set():
                return
            try:
                self._one_iteration(self.next_iteration, first=n == 0)
            except Exception as exc:
                self.get_logger().error(f"iteration {self.next_iteration} failed: {exc}")
                self._set_status(phase="error", message=str(exc), iterations_remaining=0, publish=True)
                with self._lock:
                    self._current_iteration = None
                return
            self._set_status(iterations_remaining=count - n - 1, publish=True)
        self._set_status(phase="idle", message=f"done: {self.next_iteration} iterations completed", publish=True)

    def _one_iteration(self, it: int, first: bool = True) -> None:
        info = self.info
        with self._lock:
            self._current_iteration = it
        self._require_controllers()
        if first:
            # The controllers may have (re)started since the last push: give them the current local
            # controllers (the ones that sample iteration ``it``) and, for GPS, the current policy.
            self._push_controllers(self.algorithm.initial_controllers())
            if hasattr(self.algorithm, "serialized_policy"):
                self._push_policy(self.algorithm.serialized_policy(), max(it - 1, 0))
        expected = self._expected_rollouts()
        done = self.rollouts.slots(it)
        self._set_status(phase="sampling", iteration=it, rollouts_expected=expected,
                         rollouts_received=len(done), message=f"iteration {it}: {len(done)} rollouts reused",
                         publish=True)
        timing = {"sampling_s": self._sample(it)}
        t0 = time.perf_counter()
        self._set_status(phase="fitting_dynamics", publish=True)
        rollouts = self.rollouts.load(it, "linear_gaussian")
        batches = training.batches_from_rollouts(rollouts, info.num_conditions, self._jacobians)
        timing["load_s"] = time.perf_counter() - t0
        self._set_status(phase="c_step", publish=True)
        t0 = time.perf_counter()
        out = self.algorithm.iterate(it, batches)
        timing["algorithm_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._push_controllers(out.controllers)
        if out.policy is not None:
            self._push_policy(out.policy, it)
        timing["push_s"] = time.perf_counter() - t0
        metrics = {**out.metrics}
        if self.evaluates_policy:
            self._set_status(phase="evaluating", publish=True)
            t0 = time.perf_counter()
            metrics.update(self._evaluate_policy(it))
            timing["evaluation_s"] = time.perf_counter() - t0
        self._set_status(phase="checkpointing", publish=True)
        metrics.update(timing)
        controllers = {}
        for m, c in out.controllers.items():
            controllers[f"cond{m}/gains"], controllers[f"cond{m}/bias"] = c.K, c.k
            controllers[f"cond{m}/covariance"] = c.pol_covar
        self.checkpoints.save(it, self.algorithm.state_arrays(), controllers, out.policy,
                              {"experiment": info.name, "algorithm": info.algorithm,
                               "metrics": training._plain_dict(metrics),
                               "rollout_ids": [r.rollout_id for r in self.rollouts.records(it)]})
        self.metrics.log(it, metrics)
        self.next_iteration = it + 1
        with self._lock:
            self._current_iteration = None
        self._set_status(phase="idle", iteration=it + 1, iterations_completed=it + 1,
                         message=f"iteration {it} done", publish=True, **_status_metrics(metrics))
        self.get_logger().info(f"iteration {it} done: {training.summary(metrics)}")

    def _evaluate_policy(self, it: int) -> dict:
        """The pushed policy alone from every condition (mean actions), through the controllers."""
        info = self.info
        self._sample(it, policy_type="neural", samples=1, use_noise=False, record_images=self.uses_images)
        rollouts = self.rollouts.load(it, "neural")
        batches = training.batches_from_rollouts(rollouts, info.num_conditions, self._jacobians, "neural")
        metrics = self.algorithm.evaluate(batches)
        if self.uses_images and hasattr(self.algorithm, "write_overlay"):
            try:
                metrics["overlay_image"] = str(self.algorithm.write_overlay(batches, self.output_dir
                                                                            / "feature_points.png"))
            except Exception as exc:  # a missing image must not fail the iteration
                self.get_logger().warning(f"feature-point overlay not written: {exc}")
        return metrics

    def _require_controllers(self) -> None:
        missing = [ns for ns, c in self.clients_by_ns.items()
                   if not c["run_trial"].wait_for_service(timeout_sec=self.service_wait)]
        if missing:
            raise TrainerError(
                f"no controller answers in namespace(s) {missing}: {_ns_prefix(missing[0])}/gps_controller/run_trial "
                f"not available after {self.service_wait:.0f} s (check controller_namespaces)")

    def _sample(self, it: int, policy_type: str = "linear_gaussian", samples: int | None = None,
                use_noise: bool = True, record_images: bool | None = None) -> float:
        """Run every missing trial of iteration ``it``; each namespace runs one trial at a time."""
        t_start = time.perf_counter()
        info = self.info
        samples = info.samples_per_condition if samples is None else samples
        record_images = self.record_images if record_images is None else record_images
        pending = deque(training.plan_trials(it, info.num_conditions, samples, self.rollouts.slots(it),
                                             policy_type=policy_type))
        attempts: dict[tuple, int] = {}
        running: dict[str, tuple[training.Trial, object, float]] = {}
        while pending or running:
            if self._stop.is_set():
                raise TrainerError("shutting down")
            for ns in self.namespaces:
                if ns not in running and pending:
                    trial = pending.popleft()
                    attempts[trial.key] = attempts.get(trial.key, 0) + 1
                    req = RunTrial.Request(condition=trial.condition, iteration=trial.iteration,
                                           sample_index=trial.sample_index, policy_type=trial.policy_type,
                                           horizon=info.horizon, use_noise=use_noise,
                                           seed=trial.seed(self.base_seed), record_images=record_images)
                    future = self.clients_by_ns[ns]["run_trial"].call_async(req)
                    running[ns] = (trial, future, time.monotonic())
            with self._rollout_event:
                self._rollout_event.wait(timeout=0.02)
                stored = self.rollouts.slots(it)
            for ns, (trial, future, started) in list(running.items()):
                retry_reason = None
                if future.done():
                    result = future.result()
                    if not result.success or result.aborted:
                        retry_reason = f"{ns or '/'}: {result.message or 'aborted'}"
                    elif trial.key not in stored:
                        # The answer came before the rollout (different DDS entities): give it a moment.
                        if time.monotonic() - started > self.trial_timeout:
                            retry_reason = f"{ns or '/'}: rollout {result.rollout_id} never arrived"
                        else:
                            continue
                elif time.monotonic() - started > self.trial_timeout:
                    retry_reason = f"{ns or '/'}: no answer within {self.trial_timeout:.0f} s"
                    future.cancel()
                else:
                    continue
                del running[ns]
                if retry_reason:
                    self.get_logger().warning(f"trial {trial.key} failed: {retry_reason}")
                    if attempts[trial.key] >= self.max_trial_attempts:
                        raise TrainerError(f"trial {trial.key} failed {attempts[trial.key]} times: {retry_reason}")
                    pending.append(trial)
        return time.perf_counter() - t_start

    def _call(self, ns: str, service: str, request, timeout: float):
        future = self.clients_by_ns[ns][service].call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                future.cancel()
                raise TrainerError(f"{_ns_prefix(ns)}/gps_controller/{service}: no answer within {timeout:.0f} s")
            time.sleep(0.005)
        return future.result()

    def _push_controllers(self, controllers: dict) -> None:
        for m, arrays in controllers.items():
            msg = conv.linear_gaussian_to_msg(arrays)
            for ns in self.namespaces:
                res = self._call(ns, "set_linear_gaussian",
                                 SetLinearGaussian.Request(condition=int(m), controller=msg), self.trial_timeout)
                if not res.success:
                    raise TrainerError(f"{ns or '/'} rejected the controller of condition {m}: {res.message}")

    def _push_policy(self, policy: tuple[str, bytes, str], it: int) -> None:
        arch, weights, sha = policy
        for ns in self.namespaces:
            req = SetPolicyWeights.Request(architecture=arch, weights=conv.to_uint8_array(weights), sha256=sha,
                                           iteration=it)
            res = self._call(ns, "set_policy_weights", req, self.trial_timeout)
            if not res.success:
                raise TrainerError(f"{ns or '/'} rejected the policy weights: {res.message}")

    def shutdown(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
        self.rollouts.close()
        self.metrics.close()


def _status_metrics(metrics: dict) -> dict:
    out = {}
    for key in ("cost_per_condition", "kl_per_condition", "eta_per_condition", "step_mult_per_condition"):
        if key in metrics:
            out[key] = [float(v) for v in np.asarray(metrics[key], dtype=float).reshape(-1)]
    for key in ("policy_loss", "policy_cost", "success_rate"):
        if key in metrics and metrics[key] is not None:
            out[key] = float(metrics[key])
    return out


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = TrainerNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


if __name__ == "__main__":
    main()
