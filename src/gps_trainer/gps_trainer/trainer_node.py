"""The GPS trainer node: the GPS loop (gps_trainer.loop) with its trials run by the controller nodes.

    python -m gps_trainer.trainer_node --ros-args --params-file config/trainer.yaml

Services ``gps_trainer/start_iteration`` (returns at once; a worker thread runs the iterations) and
``gps_trainer/get_status``; publishes ``/gps/status`` (every second on the wall clock, so it is
published under ``use_sim_time`` too, and at every phase change); subscribes ``/gps/rollouts`` (raw CDR,
handed to the NodeSampler, which stores only Rollouts answering its outstanding trials).

The run directory (``output_dir``) is the loop's: restarting the node on it resumes at the next
iteration, reusing the rollouts already stored for an interrupted one; a run started with the Python
API (``python -m gps_trainer.procedure gps``) resumes here and the other way round.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
from pathlib import Path

import rclpy
import torch
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from gps_controller import conversions as conv
from gps_controller.qos import LATEST_QOS, ROLLOUT_QOS
from gps_core.logging_bridge import install_ros_logging
from gps_core.node_params import (
    ParameterError,
    check_value,
    nonempty,
    num_range,
    param_sources,
    refuse_undeclared,
)
from gps_core.spin import spin_guarded
from gps_msgs.msg import Rollout, TrainerStatus
from gps_msgs.srv import GetStatus, StartIteration
from gps_trainer.config import load_experiment, parse_overrides
from gps_trainer.loop import GPSRun
from gps_trainer.node_sampler import NodeSampler
from gps_trainer.storage import RolloutStore


@dataclasses.dataclass(frozen=True)
class TrainerParams:
    """The node's parameters (config/trainer.yaml), read-only after start."""

    experiment: str = "config/experiments/reach_traj_opt.yaml"
    output_dir: str = "runs/reach"
    controller_namespaces: tuple[str, ...] = ("",)
    overrides: tuple[str, ...] = ()  # key=value changes to the experiment (dotted keys, YAML values)
    trial_timeout_s: float = 120.0
    service_wait_s: float = 10.0
    robot_failure_limit: int = 2
    record_images: bool = False
    init_controllers: str = ""
    pretrained_vision: str = ""
    fsync: bool = True
    torch_threads: int = 1



def _any(_value) -> str:
    return ""


def _at_most(n: int):
    return lambda values: "" if len(values) <= n else f"must have at most {n} entries"


#: name -> (kind, check, description): the typed parameters (config/trainer.yaml documents each one).
SPECS = {
    "experiment": ("str", nonempty, "experiment YAML"),
    "output_dir": ("str", nonempty, "the run directory"),
    "controller_namespaces": ("strs", _at_most(256), "one entry per robot; '' = the root namespace"),
    "overrides": ("strs", _at_most(1000), "key=value changes to the experiment (dotted keys, YAML values)"),
    "trial_timeout_s": ("float", num_range(0.1, 86400.0), "s, [0.1, 86400]: a trial may take up to a day"),
    # a robot is probed every second: a window under 2 s would take a probe's round trip for silence
    "service_wait_s": ("float", num_range(2.0, 3600.0),
                       "s, [2, 3600]: how long a robot may answer nothing (services, trials, liveness probes)"),
    "robot_failure_limit": ("int", num_range(1, 100),
                            "[1, 100]: trials in a row its robot did not answer (service_wait_s each) fail the phase"),
    "record_images": ("bool", _any, "ask controllers for camera images"),
    "init_controllers": ("str", _any, "initial local controllers ('' = the experiment's)"),
    "pretrained_vision": ("str", _any, "pose-pretraining weights of the conv layers ('' = none)"),
    "fsync": ("bool", _any, "fsync each stored rollout"),
    "torch_threads": ("int", num_range(1, 256), "[1, 256]: torch threads of the S-step (fixed: same policy anywhere)"),
}
assert set(SPECS) == {f.name for f in dataclasses.fields(TrainerParams)}

#: Parameters every rclpy node has (not ours to check).
_ROS_PARAMETERS = {"use_sim_time", "start_type_description_service"}


