"""The experiment configuration (config/experiments/*.yaml): one typed, range-checked :class:`ExperimentConfig`
and one loader, :func:`load_experiment`, for the Python API, the trainer node, the scripts and the benchmarks.

``algorithm.type`` picks the algorithm's settings: ``traj_opt`` (:class:`TrajOptOnlyConfig`, trajectory
optimization only), ``mdgps`` (:class:`MDGPSConfig`, mirror-descent GPS) or ``badmm``
(:class:`BADMMConfig`, the paper's BADMM GPS). The GPS configs extend the trajectory-only one (dynamics,
C-step, initial controllers, sampling noise, cost: same keys, same defaults) with the global policy, its
S-step and the policy linearization's mixture prior.

Defaults follow the reference GPS implementation (cbfinn/gps): KL step 0.2 per time step, step multiplier
in [0.01, 10], eta starting at 1, GMM dynamics prior with at most 20 clusters, at least 40 points per
cluster, the 20 most recent rollouts, regularization 1e-6, initial LQR controller; ALG_MDGPS / ALG_BADMM
for the GPS settings.

Every key is typed and range-checked; unknown keys are errors (a typo must not silently fall back to a
default). Errors are :class:`ConfigError` (a ValueError) naming the file, the dotted key and the value.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gps_controller.conversions import MAX_ITERATIONS_PER_REQUEST
from gps_controller.policies.neural import MLPConfig, VisuomotorConfig
from gps_controller.policies.serialization import NetSizeError, check_net
from gps_core import safe_yaml
from gps_core.safe_yaml import YAMLValueError
from gps_core.samples import POLICY_OBS
from gps_core.tasks import load_task
from gps_trainer.config_schema import (
    MAX_SEED,
    Checked,
    ConfigError,
    from_yaml_error,
    invalid,
    load_yaml,
    ranged,
    to_plain,
    typed_from_dict,
)
from gps_trainer.costs import cost_from_config
from gps_trainer.policy_opt import PolicyOptConfig

__all__ = [
    "ALGORITHMS",
    "BADMMConfig",
    "ConfigError",
    "DEFAULT_COST",
    "DynamicsConfig",
    "ExperimentConfig",
    "GMMPriorConfig",
    "InitControllerConfig",
    "MDGPSConfig",
    "SamplingConfig",
    "TrajOptConfig",
    "TrajOptOnlyConfig",
    "apply_overrides",
    "config_to_dict",
    "experiment_from_dict",
    "load_experiment",
    "parse_overrides",
    "typed_from_dict",
]

ALGORITHMS = ("traj_opt", "mdgps", "badmm")

# Upper bounds of the counts (every integer key has one; seeds: MAX_SEED, 32 bits):
#: GPS iterations of one run, and of one start_iteration request (the paper's runs take 10 to 20).
MAX_ITERATIONS = MAX_ITERATIONS_PER_REQUEST
#: samples per condition and rollouts kept per condition (the paper takes 5; each is a stored rollout).
MAX_SAMPLES = 1000
#: time steps per trial: a trial runs horizon + 1 steps, and a controller's max_horizon is at most 100000.
MAX_HORIZON = 99_999
POLICY_TYPES = ("mlp", "visuomotor_cnn")


@dataclass
class GMMPriorConfig(Checked):
    """Mixture prior over (x_t, u_t, x_t+1) (gps_trainer.dynamics.GMMPrior)."""

    max_clusters: int = ranged(20, ge=1, le=1000)
    min_samples_per_cluster: int = ranged(40, ge=1, le=100_000)
    max_samples: int = ranged(20, ge=1, le=MAX_SAMPLES)  # most recent rollouts kept per condition
    strength: float = ranged(1.0, gt=0.0)


@dataclass
class DynamicsConfig(Checked):
    """Per-step linear-Gaussian dynamics fit."""

    regularization: float = ranged(1e-6, ge=0.0)
    initial_state_var: float = ranged(1e-6, ge=0.0)
    prior: GMMPriorConfig | None = field(default_factory=GMMPriorConfig)  # null: no prior


@dataclass
class TrajOptConfig(Checked):
    """KL-constrained LQR (the C-step) and step-size adaptation."""

    kl_step: float = ranged(0.2, gt=0.0)  # per time step; the constraint is kl_step * step_mult * T
    min_step_mult: float = ranged(0.01, gt=0.0)
    max_step_mult: float = ranged(10.0, gt=0.0)
    init_eta: float = ranged(1.0, gt=0.0)
    min_eta: float = ranged(1e-8, gt=0.0)
    max_eta: float = ranged(1e16, gt=0.0)
    del0: float = ranged(1e-4, gt=0.0)  # first eta increment on a non-PD Q_uu
    max_eta_iterations: int = ranged(50, ge=1, le=10_000)
    kl_tolerance: float = ranged(0.1, gt=0.0, le=1.0)  # accept |KL - target| < kl_tolerance * target

    def _check(self) -> None:
        if self.min_step_mult > self.max_step_mult:
            raise invalid("min_step_mult", self.min_step_mult, f"must be <= max_step_mult ({self.max_step_mult})")
        if self.min_eta > self.max_eta:
            raise invalid("min_eta", self.min_eta, f"must be <= max_eta ({self.max_eta})")


@dataclass
class InitControllerConfig(Checked):
    """Initial controllers: ``lqr`` (hold x0 under a double-integrator guess) or ``pd``."""

    type: Literal["lqr", "pd"] = "lqr"
    init_var: float = ranged(1.0, gt=0.0)
    stiffness: float = ranged(1.0, gt=0.0)
    stiffness_vel: float = ranged(0.5, ge=0.0)
    final_weight: float = ranged(1.0, gt=0.0)
    # per-joint inverse inertia used by the dynamics guess (a number: the same for every joint)
    gains: list[float] | float = ranged(1.0, gt=0.0, nonempty=True)
    acc: list[float] | float = ranged(0.0, nonempty=True)
    pos_gains: list[float] | float = ranged(10.0, ge=0.0, nonempty=True)  # pd only
    vel_gains_mult: float = ranged(0.01, ge=0.0)  # pd only


@dataclass
class SamplingConfig(Checked):
    """Exploration noise of the local controllers."""

    noise: bool = True
    smooth_noise_std: float = ranged(2.0, ge=0.0)  # Gaussian filter std in time steps
    renormalize_noise: bool = True


DEFAULT_COST: list[dict[str, Any]] = [
    {"type": "action", "wu": 1e-3},
    {"type": "ee_points", "wp": 1.0, "l1": 0.1, "l2": 10.0, "alpha": 1e-5},
    {"type": "ee_points", "wp": 1.0, "l1": 1.0, "l2": 0.0, "alpha": 1e-5, "ramp": "final_only",
     "final_multiplier": 10.0},
]


@dataclass
class TrajOptOnlyConfig(Checked):
    """Algorithm "trajectory optimization only" (no global policy).

    cost: a list of cost terms (gps_trainer.costs.cost_from_config: ``type`` in action, state, ee_points,
    ee_waypoint, the term's keyword arguments, optional ``weight``); checked by building it.
    cost_hessian: the C-step's quadratic cost model: "exact" (the terms' own second derivatives, averaged
    over the samples; the reference's) or "psd" (each step's Hessian projected onto the PSD cone, value and
    gradient kept at the samples' mean: the log terms' concave part dropped, Gauss-Newton style)
    """

    type: Literal["traj_opt"] = "traj_opt"
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    traj_opt: TrajOptConfig = field(default_factory=TrajOptConfig)
    init_controller: InitControllerConfig = field(default_factory=InitControllerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    cost: list[dict[str, Any]] = ranged(default_factory=lambda: [dict(c) for c in DEFAULT_COST], nonempty=True)
    cost_hessian: Literal["exact", "psd"] = "exact"

    def _check(self) -> None:
        for i, term in enumerate(self.cost):
            try:
                cost_from_config(dict(term))
            except (ValueError, TypeError) as e:
                raise invalid(f"cost[{i}]", term, str(e)) from None


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
    step_estimate_limit: laplace only; an expected cost (of the policy linearization, last iteration's or
                   now, or of last iteration's new controllers) beyond this many times the samples' mean
                   absolute cost, or not finite, means the closed loop diverged under the fitted dynamics:
                   the estimate says nothing about the policy, and the iteration keeps its step multiplier
                   instead of rescaling it by that number (0: off, the reference's rule)
    s_step_history: the S-step trains on the samples of this many latest iterations, each with the targets
                   of its own iteration's C-step (1: the latest batch only, as the reference); a
                   checkpoint keeps the entries the next S-step reads, so a resumed run trains as the
                   uninterrupted one would
    sample_on_policy: from the second iteration on, sample the global policy (with its own noise) instead
                   of the local controllers (reference ``sample_on_policy``; Montgomery & Levine 2016's
                   on-policy MDGPS): the C-step then improves on the states the policy actually visits
    s_step_within_limits: the S-step leaves out every rollout at whose states a target controller's mean
                   action exceeds the robot's effort limits anywhere (the sampler reports them): the linear
                   controller has left the region it was fitted in, and its targets there, up to 16 times the
                   limit, would outweigh every other sample of the batch (issue 21, twelfth session)
    pretrained_vision: optional pose-pretraining safetensors file whose conv layers initialize the CNN
    init_controllers_file: optional controllers .npz (from local-controller pretraining) to start from
    policy_seed:   seed of the policy's initial weights and of the S-step minibatches
    """

    type: Literal["mdgps"] = "mdgps"
    policy: dict[str, Any] = field(default_factory=_default_policy)
    policy_obs: Literal[POLICY_OBS] = "state"  # type: ignore[valid-type]
    policy_opt: dict[str, Any] = field(default_factory=dict)
    policy_prior: GMMPriorConfig = field(default_factory=GMMPriorConfig)
    policy_regularization: float = ranged(1e-6, ge=0.0)
    step_rule: Literal["laplace", "mc"] = "laplace"
    step_estimate_limit: float = ranged(0.0, ge=0.0, le=1e6)
    sample_on_policy: bool = False
    s_step_history: int = ranged(1, ge=1, le=50)
    s_step_within_limits: bool = False
    pretrained_vision: str | None = None
    init_controllers_file: str | None = None
    policy_seed: int = ranged(0, ge=0, le=MAX_SEED)

    def _check(self) -> None:
        super()._check()
        _check_policy_spec(self.policy)
        if self.policy.get("type") == "visuomotor_cnn" and self.policy_obs != "observation":
            raise invalid("policy_obs", self.policy_obs,
                          "a visuomotor_cnn policy sees observations (images): set policy_obs: observation")
        if self.s_step_history > 1 and self.policy_opt_config().aux_pose_weight > 0:
            raise invalid("s_step_history", self.s_step_history,
                          "the auxiliary pose loss (policy_opt.aux_pose_weight) trains on the latest batch only")
        opt = self.policy_opt_config(where="policy_opt")
        if self.policy.get("type") != "visuomotor_cnn":
            # (an MLP sees no images: the key would do nothing, and a measurement of it would measure nothing)
            for key in ("augment_shift", "augment_color"):
                if getattr(opt, key) > 0:
                    raise invalid(f"policy_opt.{key}", getattr(opt, key),
                                  "augments the S-step's images: needs a visuomotor_cnn policy")

    def policy_opt_config(self, where: str = "") -> PolicyOptConfig:
        """The S-step settings (``policy_seed`` unless policy_opt sets its own seed)."""
        return typed_from_dict(PolicyOptConfig, {"seed": self.policy_seed, **self.policy_opt}, where=where)


