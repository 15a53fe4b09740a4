"""The :class:`~gps_trainer.loop.Sampler` on the simulator's Python API (no ROS): the MuJoCo arm in
this process, stepped as fast as it computes.

It reproduces what the ROS nodes do, trial for trial, so one experiment gives the same rollouts through
either sampler (a test checks it):

- every trial is seeded by :func:`trial_seed` (iteration, condition, sample index); the seed resets the
  scene (gps_sim/reset's ``seed``) and draws the exploration noise ``smooth_noise(default_rng(seed), T,
  dU, controller.noise_smoothing_std)``, as the controller node does;
- every command goes through the controller's safety layer (effort clamp + joint-limit guard,
  :class:`gps_controller.safety.SafetyLayer` with the model's limits and the controller's margin);
- a trial runs T + 1 steps and records x_0 .. x_T: the loop's algorithms use the first T, and the
  task's success rule reads x_T, the state after the T-th action. A T-step controller acts at step T
  with its last step's gains (:func:`extend_controller`); that action is applied after x_T is measured.

``workers`` > 1 runs an iteration's rollouts in that many spawned processes, each with its own simulator
and one torch thread. A rollout is a function of (controller or policy, condition, trial seed) alone: the
reset repeats the condition's scene from the seed, and the noise is drawn from it; so the batches equal a
one-process run's bit for bit (tested), whichever worker ran which rollout in which order.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from gps_controller.policies.neural import GaussianPolicy
from gps_controller.safety import SafetyLayer
from gps_core.linear_gaussian import LinearGaussianPolicy, smooth_noise
from gps_core.samples import SampleBatch

LOGGER = logging.getLogger(__name__)

__all__ = ["SimSampler", "trial_seed", "extend_controller", "safety_layer_for", "EVAL_SAMPLE_INDEX"]

#: The sample index of an evaluation trial (its seed and its Rollout slot differ from every sample's).
EVAL_SAMPLE_INDEX = 1_000_000


def trial_seed(base_seed: int, iteration: int, condition: int, sample_index: int) -> int:
    """The seed of one trial: its reset and its exploration noise. The same on every sampler and after a
    restart, so a trial run again draws the same noise."""
    return zlib.crc32(f"{base_seed}/{iteration}/{condition}/{sample_index}".encode()) + 1


def extend_controller(controller: LinearGaussianPolicy, T: int) -> LinearGaussianPolicy:
    """``controller`` with at least ``T`` steps: missing steps repeat its last step (the extra action of
    a T + 1 step trial is applied after the last measured state, so its value is never seen)."""
    if controller.T >= T:
        return controller
    pad = T - controller.T
    rep = lambda a: np.concatenate([a, np.repeat(a[-1:], pad, axis=0)])  # noqa: E731
    return LinearGaussianPolicy(rep(controller.K), rep(controller.k), rep(controller.pol_covar),
                                rep(controller.chol_pol_covar), rep(controller.inv_pol_covar), validate=False,
                                noise_smoothing_std=controller.noise_smoothing_std)


def safety_layer_for(sim: Any, joint_limit_margin: float) -> SafetyLayer:
    """The controller's safety layer for ``sim``'s arm (continuous joints unlimited), as the controller
    node builds it with ``robot_model: mujoco``."""
    n = len(sim.effort_limits)
    limited = np.asarray(sim.joint_limited[:n], dtype=bool)
    lower = np.where(limited, sim.joint_limits[:n, 0], -np.inf)
    upper = np.where(limited, sim.joint_limits[:n, 1], np.inf)
    return SafetyLayer(sim.effort_limits, lower, upper, float(joint_limit_margin))


class SimSampler:
    """Rollouts on an :class:`gps_sim.ArmSim` of the experiment's task.

    ``record_images``: render and record the camera image at every step (a visuomotor policy trains on
    them). ``joint_limit_margin``: the controller's joint-limit guard (config/controller.yaml).
    ``base_seed``: the experiment's seed (:func:`trial_seed`). ``workers``: processes the rollouts of
    :meth:`sample` and :meth:`sample_policy` run in (1: this one; see the module docstring); ``sim`` must
    then be None.
    """

    def __init__(self, task: Any, horizon: int | None = None, *, image_size: int = 64, record_images: bool = False,
                 base_seed: int = 0, joint_limit_margin: float = 0.05, condition_set: str = "train",
                 sim: Any = None, workers: int = 1):
        from gps_sim import ArmSim

        if int(workers) != workers or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if workers > 1 and sim is not None:
            raise ValueError("workers > 1 build their own simulators: pass sim only with workers=1")
        self.workers = int(workers)
        self._pool: Any = None

        self._own_sim = sim is None
        self.sim = sim if sim is not None else ArmSim(task, image_size=image_size, render_images=record_images)
        self.task = self.sim.task
        self.T = int(horizon or self.task.horizon)
        self.record_images = bool(record_images)
        self.base_seed = int(base_seed)
        self.condition_set = condition_set
        self.safety = safety_layer_for(self.sim, joint_limit_margin)
        self._worker_setup = (self.task, int(image_size), self.record_images, float(joint_limit_margin),
                              condition_set, self.T)
        self.dX, self.dU, self.dO = self.sim.dX, self.sim.dU, self.sim.dO
        self.action_limits = np.asarray(self.sim.effort_limits, dtype=np.float64).copy()  # what the safety layer clips to

    # ------------------------------------------------------------------ Sampler

    def initial_states(self, conditions: Sequence[int]) -> list[np.ndarray]:
        """x_0 of each condition (what initial controllers are built around)."""
        out = []
        for m in conditions:
            self.sim.reset(int(m), seed=trial_seed(self.base_seed, 0, int(m), 0), condition_set=self.condition_set)
            out.append(self.sim.state().copy())
        return out

    def target_pose(self, condition: int) -> np.ndarray:
        return np.asarray(self.task.condition_list(self.condition_set)[condition].target_pose, dtype=np.float64)

    def sample(self, iteration: int, controllers: Sequence[LinearGaussianPolicy], samples: int) -> list[SampleBatch]:
        """``samples`` noisy rollouts of each condition's controller (T + 1 states each)."""
        if self.workers > 1:
            return self._batches_in_workers(iteration, [extend_controller(c, self.T + 1) for c in controllers],
                                            samples)
        out, t0 = [], time.perf_counter()
        for m, c in enumerate(controllers):
            out.append(self._rollouts(iteration, m, extend_controller(c, self.T + 1), samples, noise=True))
            LOGGER.info("  sampled condition %d/%d (%d rollouts, %.1f s so far)", m + 1, len(controllers), samples,
                        time.perf_counter() - t0)
        return out

    def sample_policy(self, iteration: int, policy: GaussianPolicy, conditions: int, samples: int
                      ) -> list[SampleBatch]:
        """``samples`` rollouts of the global policy with its own (unsmoothed, as the controller node's)
        noise from each condition."""
        if self.workers > 1:
            return self._batches_in_workers(iteration, [policy] * int(conditions), samples)
        return [self._rollouts(iteration, m, policy, samples, noise=True) for m in range(int(conditions))]

    def evaluate(self, iteration: int, actor: GaussianPolicy | Sequence[LinearGaussianPolicy],
                 conditions: Sequence[int]) -> list[SampleBatch]:
        """One noise-free trial per condition of the global policy (fed x or o as ``actor.observes``
        says, as the controller node does), or of each condition's own controller."""
        out = []
        for m in conditions:
            a = actor if isinstance(actor, GaussianPolicy) else extend_controller(actor[m], self.T + 1)
            out.append(self._rollouts(iteration, int(m), a, 1, noise=False, first_index=EVAL_SAMPLE_INDEX))
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
        if self._own_sim:
            self.sim.close()

    # ------------------------------------------------------------------ worker processes

    def _batches_in_workers(self, iteration: int, actors: Sequence[LinearGaussianPolicy | GaussianPolicy],
                            n: int) -> list[SampleBatch]:
        """``n`` noisy rollouts of ``actors[m]`` from each condition m, one rollout per worker task."""
        if self._pool is None:  # started once, kept for the run: a spawned worker takes seconds to start
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # MuJoCo's GL context and torch's threads dislike fork
            self._pool = ctx.Pool(self.workers, initializer=_init_sampler_worker, initargs=self._worker_setup)
        t0 = time.perf_counter()
        jobs = [(actor, m, [trial_seed(self.base_seed, iteration, m, i)], True)
                for m, actor in enumerate(actors) for i in range(n)]
        parts = self._pool.map(_sampler_worker_rollouts, jobs, chunksize=1)  # in job order
        out = []
        for m in range(len(actors)):
            mine = parts[m * n:(m + 1) * n]
            X, U, O, I, N, J = (None if mine[0][k] is None else np.concatenate([p[k] for p in mine]) for k in range(6))
            out.append(SampleBatch(X=X, U=U, obs=O, images=I, noise=N, ee_jacobians=J, condition=m))
        LOGGER.info("  sampled %d conditions x %d rollouts in %d processes, %.1f s", len(actors), n, self.workers,
                    time.perf_counter() - t0)
        return out

    # ------------------------------------------------------------------ one condition

    def _rollouts(self, iteration: int, m: int, actor: LinearGaussianPolicy | GaussianPolicy, n: int,
                  noise: bool, first_index: int = 0) -> SampleBatch:
        seeds = [trial_seed(self.base_seed, iteration, m, first_index + i) for i in range(n)]
        X, U, O, I, N, J = rollouts(self.sim, self.safety, self.condition_set, self.T + 1, self.record_images,
                                    actor, m, seeds, noise)
        return SampleBatch(X=X, U=U, obs=O, images=I, noise=N, ee_jacobians=J, condition=m)


