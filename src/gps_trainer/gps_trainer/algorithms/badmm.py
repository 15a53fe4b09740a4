"""BADMM guided policy search, the paper's algorithm (Levine, Finn, Darrell & Abbeel, JMLR 2016,
Sec. IV-A and Appendix A; reference GPS code AlgorithmBADMM).

The local controllers p_m and the policy pi_theta are made to agree, p_m(u_t|x_t) = pi_theta(u_t|x_t),
by Bregman ADMM on the augmented Lagrangian (paper Eq. 2, with the KL divergence as the Bregman term)

    L = sum_t E_p[l(x_t, u_t) - u_t^T lambda_t] + lambda_t^T E_{p(x_t) pi}[u_t] + nu_t phi_t(theta, p),

with Lagrange multipliers lambda_t = lambda_K,t x + lambda_k,t (per time step, per condition) and
penalty weights nu_t. One iteration, for M conditions (read :meth:`BADMM.iteration` top to bottom):

1. dynamics, cost models            as in trajectory optimization
2. schedules                        nu-step size and S-step entropy regularizer for this iteration
3. linearize pi around the samples  pi_lin(u|x) = N(pol_K x + pol_k, pol_S)  (as MDGPS)
4. step size per condition          predicted vs. actual improvement of the Laplace objective
                                    E[l] + sum_t nu_t KL(p || pi_lin)
5. inner loop (``inner_iterations``):
   a. S-step   pi <- argmin sum nu_t KL(pi || p) + lambda_t^T E_pi[u]: precision-weighted regression
               onto  mu_p(x) - Sigma_p (lambda_K x + lambda_k) / nu_t  with sample weights nu_t
   b. refit pi_lin
   c. dual step  lambda_k,t -= rate nu_t Sigma_p^-1 E[mu_p(x) - mu_pi(o)]  (and lambda_K likewise);
               on the last inner iteration nu_t <- max(0, nu_t + lg_step KL_t(p || pi))
   d. C-step   p <- argmin E_p[l - u^T lambda] + nu_t KL(p || pi_lin)  s.t.  KL(p || p_prev) <= eps:
               max-entropy LQR on the cost (l' + eta (-log p_prev) + nu_t (-log pi_lin)) / (eta + nu_t),
               eta searched as in the trajectory library
   (a.-c. are skipped on the very first inner iteration of the first iteration, as the reference.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from gps_controller.policies.neural import GaussianPolicy
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_core.samples import SampleBatch, policy_inputs
from gps_trainer.algorithms.mdgps import MDGPS, GPSIteration
from gps_trainer.algorithms.traj_opt_only import ConditionDiagnostics, local_cost_models
from gps_trainer.config import BADMMConfig
from gps_trainer.costs import Cost
from gps_trainer.dynamics import LinearGaussianDynamics, fit_dynamics
from gps_trainer.policy_opt import PolicyOptDiagnostics
from gps_trainer.state_arrays import from_arrays, indexed, items_under, to_arrays
from gps_trainer.traj_opt import (
    CostModel,
    CStepResult,
    TrajOptError,
    backward_pass,
    controller_marginals,
    expected_cost,
    gaussian_log_terms,
    kl_divergence,
    new_step_mult,
)

__all__ = ["BADMM", "schedule_value", "gaussian_log_terms", "badmm_c_step"]

LOGGER = logging.getLogger(__name__)


def schedule_value(schedule: float | list[float], iteration: int, iterations: int) -> float:
    """A hyperparameter schedule at an iteration (reference _set_interp_values): a number is constant; a list
    is interpolated log-linearly over s = min((iteration + 1) / (iterations - 1), 1) in [0, 1]."""
    if isinstance(schedule, int | float):
        return float(schedule)
    sch = np.asarray(schedule, dtype=np.float64)
    if sch.size == 1:
        return float(sch[0])
    s = min((iteration + 1.0) / max(iterations - 1, 1), 1.0)
    return float(np.exp(np.interp(s, np.linspace(0.0, 1.0, sch.size), np.log(sch))))


def _kl_to(c: LinearGaussianPolicy, ref: LinearGaussianPolicy, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Per-step KL(c || ref) under the state marginals of c (T,)."""
    return kl_divergence(mu, sigma, c.K, c.k, c.pol_covar, ref.K, ref.k, ref.pol_covar, ref.inv_pol_covar)


