"""Trainer orchestration without ROS: experiment, trial plan, rollouts -> SampleBatches, algorithm
adapter, checkpoint state, metrics (TensorBoard scalars and the cost-per-iteration plot).

The trainer node (trainer_node.py) owns the ROS side (services, topics, controller clients) and
calls into this module; everything here imports no rclpy and is unit-tested without DDS.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from gps_controller.conversions import RolloutData
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_core.samples import SampleBatch

LOGGER = logging.getLogger(__name__)
ALGORITHMS = ("traj_opt", "mdgps", "badmm", "record_only")


# --------------------------------------------------------------------------- experiment


@dataclass
class ExperimentInfo:
    """What the trainer node itself needs from an experiment YAML (the algorithm reads the rest)."""

    name: str
    algorithm: str
    task: str
    num_conditions: int
    samples_per_condition: int
    horizon: int
    path: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def load_experiment_info(path: str | Path) -> ExperimentInfo:
    """Read the trainer-relevant fields of an experiment YAML (tolerant of extra keys)."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: an experiment file must be a mapping")
    alg = raw.get("algorithm", "traj_opt")
    alg_name = alg.get("type", alg.get("name", "traj_opt")) if isinstance(alg, dict) else str(alg)
    if alg_name not in ALGORITHMS:
        raise ValueError(f"{path}: unknown algorithm {alg_name!r}; known: {ALGORITHMS}")
    task = raw.get("task", "reach")
    task_name = task.get("name", "reach") if isinstance(task, dict) else str(task)
    num_conditions = raw.get("conditions", raw.get("num_conditions"))
    horizon = raw.get("horizon", 0)
    if num_conditions is None or not horizon:
        from gps_core.tasks import load_task

        t = load_task(task_name)
        num_conditions = t.num_conditions("train") if num_conditions is None else num_conditions
        horizon = horizon or t.horizon
    if isinstance(num_conditions, list):
        num_conditions = len(num_conditions)
    samples = raw.get("samples_per_condition", raw.get("num_samples", 5))
    return ExperimentInfo(name=str(raw.get("name", path.stem)), algorithm=alg_name, task=task_name,
                          num_conditions=int(num_conditions), samples_per_condition=int(samples),
                          horizon=int(horizon), path=str(path), raw=raw)


# --------------------------------------------------------------------------- trial plan


@dataclass(frozen=True)
class Trial:
    iteration: int
    condition: int
    sample_index: int
    policy_type: str = "linear_gaussian"

    @property
    def key(self) -> tuple[int, int, int, str]:
        return (self.iteration, self.condition, self.sample_index, self.policy_type)

    def seed(self, base_seed: int = 0) -> int:
        """Deterministic noise seed, so a trial re-run after a restart draws the same noise."""
        return zlib.crc32(f"{base_seed}/{self.iteration}/{self.condition}/{self.sample_index}".encode()) + 1


def plan_trials(iteration: int, num_conditions: int, samples: int, done: set[tuple] | None = None,
                policy_type: str = "linear_gaussian") -> list[Trial]:
    """The trials of one iteration still missing; sample-major so conditions spread across robots."""
    done = done or set()
    trials = [Trial(iteration, m, i, policy_type) for i in range(samples) for m in range(num_conditions)]
    return [t for t in trials if t.key not in done]


def assign_round_robin(trials: list[Trial], namespaces: list[str]) -> dict[str, list[Trial]]:
    """Static split (used by the benchmark); the node assigns dynamically to whichever robot is free."""
    out: dict[str, list[Trial]] = {ns: [] for ns in namespaces}
    for i, t in enumerate(trials):
        out[namespaces[i % len(namespaces)]].append(t)
    return out


# --------------------------------------------------------------------------- rollouts -> batches


class EEJacobians:
    """EE-point Jacobians (T, 9, 7) from the joint angles x[:7] of each state (Rollouts don't carry them)."""

    def __init__(self, task_name: str = "reach"):
        from gps_core.kinematics import ArmKinematics
        from gps_core.tasks import load_task

        self.kin = ArmKinematics(load_task(task_name).ee_points)

    def __call__(self, states: np.ndarray) -> np.ndarray:
        return np.stack([self.kin.ee_point_jacobians(x[:7]) for x in states])


def batches_from_rollouts(rollouts: list[RolloutData], num_conditions: int, jacobians: EEJacobians | None,
                          policy_type: str = "linear_gaussian") -> list[SampleBatch]:
    """One SampleBatch per condition, samples ordered by sample_index, one per (condition, index)."""
    by_cond: dict[int, dict[int, RolloutData]] = {m: {} for m in range(num_conditions)}
    for r in rollouts:
        if r.policy_type == policy_type and 0 <= r.condition < num_conditions:
            by_cond[r.condition].setdefault(r.sample_index, r)
    out = []
    for m in range(num_conditions):
        rs = [by_cond[m][i] for i in sorted(by_cond[m])]
        if not rs:
            raise ValueError(f"no rollouts for condition {m}")
        images = np.stack([r.images for r in rs]) if all(r.images is not None for r in rs) else None
        jac = np.stack([jacobians(r.states) for r in rs]) if jacobians is not None else None
        out.append(SampleBatch(X=np.stack([r.states for r in rs]), U=np.stack([r.actions for r in rs]),
                               obs=np.stack([r.observations for r in rs]), images=images,
                               noise=np.stack([r.noise for r in rs]), ee_jacobians=jac, condition=m))
    return out


# --------------------------------------------------------------------------- algorithm adapter


