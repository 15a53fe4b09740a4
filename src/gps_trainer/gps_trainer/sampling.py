"""Rollouts on the simulator's Python API (no ROS) into :class:`SampleBatch` arrays."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from gps_controller.policies.linear_gaussian import LinearGaussianPolicy, smooth_noise
from gps_trainer.samples import SampleBatch

__all__ = ["collect_samples", "evaluate_policies", "SimLike"]


class SimLike(Protocol):
    """The part of ``gps_sim.ArmSim`` a rollout needs."""

    dX: int
    dU: int
    effort_limits: np.ndarray

    def reset(self, condition: int, seed: int | None = 0, condition_set: str = "train") -> Any: ...
    def step(self, torques: np.ndarray) -> Any: ...
    def state(self) -> np.ndarray: ...
    def ee_point_jacobians(self) -> np.ndarray: ...


def collect_samples(
    sim: SimLike,
    policy: LinearGaussianPolicy,
    condition: int,
    n: int,
    T: int,
    rng: np.random.Generator,
    noise: bool = True,
    smoothing_std: float = 2.0,
    condition_set: str = "train",
    success: list[bool] | None = None,
) -> SampleBatch:
    """Run ``n`` rollouts of ``policy`` from ``condition``: u_t = K_t x_t + k_t + C_t^T n_t, clipped to the
    effort limits (the clipped torque is recorded, as it is what the arm received). Noise n (T, dU) per
    rollout is temporally smoothed (:func:`smooth_noise`); ``noise=False`` runs the mean controller.
    If ``success`` is a list, each rollout's final ``sim.is_success()`` is appended to it.
    """
    dX, dU = sim.dX, sim.dU
    if policy.T < T or policy.dX != dX or policy.dU != dU:
        raise ValueError(f"collect_samples: policy {policy} does not fit T={T}, dX={dX}, dU={dU}")
    X = np.zeros((n, T, dX))
    U = np.zeros((n, T, dU))
    J = np.zeros((n, T, 9, 7))
    N = np.zeros((n, T, dU))
    lim = np.asarray(sim.effort_limits, dtype=np.float64)
    for i in range(n):
        N[i] = smooth_noise(rng, T, dU, smoothing_std) if noise else 0.0
        sim.reset(condition, seed=int(rng.integers(2**31)), condition_set=condition_set)
        for t in range(T):
            x = sim.state()
            u = np.clip(policy.act(x, t, N[i, t]), -lim, lim)
            X[i, t], U[i, t], J[i, t] = x, u, sim.ee_point_jacobians()
            sim.step(u)
        if success is not None:
            success.append(bool(sim.is_success()))  # type: ignore[attr-defined]
    return SampleBatch(X=X, U=U, noise=N, ee_jacobians=J, condition=condition)


def evaluate_policies(
    sim: SimLike, policies: list[LinearGaussianPolicy], T: int, condition_set: str = "train"
) -> tuple[list[bool], list[float]]:
    """Run each condition's mean controller once (no noise); return success flags and final mean
    EE-point distances, condition by condition."""
    successes, distances = [], []
    rng = np.random.default_rng(0)  # unused by a noise-free rollout except for the reset seed
    for m, policy in enumerate(policies):
        flags: list[bool] = []
        collect_samples(sim, policy, m, 1, T, rng, noise=False, condition_set=condition_set, success=flags)
        successes.append(flags[0])
        distances.append(float(sim.mean_distance()))  # type: ignore[attr-defined]
    return successes, distances
