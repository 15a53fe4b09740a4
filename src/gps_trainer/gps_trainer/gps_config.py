"""Typed configuration of the guided-policy-search algorithms (MDGPS, BADMM), read from the same
experiment YAML files as trajectory optimization (config/experiments/*.yaml).

The GPS configs extend :class:`gps_trainer.config.TrajOptOnlyConfig` (dynamics, C-step, initial
controllers, sampling noise, cost: same keys, same defaults) with the global policy, its S-step and
the policy linearization's mixture prior. Defaults follow the reference GPS code (cbfinn/gps
ALG_MDGPS / ALG_BADMM). Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gps_core.samples import POLICY_OBS
from gps_trainer.config import ExperimentConfig, GMMPriorConfig, TrajOptOnlyConfig, from_dict
from gps_trainer.policy_opt import PolicyOptConfig

__all__ = ["MDGPSConfig", "BADMMConfig", "GPSExperimentConfig", "load_gps_experiment", "GPS_ALGORITHMS"]

GPS_ALGORITHMS = ("mdgps", "badmm")


def _default_policy() -> dict[str, Any]:
    return {"type": "mlp", "init_var": 0.1, "net": {"hidden": [64, 64]}}


@dataclass
class MDGPSConfig(TrajOptOnlyConfig):
    """Mirror-descent GPS (Montgomery & Levine 2016; reference AlgorithmMDGPS, 'traj_opt' linearization).

    policy:        ``gps_controller.policies.make_policy`` spec {type: mlp | visuomotor_cnn, init_var, net}
    policy_obs:    what the policy sees: "state" (x; MLP on the full state) or "observation" (o [+ image])
    policy_opt:    S-step settings (:class:`gps_trainer.policy_opt.PolicyOptConfig` keys)
    policy_prior:  GMM prior of the policy linearization pi(u|x) ~ N(K x + k, S) around the samples
                   (reference: 20 clusters, 40 points per cluster, 20 most recent rollouts)
    step_rule:     "laplace" (expected costs of the linearized policies; the reference default) or
                   "mc" (the samples' mean costs)
    pretrained_vision: optional pose-pretraining safetensors file whose conv layers initialize the CNN
    init_controllers_file: optional controllers .npz (from local-controller pretraining) to start from
    policy_seed:   seed of the policy's initial weights and of the S-step minibatches
    """

    type: str = "mdgps"
    policy: dict[str, Any] = field(default_factory=_default_policy)
    policy_obs: str = "state"
    policy_opt: dict[str, Any] = field(default_factory=dict)
    policy_prior: GMMPriorConfig = field(default_factory=GMMPriorConfig)
    policy_regularization: float = 1e-6
    step_rule: str = "laplace"
    pretrained_vision: str | None = None
    init_controllers_file: str | None = None
    policy_seed: int = 0

    def __post_init__(self) -> None:
        if self.policy_obs not in POLICY_OBS:
            raise ValueError(f"policy_obs {self.policy_obs!r} unknown; expected one of {POLICY_OBS}")
        if self.step_rule not in ("laplace", "mc"):
            raise ValueError(f"step_rule {self.step_rule!r} unknown; expected 'laplace' or 'mc'")
        if self.policy.get("type") == "visuomotor_cnn" and self.policy_obs != "observation":
            raise ValueError("a visuomotor_cnn policy sees observations (images): set policy_obs: observation")
        self.policy_opt_config()  # validate now

    def policy_opt_config(self) -> PolicyOptConfig:
        data = {"seed": self.policy_seed, **self.policy_opt}
        return PolicyOptConfig.from_dict(data)


@dataclass
class BADMMConfig(MDGPSConfig):
    """BADMM GPS, the paper's algorithm (Levine et al. 2016 Sec. IV; reference AlgorithmBADMM).

    inner_iterations:   alternations of C-step, S-step and dual update per iteration (reference 4)
    init_pol_wt:        initial KL weight nu_t of the policy term (reference 0.01)
    policy_dual_rate:   step size of the Lagrange multipliers lambda_t (reference 0.1)
    policy_dual_rate_covar: step size of the linear (feedback) multipliers (reference 0.0)
    lg_step_schedule:   step size of the nu_t update, a number or a list interpolated log-linearly over
                        the iterations (reference 10.0)
    ent_reg_schedule:   entropy regularizer of the S-step covariance, same form (reference 0.0)
    fixed_lg_step:      nu_t update rule: 0 = dual gradient step nu += lg_step KL_t (reference),
                        1 = fixed increment, 2 = by KL change, 3 = by distance from the mean KL
    """

    type: str = "badmm"
    inner_iterations: int = 4
    init_pol_wt: float = 0.01
    policy_dual_rate: float = 0.1
    policy_dual_rate_covar: float = 0.0
    lg_step_schedule: float | list[float] = 10.0
    ent_reg_schedule: float | list[float] = 0.0
    fixed_lg_step: int = 0
    exp_step_increase: float = 2.0
    exp_step_decrease: float = 0.5
    exp_step_upper: float = 0.5
    exp_step_lower: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner_iterations < 1:
            raise ValueError("inner_iterations must be >= 1")
        if self.fixed_lg_step not in (0, 1, 2, 3):
            raise ValueError(f"fixed_lg_step must be 0, 1, 2 or 3, got {self.fixed_lg_step}")


@dataclass
class GPSExperimentConfig(ExperimentConfig):
    """An experiment whose algorithm is MDGPS or BADMM: ExperimentConfig's keys plus the image size."""

    image_size: int = 64  # camera image size for a visuomotor policy
    algorithm: MDGPSConfig = field(default_factory=MDGPSConfig)


def gps_experiment_from_dict(raw: dict[str, Any], where: str = "") -> GPSExperimentConfig:
    """Build a :class:`GPSExperimentConfig`; ``algorithm.type`` picks MDGPSConfig or BADMMConfig."""
    raw = dict(raw or {})
    alg = dict(raw.pop("algorithm", None) or {})
    kind = alg.get("type", "mdgps")
    if kind not in GPS_ALGORITHMS:
        raise ValueError(f"{where}algorithm.type {kind!r} is not a GPS algorithm; expected one of {GPS_ALGORITHMS}")
    cfg = from_dict(GPSExperimentConfig, raw)
    cfg.algorithm = from_dict(MDGPSConfig if kind == "mdgps" else BADMMConfig, alg, "algorithm")
    return cfg


def load_gps_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> GPSExperimentConfig:
    """Read an MDGPS/BADMM experiment YAML; ``overrides`` ({"a.b.c": value}) are applied first."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    for key, value in (overrides or {}).items():
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    try:
        return gps_experiment_from_dict(raw, f"{path}: ")
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a (nested) config dataclass, for metrics files."""
    return dataclasses.asdict(cfg)
