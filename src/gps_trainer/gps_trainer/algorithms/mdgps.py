"""Mirror-descent guided policy search (MDGPS; Montgomery & Levine, NIPS 2016), as the reference GPS
code's AlgorithmMDGPS with the 'traj_opt' policy linearization.

Local linear-Gaussian controllers p_m(u|x) (one per condition, acting on the full state x) generate
the samples; a global policy pi_theta(u|o) (an MLP or the visuomotor CNN, seeing only o) is trained to
imitate them. Each iteration is one step of mirror descent on E_pi[cost]:

    C-step:  p_m <- argmin_p E_p[l]  s.t.  sum_t KL(p(u_t|x_t) || pi_lin(u_t|x_t)) <= eps   (per m)
    S-step:  theta <- argmin_theta sum_{m,i,t} (mu_theta(o_it) - mu_p(x_it))^T Sigma_p^-1 (...)

where pi_lin is the global policy linearized around the samples. One iteration, for M conditions
(read :meth:`MDGPS.iteration` top to bottom):

1. dynamics       p(x_t+1 | x_t, u_t) per condition from its N rollouts, under the condition's GMM prior
2. cost           quadratic model of l(x, u) around the rollouts; the rollouts' actual cost
3. catch-up       (first iteration only) S-step onto the initial controllers, so pi is linearizable
4. linearize pi   pi(u|x) ~ N(pol_K_t x + pol_k_t, pol_S_t): the policy's mean actions at the samples'
                  observations regressed on x under a GMM prior over recent (x, mu_pi) points,
                  plus the policy's own covariance
5. step size      one multiplier shared by all conditions, from the predicted vs. actual improvement
                  of the linearized policy's expected cost (reference 'laplace' rule)
6. C-step         KL-constrained LQR against pi_lin (not the previous controller), all conditions at once
7. S-step         precision-weighted regression of pi onto the new controllers' mean actions at the
                  samples (train_policy), inputs o only (instrumented training)
8. advance        the new controllers sample the next iteration (with ``sample_on_policy``, from the second
                  iteration on, the loop samples pi itself: Montgomery & Levine's on-policy variant); the
                  updated pi is the output

Options (issue 21): ``s_step_history`` > 1 trains each S-step on the latest iterations' samples with
their own targets; ``policy_opt.persistent_optimizer`` carries Adam's state from one S-step to the next;
every iteration reports :func:`drift_diagnostics`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gps_controller.policies.neural import GaussianPolicy
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_core.samples import SampleBatch, policy_inputs
from gps_trainer.algorithms.traj_opt_only import ConditionDiagnostics, local_cost_models
from gps_trainer.config import GMMPriorConfig, MDGPSConfig
from gps_trainer.costs import Cost, cost_from_config
from gps_trainer.dynamics import GMMPrior, LinearGaussianDynamics, fit_dynamics, fit_linear_gaussian
from gps_trainer.policy_opt import AuxPoseTargets, PolicyOptDiagnostics, train_policy
from gps_trainer.state_arrays import from_arrays, indexed, items_under, prefixed, to_arrays, under
from gps_trainer.traj_opt import (
    CostModel,
    controller_marginals,
    expected_cost,
    kl_constrained_update,
    kl_divergence,
    new_step_mult,
)

LOGGER = logging.getLogger(__name__)

__all__ = [
    "MDGPS",
    "GPSIteration",
    "PolicyPriorBuffer",
    "expected_cost",
    "controller_targets",
    "fit_policy_linearization",
]


# --------------------------------------------------------------------------- building blocks


def controller_targets(controller: LinearGaussianPolicy, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S-step targets at sampled states X (N, T, dX): mean actions K_t x + k_t (N, T, dU) and the
    controller's precisions Sigma_t^-1 tiled over the samples (N, T, dU, dU)."""
    mu = controller.act_batch(X)
    prec = np.broadcast_to(controller.inv_pol_covar, (X.shape[0], *controller.inv_pol_covar.shape)).copy()
    return mu, prec