def _check_policy_spec(spec: dict[str, Any]) -> None:
    """``policy: {type, init_var, net}``: the net's keys and sizes as the policy classes check them."""
    unknown = sorted(set(spec) - {"type", "init_var", "net"})
    if unknown:
        raise invalid(f"policy.{unknown[0]}", spec[unknown[0]], "unknown key; known keys: init_var, net, type")
    kind = spec.get("type", "visuomotor_cnn")  # make_policy's default
    if isinstance(kind, bool) or kind not in POLICY_TYPES:
        raise invalid("policy.type", kind, f"expected one of {', '.join(map(repr, POLICY_TYPES))}")
    init_var = spec.get("init_var", 0.1)
    if isinstance(init_var, bool) or not isinstance(init_var, int | float) or not 0.0 < init_var < float("inf"):
        raise invalid("policy.init_var", init_var, "expected a positive number")
    net = spec.get("net") or {}
    if not isinstance(net, Mapping):
        raise invalid("policy.net", net, "expected a mapping")
    cls, dims = (MLPConfig, ("obs_dim", "action_dim")) if kind == "mlp" else \
        (VisuomotorConfig, ("config_dim", "action_dim"))
    for d in dims:  # they come from the task
        if d in net:
            raise invalid(f"policy.net.{d}", net[d], "set by the task, not the config")
    sizes = typed_from_dict(cls, {**net, **{d: 1 for d in dims}}, where="policy.net")
    try:  # the limits a controller applies to a pushed policy: a config cannot ask for a network none accepts
        check_net(kind, sizes.to_dict())
    except NetSizeError as e:
        key = f"policy.net.{e.key}" if e.key else "policy.net"
        raise invalid(key, net.get(e.key) if e.key else net, str(e)) from None


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

    type: Literal["badmm"] = "badmm"  # type: ignore[assignment]
    inner_iterations: int = ranged(4, ge=1, le=100)
    init_pol_wt: float = ranged(0.01, gt=0.0)
    policy_dual_rate: float = ranged(0.1, ge=0.0)
    policy_dual_rate_covar: float = ranged(0.0, ge=0.0)
    lg_step_schedule: list[float] | float = ranged(10.0, ge=0.0, nonempty=True)
    ent_reg_schedule: list[float] | float = ranged(0.0, ge=0.0, nonempty=True)
    fixed_lg_step: Literal[0, 1, 2, 3] = 0
    exp_step_increase: float = ranged(2.0, gt=0.0)
    exp_step_decrease: float = ranged(0.5, gt=0.0)
    exp_step_upper: float = ranged(0.5, gt=0.0)
    exp_step_lower: float = ranged(1.0, gt=0.0)


