#!/usr/bin/env python3
"""Run trajectory optimization only (local controllers) from an experiment YAML directly on the
simulator's Python API, printing per-iteration success, final distances and (for shape_sorting) the
block tip in the cube's frame (top face at z = +0.06) and the block's tilt from the targets' axis. Not a test: a long run, meant for the background:

    python scripts/run_traj_opt.py config/experiments/shape_sorting_traj_opt.yaml [--iterations N] > log
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from gps_trainer.algorithms.traj_opt_only import TrajOptOnly, initial_controllers
from gps_trainer.config import load_experiment_config
from gps_trainer.sampling import collect_samples


def tip_in_target_frame(sim) -> np.ndarray:
    """The first EE point (the block's tip on shape_sorting) in the target object's frame."""
    return (sim.ee_points()[0] - sim.target_pose()[:3]) @ sim._target_rotation()


def block_tilt_deg(sim) -> float:
    """Angle (deg) between the EE points' tip -> top-face axis and the targets' (vertical on shape_sorting)."""
    a = sim.ee_points()[2] - sim.ee_points()[0]
    b = sim.target_points()[2] - sim.target_points()[0]
    c = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def evaluate(sim, policies, T):
    rng = np.random.default_rng(0)
    succ, dist, tip, tilt = [], [], [], []
    for m, pol in enumerate(policies):
        flags: list[bool] = []
        collect_samples(sim, pol, m, 1, T, rng, noise=False, success=flags)
        succ.append(bool(flags[0]))
        dist.append(round(float(sim.mean_distance()), 4))
        tip.append([round(float(v), 4) for v in tip_in_target_frame(sim)])
        tilt.append(round(block_tilt_deg(sim), 2))
    return succ, dist, tip, tilt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the history here as JSON")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import gps_sim

    cfg = load_experiment_config(a.config)
    seed = cfg.seed if a.seed is None else a.seed
    iters = cfg.iterations if a.iterations is None else a.iterations
    task = gps_sim.load_task(cfg.task)
    sim = gps_sim.ArmSim(task, render_images=False)
    T, M, N = task.horizon, cfg.conditions, cfg.samples_per_condition
    x0s = []
    for m in range(M):
        sim.reset(m, seed=0)
        x0s.append(sim.state())
    alg = TrajOptOnly(cfg.algorithm, initial_controllers(cfg.algorithm, x0s, sim.dU, T, sim.control_dt), seed=seed)
    rng = np.random.default_rng(seed)
    history = []
    succ, dist, tip, tilt = evaluate(sim, alg.policies, T)
    rec0 = {"iteration": 0, "success": succ, "distance": dist, "tip": tip, "tilt_deg": tilt}
    print(json.dumps(rec0), flush=True)
    history.append(rec0)
    for it in range(1, iters + 1):
        t0 = time.time()
        sample_succ: list[list[bool]] = []
        batches = []
        for m in range(M):
            flags: list[bool] = []
            batches.append(collect_samples(sim, alg.policies[m], m, N, T, rng,
                                           smoothing_std=cfg.algorithm.sampling.smooth_noise_std, success=flags))
            sample_succ.append(flags)
        diags = alg.iteration(batches)
        succ, dist, tip, tilt = evaluate(sim, alg.policies, T)
        rec = {"iteration": it, "success": succ, "distance": dist, "tip": tip, "tilt_deg": tilt,
               "sample_success": [sum(f) for f in sample_succ],
               "cost": [round(float(d.cost), 2) for d in diags],
               "step_mult": [round(float(d.step_mult), 3) for d in diags],
               "seconds": round(time.time() - t0, 1)}
        history.append(rec)
        print(json.dumps(rec), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"config": a.config, "seed": seed, "history": history}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
