"""The GPS loop: one iteration, read top to bottom in :meth:`GPSRun.iteration`.

    1. sample     N noisy rollouts of each condition's local controller p_i(u|x) (instrumented: x holds
                  the target), with what the policy sees (o, camera images) recorded alongside
    2. iterate    the algorithm: fit dynamics, C-step (and for GPS the S-step on pi_theta(u|o))
                  (Levine et al. 2016, Sec. IV; MDGPS: Montgomery & Levine 2016)
    3. evaluate   the trained thing alone, no noise, one trial per training condition, scored by the
                  task's own success rule (gps_core.tasks.task_success): the global policy for GPS, the
                  local controllers' means for trajectory optimization alone
    4. record     checkpoint (algorithm state, controllers, policy, random state), metrics row, the
                  latest policy and controllers at the top of the run directory (gps_trainer.run_dir)

The robot is swapped behind :class:`Sampler` (cbfinn/gps's Agent): :class:`gps_trainer.sim_sampler.
SimSampler` steps the MuJoCo arm in this process; :class:`gps_trainer.node_sampler.NodeSampler` runs
the trials on the controller nodes over DDS (the trainer node). Both run every trial T + 1 steps with
the same seeds, so an experiment gives the same rollouts through either; the algorithms see x_0..x_{T-1}
and the success rule reads x_T, the state after the last action.

A run directory holds everything; a stopped run resumes at its next iteration through either sampler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from gps_controller.policies.neural import GaussianPolicy, make_policy
from gps_core.layout import mean_ee_distance
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_core.samples import SampleBatch
from gps_core.tasks import TaskConfig, task_success
from gps_trainer.config import ExperimentConfig
from gps_trainer.run_dir import RunDirectory, load_controllers

LOGGER = logging.getLogger(__name__)

__all__ = ["Sampler", "GPSRun", "make_algorithm", "evaluation_metrics", "first_steps"]


class Sampler(Protocol):
    """Where rollouts come from. Every trial runs ``T + 1`` steps (x_0 .. x_T recorded)."""

    task: TaskConfig
    T: int
    dX: int
    dU: int
    dO: int

    #: The robot's effort limits (dU,), the torques its safety layer clips to; None where the sampler does not
    #: know them (the S-step's ``s_step_within_limits`` needs them).
    action_limits: np.ndarray | None

    def initial_states(self, conditions: Sequence[int]) -> list[np.ndarray]:
        """x_0 of each training condition (initial controllers are built around them)."""

    def target_pose(self, condition: int) -> np.ndarray:
        """The training condition's target pose (xyz + quaternion wxyz): the success rule needs it."""

    def sample(self, iteration: int, controllers: Sequence[LinearGaussianPolicy], samples: int) -> list[SampleBatch]:
        """``samples`` noisy rollouts of ``controllers[m]`` from each condition m (noise seeded per trial,
        smoothed by each controller's ``noise_smoothing_std``)."""

    def sample_policy(self, iteration: int, policy: GaussianPolicy, conditions: int, samples: int
                      ) -> list[SampleBatch]:
        """``samples`` rollouts of the global policy with its own noise (u = mu + sqrt(pol_var) eps, eps
        seeded per trial as in :meth:`sample`) from each of the first ``conditions`` conditions."""

    def evaluate(self, iteration: int, actor: GaussianPolicy | Sequence[LinearGaussianPolicy],
                 conditions: Sequence[int]) -> list[SampleBatch]:
        """One noise-free trial per condition of the global policy (fed x or o as ``actor.observes``
        says), or of each condition's own controller."""

    def close(self) -> None: ...


# --------------------------------------------------------------------------- the algorithm