def _declare(node: Node, argv: list[str]) -> tuple[TrainerParams, dict[str, str]]:
    """The typed parameters and where each was set (file or -p); an unknown key (a typo in the file
    must not fall back to a default) or a bad value raises ParameterError (a ValueError) naming where it
    came from, the key and the value."""
    sources = param_sources(argv, node.get_name())
    for name in sorted(set(node._parameter_overrides) - set(SPECS) - _ROS_PARAMETERS):
        raise ParameterError(f"{sources.get(name, 'parameters')}: unknown parameter {name!r} "
                             f"(value {node._parameter_overrides[name].value!r}); known: {sorted(SPECS)}")
    values = {}
    for f in dataclasses.fields(TrainerParams):
        default = f.default if not isinstance(f.default, tuple) else list(f.default) or [""]
        descriptor = ParameterDescriptor(description=SPECS[f.name][2], read_only=True, dynamic_typing=True)
        value = node.declare_parameter(f.name, default, descriptor).value
        values[f.name] = check_value(SPECS, f.name, value, sources.get(f.name, "default"))
    values["controller_namespaces"] = tuple(values["controller_namespaces"] or [""])
    values["overrides"] = tuple(v for v in values["overrides"] if v)
    return TrainerParams(**values), sources


class TrainerNode(Node):
    def __init__(self, argv: list[str] | None = None):
        super().__init__("gps_trainer")
        self.params, sources = _declare(self, list(sys.argv if argv is None else argv))
        refuse_undeclared(self, SetParametersResult)
        p, where = self.params, sources.get("overrides", "default")
        # One fixed thread count, not the machine's core count: a float32 network trained with another
        # thread count reduces in another order and ends with other weights (issue 22), so the S-step
        # gives the same policy on every machine and in the Python API run with the same count.
        torch.set_num_threads(p.torch_threads)
        self.cfg = load_experiment(p.experiment, parse_overrides(p.overrides, source=f"{where}: overrides"),
                                   overrides_source=where)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        out = Path(p.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.store = RolloutStore(out, fsync=p.fsync)
        cnn = self.cfg.algorithm.type != "traj_opt" and self.cfg.algorithm.policy.get("type") == "visuomotor_cnn"
        self.sampler = NodeSampler(self, p.controller_namespaces, self.store, _task(self.cfg), self.cfg.horizon,
                                   image_size=self.cfg.image_size, record_images=p.record_images or cnn,
                                   base_seed=self.cfg.seed, trial_timeout=p.trial_timeout_s,
                                   service_wait=p.service_wait_s, robot_failure_limit=p.robot_failure_limit,
                                   should_stop=self._stop.is_set, on_progress=self._on_progress)
        self.run = GPSRun(self.cfg, out, self.sampler, init_controllers=p.init_controllers or None,
                          pretrained_vision=p.pretrained_vision or None, on_phase=self._on_phase)
        done = self.run.next_iteration
        self.status = dict(phase="idle", algorithm=self.cfg.algorithm.type, experiment=self.cfg.name, iteration=done,
                           iterations_completed=done, iterations_remaining=0, rollouts_received=0,
                           rollouts_expected=0, policy_loss=math.nan, policy_cost=math.nan, success_rate=math.nan,
                           sample_success_rate=math.nan, message="")
        if self.run.rows:
            self._status_from_row(self.run.rows[-1])

        self.status_pub = self.create_publisher(TrainerStatus, "/gps/status", LATEST_QOS)
        self.create_subscription(Rollout, "/gps/rollouts", self._on_rollout, ROLLOUT_QOS, raw=True,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(StartIteration, "gps_trainer/start_iteration", self._on_start_iteration,
                            callback_group=services)
        self.create_service(GetStatus, "gps_trainer/get_status", self._on_get_status, callback_group=services)
        self.create_timer(1.0, self._publish_status, callback_group=services,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"trainer ready: experiment {self.cfg.name!r} ({self.cfg.algorithm.type}), {self.cfg.conditions} "
            f"conditions x {self.cfg.samples_per_condition} samples, robots {list(p.controller_namespaces)}, "
            f"run directory {out}, {done} iterations completed, {self.store.stored_count()} rollouts stored")

    # ------------------------------------------------------------------ status

    def _set(self, publish: bool = True, **fields) -> None:
        with self._lock:
            self.status.update(fields)
        if publish:
            self._publish_status()

    def _status_from_row(self, row: dict) -> None:
        keys = ("cost_per_condition", "kl_per_condition", "eta_per_condition", "step_mult_per_condition")
        self._set(False, **{k: [float(v) for v in row[k]] for k in keys if k in row},
                  **{k: float(row[k]) for k in ("policy_loss", "policy_cost", "success_rate", "sample_success_rate")
                     if row.get(k) is not None})

    def _status_msg(self) -> TrainerStatus:
        with self._lock:
            fields = dict(self.status, rollouts_rejected=self.sampler.book.rejected,
                          rollouts_corrupted=int(self.store.integrity["rollouts_lost"]))
        msg = conv.status_to_msg(**fields)
        msg.header.stamp = self.get_clock().now().to_msg()
        return msg

    def _publish_status(self) -> None:
        if rclpy.ok(context=self.context):  # the worker may still report after a SIGINT
            self.status_pub.publish(self._status_msg())

    def _on_phase(self, phase: str) -> None:
        self._set(phase=phase, iteration=self.run.next_iteration)

    def _on_progress(self, received: int, expected: int) -> None:
        """Rollouts of the iteration in progress: its samples, then its evaluation trials."""
        samples = self.cfg.conditions * self.cfg.samples_per_condition
        done_before = samples if self.status["phase"] == "evaluating" else 0
        self._set(rollouts_received=done_before + received, rollouts_expected=samples + self.cfg.conditions)

    # ------------------------------------------------------------------ services (thin)

    def _on_rollout(self, cdr: bytes) -> None:
        reason = self.sampler.offer(cdr)
        if reason:  # counted in the status; the log is rate-limited against floods
            self.get_logger().warning(f"rejected: {reason} ({self.sampler.book.rejected} so far)",
                                      throttle_duration_sec=2.0)

    def _on_get_status(self, request, response):
        response.status = self._status_msg()
        return response

    def _on_start_iteration(self, request, response):
        try:
            conv.check_start_iteration_request(request)
            if self._worker is not None and self._worker.is_alive():
                raise ValueError("busy: iterations are already running")
        except ValueError as exc:
            response.accepted, response.message = False, str(exc)
            return response
        first = self.run.next_iteration
        response.accepted, response.first_iteration = True, first
        response.message = f"running iterations {first}..{first + request.iterations - 1}"
        self._set(iterations_remaining=request.iterations, message=response.message)
        self._worker = threading.Thread(target=self._work, args=(first + request.iterations,), daemon=True)
        self._worker.start()
        return response

    # ------------------------------------------------------------------ worker

    def _work(self, until: int) -> None:
        try:
            while self.run.next_iteration < until and not self._stop.is_set():
                row = self.run.iteration()
                self._status_from_row(row)
                done = self.run.next_iteration
                self._set(phase="idle", iteration=done, iterations_completed=done, iterations_remaining=until - done,
                          message=f"iteration {done - 1} done")
        except Exception as exc:  # any failure ends the request with its reason; the node keeps serving
            if self._stop.is_set():
                return
            self.get_logger().error(f"iteration {self.run.next_iteration} failed: {exc}")
            self._set(phase="error", iterations_remaining=0, message=f"iteration {self.run.next_iteration}: {exc}")
            return
        self._set(phase="idle", message=f"done: {self.run.next_iteration} iterations completed")

    def shutdown(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
        self.run.close()
        self.store.close()


def _task(cfg):
    from gps_core.tasks import load_task

    return load_task(cfg.task)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = TrainerNode()
        install_ros_logging(node)  # the loop's and the library's log lines reach the ROS logger and /rosout
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        spin_guarded(executor, node.get_logger())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as exc:  # configuration: one clear line, no traceback
        print(f"[gps_trainer] invalid configuration: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        raise SystemExit(2) from None
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
