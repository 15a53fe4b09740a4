"""Thin adapters from the learning algorithms (gps_trainer.algorithms) to the trainer's
:class:`gps_trainer.training.Algorithm` protocol: initial controllers, one iteration, checkpoint state.

- :class:`TrajOptAdapter`: trajectory optimization only (local controllers, no policy).
- :class:`GPSAdapter`: MDGPS or BADMM with the global neural policy (MLP or visuomotor CNN). Each
  iteration also returns the policy (serialize_policy) for ``set_policy_weights`` and the checkpoint,
  and :meth:`GPSAdapter.evaluate` scores the policy-alone rollouts the node runs through the controllers.

Checkpointed state: every condition's controller (K, k, Sigma), eta, step multipliers and the iteration
count (plus BADMM's dual variables; the policy travels separately as safetensors). Not (yet)
checkpointed: the dynamics and policy-linearization GMM priors and the previous iterate used for
step-size adaptation; after a resume they are re-fitted from new samples and the step size adapts afresh.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_core.samples import SampleBatch
from gps_trainer.training import ExperimentInfo, IterationOutput

LOGGER = logging.getLogger(__name__)


def _arrays(policy: LinearGaussianPolicy, smoothing: float) -> LinearGaussianPolicy:
    out = policy.copy()
    out.noise_smoothing_std = float(smoothing)
    return out


class TrajOptAdapter:
    def __init__(self, info: ExperimentInfo):
        from gps_core.tasks import load_task
        from gps_sim.arm_sim import ArmSim
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

    def initial_controllers(self) -> dict[int, LinearGaussianPolicy]:
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


def _success(X: np.ndarray, tolerance: float) -> np.ndarray:
    """Per rollout: mean EE-point distance to the targets at the last step (x[14:23] = EE - target) within
    ``tolerance``."""
    return np.linalg.norm(X[:, -1, 14:23].reshape(X.shape[0], 3, 3), axis=2).mean(axis=1) <= tolerance


def load_initial_controllers(path: str | Path) -> list[LinearGaussianPolicy]:
    """Local controllers to start from: a ``procedure.save_controllers`` .npz (K, k, pol_covar stacked),
    a trainer checkpoint directory (``checkpoints/iter_NNNNN``: its algorithm.npz), or a trainer output
    directory (its latest complete checkpoint)."""
    from gps_trainer.storage import CheckpointStore

    path = Path(path)
    if path.is_file():
        from gps_trainer.procedure import load_controllers

        return load_controllers(path)
    if (path / "algorithm.npz").exists():
        ckpt_dir = path.parent.parent
        store = CheckpointStore(ckpt_dir)
        ckpt = store.load(int(path.name.rsplit("_", 1)[-1]))
    else:
        ckpt = CheckpointStore(path).latest() if path.is_dir() else None
        if ckpt is None:
            raise FileNotFoundError(f"{path}: no controllers .npz, checkpoint or output directory with a checkpoint")
    a = ckpt.algorithm
    M = sum(1 for k in a if k.endswith("/K"))
    if M == 0:
        raise ValueError(f"{ckpt.path}: the checkpoint holds no local controllers (cond<m>/K)")
    return [LinearGaussianPolicy(a[f"cond{m}/K"], a[f"cond{m}/k"], a[f"cond{m}/pol_covar"]) for m in range(M)]


class GPSAdapter:
    """MDGPS / BADMM behind the trainer's Algorithm protocol.

    The controller node feeds its neural policy the observation o (robot configuration, plus the image
    for a CNN), so the experiment's ``policy_obs`` must be "observation". ``init_controllers`` (an .npz,
    checkpoint or output directory of a trajectory-only run) and ``pretrained_vision`` (pose-pretraining
    safetensors) override the experiment's ``init_controllers_file`` / ``pretrained_vision``.
    """

    def __init__(self, info: ExperimentInfo, init_controllers: str = "", pretrained_vision: str = ""):
        import torch

        from gps_sim.arm_sim import ArmSim
        from gps_trainer.gps_config import gps_experiment_from_dict
        from gps_trainer.procedure import make_gps

        raw = dict(info.raw)
        raw["algorithm"] = dict(raw.get("algorithm") or {})
        if pretrained_vision:
            raw["algorithm"]["pretrained_vision"] = str(pretrained_vision)
        self.cfg = gps_experiment_from_dict(raw, f"{info.path}: ")
        alg = self.cfg.algorithm
        if alg.policy_obs != "observation":
            raise ValueError(f"{info.path}: through the nodes the controller feeds the policy its observation o, "
                             f"so algorithm.policy_obs must be 'observation' (got {alg.policy_obs!r})")
        if alg.policy_opt.get("device", "auto") in ("cpu", "auto") and not torch.cuda.is_available():
            torch.set_num_threads(1)  # measured 5-10x faster than 2 threads on the 2-core machines
        sim = ArmSim(info.task, image_size=self.cfg.image_size)
        try:
            self.task = sim.task
            self.alg = make_gps(self.cfg, sim)
        finally:
            sim.close()
        if init_controllers:
            ctrl = load_initial_controllers(init_controllers)
            T = info.horizon
            if len(ctrl) < info.num_conditions or ctrl[0].T < T:
                raise ValueError(f"{init_controllers}: {len(ctrl)} controllers of T={ctrl[0].T}, need "
                                 f"{info.num_conditions} of T>={T}")
            self.alg.controllers = ctrl[: info.num_conditions]
            LOGGER.info("initial controllers from %s", init_controllers)
        self.smoothing = float(alg.sampling.smooth_noise_std) if alg.sampling.noise else 0.0

    @property
    def uses_images(self) -> bool:
        return bool(self.alg.policy.uses_images)

    @property
    def policy(self):
        return self.alg.policy

    def initial_controllers(self) -> dict[int, LinearGaussianPolicy]:
        return {m: _arrays(p, self.smoothing) for m, p in enumerate(self.alg.controllers)}

    def serialized_policy(self) -> tuple[str, bytes, str]:
        from gps_controller.policies.serialization import serialize_policy

        return serialize_policy(self.alg.policy)

    def iterate(self, iteration: int, batches: list[SampleBatch]) -> IterationOutput:
        for b in batches:
            if b.obs is None or (self.uses_images and b.images is None):
                raise ValueError(f"condition {b.condition}: rollouts lack the policy's inputs "
                                 f"(observations{' and images' if self.uses_images else ''}); "
                                 "the trainer must request record_images for a visuomotor policy")
        info = self.alg.iteration(batches)
        m = info.as_metrics()
        m.pop("iteration", None)
        m["step_mult_per_condition"] = list(getattr(self.alg, "step_mults", [info.step_mult] * len(batches)))
        last = info.policy_opt[-1] if info.policy_opt else None
        if last is not None and last.loss_after is not None:
            m["policy_loss"] = float(last.loss_after)
        m["sample_success_rate"] = float(np.concatenate(
            [_success(b.X, self.task.success_tolerance) for b in batches]).mean())
        return IterationOutput(self.initial_controllers(), m, self.serialized_policy())

    def evaluate(self, batches: list[SampleBatch]) -> dict:
        """Metrics of the policy-alone rollouts (one batch per condition, no noise): policy_cost (mean over
        conditions of the summed cost), its per-condition values, success_rate and final distances."""
        costs = [float(self.alg.cost.eval(b.X, b.U, b.ee_jacobians).l.sum(axis=1).mean()) for b in batches]
        ok = np.concatenate([_success(b.X, self.task.success_tolerance) for b in batches])
        dist = np.concatenate([np.linalg.norm(b.X[:, -1, 14:23].reshape(b.N, 3, 3), axis=2).mean(axis=1)
                               for b in batches])
        return {"policy_cost": float(np.mean(costs)), "policy_cost_per_condition": costs,
                "success_rate": float(ok.mean()), "policy_success": [float(v) for v in ok],
                "policy_final_distance": [float(d) for d in dist]}

    def write_overlay(self, batches: list[SampleBatch], path: str | Path) -> Path:
        """PNG of the CNN's feature points on the camera images of policy rollouts: one row per condition
        (up to 4), the first and the last step of its first rollout. Written atomically."""
        import cv2

        from gps_trainer.procedure import feature_point_overlay

        rows = []
        for b in batches[:4]:
            if b.images is None:
                raise ValueError("the policy rollouts carry no images")
            tiles = []
            for t in (0, b.T - 1):
                _, points = self.alg.policy.predict(b.obs[0, t][None], b.images[0, t][None])
                tiles.append(feature_point_overlay(b.images[0, t], points[0], scale=4))
            rows.append(np.concatenate(tiles, axis=1))
        path = Path(path)
        tmp = path.with_name(path.stem + ".tmp.png")
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {tmp}")
        tmp.replace(path)
        return path

    def state_arrays(self) -> dict[str, np.ndarray]:
        return gps_state_arrays(self.alg)

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        load_gps_state(self.alg, arrays)

    def load_policy(self, architecture: str, weights: bytes) -> None:
        """Restore the policy of a checkpoint (its weights replace the current ones in place)."""
        from gps_controller.policies.serialization import deserialize_policy, sha256_hex

        loaded = deserialize_policy(architecture, weights, sha256_hex(weights), device=self.alg.policy.device)
        self.alg.policy.load_state_dict(loaded.state_dict())


def make(info: ExperimentInfo, init_controllers: str = "", pretrained_vision: str = ""):
    if info.algorithm == "traj_opt":
        return TrajOptAdapter(info)
    if info.algorithm in ("mdgps", "badmm"):
        return GPSAdapter(info, init_controllers, pretrained_vision)
    raise NotImplementedError(f"algorithm {info.algorithm!r} is not wired into the trainer node")


def gps_state_arrays(a: Any) -> dict[str, np.ndarray]:
    """The iteration state of an MDGPS / BADMM algorithm that a checkpoint needs besides the policy's
    weights: step sizes, eta, counters, BADMM's duals and the local controllers."""
    out = {"eta": np.asarray(a.eta, dtype=float), "step_mult": np.array([a.step_mult]),
           "iteration_count": np.array([a.iteration_count]), "s_step_count": np.array([a.s_step_count])}
    for name in ("step_mults", "pol_wt", "lambda_K", "lambda_k"):  # BADMM's duals
        if hasattr(a, name):
            out[name] = np.asarray(getattr(a, name), dtype=float)
    for m, p in enumerate(a.controllers):
        out[f"cond{m}/K"], out[f"cond{m}/k"], out[f"cond{m}/pol_covar"] = p.K, p.k, p.pol_covar
    return out


def load_gps_state(a: Any, arrays: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`gps_state_arrays` (the GMM priors are re-fitted from the next samples)."""
    a.eta = np.array(arrays["eta"], dtype=float)
    a.step_mult = float(np.asarray(arrays["step_mult"]).reshape(-1)[0])
    a.iteration_count = int(np.asarray(arrays["iteration_count"]).reshape(-1)[0])
    a.s_step_count = int(np.asarray(arrays["s_step_count"]).reshape(-1)[0])
    for name in ("step_mults", "pol_wt", "lambda_K", "lambda_k"):
        if name in arrays and hasattr(a, name):
            setattr(a, name, np.array(arrays[name], dtype=float))
    a.controllers = [LinearGaussianPolicy(arrays[f"cond{m}/K"], arrays[f"cond{m}/k"], arrays[f"cond{m}/pol_covar"])
                     for m in range(len(a.controllers))]