def make_algorithm(cfg: ExperimentConfig, sampler: Sampler, init_controllers: str | Path | None = None,
                   pretrained_vision: str | Path | None = None) -> Any:
    """The experiment's algorithm: TrajOptOnly, MDGPS or BADMM, its local controllers built around the
    conditions' initial states (or loaded from ``init_controllers``: a controllers .npz, a checkpoint or
    a run directory), for GPS a seeded policy (conv layers from ``pretrained_vision`` if given)."""
    from gps_trainer.algorithms.traj_opt_only import TrajOptOnly, initial_controllers

    alg, M, T = cfg.algorithm, cfg.conditions, sampler.T
    init_controllers = init_controllers or getattr(alg, "init_controllers_file", None)
    if init_controllers:
        controllers = load_controllers(init_controllers)
        if len(controllers) < M or controllers[0].T < T:
            raise ValueError(f"{init_controllers}: {len(controllers)} controllers of T={controllers[0].T}, "
                             f"need {M} of T>={T}")
        # a longer controller starts the shorter horizon with its first T steps (every algorithm's arrays are T long)
        controllers = [c.first_steps(T) for c in controllers[:M]]
        LOGGER.info("initial controllers from %s", init_controllers)
    else:
        controllers = initial_controllers(alg, sampler.initial_states(range(M)), sampler.dU, T,
                                          sampler.task.control_dt)
    if alg.type == "traj_opt":
        return TrajOptOnly(alg, controllers, seed=cfg.seed)
    obs_dim = sampler.dX if alg.policy_obs == "state" else sampler.dO
    policy = make_policy(alg.policy, obs_dim, sampler.dU, seed=alg.policy_seed)
    policy.observes = alg.policy_obs  # saved with the policy: the controller and gps eval feed it x or o
    vision = pretrained_vision or alg.pretrained_vision
    if vision:
        from gps_trainer.pose_pretraining import load_pretrained_vision

        names = load_pretrained_vision(policy, vision)
        LOGGER.info("loaded %d pretrained vision tensors from %s", len(names), vision)
    if alg.type == "badmm":
        from gps_trainer.algorithms.badmm import BADMM

        algo = BADMM(alg, controllers, policy, seed=cfg.seed, iterations=cfg.iterations)
    else:
        from gps_trainer.algorithms.mdgps import MDGPS

        algo = MDGPS(alg, controllers, policy, seed=cfg.seed)
    algo.action_limits = getattr(sampler, "action_limits", None)
    if alg.s_step_within_limits and algo.action_limits is None:
        raise ValueError("algorithm.s_step_within_limits needs the robot's effort limits, and this sampler does "
                         "not report them")
    if algo.policy_opt_config.aux_pose_weight > 0:
        if not vision:
            raise ValueError("algorithm.policy_opt.aux_pose_weight > 0 needs algorithm.pretrained_vision (or "
                             "--vision): the pose-pretraining head starts the auxiliary loss")
        from gps_trainer.pose_pretraining import load_pose_regressor

        pose = load_pose_regressor(vision)
        algo.enable_aux_pose(pose.head_matrix(), [sampler.target_pose(m) for m in range(M)],
                             pose.pose_mean.double().numpy(), pose.pose_std.double().numpy())
    return algo


def _iteration_metrics(algo: Any, result: Any) -> dict[str, Any]:
    """One dict of an iteration's diagnostics, whichever algorithm ran."""
    if isinstance(result, list):  # TrajOptOnly: one ConditionDiagnostics per condition
        return {"cost_per_condition": [d.cost for d in result], "kl_per_condition": [d.kl for d in result],
                "eta_per_condition": [d.eta for d in result],
                "step_mult_per_condition": [d.step_mult for d in result],
                "c_step_fallbacks": sum(d.fallback for d in result),
                **{f"{k}_s": v for k, v in algo.timings.items()}}
    m = result.as_metrics()
    m.pop("iteration", None)
    m["step_mult_per_condition"] = list(getattr(algo, "step_mults", [result.step_mult] * len(algo.controllers)))
    # the S-step's split over its S-steps (the first iteration also trains on the initial controllers)
    m["s_step_head_s"] = float(sum(d.fc_only_wall_time_s for d in result.policy_opt))
    m["s_step_full_s"] = float(sum(d.full_wall_time_s for d in result.policy_opt))
    m["s_step_loss_eval_s"] = float(sum(d.loss_eval_wall_time_s for d in result.policy_opt))
    last = result.policy_opt[-1] if result.policy_opt else None
    if last is not None and last.loss_after is not None:
        m["policy_loss"] = float(last.loss_after)
    return m