def badmm_c_step(
    prev: LinearGaussianPolicy,
    pol_lin: LinearGaussianPolicy,
    pol_wt: np.ndarray,
    lambda_K: np.ndarray,
    lambda_k: np.ndarray,
    dyn: LinearGaussianDynamics,
    cost: CostModel,
    kl_target: float,
    eta: float,
    *,
    min_eta: float = 1e-8,
    max_eta: float = 1e16,
    del0: float = 1e-4,
    max_iterations: int = 50,
    tolerance: float = 0.1,
) -> CStepResult:
    """BADMM C-step for one condition (reference AlgorithmBADMM.compute_costs + the LQR eta search).

    Cost with the multipliers: cv_u -= lambda_k, cm_ux -= lambda_K. For a given eta the controller is
    the max-entropy LQR solution for l~_t = (l'_t + eta TKL_t + nu_t PKL_t) / (eta + nu_t), TKL / PKL the
    quadratic -log of the previous controller / the policy linearization (:func:`gaussian_log_terms`);
    eta is bracketed in log space until |sum_t KL(p || prev) - kl_target| < tolerance kl_target.
    The backward pass runs around ``prev`` (traj_opt.backward_pass with prev's precision scaled by
    eta / (eta + nu_t): the same l~_t), so it tends to ``prev`` without round-off as eta grows.
    With no valid answer for any eta <= max_eta (Q_uu not PD at max_eta, the KL still above the target
    there, or non-finite) it keeps ``prev`` (KL 0), logs a warning and says why in ``fallback``; NaN/Inf
    dynamics or costs raise TrajOptError.
    """
    T, dU, dX = prev.K.shape
    for name, a in (("dynamics Fm", dyn.Fm), ("dynamics fv", dyn.fv), ("cost cm", cost.cm), ("cost cv", cost.cv)):
        if not np.all(np.isfinite(a)):
            raise TrajOptError(f"BADMM C-step: {name} contains NaN/Inf")
    cm, cv = cost.cm.copy(), cost.cv.copy()
    cv[:, dX:] -= lambda_k
    cm[:, dX:, :dX] -= lambda_K
    cm[:, :dX, dX:] -= lambda_K.transpose(0, 2, 1)
    PKLm, PKLv = gaussian_log_terms(pol_lin.K, pol_lin.k, pol_lin.inv_pol_covar)
    wt = np.asarray(pol_wt, dtype=np.float64)
    cm_pol, cv_pol = cm + wt[:, None, None] * PKLm, cv + wt[:, None] * PKLv
    prevK, prevk, prevP = prev.K[None], prev.k[None], prev.inv_pol_covar
    Fm, fv = dyn.Fm[None], dyn.fv[None]
    lo, hi = min_eta, max_eta
    eta0 = eta = float(np.clip(eta, min_eta, max_eta))
    best = None
    fallback = None
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        delta = del0
        while True:  # raise eta until Q_uu is positive definite everywhere
            s = (eta + wt)[:, None]
            K, k, covar, failed = backward_pass(prevK, prevk, (prevP * (eta / s)[:, :, None])[None], Fm, fv,
                                                (cm_pol / s[:, :, None])[None], (cv_pol / s)[None], np.ones(1))
            if failed[0] < 0 or eta >= max_eta:
                break
            eta, delta = min(eta + delta, max_eta), 2.0 * delta
        if failed[0] >= 0:
            fallback = f"Q_uu not positive definite at t={int(failed[0])} even for eta = {eta:.3g}"
            break
        try:
            new = LinearGaussianPolicy(K[0], k[0], covar[0])
            with np.errstate(all="ignore"):
                kl = float(_kl_to(new, prev, *controller_marginals(new, dyn)).sum())
        except ValueError as exc:  # a covariance that round-off left indefinite
            fallback = f"invalid controller at eta = {eta:.3g} ({exc})"
            break
        if not np.isfinite(kl):
            fallback = f"the KL divergence is not finite at eta = {eta:.3g}"
            break
        best = (new, eta, kl)
        con = kl - kl_target
        if abs(con) < tolerance * kl_target:
            return CStepResult(new, eta, kl, kl_target, iterations, True)
        if con < 0 and eta <= min_eta * (1.0 + 1e-9):
            return CStepResult(new, eta, kl, kl_target, iterations, True)  # the bound is inactive at min_eta
        if con > 0 and eta >= max_eta:
            fallback = f"KL {kl:.3g} still above the target {kl_target:.3g} at eta = {eta:.3g}"
            break
        if con > 0:  # step too large: more weight on staying close to prev
            lo = eta
            eta = hi if 100.0 * lo >= hi else min(np.sqrt(lo * hi), 10.0 * lo)
        else:
            hi = eta
            eta = max(np.sqrt(lo * hi), 0.1 * hi)
    if fallback is not None:
        LOGGER.warning("BADMM C-step: %s; keeping the previous controller (KL step 0)", fallback)
        return CStepResult(prev.copy(), eta0, 0.0, kl_target, iterations, False, fallback)
    LOGGER.warning("BADMM C-step: eta search did not converge (KL %.3g vs target %.3g, eta %.3g)",
                   best[2], kl_target, best[1])
    return CStepResult(best[0], best[1], best[2], kl_target, iterations, False)


