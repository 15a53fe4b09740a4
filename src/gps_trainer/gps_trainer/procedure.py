"""The paper's training procedure (Levine et al. 2016, Sec. V / Fig. 3) as three commands, on the
simulator's Python API (no ROS). Each phase reads a config and writes what the next phase starts from:

1. ``pose``         pretrain the CNN's vision layers by target-pose regression
                    (gps_trainer.pose_pretraining) -> <out>/vision.safetensors, metrics JSON
2. ``controllers``  local-controller pretraining: trajectory optimization alone on the full state
                    (TrajOptOnly) -> <out>/controllers.npz, metrics JSON
3. ``gps``          end-to-end MDGPS or BADMM, the CNN's conv layers initialized from phase 1 and the
                    local controllers from phase 2 -> <out>/policy.safetensors (+ .sha256),
                    <out>/controllers.npz, <out>/metrics.json (one row per iteration)

    python -m gps_trainer.procedure pose --config config/policy/pose_pretrain.yaml --out runs/p1
    python -m gps_trainer.procedure controllers --config config/experiments/reach_traj_opt.yaml --out runs/p2
    python -m gps_trainer.procedure gps --config config/experiments/reach_mdgps_visual.yaml --out runs/p3 \\
        --vision runs/p1/vision.safetensors --controllers runs/p2/controllers.npz

The library functions (:func:`pretrain_vision`, :func:`pretrain_controllers`, :func:`run_gps`) are what
the commands call; tests and the ``gps`` CLI call them directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from gps_controller.policies.neural import make_policy
from gps_controller.policies.serialization import save_policy
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_trainer.algorithms.mdgps import MDGPS, GPSIteration
from gps_trainer.algorithms.traj_opt_only import TrajOptOnly, initial_controllers
from gps_trainer.config import ExperimentConfig, from_dict, parse_overrides
from gps_trainer.gps_config import BADMMConfig, GPSExperimentConfig, config_to_dict, gps_experiment_from_dict
from gps_trainer.rollouts import PolicyEvaluation, collect_rollouts, evaluate_policy

LOGGER = logging.getLogger(__name__)

__all__ = [
    "save_controllers",
    "load_controllers",
    "make_gps",
    "run_gps",
    "pretrain_controllers",
    "pretrain_vision",
    "feature_point_overlay",
    "main",
]


# --------------------------------------------------------------------------- files


def save_controllers(controllers: list[LinearGaussianPolicy], path: str | Path) -> Path:
    """Local controllers as one .npz: K (M, T, dU, dX), k (M, T, dU), pol_covar (M, T, dU, dU)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, K=np.stack([c.K for c in controllers]), k=np.stack([c.k for c in controllers]),
             pol_covar=np.stack([c.pol_covar for c in controllers]))
    return path


