"""Speed of the trajectory-optimization library (issue 4).

Measures, on the reach task of the embedded simulator (Python API, no ROS):
  * one C-step (T=100, dX=32, dU=7, eta search included) for 1 condition and for 4 conditions at once,
  * one dynamics fit with the GMM prior on 20 rollouts, per condition and for 4 conditions,
  * whole trajectory-optimization iterations (4 conditions x 5 rollouts) split into
    sampling / dynamics / cost / C-step.
Times are wall-clock seconds: the median (and min) over repeats. The last line is one JSON object.

    python benchmarks/traj_opt_speed.py [--repeats 5] [--iterations 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from gps_sim import ArmSim, load_task
from gps_trainer.algorithms.traj_opt_only import TrajOptOnly, initial_controllers
from gps_trainer.config import load_experiment_config
from gps_trainer.costs import cost_from_config, quadratic_cost_model
from gps_trainer.dynamics import GMMPrior, fit_dynamics
from gps_trainer.sampling import collect_samples
from gps_trainer.traj_opt import CostModel, kl_constrained_update

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(fn, repeats: int) -> tuple[dict[str, float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times)}, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=3)
    args = ap.parse_args()

    cfg = load_experiment_config(os.path.join(ROOT, "config", "experiments", "reach_traj_opt.yaml"))
    acfg = cfg.algorithm
    task = load_task(cfg.task)
    sim = ArmSim(task, render_images=False)
    T, M = task.horizon, cfg.conditions
    rng = np.random.default_rng(cfg.seed)
    x0s = []
    for m in range(M):
        sim.reset(m, seed=0)
        x0s.append(sim.state())
    init = initial_controllers(acfg, x0s, sim.dU, T, sim.control_dt)
    cost = cost_from_config(acfg.cost)
    p = acfg.dynamics.prior

    # Data: 20 rollouts per condition from the initial controllers (what the prior holds after 4 iterations).
    batches20 = [collect_samples(sim, init[m], m, 20, T, rng) for m in range(M)]

    def fit_one(m: int):
        prior = GMMPrior(p.max_clusters, p.min_samples_per_cluster, p.max_samples, p.strength, seed=m)
        return fit_dynamics(batches20[m], prior, acfg.dynamics.regularization, acfg.dynamics.initial_state_var)

    dyn1, dyn_one = timed(lambda: fit_one(0), args.repeats)
    dyn4, dyns = timed(lambda: [fit_one(m) for m in range(M)], max(1, args.repeats // 2))
    # Warm refit: the prior already holds these rollouts' predecessors (the steady state of training).
    warm_prior = GMMPrior(p.max_clusters, p.min_samples_per_cluster, p.max_samples, p.strength, seed=0)
    fit_dynamics(batches20[0], warm_prior)
    dyn_warm, _ = timed(lambda: fit_dynamics(batches20[0].take(slice(0, 5)), warm_prior), args.repeats)

    models = []
    for b in batches20:
        models.append(CostModel(*quadratic_cost_model(cost.eval(b.X, b.U, b.ee_jacobians), b.X, b.U)))
    tc = acfg.traj_opt

    def cstep(ms: list[int]):
        return kl_constrained_update([init[m] for m in ms], [dyns[m] for m in ms], [models[m] for m in ms],
                                     kl_step=tc.kl_step, eta=tc.init_eta, min_eta=tc.min_eta, max_eta=tc.max_eta)

    c1, r1 = timed(lambda: cstep([0]), args.repeats)
    c4, r4 = timed(lambda: cstep(list(range(M))), args.repeats)
    c1["eta_iterations"] = r1[0].iterations
    c4["eta_iterations"] = [r.iterations for r in r4]
    loop, _ = timed(lambda: [cstep([m]) for m in range(M)], args.repeats)

    # Whole iterations, from the initial controllers, 4 conditions x 5 rollouts.
    alg = TrajOptOnly(acfg, [q.copy() for q in init], cost=cost, seed=cfg.seed)
    iters = []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        batches = [collect_samples(sim, alg.policies[m], m, cfg.samples_per_condition, T, rng,
                                   smoothing_std=acfg.sampling.smooth_noise_std) for m in range(M)]
        sampling = time.perf_counter() - t0
        diags = alg.iteration(batches)
        iters.append({"sampling_s": sampling, **{f"{k}_s": v for k, v in alg.timings.items()},
                      "eta_iterations": [d.eta_iterations for d in diags]})

    result = {
        "benchmark": "traj_opt_speed",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": os.getloadavg()[0]},
        "shape": {"T": T, "dX": sim.dX, "dU": sim.dU, "conditions": M},
        "c_step_1_condition": c1,
        "c_step_4_conditions_batched": c4,
        "c_step_4_conditions_one_by_one": loop,
        "dynamics_fit_prior_20_samples_1_condition_cold": dyn1,
        "dynamics_fit_prior_20_samples_4_conditions_cold": dyn4,
        "dynamics_fit_prior_5_new_samples_warm_prior": dyn_warm,
        "iteration_reach_4x5": iters,
    }
    for key, value in result.items():
        if key != "iteration_reach_4x5":
            print(f"{key}: {value}")
    for i, it in enumerate(iters):
        print(f"iteration {i}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in it.items()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