@dataclass
class _BADMMPrev:
    """What the step rule reads of the previous iteration, per condition: the Laplace objective J_prev
    (:meth:`BADMM._objective` under that iteration's models, its last pi_lin and nu) of the controller that
    produced its samples and of the C-step's output, computed as it ends (the same numbers the next
    iteration would compute: nu changes only in the inner loop, after the step rule). Two numbers, not the
    models: a checkpoint keeps them (resume_state)."""

    sampler_objective: float  # J_prev(p_prev)
    new_objective: float  # J_prev(p_cur)


class BADMM(MDGPS):
    """BADMM GPS over M conditions; same interface as :class:`MDGPS` (``controllers``, ``policy``,
    ``iteration``). Per condition it keeps nu_t (``pol_wt``), lambda_K,t, lambda_k,t and its own step size."""

    def __init__(self, config: BADMMConfig, controllers: list[LinearGaussianPolicy], policy: GaussianPolicy,
                 cost: Cost | None = None, seed: int = 0, iterations: int = 10) -> None:
        super().__init__(config, controllers, policy, cost, seed)
        self.config: BADMMConfig = config
        self.total_iterations = iterations
        M = len(controllers)
        T, dU, dX = controllers[0].K.shape
        self.step_mults = np.ones(M)
        self.pol_wt = np.full((M, T), config.init_pol_wt)
        self.lambda_K = np.zeros((M, T, dU, dX))
        self.lambda_k = np.zeros((M, T, dU))
        self.prev_kl: np.ndarray | None = None
        self.last_kl_step = np.full(M, np.nan)
        self._bprev: list[_BADMMPrev | None] = [None] * M

    def resume_state(self) -> dict[str, np.ndarray]:
        """MDGPS's (the priors; BADMM leaves MDGPS's step-rule memory and S-step history unused) and BADMM's
        own memory of the last iteration: the step rule's ``badmm_prev.m`` and ``last_kl_step``, and
        ``prev_kl`` (the nu update's, fixed_lg_step 2 and 3)."""
        out = {**super().resume_state(),
               **indexed([to_arrays(p) if p is not None else {} for p in self._bprev], "badmm_prev")}
        out["last_kl_step"] = self.last_kl_step
        if self.prev_kl is not None:
            out["prev_kl"] = self.prev_kl
        return out

    def load_resume_state(self, arrays: dict[str, np.ndarray]) -> None:
        super().load_resume_state(arrays)
        self._bprev = [from_arrays(_BADMMPrev, a) if a else None
                       for a in items_under(arrays, "badmm_prev", self.num_conditions)]
        if "last_kl_step" in arrays:
            self.last_kl_step = np.array(arrays["last_kl_step"], dtype=np.float64)
        self.prev_kl = np.array(arrays["prev_kl"], dtype=np.float64) if "prev_kl" in arrays else None

    def _fit_pol_lin(self, batches: list[SampleBatch], add: bool) -> list[np.ndarray]:
        """Refit pi_lin for every condition; returns the policy's mean actions at the samples."""
        mus = []
        for m, b in enumerate(batches):
            obs, images = policy_inputs(b, self.config.policy_obs)
            if add:
                self.policy_priors[m].add(b.X, obs, images)
            self.pol_lin[m], pol_mu = self.policy_priors[m].linearize(
                self.policy, b, obs, images, self.config.policy_regularization,
                self.policy_opt_config.inference_precision)
            mus.append(pol_mu)
        return mus

    def _objective(self, c: LinearGaussianPolicy, dyn: LinearGaussianDynamics, cost: CostModel,
                   pol_lin: LinearGaussianPolicy, pol_wt: np.ndarray) -> float:
        """Laplace estimate of E[l] + sum_t nu_t KL_t(c || pi_lin) (reference _estimate_cost)."""
        mu, sigma = controller_marginals(c, dyn)
        return expected_cost(c, dyn, cost, (mu, sigma)) + float(np.sum(pol_wt * _kl_to(c, pol_lin, mu, sigma)))

    def _policy_kl(self, batch: SampleBatch, c: LinearGaussianPolicy, pol_mu: np.ndarray) -> np.ndarray:
        """Sample estimate of KL(p(u_t|x_t) || pi(u_t|o_t)) per t (T,), pi's diagonal covariance."""
        var = self.policy.variance()
        d = pol_mu - c.act_batch(batch.X)  # (N, T, dU)
        tr = np.einsum("tuu->t", c.pol_covar / var)
        logdet_c = np.linalg.slogdet(c.pol_covar)[1]
        quad = np.mean(np.sum(d * d / var, axis=2), axis=0)
        return 0.5 * (tr + quad - c.dU + np.sum(np.log(var)) - logdet_c)

    def iteration(self, batches: list[SampleBatch]) -> GPSIteration:
        """One BADMM iteration from the rollouts of every condition (``batches[m]`` ran ``controllers[m]``)."""
        M = self.num_conditions
        if len(batches) != M:
            raise ValueError(f"BADMM.iteration: {len(batches)} sample batches for {M} conditions")
        cfg, dcfg, tcfg = self.config, self.config.dynamics, self.config.traj_opt
        T = self.controllers[0].T
        it = self.iteration_count
        s_steps: list[PolicyOptDiagnostics] = []
        timings = {"dynamics": 0.0, "policy_fit": 0.0, "c_step": 0.0, "s_step": 0.0}
        t0 = time.perf_counter()

        # 1. Dynamics and quadratic cost models per condition; the samples' actual cost.
        dynamics = [fit_dynamics(b, self.dynamics_priors[m], dcfg.regularization, dcfg.initial_state_var)
                    for m, b in enumerate(batches)]
        costs, sample_costs = local_cost_models(self.cost, batches, self.config.cost_hessian)
        timings["dynamics"] += time.perf_counter() - t0

        # 2. Schedules for this iteration.
        lg_step = schedule_value(cfg.lg_step_schedule, it, self.total_iterations)
        ent_reg = schedule_value(cfg.ent_reg_schedule, it, self.total_iterations)

        # 3. Policy linearization around the new samples (they join the policy prior's buffer).
        t = time.perf_counter()
        pol_mu = self._fit_pol_lin(batches, add=True)
        timings["policy_fit"] += time.perf_counter() - t

        # 4. Step size per condition from the Laplace objective E[l] + sum nu KL(p || pi_lin):
        #    predicted = J_prev(p_prev) - J_prev(p_cur), actual = J_prev(p_prev) - J_cur(p_cur).
        predicted, actual = np.full(M, np.nan), np.full(M, np.nan)
        for m in range(M):
            p = self._bprev[m]
            if p is None:
                continue
            c = self.controllers[m]
            predicted[m] = p.sampler_objective - p.new_objective
            actual[m] = p.sampler_objective - self._objective(c, dynamics[m], costs[m], self.pol_lin[m],
                                                              self.pol_wt[m])
            taken = self.last_kl_step[m] / (tcfg.kl_step * T)
            if np.isfinite(taken) and taken < self.step_mults[m]:
                self.step_mults[m] = max(taken, tcfg.min_step_mult)
            self.step_mults[m] = new_step_mult(predicted[m], actual[m], self.step_mults[m], tcfg.min_step_mult,
                                               tcfg.max_step_mult)

        # 5. Inner loop: S-step, policy refit, dual step, C-step.
        new = list(self.controllers)
        etas, kls, converged = self.eta.copy(), np.zeros(M), np.zeros(M, dtype=bool)
        fell_back = np.zeros(M, dtype=bool)  # the last C-step kept the sampling controller (CStepResult.fallback)
        policy_kl = np.full((M, T), np.nan)
        for inner in range(cfg.inner_iterations):
            if it > 0 or inner > 0:
                # a. S-step towards mu_p(x) - Sigma_p lambda(x) / nu_t, weighted by nu_t.
                t = time.perf_counter()
                src = new if inner > 0 else self.controllers
                shifts = [-np.einsum("tuv,ntv->ntu", src[m].pol_covar,
                                     np.einsum("tux,ntx->ntu", self.lambda_K[m], batches[m].X) + self.lambda_k[m])
                          / np.maximum(self.pol_wt[m], 1e-12)[None, :, None] for m in range(M)]
                s_steps.append(self._s_step(batches, src, weights=list(self.pol_wt), target_shift=shifts,
                                            ent_reg=ent_reg))
                timings["s_step"] += time.perf_counter() - t
                # b. Relinearize the updated policy (no new samples).
                t = time.perf_counter()
                pol_mu = self._fit_pol_lin(batches, add=False)
                timings["policy_fit"] += time.perf_counter() - t
                # c. Dual step on lambda; nu on the last inner iteration (dual gradient step by default).
                last = inner == cfg.inner_iterations - 1
                for m in range(M):
                    c, P = new[m], new[m].inv_pol_covar
                    gap = np.mean(c.act_batch(batches[m].X) - pol_mu[m], axis=0)  # (T, dU)
                    self.lambda_k[m] -= cfg.policy_dual_rate * self.pol_wt[m][:, None] * np.einsum("tuv,tv->tu", P, gap)
                    self.lambda_K[m] -= (cfg.policy_dual_rate_covar * self.pol_wt[m][:, None, None]
                                         * (P @ (c.K - self.pol_lin[m].K)))
                    policy_kl[m] = self._policy_kl(batches[m], c, pol_mu[m])
                if last:
                    self._update_pol_wt(policy_kl, lg_step)
            # d. C-step per condition: KL-bounded against the sampling controller, pulled towards pi_lin.
            t = time.perf_counter()
            for m in range(M):
                r = badmm_c_step(
                    self.controllers[m], self.pol_lin[m], self.pol_wt[m], self.lambda_K[m], self.lambda_k[m],
                    dynamics[m], costs[m], tcfg.kl_step * self.step_mults[m] * T, etas[m],
                    min_eta=tcfg.min_eta, max_eta=tcfg.max_eta, del0=tcfg.del0,
                    max_iterations=tcfg.max_eta_iterations, tolerance=tcfg.kl_tolerance)
                new[m], etas[m], kls[m], converged[m] = r.policy, r.eta, r.kl, r.converged
                fell_back[m] = r.fallback is not None
                if r.fallback is not None:
                    LOGGER.warning("BADMM iteration %d, condition %d (inner %d): C-step fallback, the controller "
                                   "is kept: %s", it, m, inner, r.fallback)
            timings["c_step"] += time.perf_counter() - t

        # 6. Advance.
        diagnostics = []
        for m in range(M):
            self._bprev[m] = _BADMMPrev(
                self._objective(self.controllers[m], dynamics[m], costs[m], self.pol_lin[m], self.pol_wt[m]),
                self._objective(new[m], dynamics[m], costs[m], self.pol_lin[m], self.pol_wt[m]))
            self.last_kl_step[m] = kls[m]
            diagnostics.append(ConditionDiagnostics(
                condition=batches[m].condition, cost=sample_costs[m], kl=float(kls[m]),
                kl_target=float(tcfg.kl_step * self.step_mults[m] * T), eta=float(etas[m]),
                step_mult=float(self.step_mults[m]), eta_iterations=0, converged=bool(converged[m]),
                predicted_improvement=float(predicted[m]), actual_improvement=float(actual[m]),
                fallback=bool(fell_back[m])))
        self.eta = etas
        self.controllers = new
        self.step_mult = float(np.mean(self.step_mults))
        self.timings = timings
        extra = {"pol_wt_mean": float(self.pol_wt.mean()), "lg_step": lg_step, "ent_reg": ent_reg,
                 "policy_kl_mean": float(np.nanmean(policy_kl)) if np.isfinite(policy_kl).any() else float("nan"),
                 "lambda_k_norm": float(np.linalg.norm(self.lambda_k))}
        out = GPSIteration(it, diagnostics, s_steps, self.step_mult, dict(timings), extra)
        self.iteration_count += 1
        return out

    def _update_pol_wt(self, kl: np.ndarray, lg_step: float) -> None:
        """nu_t update (reference _policy_dual_step, ``fixed_lg_step``): 0 = dual gradient ascent
        nu_t <- max(0, nu_t + lg_step KL_t); 1 = nu_t + lg_step; 2 = halve/double by the KL's relative
        change (< 0.8 / >= 0.95); 3 = halve/double below/above mean -/+ std of KL_t."""
        cfg = self.config
        if cfg.fixed_lg_step == 0:
            self.pol_wt = np.maximum(self.pol_wt + lg_step * kl, 0.0)
        elif cfg.fixed_lg_step == 1:
            self.pol_wt = np.maximum(self.pol_wt + lg_step, 0.0)
        elif self.prev_kl is not None and cfg.fixed_lg_step == 2:
            change = kl / np.maximum(self.prev_kl, 1e-12)
            self.pol_wt = np.where(change < 0.8, 0.5 * self.pol_wt, np.where(change >= 0.95, 2 * self.pol_wt,
                                                                             self.pol_wt))
        elif self.prev_kl is not None and cfg.fixed_lg_step == 3:
            mean, std = kl.mean(axis=1, keepdims=True), kl.std(axis=1, keepdims=True)
            lower, upper = mean - cfg.exp_step_lower * std, mean + cfg.exp_step_upper * std
            self.pol_wt = np.where(kl < lower, cfg.exp_step_decrease * self.pol_wt,
                                   np.where(kl >= upper, cfg.exp_step_increase * self.pol_wt, self.pol_wt))
        self.prev_kl = kl.copy()