def first_steps(batch: SampleBatch, T: int) -> SampleBatch:
    """The first ``T`` steps of every rollout of ``batch`` (what the algorithms learn from)."""
    cut = lambda a: None if a is None else a[:, :T]  # noqa: E731
    return SampleBatch(X=batch.X[:, :T], U=batch.U[:, :T], obs=cut(batch.obs), images=cut(batch.images),
                       noise=cut(batch.noise), ee_jacobians=cut(batch.ee_jacobians), condition=batch.condition)


def evaluation_metrics(task: TaskConfig, cost: Any, batches: list[SampleBatch], target_poses: list[np.ndarray],
                       T: int) -> dict[str, Any]:
    """Success (the task's rule on x_T), final mean EE distance and cost (summed over the first T steps)
    of T + 1 step rollouts, one batch per condition."""
    success, dist, costs = [], [], []
    for b, pose in zip(batches, target_poses, strict=True):
        success += [bool(task_success(task, b.X[i, T], pose)) for i in range(b.N)]
        dist += [float(mean_ee_distance(b.X[i, T])) for i in range(b.N)]
        head = first_steps(b, T)
        costs.append(float(cost.eval(head.X, head.U, head.ee_jacobians).l.sum(axis=1).mean()))
    return {"success_rate": float(np.mean(success)), "success": success, "final_distance": dist,
            "policy_cost": float(np.mean(costs)), "policy_cost_per_condition": costs}


# --------------------------------------------------------------------------- the loop