@dataclass
class IterationOutput:
    """What one algorithm iteration hands back to the node."""

    controllers: dict[int, LinearGaussianPolicy]  # new local controller per condition (pushed to robots)
    metrics: dict[str, Any]  # cost_per_condition, kl/eta/step_mult_per_condition, policy_loss, success_rate
    policy: tuple[str, bytes, str] | None = None  # (architecture_json, safetensors, sha256) for set_policy_weights


class Algorithm(Protocol):
    def initial_controllers(self) -> dict[int, LinearGaussianPolicy]: ...
    def iterate(self, iteration: int, batches: list[SampleBatch]) -> IterationOutput: ...
    def state_arrays(self) -> dict[str, np.ndarray]: ...
    def load_state(self, arrays: dict[str, np.ndarray]) -> None: ...


class RecordOnlyAlgorithm:
    """Collects and stores rollouts, learns nothing: for transport/durability tests and benchmarks.

    It reports the mean summed squared action as its 'cost' so the status carries numbers.
    """

    def __init__(self, info: ExperimentInfo):
        self.info = info
        self.iterations_seen = 0

    def initial_controllers(self) -> dict[int, LinearGaussianPolicy]:
        return {}

    def iterate(self, iteration: int, batches: list[SampleBatch]) -> IterationOutput:
        self.iterations_seen += 1
        cost = [float(np.mean(np.sum(b.U**2, axis=(1, 2)))) for b in batches]
        return IterationOutput({}, {"cost_per_condition": cost})

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"iterations_seen": np.array([self.iterations_seen])}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.iterations_seen = int(arrays["iterations_seen"][0])


def make_algorithm(info: ExperimentInfo, init_controllers: str = "", pretrained_vision: str = "") -> Algorithm:
    """The algorithm of the experiment, behind the :class:`Algorithm` protocol. ``init_controllers`` and
    ``pretrained_vision`` (GPS only) start from a previous phase's output."""
    if info.algorithm == "record_only":
        return RecordOnlyAlgorithm(info)
    from gps_trainer import algorithm_adapter  # the learning algorithms (imported lazily: torch etc.)

    if init_controllers or pretrained_vision:
        return algorithm_adapter.make(info, init_controllers, pretrained_vision)
    return algorithm_adapter.make(info)


# --------------------------------------------------------------------------- metrics


class MetricsLogger:
    """TensorBoard scalars per iteration plus ``cost_per_iteration.png`` and ``metrics.jsonl``."""

    def __init__(self, output_dir: str | Path, tensorboard: bool = True):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.output_dir / "metrics.jsonl"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.output_dir / "tensorboard"))
            except Exception as exc:  # TensorBoard is optional; the JSONL and the plot are not
                LOGGER.warning("TensorBoard disabled: %s", exc)

    def history(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        rows = {}
        for line in self.jsonl.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a torn last line of a killed run
                continue
            rows[row["iteration"]] = row  # a re-run iteration replaces its earlier row
        return [rows[k] for k in sorted(rows)]

    def log(self, iteration: int, metrics: dict[str, Any]) -> Path:
        row = {"iteration": int(iteration), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, list | tuple | np.ndarray):
                    for m, v in enumerate(np.asarray(value, dtype=float).reshape(-1)):
                        if math.isfinite(v):
                            self._tb.add_scalar(f"{key}/condition_{m}", v, iteration)
                    finite = [v for v in np.asarray(value, dtype=float).reshape(-1) if math.isfinite(v)]
                    if key == "cost_per_condition" and finite:
                        self._tb.add_scalar("cost/mean", float(np.mean(finite)), iteration)
                elif isinstance(value, int | float) and math.isfinite(float(value)):
                    self._tb.add_scalar(key, float(value), iteration)
            self._tb.flush()
        return self.plot()

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.history()
        path = self.output_dir / "cost_per_iteration.png"
        fig, ax = plt.subplots(figsize=(6, 4))
        if rows:
            its = [r["iteration"] for r in rows]
            costs = np.array([r.get("cost_per_condition", []) for r in rows], dtype=object)
            M = max((len(c) for c in costs), default=0)
            for m in range(M):
                ax.plot(its, [c[m] if len(c) > m else np.nan for c in costs], marker="o", lw=1, label=f"condition {m}")
            ax.plot(its, [np.nanmean(c) if len(c) else np.nan for c in costs], "k-", lw=2, label="mean")
            if any(math.isfinite(r.get("policy_cost", float("nan"))) for r in rows):
                ax.plot(its, [r.get("policy_cost", np.nan) for r in rows], "r--", lw=2, label="policy")
            ax.legend(fontsize=7)
        ax.set_xlabel("iteration")
        ax.set_ylabel("cost")
        ax.set_title("GPS: cost per iteration")
        fig.tight_layout()
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        tmp.replace(path)
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [float(x) for x in v.reshape(-1)]
    if isinstance(v, list | tuple):
        return [float(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _plain_dict(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in metrics.items()}


def summary(metrics: dict[str, Any]) -> str:
    """One log line: mean cost, success rate, timings."""
    parts = []
    costs = [c for c in np.asarray(metrics.get("cost_per_condition", []), dtype=float).reshape(-1) if math.isfinite(c)]
    if costs:
        parts.append(f"mean cost {np.mean(costs):.4g}")
    sr = metrics.get("success_rate")
    if sr is not None and math.isfinite(float(sr)):
        parts.append(f"success {100 * float(sr):.0f}%")
    parts += [f"{k} {float(v):.2f}" for k, v in metrics.items() if k.endswith("_s")]
    return ", ".join(parts)