class PolicyPriorBuffer:
    """The GMM prior of the policy linearization, over points (x_t, mu_pi(o_t)) of the most recent
    ``max_samples`` rollouts of one condition (reference PolicyPriorGMM, 'add' mode).

    The rollouts (x, o, images) are kept, not the points: the policy changes every S-step, so its
    actions are recomputed on all buffered rollouts before the mixture is refitted."""

    def __init__(self, config: GMMPriorConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.X: np.ndarray | None = None
        self.obs: np.ndarray | None = None
        self.images: np.ndarray | None = None
        self.last_added = 0  # rollouts in the latest add (see resume_state)

    def add(self, X: np.ndarray, obs: np.ndarray, images: np.ndarray | None) -> None:
        keep = self.config.max_samples
        self.last_added = X.shape[0]

        def cat(old, new):
            return new if old is None else np.concatenate([old, new], axis=0)[-keep:]

        self.X, self.obs = cat(self.X, X)[-keep:], cat(self.obs, obs)[-keep:]
        self.images = None if images is None else cat(self.images, images)[-keep:]

    def resume_state(self) -> dict[str, np.ndarray]:
        """The buffered rollouts a resumed run will use: only those the next :meth:`add` keeps. Every batch
        of a run has the same number of rollouts (samples_per_condition; the samplers fail rather than deliver
        fewer), so the next add pushes out all but the newest max_samples - last_added rows, and the others
        are never read again (the mixture is refitted from scratch after every add). With max_samples equal
        to samples_per_condition that is no row: a visuomotor run's checkpoint then holds no image here."""
        if self.X is None:
            return {}
        start = max(0, self.X.shape[0] - max(0, self.config.max_samples - self.last_added))
        if start == self.X.shape[0]:
            return {}
        out = {"X": self.X[start:], "obs": self.obs[start:]}
        if self.images is not None:
            out["images"] = self.images[start:]
        return out

    def load_resume_state(self, arrays: dict[str, np.ndarray]) -> None:
        """The rows :meth:`resume_state` kept ({}: an empty buffer, as a new one)."""
        self.X, self.obs, self.images = (None if k not in arrays else np.array(arrays[k])
                                         for k in ("X", "obs", "images"))

    def prior(self, policy: GaussianPolicy, precision: str | None = None) -> GMMPrior:
        """A mixture fitted to (x, mu_pi(o)) of the buffered rollouts under the current policy."""
        return self.prior_and_means(policy, precision)[0]

    def prior_and_means(self, policy: GaussianPolicy, precision: str | None = None
                        ) -> tuple[GMMPrior, np.ndarray]:
        """:meth:`prior`, and the policy's means at every buffered rollout (N_buf, T, dU): the latest
        rollouts are the last rows, so a caller needs no second pass of the CNN over them."""
        if self.X is None:
            raise RuntimeError("PolicyPriorBuffer.prior called before add")
        c = self.config
        mu, _ = policy.predict(self.obs, self.images, precision=precision)
        gmm = GMMPrior(c.max_clusters, c.min_samples_per_cluster, c.max_samples, c.strength, seed=self.seed)
        gmm.update(self.X, mu)
        return gmm, mu

    def linearize(self, policy: GaussianPolicy, batch: SampleBatch, obs: np.ndarray, images: np.ndarray | None,
                  regularization: float, precision: str | None = None
                  ) -> tuple[LinearGaussianPolicy, np.ndarray]:
        """The policy linearization around ``batch`` (already added) under this buffer's prior, and the
        policy's means at the batch's samples; one batched CNN pass over the buffer serves both."""
        prior, mu_all = self.prior_and_means(policy, precision)
        n = batch.X.shape[0]
        if n <= mu_all.shape[0] and np.array_equal(self.X[-n:], batch.X):
            pol_mu = mu_all[-n:]
        else:  # the batch is larger than the buffer keeps (or not the latest): its own pass
            pol_mu, _ = policy.predict(obs, images, precision=precision)
        return fit_policy_linearization(batch.X, pol_mu, policy.variance(), prior, regularization), pol_mu


def fit_policy_linearization(
    X: np.ndarray,
    pol_mu: np.ndarray,
    pol_var: np.ndarray,
    prior: GMMPrior | None = None,
    regularization: float = 1e-6,
) -> LinearGaussianPolicy:
    """pi(u_t | x_t) ~ N(pol_K_t x_t + pol_k_t, pol_S_t) around the samples (reference
    AlgorithmMDGPS._update_policy_fit / PolicyPriorGMM.fit):

        (pol_K_t, pol_k_t, S_t) = conditional Gaussian of mu_pi given x from the N points (x_it, mu_pi(o_it))
                                  under the mixture's NIW prior (dynamics.fit_linear_gaussian),
        pol_S_t = S_t + diag(pol_var)   (the policy's own covariance, state independent).

    X (N, T, dX), pol_mu (N, T, dU), pol_var (dU,). Returns the linearization as a controller object.
    """
    niw = prior.eval(X, pol_mu) if prior is not None else None
    K, k, S = fit_linear_gaussian(X, pol_mu, niw, regularization)
    S = S + np.diag(np.asarray(pol_var, dtype=np.float64))[None]
    S = 0.5 * (S + S.transpose(0, 2, 1))
    return LinearGaussianPolicy(K, k, S)


# --------------------------------------------------------------------------- diagnostics


def _mean_variance(controllers: list[LinearGaussianPolicy]) -> float:
    """Mean per-dimension action variance tr(Sigma_t) / dU over conditions and steps."""
    return float(np.mean([np.einsum("tii->t", c.pol_covar).mean() / c.dU for c in controllers]))


def drift_diagnostics(samplers: list[LinearGaussianPolicy], pol_lin: list[LinearGaussianPolicy | None],
                      new_controllers: list[LinearGaussianPolicy], dynamics: list[LinearGaussianDynamics],
                      costs: list[CostModel], policy_var: np.ndarray) -> dict[str, Any]:
    """What tells MDGPS drift from progress (issue 21), per condition under this iteration's models:

    - ``expected_cost_{sampler,policy_lin,new}``: Laplace estimates (:func:`expected_cost`) of the
      previous local controller (the sampler, unless the loop sampled the policy), the policy
      linearization and the C-step's output; the C-step improves on
      the policy when new < policy_lin, and drags the samplers with it when new > sampler;
    - ``kl_sampler_policy_lin``: sum_t KL(sampler || pi_lin) / T under the sampler's marginals: how far
      the policy is from the controllers it imitated (compare with ``kl_bound``, per step);
    - ``variance_{sampler,new}``, ``policy_lin_residual_var``, ``policy_var``: mean action variances (the
      exploration noise; pi_lin's covariance is the regression residual plus ``policy_var``, the policy's
      variance it was linearized with).
    """
    out: dict[str, Any] = {k: [] for k in ("expected_cost_sampler", "expected_cost_policy_lin", "expected_cost_new",
                                           "kl_sampler_policy_lin")}
    lins = [lin for lin in pol_lin if lin is not None]
    if len(lins) != len(samplers):
        raise ValueError("drift_diagnostics: every condition needs its policy linearization")
    for m, (sampler, lin, new) in enumerate(zip(samplers, lins, new_controllers, strict=True)):
        with np.errstate(all="ignore"):  # a diverging linearization is what this is here to show
            mu, sigma = controller_marginals(sampler, dynamics[m])
            for key, c, marg in (("expected_cost_sampler", sampler, (mu, sigma)),
                                 ("expected_cost_policy_lin", lin, None), ("expected_cost_new", new, None)):
                out[key].append(expected_cost(c, dynamics[m], costs[m], marg))
            kl = kl_divergence(mu, sigma, sampler.K, sampler.k, sampler.pol_covar, lin.K, lin.k, lin.pol_covar,
                               lin.inv_pol_covar)
            out["kl_sampler_policy_lin"].append(float(kl.mean()))
    out["variance_sampler"] = _mean_variance(samplers)
    out["variance_new"] = _mean_variance(new_controllers)
    out["policy_var"] = float(np.mean(policy_var))
    out["policy_lin_residual_var"] = _mean_variance(lins) - out["policy_var"]
    # JSON has no Inf/NaN: a diverged estimate is reported as None
    return {k: ([x if np.isfinite(x) else None for x in v] if isinstance(v, list) else
                (v if np.isfinite(v) else None)) for k, v in out.items()}


@dataclass
class GPSIteration:
    """What one GPS iteration did."""

    iteration: int
    conditions: list[ConditionDiagnostics]
    policy_opt: list[PolicyOptDiagnostics]  # S-steps run in this iteration (catch-up / inner iterations)
    step_mult: float
    timings: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, Any]:
        """Flat JSON-ready metrics (same keys as the trajectory-only adapter, plus policy terms)."""
        last = self.policy_opt[-1] if self.policy_opt else None
        out: dict[str, Any] = {
            "iteration": self.iteration,
            "cost_per_condition": [d.cost for d in self.conditions],
            "kl_per_condition": [d.kl for d in self.conditions],
            "eta_per_condition": [d.eta for d in self.conditions],
            "step_mult": self.step_mult,
            "predicted_improvement": self.conditions[0].predicted_improvement if self.conditions else float("nan"),
            "actual_improvement": self.conditions[0].actual_improvement if self.conditions else float("nan"),
            "policy_loss_before": None if last is None else last.loss_before,
            "policy_loss_after": None if last is None else last.loss_after,
            "policy_loss_before_per_condition": None if last is None else last.loss_before_per_group,
            "policy_loss_after_per_condition": None if last is None else last.loss_after_per_group,
            "c_step_fallbacks": sum(d.fallback for d in self.conditions),
            **{f"{k}_s": v for k, v in self.timings.items()},
        }
        if last is not None and last.aux_pose_loss_after is not None:
            out["aux_pose_loss_before"], out["aux_pose_loss_after"] = last.aux_pose_loss_before, last.aux_pose_loss_after
        out.update(self.extra)
        return out