AlgorithmConfig = TrajOptOnlyConfig | MDGPSConfig | BADMMConfig


@dataclass
class ExperimentConfig(Checked):
    """One experiment: task, conditions, sample counts, seed and the algorithm's settings.

    task:       a task name (config/tasks/<name>.yaml) or a task YAML path
    conditions: the first this many of the task's training conditions
    horizon:    time steps per rollout; null or 0: the task's
    image_size: camera image size (square) for a visuomotor policy
    """

    name: str = "experiment"
    task: str = "reach"
    conditions: int = ranged(4, ge=1, le=1000)  # at most the task's
    samples_per_condition: int = ranged(5, ge=1, le=MAX_SAMPLES)
    iterations: int = ranged(10, ge=1, le=MAX_ITERATIONS)
    seed: int = ranged(0, ge=0, le=MAX_SEED)
    horizon: int | None = ranged(None, ge=0, le=MAX_HORIZON)
    image_size: int = ranged(64, ge=8, le=1024)
    algorithm: AlgorithmConfig = field(default_factory=TrajOptOnlyConfig)

    def _check(self) -> None:
        if not self.name:
            raise invalid("name", self.name, "must not be empty")
        try:
            task = load_task(self.task)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise invalid("task", self.task, f"no such task ({e})") from None
        available = task.num_conditions("train")
        if self.conditions > available:
            raise invalid("conditions", self.conditions,
                          f"task {self.task!r} has {available} training conditions")
        policy = getattr(self.algorithm, "policy", None)
        if policy and policy.get("type") == "visuomotor_cnn":
            net = policy.get("net") or {}
            defaults = {f.name: f.default for f in dataclasses.fields(VisuomotorConfig)}
            for key in ("image_height", "image_width"):
                if net.get(key, defaults[key]) != self.image_size:
                    raise invalid(f"algorithm.policy.net.{key}", net.get(key, defaults[key]),
                                  f"must equal image_size ({self.image_size}): the camera renders that size")


