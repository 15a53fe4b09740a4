"""Algorithm "trajectory optimization only": improve one linear-Gaussian controller per condition from
its own rollouts, with no global policy (reference: AlgorithmTrajOpt).

One iteration, for M conditions (read :meth:`TrajOptOnly.iteration` top to bottom):

1. dynamics   p(x_t+1 | x_t, u_t) per condition from its N rollouts, under the condition's GMM prior
2. cost       quadratic model of l(x, u) around the rollouts, averaged over samples
3. step size  compare the previous iteration's predicted improvement with the one now measured
4. C-step     new controllers p(u|x) = argmin E[l] s.t. KL(p || p_prev) <= kl_step * step_mult * T,
              all conditions at once
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from gps_core.linear_gaussian import LinearGaussianPolicy, init_lqr, init_pd
from gps_core.samples import SampleBatch
from gps_trainer.config import TrajOptOnlyConfig
from gps_trainer.costs import Cost, cost_from_config, psd_cost_model, quadratic_cost_model
from gps_trainer.dynamics import GMMPrior, fit_dynamics
from gps_trainer.state_arrays import from_arrays, indexed, items_under, to_arrays
from gps_trainer.traj_opt import CostModel, expected_cost, kl_constrained_update, new_step_mult

__all__ = ["TrajOptOnly", "ConditionDiagnostics", "initial_controllers", "local_cost_models"]


@dataclass
class ConditionDiagnostics:
    """What one iteration did for one condition."""

    condition: int
    cost: float  # mean total cost of this iteration's rollouts
    kl: float  # sum_t KL(new || old) of the C-step
    kl_target: float
    eta: float
    step_mult: float  # the multiplier used for this C-step
    eta_iterations: int
    converged: bool
    predicted_improvement: float = float("nan")
    actual_improvement: float = float("nan")
    fallback: bool = False  # the C-step found no valid eta and kept the previous controller (KL step 0)

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


@dataclass
class _Iterate:
    """What the step-size rule reads of an iteration, per condition: Laplace estimates under the models
    fitted on its rollouts, computed as it ends (the same numbers the next iteration would compute from
    those models), of the controller that produced the rollouts and of the C-step's output. Two numbers, not
    the models: a checkpoint keeps them (resume_state)."""

    sampler_cost: float  # E_old[c | p_old]
    new_cost: float  # E_old[c | p_new]


def initial_controllers(cfg: TrajOptOnlyConfig, x0s: list[np.ndarray], dU: int, T: int, dt: float
                        ) -> list[LinearGaussianPolicy]:
    """One initial controller per condition from ``cfg.init_controller`` around that condition's x0."""
    ic = cfg.init_controller
    if ic.type == "lqr":
        return [init_lqr(x0, dU, T, dt, stiffness=ic.stiffness, stiffness_vel=ic.stiffness_vel,
                         init_var=ic.init_var, final_weight=ic.final_weight, gains=np.asarray(ic.gains),
                         acc=np.asarray(ic.acc)) for x0 in x0s]
    if ic.type == "pd":
        return [init_pd(x0, dU, T, pos_gains=np.asarray(ic.pos_gains), vel_gains_mult=ic.vel_gains_mult,
                        init_var=ic.init_var) for x0 in x0s]
    raise ValueError(f"init_controller.type {ic.type!r} unknown; expected 'lqr' or 'pd'")


def local_cost_models(cost: Cost, batches: list[SampleBatch], hessian: Literal["exact", "psd"] = "exact"
                      ) -> tuple[list[CostModel], list[float]]:
    """Per condition, the quadratic expansion l ~ cc + cv^T z + 0.5 z^T cm z of the cost around the
    rollouts (the C-step's cost model) and the rollouts' actual mean cost. ``hessian="psd"``: each cm_t
    projected onto the PSD cone around the samples' mean (:func:`gps_trainer.costs.psd_cost_model`)."""
    if hessian not in ("exact", "psd"):
        raise ValueError(f"cost model hessian {hessian!r}: expected 'exact' or 'psd'")
    models, sample_costs = [], []
    for b in batches:
        exp = cost.eval(b.X, b.U, b.ee_jacobians)
        model = quadratic_cost_model(exp, b.X, b.U)
        if hessian == "psd":
            model = psd_cost_model(*model, np.concatenate([b.X, b.U], axis=-1).mean(axis=0))
        models.append(CostModel(*model))
        sample_costs.append(float(exp.l.sum(axis=1).mean()))
    return models, sample_costs


