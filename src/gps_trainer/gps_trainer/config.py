"""Typed experiment configuration for trajectory optimization, loaded from YAML (config/experiments/).

Defaults follow the reference GPS implementation (cbfinn/gps): KL step 0.2 per time step, step
multiplier in [0.01, 10], eta starting at 1, GMM dynamics prior with at most 20 clusters, at least 40
points per cluster, the 20 most recent rollouts, regularization 1e-6, initial LQR controller.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "GMMPriorConfig",
    "DynamicsConfig",
    "TrajOptConfig",
    "InitControllerConfig",
    "SamplingConfig",
    "TrajOptOnlyConfig",
    "ExperimentConfig",
    "from_dict",
    "load_experiment_config",
    "parse_overrides",
    "DEFAULT_COST",
]


@dataclass
class GMMPriorConfig:
    """Mixture prior over (x_t, u_t, x_t+1) (gps_trainer.dynamics.GMMPrior)."""

    max_clusters: int = 20
    min_samples_per_cluster: int = 40
    max_samples: int = 20
    strength: float = 1.0


@dataclass
class DynamicsConfig:
    """Per-step linear-Gaussian dynamics fit."""

    regularization: float = 1e-6
    initial_state_var: float = 1e-6
    prior: GMMPriorConfig | None = field(default_factory=GMMPriorConfig)


@dataclass
class TrajOptConfig:
    """KL-constrained LQR (the C-step) and step-size adaptation."""

    kl_step: float = 0.2  # per time step; the constraint is kl_step * step_mult * T
    min_step_mult: float = 0.01
    max_step_mult: float = 10.0
    init_eta: float = 1.0
    min_eta: float = 1e-8
    max_eta: float = 1e16
    del0: float = 1e-4  # first eta increment on a non-PD Q_uu
    max_eta_iterations: int = 50
    kl_tolerance: float = 0.1  # accept |KL - target| < kl_tolerance * target


@dataclass
class InitControllerConfig:
    """Initial controllers: ``lqr`` (hold x0 under a double-integrator guess) or ``pd``."""

    type: str = "lqr"
    init_var: float = 1.0
    stiffness: float = 1.0
    stiffness_vel: float = 0.5
    final_weight: float = 1.0
    gains: list[float] | float = 1.0  # per-joint inverse inertia used by the dynamics guess
    acc: list[float] | float = 0.0
    pos_gains: list[float] | float = 10.0  # pd only
    vel_gains_mult: float = 0.01  # pd only


@dataclass
class SamplingConfig:
    """Exploration noise of the local controllers."""

    noise: bool = True
    smooth_noise_std: float = 2.0  # Gaussian filter std in time steps
    renormalize_noise: bool = True


DEFAULT_COST: list[dict[str, Any]] = [
    {"type": "action", "wu": 1e-3},
    {"type": "ee_points", "wp": 1.0, "l1": 0.1, "l2": 10.0, "alpha": 1e-5},
    {"type": "ee_points", "wp": 1.0, "l1": 1.0, "l2": 0.0, "alpha": 1e-5, "ramp": "final_only",
     "final_multiplier": 10.0},
]


@dataclass
class TrajOptOnlyConfig:
    """Algorithm "trajectory optimization only" (no global policy)."""

    type: str = "traj_opt"
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    traj_opt: TrajOptConfig = field(default_factory=TrajOptConfig)
    init_controller: InitControllerConfig = field(default_factory=InitControllerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    cost: list[dict[str, Any]] = field(default_factory=lambda: [dict(c) for c in DEFAULT_COST])


@dataclass
class ExperimentConfig:
    """One experiment: task, conditions, sample counts and the algorithm's settings."""

    name: str = "experiment"
    task: str = "reach"
    conditions: int = 4
    samples_per_condition: int = 5
    iterations: int = 10
    seed: int = 0
    horizon: int | None = None  # default: the task's horizon
    algorithm: TrajOptOnlyConfig = field(default_factory=TrajOptOnlyConfig)


def _resolve(tp: Any) -> Any:
    """The dataclass inside ``X | None`` or ``X``, else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        for a in typing.get_args(tp):
            if dataclasses.is_dataclass(a):
                return a
    return None


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses; unknown keys raise."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown keys {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        sub = _resolve(hints[key])
        path = f"{where}.{key}" if where else key
        kwargs[key] = from_dict(sub, value, path) if sub is not None and value is not None else value
    return cls(**kwargs)


def load_experiment_config(path: str | Path) -> ExperimentConfig:
    """Read an experiment YAML into an :class:`ExperimentConfig` (errors name the file and key)."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        cfg = from_dict(ExperimentConfig, raw)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None
    if cfg.algorithm.type != "traj_opt":
        raise ValueError(f"{path}: algorithm.type {cfg.algorithm.type!r} is not handled by TrajOptOnlyConfig")
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Command-line ``key=value`` overrides (dotted keys kept as they are; values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        out[key] = yaml.safe_load(value)
    return out