def load_controllers(path: str | Path) -> list[LinearGaussianPolicy]:
    """Inverse of :func:`save_controllers` (validated by LinearGaussianPolicy; no pickles allowed)."""
    with np.load(path, allow_pickle=False) as z:
        return [LinearGaussianPolicy(K, k, S) for K, k, S in zip(z["K"], z["k"], z["pol_covar"], strict=True)]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default))
    tmp.replace(path)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def feature_point_overlay(image: np.ndarray, points: np.ndarray, scale: int = 4) -> np.ndarray:
    """The (H, W, 3) uint8 camera image enlarged ``scale`` times with the CNN's feature points (K, 2) in
    [-1, 1] (x right, y down; spatial softmax convention) drawn as coloured circles."""
    import cv2

    h, w = image.shape[:2]
    out = cv2.resize(np.ascontiguousarray(image), (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    hsv = np.stack([np.arange(len(pts)) * 180 // max(len(pts), 1), np.full(len(pts), 255), np.full(len(pts), 255)], 1)
    colors = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    for (x, y), c in zip(pts, colors, strict=True):
        col = int(round((x + 1.0) / 2.0 * (w * scale - 1)))
        row = int(round((y + 1.0) / 2.0 * (h * scale - 1)))
        cv2.circle(out, (col, row), max(2, scale), tuple(int(v) for v in c), -1)
        cv2.circle(out, (col, row), max(2, scale), (0, 0, 0), 1)
    return out


# --------------------------------------------------------------------------- GPS


def _initial_states(sim: Any, conditions: int) -> list[np.ndarray]:
    x0s = []
    for m in range(conditions):
        sim.reset(m)
        x0s.append(sim.state().copy())
    return x0s


def make_gps(cfg: GPSExperimentConfig, sim: Any) -> MDGPS:
    """The algorithm object of a GPS experiment: initial controllers (from ``init_controllers_file`` or
    the configured LQR/PD initializer), a seeded policy (conv layers from ``pretrained_vision`` if given)
    and MDGPS or BADMM."""
    alg = cfg.algorithm
    T = cfg.horizon or sim.task.horizon
    if alg.init_controllers_file:
        controllers = load_controllers(alg.init_controllers_file)[: cfg.conditions]
        if len(controllers) != cfg.conditions or controllers[0].T < T:
            raise ValueError(f"{alg.init_controllers_file}: {len(controllers)} controllers of T={controllers[0].T}, "
                             f"need {cfg.conditions} of T>={T}")
    else:
        controllers = initial_controllers(alg, _initial_states(sim, cfg.conditions), sim.dU, T,
                                          sim.task.control_dt)
    obs_dim = sim.dX if alg.policy_obs == "state" else sim.dO
    policy = make_policy(alg.policy, obs_dim, sim.dU, seed=alg.policy_seed)
    if alg.pretrained_vision:
        from gps_trainer.pose_pretraining import load_pretrained_vision

        names = load_pretrained_vision(policy, alg.pretrained_vision)
        LOGGER.info("loaded %d pretrained vision tensors from %s", len(names), alg.pretrained_vision)
    if isinstance(alg, BADMMConfig):
        from gps_trainer.algorithms.badmm import BADMM

        return BADMM(alg, controllers, policy, seed=cfg.seed, iterations=cfg.iterations)
    return MDGPS(alg, controllers, policy, seed=cfg.seed)


def run_gps(
    cfg: GPSExperimentConfig,
    output_dir: str | Path | None = None,
    *,
    sim: Any = None,
    stop_at_success: float | None = None,
    on_iteration: Callable[[GPSIteration, PolicyEvaluation | None], None] | None = None,
    evaluate: bool = True,
    resume: bool = True,
) -> tuple[MDGPS, list[dict[str, Any]]]:
    """Run ``cfg.iterations`` GPS iterations on the simulator: sample the local controllers (with the
    policy's observations), iterate, then evaluate the policy alone (mean actions, one trial per training
    condition). Stops early once the policy's success rate reaches ``stop_at_success``.

    With ``output_dir``: after every iteration, policy.safetensors, controllers.npz, metrics.json
    (config + one row per iteration, with "sampling_s" and the algorithm's timings) and gps_state.npz
    (step sizes, duals, controllers, random-generator states) are rewritten, so a later phase starts from
    the latest iterate and, with ``resume``, a stopped run goes on at its first missing iteration with
    nothing recorded lost (the GMM priors are re-fitted from the new samples, so a resumed run is not
    bit-identical to an uninterrupted one). Returns (algorithm, rows).
    """
    from gps_sim import ArmSim

    torch.manual_seed(cfg.seed)
    alg_cfg = cfg.algorithm
    visual = alg_cfg.policy.get("type") == "visuomotor_cnn"
    own_sim = sim is None
    if own_sim:
        sim = ArmSim(cfg.task, image_size=cfg.image_size, render_images=visual)
    T = cfg.horizon or sim.task.horizon
    algo = make_gps(cfg, sim)
    rng = np.random.default_rng(cfg.seed)
    out = Path(output_dir) if output_dir is not None else None
    rows: list[dict[str, Any]] = []
    smoothing = alg_cfg.sampling.smooth_noise_std
    try:
        if resume and out is not None:
            rows = _resume_gps(algo, rng, out, cfg)
        start = len(rows)
        if rows and stop_at_success is not None and rows[-1].get("policy_success_rate", 0.0) >= stop_at_success:
            start = cfg.iterations  # it had stopped there
        for it in range(start, cfg.iterations):
            t0 = time.perf_counter()
            batches = [collect_rollouts(sim, algo.controllers[m], m, cfg.samples_per_condition, T, rng,
                                        noise=alg_cfg.sampling.noise, smoothing_std=smoothing, images=visual)
                       for m in range(cfg.conditions)]
            sampling_s = time.perf_counter() - t0
            info = algo.iteration(batches)
            row = {**info.as_metrics(), "sampling_s": sampling_s}
            ev = None
            if evaluate:
                ev = evaluate_policy(sim, algo.policy, algo.cost, list(range(cfg.conditions)), T,
                                     policy_obs=alg_cfg.policy_obs, seed=cfg.seed + 7919 * (it + 1))
                row.update(ev.as_dict())
            rows.append(row)
            LOGGER.info("iteration %d: sample cost %.1f, policy cost %s, policy success %s", it,
                        float(np.mean(row["cost_per_condition"])), row.get("policy_cost"),
                        row.get("policy_success_rate"))
            if on_iteration is not None:
                on_iteration(info, ev)
            if out is not None:
                save_policy(algo.policy, out / "policy.safetensors")
                save_controllers(algo.controllers, out / "controllers.npz")
                _write_json(out / "metrics.json", {"config": config_to_dict(cfg), "iterations": rows})
                _save_gps_state(algo, rng, len(rows), out / "gps_state.npz")  # last: what resume trusts
            if (stop_at_success is not None and ev is not None and ev.success_rate >= stop_at_success):
                break
    finally:
        if own_sim:
            sim.close()
    return algo, rows


def _save_gps_state(algo: MDGPS, rng: np.random.Generator, iterations_done: int, path: Path) -> None:
    from gps_trainer.algorithm_adapter import gps_state_arrays

    arrays = gps_state_arrays(algo)
    arrays["iterations_done"] = np.array([iterations_done])
    for name, tensor in algo.policy.state_dict().items():
        arrays[f"policy/{name}"] = tensor.detach().cpu().numpy()
    arrays["numpy_rng_state"] = np.frombuffer(json.dumps(rng.bit_generator.state).encode(), dtype=np.uint8)
    arrays["torch_rng_state"] = torch.get_rng_state().numpy()
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _resume_gps(algo: MDGPS, rng: np.random.Generator, out: Path, cfg: GPSExperimentConfig) -> list[dict[str, Any]]:
    """The rows of a stopped run in ``out`` after restoring its state into ``algo`` and ``rng``; [] for a
    new run. gps_state.npz is written last in an iteration, so it decides how many rows count. Refuses a
    folder whose run had another configuration (``iterations`` may differ: a finished run can be extended)."""
    from gps_trainer.algorithm_adapter import load_gps_state

    metrics, state = out / "metrics.json", out / "gps_state.npz"
    if not (metrics.exists() and state.exists()):
        return []
    data = json.loads(metrics.read_text())
    old_cfg, new_cfg = dict(data.get("config") or {}), json.loads(json.dumps(config_to_dict(cfg)))
    old_cfg.pop("iterations", None)
    new_cfg.pop("iterations", None)
    if old_cfg != new_cfg:
        raise ValueError(f"{out} holds a run with another configuration; use another --out (or delete it) "
                         "to start this one")
    with np.load(state) as arrays:
        load_gps_state(algo, dict(arrays))
        done = int(arrays["iterations_done"][0])
        algo.policy.load_state_dict({k[len("policy/"):]: torch.from_numpy(arrays[k].copy())
                                     for k in arrays.files if k.startswith("policy/")})
        rng.bit_generator.state = json.loads(arrays["numpy_rng_state"].tobytes().decode())
        torch.set_rng_state(torch.from_numpy(arrays["torch_rng_state"].copy()))
    rows = list(data.get("iterations", []))[:done]
    LOGGER.info("resuming %s at iteration %d", out, len(rows))
    return rows


# --------------------------------------------------------------------------- phases 1 and 2


def pretrain_controllers(cfg: ExperimentConfig, output_dir: str | Path | None = None, *, sim: Any = None
                         ) -> tuple[list[LinearGaussianPolicy], list[dict[str, Any]]]:
    """Phase 2: trajectory optimization alone from the full state (TrajOptOnly) for ``cfg.iterations``;
    each iteration's mean sample cost and the mean controllers' success are recorded. Writes
    controllers.npz and controllers_metrics.json to ``output_dir``."""
    from gps_sim import ArmSim
    from gps_trainer.sampling import collect_samples

    own_sim = sim is None
    if own_sim:
        sim = ArmSim(cfg.task)
    T = cfg.horizon or sim.task.horizon
    alg = cfg.algorithm
    controllers = initial_controllers(alg, _initial_states(sim, cfg.conditions), sim.dU, T, sim.task.control_dt)
    algo = TrajOptOnly(alg, controllers, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    rows = []
    try:
        for it in range(cfg.iterations):
            batches = [collect_samples(sim, algo.policies[m], m, cfg.samples_per_condition, T, rng,
                                       noise=alg.sampling.noise, smoothing_std=alg.sampling.smooth_noise_std)
                       for m in range(cfg.conditions)]
            diags = algo.iteration(batches)
            success: list[bool] = []
            for m in range(cfg.conditions):
                collect_samples(sim, algo.policies[m], m, 1, T, rng, noise=False, success=success)
            rows.append({"iteration": it, "cost_per_condition": [d.cost for d in diags],
                         "controller_success_rate": float(np.mean(success)),
                         **{f"{k}_s": v for k, v in algo.timings.items()}})
            LOGGER.info("controllers iteration %d: cost %.1f, success %.2f", it,
                        float(np.mean(rows[-1]["cost_per_condition"])), rows[-1]["controller_success_rate"])
            if output_dir is not None:
                out = Path(output_dir)
                save_controllers(algo.policies, out / "controllers.npz")
                _write_json(out / "controllers_metrics.json", {"config": config_to_dict(cfg), "iterations": rows})
    finally:
        if own_sim:
            sim.close()
    return algo.policies, rows


def pretrain_vision(config_path: str | Path | None, output_dir: str | Path | None,
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Phase 1: pose pretraining (gps_trainer.pose_pretraining.pretrain_pose) with the weights written to
    <output_dir>/vision.safetensors (and its .metrics.json next to it)."""
    from gps_trainer.policy_opt import load_yaml_section
    from gps_trainer.pose_pretraining import PosePretrainConfig, pretrain_pose

    data = load_yaml_section(config_path, "pose_pretrain") if config_path else {}
    data.update(overrides or {})
    if output_dir is not None:
        data["output"] = str(Path(output_dir) / "vision.safetensors")
    return pretrain_pose(PosePretrainConfig.from_dict(data))


# --------------------------------------------------------------------------- commands


def _overrides(items: list[str]) -> dict[str, Any]:
    try:
        return parse_overrides(items)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def _apply(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return raw


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m gps_trainer.procedure {pose,controllers,gps} --config FILE --out DIR``."""
    ap = argparse.ArgumentParser(prog="gps_trainer.procedure", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="phase", required=True)
    for name, help_ in (("pose", "phase 1: pose pretraining of the conv layers"),
                        ("controllers", "phase 2: local-controller pretraining (trajectory optimization)"),
                        ("gps", "phase 3: end-to-end MDGPS / BADMM")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", required=name != "pose", default=None)
        p.add_argument("--out", required=True, help="output directory")
        p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
        p.add_argument("overrides", nargs="*", help="key=value (dotted keys, YAML values)")
        if name == "gps":
            p.add_argument("--vision", default=None, help="phase-1 vision.safetensors")
            p.add_argument("--controllers", default=None, help="phase-2 controllers.npz")
            p.add_argument("--stop-at-success", type=float, default=None)
            p.add_argument("--restart", action="store_true",
                           help="start afresh in --out instead of resuming the run found there")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    over = _overrides(a.overrides)
    if a.phase == "pose":
        m = pretrain_vision(a.config, a.out, over)
        print(json.dumps({k: m.get(k) for k in ("test_error_cm", "baseline_mean_error_cm", "weights")}))
        return 0
    raw = _apply(yaml.safe_load(Path(a.config).read_text()) or {}, over)
    if a.phase == "controllers":
        cfg = from_dict(ExperimentConfig, raw)
        _, rows = pretrain_controllers(cfg, a.out)
        print(json.dumps({"controllers": str(Path(a.out) / "controllers.npz"),
                          "final_cost": float(np.mean(rows[-1]["cost_per_condition"])) if rows else math.nan}))
        return 0
    if a.vision:
        raw.setdefault("algorithm", {})["pretrained_vision"] = a.vision
    if a.controllers:
        raw.setdefault("algorithm", {})["init_controllers_file"] = a.controllers
    cfg = gps_experiment_from_dict(raw)
    _, rows = run_gps(cfg, a.out, stop_at_success=a.stop_at_success, resume=not a.restart)
    last = rows[-1] if rows else {}
    print(json.dumps({"policy": str(Path(a.out) / "policy.safetensors"), "iterations": len(rows),
                      "policy_success_rate": last.get("policy_success_rate"),
                      "policy_cost": last.get("policy_cost")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