def rollouts(sim: Any, safety: SafetyLayer, condition_set: str, T1: int, record_images: bool,
             actor: LinearGaussianPolicy | GaussianPolicy, m: int, seeds: Sequence[int], noise: bool
             ) -> tuple[np.ndarray | None, ...]:
    """One rollout of ``T1`` steps per seed from condition ``m``: (X, U, obs, images or None, noise,
    EE-point Jacobians), each (len(seeds), T1, ...)."""
    n, dX, dU, dO = len(seeds), sim.dX, sim.dU, sim.dO
    neural = isinstance(actor, GaussianPolicy)
    images = record_images or (neural and actor.uses_images)
    X, U, N = np.zeros((n, T1, dX)), np.zeros((n, T1, dU)), np.zeros((n, T1, dU))
    O, J = np.zeros((n, T1, dO)), np.zeros((n, T1, 9, 7))
    I = None
    for i, seed in enumerate(seeds):
        if noise:  # the controller node's draws: a neural policy's noise is not smoothed
            N[i] = smooth_noise(np.random.default_rng(seed), T1, dU, 0.0 if neural else actor.noise_smoothing_std)
        ob = sim.reset(m, seed=seed, condition_set=condition_set)
        if images and I is None:
            I = np.zeros((n, T1, *ob.image.shape), dtype=np.uint8)
        for t in range(T1):
            x = sim.state()
            X[i, t], O[i, t], J[i, t] = x, ob.config, sim.ee_point_jacobians()
            if images:
                I[i, t] = ob.image
            if neural:
                o = x if actor.observes == "state" else ob.config
                u = actor.act(o, ob.image if actor.uses_images else None, N[i, t] if noise else None)
            else:
                u = actor.act(x, t, N[i, t] if noise else None)
            U[i, t] = safety.filter(u, sim.joint_positions()).torque
            ob = sim.step(U[i, t])
    return X, U, O, I, N, J


_WORKER: dict[str, Any] = {}  # a sampler worker's simulator, safety layer, condition set, T + 1, image flag


def _init_sampler_worker(task: Any, image_size: int, record_images: bool, joint_limit_margin: float,
                         condition_set: str, horizon: int) -> None:
    import torch

    from gps_sim import ArmSim

    torch.set_num_threads(1)
    sim = ArmSim(task, image_size=image_size, render_images=record_images)
    _WORKER.update(sim=sim, safety=safety_layer_for(sim, joint_limit_margin), condition_set=condition_set,
                   T1=int(horizon) + 1, record_images=record_images)


def _sampler_worker_rollouts(job: tuple[Any, int, list[int], bool]) -> tuple[np.ndarray | None, ...]:
    actor, m, seeds, noise = job
    w = _WORKER
    return rollouts(w["sim"], w["safety"], w["condition_set"], w["T1"], w["record_images"], actor, m, seeds, noise)
