"""Rollouts for guided policy search on the simulator's Python API (no ROS).

:func:`collect_rollouts` is the one rollout loop on the simulator (trajectory optimization's
:func:`gps_trainer.sampling.collect_samples` wraps it). It records what trajectory optimization
needs (x, u, noise, EE Jacobians) and what GPS needs as well: what the *policy* sees at the same
time steps (instrumented training, paper Sec. III), the robot configuration o and, for a
visuomotor policy, the camera image. It runs either kind of actor:

- a :class:`LinearGaussianPolicy` (local controller) acts on the full state x,
- a :class:`GaussianPolicy` (the global policy) acts on its observation only.

:func:`evaluate_policy` runs the global policy alone (no local controllers, no noise) from every
condition and reports success and cost: the test-time behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gps_controller.policies.neural import GaussianPolicy
from gps_core.linear_gaussian import LinearGaussianPolicy, smooth_noise
from gps_core.samples import SampleBatch

__all__ = ["POLICY_OBS", "collect_rollouts", "policy_inputs", "evaluate_policy", "PolicyEvaluation"]

#: What the global policy observes: "state" = x (tasks without vision / quick tests: an MLP on the
#: full state), "observation" = o (robot configuration; plus the image for a visuomotor CNN).
POLICY_OBS = ("state", "observation")


def policy_inputs(batch: SampleBatch, policy_obs: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(obs (N, T, dO), images (N, T, H, W, 3) or None) the global policy sees for this batch."""
    if policy_obs == "state":
        return batch.X, None
    if policy_obs == "observation":
        if batch.obs is None:
            raise ValueError("policy_obs='observation' needs batches recorded with their observations")
        return batch.obs, batch.images
    raise ValueError(f"policy_obs {policy_obs!r} unknown; expected one of {POLICY_OBS}")


def collect_rollouts(
    sim: Any,
    actor: LinearGaussianPolicy | GaussianPolicy,
    condition: int,
    n: int,
    T: int,
    rng: np.random.Generator,
    *,
    noise: bool = True,
    smoothing_std: float = 2.0,
    images: bool = False,
    policy_obs: str = "observation",
    condition_set: str = "train",
    success: list[bool] | None = None,
) -> SampleBatch:
    """``n`` rollouts of ``actor`` from ``condition``, recording x, u, o (and images if ``images``).

    A linear-Gaussian actor applies u_t = K_t x_t + k_t + C_t^T n_t; a neural actor applies
    u_t = mu(o_t) + sqrt(pol_var) n_t (its input chosen by ``policy_obs``). Noise n (T, dU) is temporally
    smoothed standard normal noise (:func:`smooth_noise`), or zero with ``noise=False``. Torques are
    clipped to the effort limits and the clipped torque is recorded. ``images`` requires the simulator
    to render (``ArmSim(render_images=True)``). Each rollout's final success is appended to ``success``.
    """
    dX, dU = sim.dX, sim.dU
    neural = isinstance(actor, GaussianPolicy)
    if neural and actor.uses_images and not images:
        raise ValueError("collect_rollouts: a visuomotor actor needs images=True")
    if not neural and (actor.T < T or actor.dX != dX or actor.dU != dU):
        raise ValueError(f"collect_rollouts: controller {actor} does not fit T={T}, dX={dX}, dU={dU}")
    lim = np.asarray(sim.effort_limits, dtype=np.float64)
    X, U, N = np.zeros((n, T, dX)), np.zeros((n, T, dU)), np.zeros((n, T, dU))
    O = np.zeros((n, T, sim.dO))
    J = np.zeros((n, T, 9, 7))
    I = None
    for i in range(n):
        N[i] = smooth_noise(rng, T, dU, smoothing_std) if noise else 0.0
        ob = sim.reset(condition, seed=int(rng.integers(2**31)), condition_set=condition_set)
        if images and I is None:
            I = np.zeros((n, T, *ob.image.shape), dtype=np.uint8)
        for t in range(T):
            x = sim.state()
            X[i, t], O[i, t], J[i, t] = x, ob.config, sim.ee_point_jacobians()
            if images:
                I[i, t] = ob.image
            if neural:
                o = x if policy_obs == "state" else ob.config
                u = actor.act(o, ob.image if actor.uses_images else None, N[i, t] if noise else None)
            else:
                u = actor.act(x, t, N[i, t])
            U[i, t] = np.clip(u, -lim, lim)
            ob = sim.step(U[i, t])
        if success is not None:
            success.append(bool(sim.is_success()))
    return SampleBatch(X=X, U=U, obs=O, images=I, noise=N, ee_jacobians=J, condition=condition)


@dataclass
class PolicyEvaluation:
    """The global policy alone from each condition (mean actions, no local controllers)."""

    success: list[bool]  # one per trial (conditions x trials_per_condition, condition-major)
    cost_per_condition: list[float]  # mean total cost per condition
    final_distance: list[float]  # mean EE-point distance at the end, per trial (m)
    batches: list[SampleBatch]

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.success)) if self.success else float("nan")

    @property
    def mean_cost(self) -> float:
        return float(np.mean(self.cost_per_condition))

    def as_dict(self) -> dict[str, Any]:
        return {"policy_success_rate": self.success_rate, "policy_cost": self.mean_cost,
                "policy_cost_per_condition": list(self.cost_per_condition),
                "policy_success": [bool(s) for s in self.success],
                "policy_final_distance": list(self.final_distance)}


def evaluate_policy(
    sim: Any,
    policy: GaussianPolicy,
    cost: Any,
    conditions: list[int],
    T: int,
    *,
    policy_obs: str = "observation",
    trials_per_condition: int = 1,
    condition_set: str = "train",
    seed: int = 0,
) -> PolicyEvaluation:
    """Run the policy's mean from each condition; success is ``sim.is_success()`` at the end (task
    tolerance on the mean EE-point distance), cost the experiment's cost l(x, u) summed over time."""
    rng = np.random.default_rng(seed)
    success: list[bool] = []
    costs, dist, batches = [], [], []
    for m in conditions:
        b = collect_rollouts(sim, policy, m, trials_per_condition, T, rng, noise=False,
                             images=policy.uses_images, policy_obs=policy_obs, condition_set=condition_set,
                             success=success)
        costs.append(float(cost.eval(b.X, b.U, b.ee_jacobians).l.sum(axis=1).mean()))
        dist += [float(d) for d in np.linalg.norm(b.X[:, -1, 14:23].reshape(b.N, 3, 3), axis=2).mean(axis=1)]
        batches.append(b)
    return PolicyEvaluation(success, costs, dist, batches)