class TrajOptOnly:
    """Trajectory optimization over M conditions. ``policies[m]`` is the controller to sample next."""

    def __init__(self, config: TrajOptOnlyConfig, policies: list[LinearGaussianPolicy], cost: Cost | None = None,
                 seed: int = 0) -> None:
        self.config = config
        self.cost = cost if cost is not None else cost_from_config(config.cost)
        self.policies = list(policies)
        M = len(policies)
        self.eta = np.full(M, config.traj_opt.init_eta)
        self.step_mult = np.ones(M)
        p = config.dynamics.prior
        self.priors: list[GMMPrior | None] = [
            GMMPrior(p.max_clusters, p.min_samples_per_cluster, p.max_samples, p.strength, seed=seed + m)
            if p is not None else None for m in range(M)]
        self._prev: list[_Iterate | None] = [None] * M
        self.iteration_count = 0
        self.timings: dict[str, float] = {}

    @property
    def num_conditions(self) -> int:
        return len(self.policies)

    @property
    def controllers(self) -> list[LinearGaussianPolicy]:
        """The local controllers (the name the GPS loop uses for every algorithm)."""
        return self.policies

    @controllers.setter
    def controllers(self, value: list[LinearGaussianPolicy]) -> None:
        self.policies = list(value)

    def resume_state(self) -> dict[str, np.ndarray]:
        """What the next iteration reads of this one beyond the checkpoint's attributes (eta, step_mult,
        counters; gps_trainer.run_dir.algorithm_state): per condition the step rule's memory (``prev.m``: the
        controller that sampled, the models fitted on its rollouts) and the dynamics prior
        (``dynamics_prior.m``, with its warm-started mixture). Arrays only."""
        return {**indexed([to_arrays(p) if p is not None else {} for p in self._prev], "prev"),
                **indexed([p.state_arrays() if p is not None else {} for p in self.priors], "dynamics_prior")}

    def load_resume_state(self, arrays: dict[str, np.ndarray]) -> None:
        """The inverse of :meth:`resume_state`."""
        M = self.num_conditions
        self._prev = [from_arrays(_Iterate, a) if a else None for a in items_under(arrays, "prev", M)]
        for prior, a in zip(self.priors, items_under(arrays, "dynamics_prior", M), strict=True):
            if prior is not None:
                prior.load_state_arrays(a)

    def iteration(self, batches: list[SampleBatch]) -> list[ConditionDiagnostics]:
        """One iteration from the rollouts of every condition (``batches[m]`` ran ``policies[m]``)."""
        M = self.num_conditions
        if len(batches) != M:
            raise ValueError(f"TrajOptOnly.iteration: {len(batches)} sample batches for {M} conditions")
        dcfg, tcfg = self.config.dynamics, self.config.traj_opt
        t0 = time.perf_counter()

        # 1. Dynamics: x_t+1 ~ N(F_t [x_t; u_t] + f_t, Sigma_t), per condition, under its mixture prior.
        dynamics = [fit_dynamics(b, self.priors[m], dcfg.regularization, dcfg.initial_state_var)
                    for m, b in enumerate(batches)]
        t1 = time.perf_counter()

        # 2. Cost: l ~ cc + cv^T z + 0.5 z^T cm z around the rollouts; and the rollouts' actual cost.
        costs, sample_costs = local_cost_models(self.cost, batches, self.config.cost_hessian)
        t2 = time.perf_counter()

        # 3. Step size: did the last C-step improve the cost as much as its model predicted?
        #    predicted = E_old[c | p_old] - E_old[c | p_new],  actual = E_old[c | p_old] - E_new[c | p_new]
        #    (E_old: dynamics and cost fitted last iteration, E_new: fitted now; p_new produced these rollouts)
        predicted = np.full(M, np.nan)
        actual = np.full(M, np.nan)
        current = [expected_cost(self.policies[m], dynamics[m], costs[m]) for m in range(M)]  # E_new[c | p_new]
        for m in range(M):
            prev = self._prev[m]
            if prev is None:
                continue
            predicted[m] = prev.sampler_cost - prev.new_cost
            actual[m] = prev.sampler_cost - current[m]
            self.step_mult[m] = new_step_mult(predicted[m], actual[m], self.step_mult[m], tcfg.min_step_mult,
                                              tcfg.max_step_mult)

        # 4. C-step for all conditions at once: eta search so that sum_t KL(p_new || p_old) ~ eps.
        results = kl_constrained_update(
            self.policies, dynamics, costs, kl_step=tcfg.kl_step * self.step_mult, eta=self.eta,
            min_eta=tcfg.min_eta, max_eta=tcfg.max_eta, del0=tcfg.del0,
            max_iterations=tcfg.max_eta_iterations, tolerance=tcfg.kl_tolerance)
        t3 = time.perf_counter()

        # Advance: remember what produced these rollouts, sample the new controllers next.
        diagnostics = []
        for m, r in enumerate(results):
            self._prev[m] = _Iterate(current[m], expected_cost(r.policy, dynamics[m], costs[m]))
            diagnostics.append(ConditionDiagnostics(
                condition=batches[m].condition, cost=sample_costs[m], kl=r.kl, kl_target=r.kl_target, eta=r.eta,
                step_mult=float(self.step_mult[m]), eta_iterations=r.iterations, converged=r.converged,
                predicted_improvement=float(predicted[m]), actual_improvement=float(actual[m]),
                fallback=r.fallback is not None))
            self.policies[m] = r.policy  # on a fallback a copy of the previous controller (kl_constrained_update)
            self.eta[m] = r.eta
        self.iteration_count += 1
        self.timings = {"dynamics": t1 - t0, "cost": t2 - t1, "c_step": t3 - t2}
        return diagnostics
