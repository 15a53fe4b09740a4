"""Thin adapter from the learning algorithms (gps_trainer.algorithms) to the trainer's
:class:`gps_trainer.training.Algorithm` protocol: initial controllers, one iteration, checkpoint state.

Checkpointed state: every condition's controller (K, k, Sigma), eta, step multipliers and the iteration
count. Not (yet) checkpointed: the dynamics GMM prior and the previous iterate used for step-size
adaptation; after a resume the prior is re-fitted from new samples and the step size adapts afresh.
"""

from __future__ import annotations

import numpy as np

from gps_controller.conversions import LinearGaussianArrays
from gps_controller.policies.linear_gaussian import LinearGaussianPolicy
from gps_trainer.samples import SampleBatch
from gps_trainer.training import ExperimentInfo, IterationOutput


def _arrays(policy: LinearGaussianPolicy, smoothing: float) -> LinearGaussianArrays:
    return LinearGaussianArrays(policy.K, policy.k, policy.pol_covar, smoothing)


class TrajOptAdapter:
    def __init__(self, info: ExperimentInfo):
        from gps_sim.arm_sim import ArmSim
        from gps_sim.tasks import load_task
        from gps_trainer.algorithms.traj_opt_only import TrajOptOnly, initial_controllers
        from gps_trainer.config import load_experiment_config

        self.cfg = load_experiment_config(info.path)
        self.task = load_task(self.cfg.task)
        alg = self.cfg.algorithm
        sim = ArmSim(self.task, image_size=16)
        x0s = []
        for m in range(info.num_conditions):
            sim.reset(m)
            x0s.append(sim.state().copy())
        T = self.cfg.horizon or self.task.horizon
        policies = initial_controllers(alg, x0s, sim.dU, T, self.task.control_dt)
        self.smoothing = float(alg.sampling.smooth_noise_std) if alg.sampling.noise else 0.0
        self.alg = TrajOptOnly(alg, policies, seed=self.cfg.seed)

    def initial_controllers(self) -> dict[int, LinearGaussianArrays]:
        return {m: _arrays(p, self.smoothing) for m, p in enumerate(self.alg.policies)}

    def success(self, batches: list[SampleBatch]) -> float:
        """Fraction of rollouts whose EE points end within tolerance of the targets (x[14:23] = EE - target)."""
        ok = [np.linalg.norm(b.X[:, -1, 14:23].reshape(b.N, 3, 3), axis=2).mean(axis=1) <= self.task.success_tolerance
              for b in batches]
        return float(np.concatenate(ok).mean())

    def iterate(self, iteration: int, batches: list[SampleBatch]) -> IterationOutput:
        diags = self.alg.iteration(batches)
        metrics = {
            "cost_per_condition": [d.cost for d in diags],
            "kl_per_condition": [d.kl for d in diags],
            "eta_per_condition": [d.eta for d in diags],
            "step_mult_per_condition": [d.step_mult for d in diags],
            "success_rate": self.success(batches),
            **{f"{k}_s": v for k, v in self.alg.timings.items()},
        }
        return IterationOutput(self.initial_controllers(), metrics)

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {"eta": self.alg.eta, "step_mult": self.alg.step_mult,
               "iteration_count": np.array([self.alg.iteration_count])}
        for m, p in enumerate(self.alg.policies):
            out[f"cond{m}/K"], out[f"cond{m}/k"], out[f"cond{m}/pol_covar"] = p.K, p.k, p.pol_covar
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.alg.eta = np.array(arrays["eta"], dtype=float)
        self.alg.step_mult = np.array(arrays["step_mult"], dtype=float)
        self.alg.iteration_count = int(arrays["iteration_count"][0])
        self.alg.policies = [LinearGaussianPolicy(arrays[f"cond{m}/K"], arrays[f"cond{m}/k"],
                                                  arrays[f"cond{m}/pol_covar"])
                             for m in range(len(self.alg.policies))]


def make(info: ExperimentInfo):
    if info.algorithm == "traj_opt":
        return TrajOptAdapter(info)
    raise NotImplementedError(f"algorithm {info.algorithm!r} is not wired into the trainer node yet "
                              "(traj_opt and record_only are)")