class GPSRun:
    """One experiment in one run directory, iterated through a :class:`Sampler`.

    ``out``: the run directory (created; a directory holding another configuration is refused; a
    stopped run there resumes at its next iteration unless ``resume`` is False, which starts afresh).
    ``on_phase(phase)`` is called as each phase starts (the trainer node publishes it as its status).
    ``validate(policy, iteration)``, if given, evaluates each iteration's global policy (e.g. on a
    task's development sets); its dict joins the iteration's metrics row.
    """

    def __init__(self, cfg: ExperimentConfig, out: str | Path, sampler: Sampler, *,
                 init_controllers: str | Path | None = None, pretrained_vision: str | Path | None = None,
                 resume: bool = True, on_phase: Callable[[str], None] | None = None,
                 validate: Callable[[GaussianPolicy, int], dict[str, Any]] | None = None):
        torch.manual_seed(cfg.seed)
        self.cfg, self.sampler = cfg, sampler
        self.run_dir = RunDirectory(out, cfg, fresh=not resume)
        self.algorithm = make_algorithm(cfg, sampler, init_controllers, pretrained_vision)
        self.on_phase = on_phase or (lambda phase: None)
        self.validate = validate
        self.rows = self.run_dir.restore(self.algorithm)
        self.next_iteration = len(self.rows)

    @property
    def policy(self) -> GaussianPolicy | None:
        return getattr(self.algorithm, "policy", None)

    @property
    def controllers(self) -> list[LinearGaussianPolicy]:
        return self.algorithm.controllers

    def iteration(self) -> dict[str, Any]:
        """Run iteration ``next_iteration``: sample, iterate, evaluate, record. Returns its metrics row."""
        cfg, sampler, algo, it = self.cfg, self.sampler, self.algorithm, self.next_iteration
        alg, M, T = cfg.algorithm, cfg.conditions, sampler.T
        timings: dict[str, float] = {}
        poses = [sampler.target_pose(m) for m in range(M)]

        # 1. sample the local controllers (x, u, noise; o and images for the policy), or, on-policy once the
        #    policy has been trained (after the first iteration), the global policy with its own noise
        self.on_phase("sampling")
        on_policy = bool(getattr(alg, "sample_on_policy", False)) and algo.iteration_count > 0
        LOGGER.info("iteration %d: sampling %d conditions x %d rollouts of %d steps (%s)", it, M,
                    cfg.samples_per_condition, T + 1, "global policy" if on_policy else "local controllers")
        t0 = time.perf_counter()
        smoothing = float(alg.sampling.smooth_noise_std) if alg.sampling.noise else 0.0
        for c in algo.controllers:
            c.noise_smoothing_std = smoothing
        if on_policy:
            samples = sampler.sample_policy(it, algo.policy, M, cfg.samples_per_condition)
        else:
            samples = sampler.sample(it, algo.controllers, cfg.samples_per_condition)
        timings["sampling_s"] = time.perf_counter() - t0
        sample_success = [task_success(sampler.task, b.X[i, T], pose)
                          for b, pose in zip(samples, poses, strict=True) for i in range(b.N)]

        # 2. the algorithm's iteration on the first T steps
        self.on_phase("iterating")
        LOGGER.info("iteration %d: %s (dynamics, C-step%s) on %d rollouts, sampled in %.1f s", it, alg.type,
                    "" if alg.type == "traj_opt" else ", S-step", M * cfg.samples_per_condition, timings["sampling_s"])
        t0 = time.perf_counter()
        result = algo.iteration([first_steps(b, T) for b in samples])
        timings["algorithm_s"] = time.perf_counter() - t0
        row = {"iteration": it, **_iteration_metrics(algo, result),
               "sample_success_rate": float(np.mean(sample_success)),
               "sampled": "global_policy" if on_policy else "local_controllers"}

        # 3. evaluate the policy alone (GPS) or the new controllers' means (trajectory optimization)
        self.on_phase("evaluating")
        LOGGER.info("iteration %d: algorithm took %.1f s; evaluating without noise on %d conditions", it,
                    timings["algorithm_s"], M)
        t0 = time.perf_counter()
        policy = self.policy
        actor = policy if policy is not None else algo.controllers
        evaluated = sampler.evaluate(it, actor, range(M))
        row.update(evaluation_metrics(sampler.task, algo.cost, evaluated, poses, T))
        row["evaluated"] = "global_policy" if policy is not None else "local_controllers"
        if self.validate is not None and policy is not None:
            # the policy on development sets every iteration: drift shows here before any test set
            row.update(self.validate(policy, it))
        timings["evaluation_s"] = time.perf_counter() - t0

        # 4. record: checkpoint, metrics, latest policy and controllers
        self.on_phase("checkpointing")
        row.update(timings)
        self.run_dir.save_iteration(it, algo, row, evaluated if policy is not None else None)
        self.rows.append(row)
        self.next_iteration = it + 1
        LOGGER.info("iteration %d: sample cost %.1f, sample success %.0f%%, %s success %.0f%% (cost %.1f); "
                    "sampling %.1f s, algorithm %.1f s, evaluation %.1f s", it,
                    float(np.mean(row["cost_per_condition"])), 100 * row["sample_success_rate"],
                    row["evaluated"].replace("_", " "), 100 * row["success_rate"], row["policy_cost"],
                    timings["sampling_s"], timings["algorithm_s"], timings["evaluation_s"])
        return row

    def run(self, iterations: int | None = None, stop_at_success: float | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> list[dict[str, Any]]:
        """Iterate until ``iterations`` are done in all (default: the config's), ``stop_at_success`` is
        reached by the evaluated success rate, or ``should_stop()``. Returns every row of the run."""
        total = self.cfg.iterations if iterations is None else int(iterations)
        if stop_at_success is not None and self.rows and self.rows[-1]["success_rate"] >= stop_at_success:
            return self.rows  # it had stopped there
        while self.next_iteration < total and not should_stop():
            row = self.iteration()
            if stop_at_success is not None and row["success_rate"] >= stop_at_success:
                break
        return self.rows

    def close(self) -> None:
        self.run_dir.close()