# --------------------------------------------------------------------------- loading


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Set dotted keys (``{"algorithm.traj_opt.kl_step": 0.1}``; a number indexes a list:
    ``algorithm.cost.0.wu``) in the raw mapping, creating missing mappings. Returns ``raw``."""
    for key, value in (overrides or {}).items():
        node: Any = raw
        parts = str(key).split(".")
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[:i]) or "<top level>"
            if isinstance(node, list):
                if not p.isdigit() or int(p) >= len(node):
                    raise ConfigError(key, f"override: {where} is a list of {len(node)}; {p!r} is not an index "
                                           "into it")
                if last:
                    node[int(p)] = value
                else:
                    node = node[int(p)]
            elif isinstance(node, dict):
                if last:
                    node[p] = value
                else:
                    if node.get(p) is None:  # a missing or empty (null) section
                        node[p] = {}
                    node = node[p]
            else:
                raise ConfigError(key, f"override: {where} is not a mapping", node)
    return raw


def experiment_from_dict(raw: Mapping[str, Any] | None, source: str = "<dict>") -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a parsed YAML mapping; errors name ``source``, the key, the value."""
    if raw is None:
        raise ConfigError("", "empty experiment configuration (expected a mapping of name, task, conditions, "
                              "..., algorithm)", source=source)
    if not isinstance(raw, Mapping):
        raise ConfigError("", "an experiment configuration must be a mapping", raw, source=source)
    return typed_from_dict(ExperimentConfig, copy.deepcopy(dict(raw)), source=source)


