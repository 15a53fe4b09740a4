"""Rollouts on the simulator's Python API (no ROS) into :class:`SampleBatch` arrays."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_core.samples import SampleBatch
from gps_trainer.rollouts import collect_rollouts

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
    """Run ``n`` rollouts of the local controller ``policy`` from ``condition``:
    u_t = K_t x_t + k_t + C_t^T n_t, clipped to the effort limits (the clipped torque is recorded, as it
    is what the arm received), with temporally smoothed noise n (``noise=False``: the mean controller).
    The rollout loop itself is :func:`gps_trainer.rollouts.collect_rollouts`, shared with GPS.
    If ``success`` is a list, each rollout's final ``sim.is_success()`` is appended to it.
    """
    return collect_rollouts(sim, policy, condition, n, T, rng, noise=noise, smoothing_std=smoothing_std,
                            condition_set=condition_set, success=success)


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