@dataclass
class _MDGPSIterate:
    """What the step-size rule reads of the previous iteration of one condition: Laplace estimates under
    that iteration's models (dynamics and cost fitted on its samples), computed as it ends (the same numbers
    the next iteration would compute from those models: nothing they depend on changes in between), and
    its samples' mean cost. Three numbers, not the models: a checkpoint keeps them (resume_state)."""

    policy_lin_cost: float  # E_prev[c | pi_lin_prev]: the policy linearization the C-step was bounded against
    new_cost: float  # E_prev[c | p_new_prev]: the C-step's output
    sample_cost: float


# --------------------------------------------------------------------------- the algorithm


class MDGPS:
    """MDGPS over M conditions. ``controllers[m]`` is the local controller to sample next from
    condition m (``policies`` is the same list, named as in :class:`TrajOptOnly`); ``policy`` is the
    global policy, updated in place by every S-step."""

    def __init__(self, config: MDGPSConfig, controllers: list[LinearGaussianPolicy], policy: GaussianPolicy,
                 cost: Cost | None = None, seed: int = 0) -> None:
        self.config = config
        self.cost = cost if cost is not None else cost_from_config(config.cost)
        self.controllers = list(controllers)
        self.policy = policy
        M = len(controllers)
        self.eta = np.full(M, config.traj_opt.init_eta)
        self.step_mult = 1.0  # shared by all conditions (reference MDGPS)
        p = config.dynamics.prior
        self.dynamics_priors: list[GMMPrior | None] = [
            GMMPrior(p.max_clusters, p.min_samples_per_cluster, p.max_samples, p.strength, seed=seed + m)
            if p is not None else None for m in range(M)]
        self.policy_priors = [PolicyPriorBuffer(config.policy_prior, seed=seed + 100 + m) for m in range(M)]
        self.policy_opt_config = config.policy_opt_config()
        self.pol_lin: list[LinearGaussianPolicy | None] = [None] * M
        self._prev: list[_MDGPSIterate | None] = [None] * M
        self.iteration_count = 0
        self.s_step_count = 0
        # (obs, images, targets, precisions) of the latest S-steps' training data (config.s_step_history)
        self.s_step_data: deque[tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]] = deque(
            maxlen=max(1, int(getattr(config, "s_step_history", 1))))
        # The robot's effort limits (the sampler's; config.s_step_within_limits) and, per condition, the
        # rollouts the last S-step left out for leaving them
        self.action_limits: np.ndarray | None = None
        self.s_step_dropped: list[int] = [0] * M
        # Adam's state between S-steps (policy_opt.persistent_optimizer; empty otherwise)
        self.s_step_optimizer: dict[str, np.ndarray] = {}
        self.timings: dict[str, float] = {}
        self.last_s_step: PolicyOptDiagnostics | None = None
        # The auxiliary pose loss (PolicyOptConfig.aux_pose_weight): its head (3, 2K + 1), kept across
        # S-steps and checkpoints, and each condition's normalized target position; see enable_aux_pose.
        self.aux_pose_head = np.zeros((0, 0))
        self.aux_pose_targets: list[np.ndarray] | None = None

    @property
    def policies(self) -> list[LinearGaussianPolicy]:
        return self.controllers

    def enable_aux_pose(self, head: np.ndarray, target_positions: list[np.ndarray], mean: np.ndarray,
                        std: np.ndarray) -> None:
        """Train with the auxiliary pose loss: ``head`` (3, 2K + 1) maps [feature points; 1] to the
        normalized position (pose pretraining's linear head), ``target_positions[m]`` is condition m's
        target position and ``mean``/``std`` the pretraining's normalization of positions."""
        if len(target_positions) != self.num_conditions:
            raise ValueError(f"enable_aux_pose: {len(target_positions)} target positions for "
                             f"{self.num_conditions} conditions")
        self.aux_pose_head = np.array(head, dtype=np.float64)
        self.aux_pose_targets = [(np.asarray(p, dtype=np.float64)[:3] - mean) / std for p in target_positions]

    @property
    def num_conditions(self) -> int:
        return len(self.controllers)

    def resume_state(self) -> dict[str, np.ndarray]:
        """What the next iterations read of this one, beyond the attributes a checkpoint keeps anyway
        (gps_trainer.run_dir.algorithm_state): per condition the step rule's memory (``prev.m``), the dynamics
        prior (``dynamics_prior.m``, with its warm-started mixture) and the policy prior's rollouts that the
        next batch does not push out (``policy_prior.m``); the S-step history the next S-step trains on
        (``s_step_history.i``) and the S-step's optimizer state (``s_step_optimizer``). Arrays only;
        :meth:`load_resume_state` restores them."""
        out = {**indexed([to_arrays(p) if p is not None else {} for p in self._prev], "prev"),
               **indexed([p.state_arrays() if p is not None else {} for p in self.dynamics_priors], "dynamics_prior"),
               **indexed([p.resume_state() for p in self.policy_priors], "policy_prior")}
        # The next remembered S-step appends its own data to the deque (maxlen s_step_history) and trains on
        # all of it: the latest s_step_history - 1 entries are read again, older ones never (none with
        # s_step_history 1, the default, under which nothing is remembered at all). Their images are kept:
        # they are trained on after the resume.
        keep = self.s_step_data.maxlen - 1
        for i, entry in enumerate(list(self.s_step_data)[max(0, len(self.s_step_data) - keep):] if keep else []):
            obs, images, targets, precisions = entry
            entry_arrays = {"obs": obs, "targets": targets, "precisions": precisions}
            if images is not None:
                entry_arrays["images"] = images
            out.update(prefixed(entry_arrays, f"s_step_history.{i}"))
        out.update(prefixed(self.s_step_optimizer, "s_step_optimizer"))
        return out

    def load_resume_state(self, arrays: dict[str, np.ndarray]) -> None:
        """The inverse of :meth:`resume_state` (after it this algorithm iterates as the saved one would)."""
        M = self.num_conditions
        self._prev = [from_arrays(_MDGPSIterate, a) if a else None for a in items_under(arrays, "prev", M)]
        for prior, a in zip(self.dynamics_priors, items_under(arrays, "dynamics_prior", M), strict=True):
            if prior is not None:
                prior.load_state_arrays(a)
        for buf, a in zip(self.policy_priors, items_under(arrays, "policy_prior", M), strict=True):
            buf.load_resume_state(a)
        self.s_step_data.clear()
        while entry := under(arrays, f"s_step_history.{len(self.s_step_data)}"):
            self.s_step_data.append((entry["obs"], entry.get("images"), entry["targets"], entry["precisions"]))
        self.s_step_optimizer = dict(under(arrays, "s_step_optimizer"))

    def iteration(self, batches: list[SampleBatch]) -> GPSIteration:
        """One MDGPS iteration from the rollouts of every condition (``batches[m]`` ran ``controllers[m]``
        and carries the observations the policy sees)."""
        M = self.num_conditions
        if len(batches) != M:
            raise ValueError(f"MDGPS.iteration: {len(batches)} sample batches for {M} conditions")
        cfg, dcfg, tcfg = self.config, self.config.dynamics, self.config.traj_opt
        s_steps: list[PolicyOptDiagnostics] = []
        t0 = time.perf_counter()

        # 1. Dynamics: x_t+1 ~ N(F_t [x_t; u_t] + f_t, Sigma_t) per condition, under its mixture prior.
        dynamics = [fit_dynamics(b, self.dynamics_priors[m], dcfg.regularization, dcfg.initial_state_var)
                    for m, b in enumerate(batches)]
        t1 = time.perf_counter()

        # 2. Cost: l ~ cc + cv^T z + 0.5 z^T cm z around the rollouts; the rollouts' actual mean cost.
        costs, sample_costs = local_cost_models(self.cost, batches, self.config.cost_hessian)

        # 3. First iteration: the policy has learned nothing yet; train it on the initial controllers
        #    so that its linearization (the C-step's trust region) is meaningful.
        if self.iteration_count == 0:
            s_steps.append(self._s_step(batches, self.controllers))
        t2 = time.perf_counter()

        # 4. Linearize the policy around each condition's samples: pi(u|x) ~ N(pol_K x + pol_k, pol_S).
        #    One batched CNN pass (inference mode, the configured precision) over each buffer gives the
        #    prior's points and the new samples' means.
        for m, b in enumerate(batches):
            obs, images = policy_inputs(b, cfg.policy_obs)
            buf = self.policy_priors[m]
            buf.add(b.X, obs, images)
            self.pol_lin[m], _ = buf.linearize(self.policy, b, obs, images, cfg.policy_regularization,
                                               self.policy_opt_config.inference_precision)
        t3 = time.perf_counter()

        # 5. Step size, shared: did the last iteration lower the linearized policy's expected cost as much
        #    as the C-step's model predicted? (Laplace estimates; 'mc' uses the samples' mean cost.)
        #    predicted = E_prev[c | pi_lin_prev] - E_prev[c | p_new_prev],  actual = E_prev[c | pi_lin_prev]
        #    - E_cur[c | pi_lin_cur]   (E_prev / E_cur: models fitted last iteration / now; means over m)
        predicted = actual = float("nan")
        estimate_diverged = False
        if all(p is not None for p in self._prev):
            prev = [p for p in self._prev if p is not None]
            prev_predicted = np.mean([p.new_cost for p in prev])
            if cfg.step_rule == "laplace":
                prev_base = np.mean([p.policy_lin_cost for p in prev])
                cur = np.mean([expected_cost(self.pol_lin[m], dynamics[m], costs[m]) for m in range(M)])
                # The linearization rolled through fitted dynamics for T steps: an unstable closed loop
                # gives costs of 1e17 where the samples cost -400, and the rule then pins the multiplier
                # to its floor for nothing the policy did (toy_hammer's end-to-end run, issue 21).
                limit = cfg.step_estimate_limit * float(np.mean(np.abs(sample_costs)))
                estimate_diverged = cfg.step_estimate_limit > 0 and not all(
                    np.isfinite(e) and abs(e) <= limit for e in (prev_base, prev_predicted, cur))
            else:
                prev_base = np.mean([p.sample_cost for p in prev])
                cur = float(np.mean(sample_costs))
            predicted, actual = float(prev_base - prev_predicted), float(prev_base - cur)
            if not estimate_diverged:
                self.step_mult = new_step_mult(predicted, actual, self.step_mult, tcfg.min_step_mult,
                                               tcfg.max_step_mult)

        # 6. C-step for all conditions at once, bounded against the policy linearization:
        #    eta search so that sum_t KL(p_new || pi_lin) ~ kl_step * step_mult * T.
        results = kl_constrained_update(
            list(self.pol_lin), dynamics, costs, kl_step=tcfg.kl_step * self.step_mult, eta=self.eta,
            min_eta=tcfg.min_eta, max_eta=tcfg.max_eta, del0=tcfg.del0,
            max_iterations=tcfg.max_eta_iterations, tolerance=tcfg.kl_tolerance)
        # A condition with no valid eta keeps the controller that sampled it (a known, working one) rather
        # than pi_lin, the eta -> infinity answer kl_constrained_update returns; its KL to pi_lin is reported.
        for m, r in enumerate(results):
            if r.fallback is not None:
                kept = self.controllers[m].copy()
                mu, sigma = controller_marginals(kept, dynamics[m])
                r.policy, r.kl = kept, float(kl_divergence(
                    mu, sigma, kept.K, kept.k, kept.pol_covar, self.pol_lin[m].K, self.pol_lin[m].k,
                    self.pol_lin[m].pol_covar, self.pol_lin[m].inv_pol_covar).sum())
        new_controllers = [r.policy for r in results]
        drift = drift_diagnostics(self.controllers, list(self.pol_lin), new_controllers, dynamics, costs,
                                  self.policy.variance())
        drift["kl_bound"] = float(tcfg.kl_step * self.step_mult)
        drift["step_estimate_diverged"] = estimate_diverged
        drift["kl_new_policy_lin"] = [float(r.kl) / self.controllers[0].T for r in results]
        t4 = time.perf_counter()

        # 7. S-step: pi_theta(o) <- the new controllers' actions at the sampled states, precision weighted.
        s_steps.append(self._s_step(batches, new_controllers, remember=True))
        t5 = time.perf_counter()

        # 8. Advance: remember this iteration for the step-size rule; sample the new controllers next.
        drift["policy_var_after_s_step"] = float(np.mean(self.policy.variance()))
        drift["s_step_rollouts_dropped"] = list(self.s_step_dropped)
        diagnostics = []
        for m, r in enumerate(results):
            self._prev[m] = _MDGPSIterate(expected_cost(self.pol_lin[m], dynamics[m], costs[m]),
                                          expected_cost(r.policy, dynamics[m], costs[m]), sample_costs[m])
            diagnostics.append(ConditionDiagnostics(
                condition=batches[m].condition, cost=sample_costs[m], kl=r.kl, kl_target=r.kl_target, eta=r.eta,
                step_mult=self.step_mult, eta_iterations=r.iterations, converged=r.converged,
                predicted_improvement=predicted, actual_improvement=actual, fallback=r.fallback is not None))
            self.eta[m] = r.eta
        self.controllers = new_controllers
        self.timings = {"dynamics": t1 - t0, "policy_fit": t3 - t2, "c_step": t4 - t3,
                        "s_step": (t5 - t4) + (t2 - t1)}
        out = GPSIteration(self.iteration_count, diagnostics, s_steps, self.step_mult, dict(self.timings), drift)
        self.iteration_count += 1
        return out

    def _within_limits(self, targets: np.ndarray) -> np.ndarray:
        """(N,) which rollouts the S-step trains on: all, or with ``s_step_within_limits`` those at whose
        every state the targets (N, T, dU) stay within the robot's effort limits (``action_limits``)."""
        if not getattr(self.config, "s_step_within_limits", False):
            return np.ones(targets.shape[0], dtype=bool)
        if self.action_limits is None:
            raise ValueError("algorithm.s_step_within_limits needs the robot's effort limits, and the sampler "
                             "reports none (MDGPS.action_limits)")
        return np.all(np.abs(targets) <= self.action_limits, axis=(1, 2))

    def _s_step(self, batches: list[SampleBatch], controllers: list[LinearGaussianPolicy],
                weights: list[np.ndarray] | None = None, target_shift: list[np.ndarray] | None = None,
                ent_reg: float | None = None, remember: bool = False) -> PolicyOptDiagnostics:
        """train_policy on all conditions' samples: inputs what the policy sees (o, or x for a state
        policy), targets K_t x + k_t (+ ``target_shift``, BADMM's multiplier term) with precisions
        Sigma_t^-1 of ``controllers``; optional per-(sample, step) weights (BADMM's nu_t).

        ``remember``: this S-step's data joins the history (config.s_step_history) and the S-step trains
        on the whole history, older iterations with their own targets (MDGPS only)."""
        obs, imgs, tgt, prc, wts = [], [], [], [], []
        targets = [controller_targets(controllers[m], b.X) for m, b in enumerate(batches)]
        rows = [self._within_limits(mu) for mu, _ in targets]
        if not any(k.any() for k in rows):  # nothing would be left to learn from: keep every rollout
            LOGGER.warning("S-step: every rollout's targets leave the effort limits; training on all of them")
            rows = [np.ones_like(k) for k in rows]
        self.s_step_dropped = [int((~k).sum()) for k in rows]
        for m, b in enumerate(batches):
            o, im = policy_inputs(b, self.config.policy_obs)
            (mu, prec), keep = targets[m], rows[m]
            if target_shift is not None:
                mu = mu + target_shift[m]
            obs.append(o[keep])
            imgs.append(None if im is None else im[keep])
            tgt.append(mu[keep])
            prc.append(prec[keep])
            if weights is not None:
                wts.append(np.broadcast_to(weights[m], b.X.shape[:2])[keep])
        images = None if any(i is None for i in imgs) else np.concatenate(imgs)
        obs_all, tgt_all, prc_all = np.concatenate(obs), np.concatenate(tgt), np.concatenate(prc)
        # The loss per condition is reported for this iteration's samples (older ones: group -1).
        groups = np.concatenate([np.full((int(k.sum()), b.T), m) for m, (b, k) in enumerate(zip(batches, rows,
                                                                                              strict=True))])
        if remember and weights is None and target_shift is None and self.s_step_data.maxlen > 1:
            self.s_step_data.append((obs_all, images, tgt_all, prc_all))
            if len(self.s_step_data) > 1:
                older = sum(len(d[0]) for d in list(self.s_step_data)[:-1])
                groups = np.concatenate([np.full((older, *groups.shape[1:]), -1), groups])
                obs_all, tgt_all, prc_all = (np.concatenate([d[k] for d in self.s_step_data]) for k in (0, 2, 3))
                images = None if images is None else np.concatenate([d[1] for d in self.s_step_data])
        cfg = self.policy_opt_config
        if ent_reg is not None:
            cfg = dataclasses.replace(cfg, ent_reg=float(ent_reg))
        # A new minibatch order every S-step, reproducible from the seed.
        seed = cfg.seed + self.s_step_count
        self.s_step_count += 1
        aux = None
        if cfg.aux_pose_weight > 0:
            if self.aux_pose_targets is None:
                raise ValueError("policy_opt.aux_pose_weight > 0 needs pose-pretrained vision "
                                 "(algorithm.pretrained_vision or --vision): its head starts the auxiliary loss")
            aux = AuxPoseTargets(self.aux_pose_head, np.concatenate([
                np.broadcast_to(self.aux_pose_targets[m], (int(k.sum()), b.T, 3))
                for m, (b, k) in enumerate(zip(batches, rows, strict=True))]))
        self.last_s_step = train_policy(self.policy, obs_all, images, tgt_all, prc_all, cfg, seed=seed,
                                        weights=None if weights is None else np.concatenate(wts), aux_pose=aux,
                                        optimizer_memory=self.s_step_optimizer, groups=groups)
        for per_condition in (self.last_s_step.loss_before_per_group, self.last_s_step.loss_after_per_group):
            if per_condition:  # (the last conditions may have had every rollout left out)
                per_condition.extend([None] * (len(batches) - len(per_condition)))
        return self.last_s_step