def load_experiment(path: str | Path, overrides: Mapping[str, Any] | None = None,
                    overrides_source: str = "") -> ExperimentConfig:
    """Read an experiment YAML; ``overrides`` (dotted keys -> values, see :func:`parse_overrides`; given
    in ``overrides_source``, a file or the command line) are applied to the raw YAML first. Raises
    :class:`ConfigError` naming the file, the key and the value."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError("", f"cannot read the experiment file: {e.strerror or e}", source=str(path)) from None
    raw = load_yaml(text, str(path))
    if raw is None:
        raise ConfigError("", "empty experiment file", source=str(path))
    if not isinstance(raw, dict):
        raise ConfigError("", "an experiment file must be a mapping at the top level", raw, source=str(path))
    try:
        apply_overrides(raw, overrides)
        return experiment_from_dict(raw, str(path))
    except ConfigError as e:
        by_override = bool(e.key) and any(_under(e.key, k) or _under(k, e.key) for k in map(_indexed, overrides or {}))
        note = f"set by an override{f' in {overrides_source}' if overrides_source else ''}" if by_override else ""
        raise e.within(str(path), note=note) from None


def _indexed(override_key: str) -> str:
    """``algorithm.cost.0.wu`` -> ``algorithm.cost[0].wu`` (how errors spell key paths)."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", override_key)


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith((f"{prefix}.", f"{prefix}["))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-able plain dict of a (nested) config dataclass (metrics files, run directories); for an
    ExperimentConfig it round-trips: ``experiment_from_dict(config_to_dict(cfg)) == cfg``."""
    return to_plain(cfg)


def parse_overrides(items: Sequence[Any], source: str = "overrides") -> dict[str, Any]:
    """Command-line or parameter ``key=value`` overrides (dotted keys kept as they are; values parsed as
    YAML by gps_core.safe_yaml). A ConfigError names ``source``, the override and its value: an item
    that is not a ``key=value`` string, a key given twice, a value that is not plain YAML data."""
    out: dict[str, Any] = {}
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ConfigError("", "expected a list of key=value strings", items, source=source)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ConfigError(f"[{i}]", "expected a key=value string", item, source=source)
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"[{i}]", "override is not key=value", item, source=source)
        if key in out:
            raise ConfigError(key, "override given twice", item, source=source)
        try:
            out[key] = safe_yaml.load_value(value, key, source)
        except YAMLValueError as e:
            raise from_yaml_error(e).within(note="set by an override") from None
    return out
