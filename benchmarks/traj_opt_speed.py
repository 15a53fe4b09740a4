"""Speed of the C-step (KL-constrained trajectory optimization, issue 16 item 3).

Input: a synthetic problem of the PR2 arm's size (``gps_trainer.traj_opt.random_problem``: T=100,
dX=32, dU=7; random stable-ish dynamics, convex quadratic cost, unit-covariance initial controller), so
no simulator and no sampling loop are involved (whole iterations are the training loop's business).
Measured, as median (and min) over repeats, wall clock and process CPU time:
  * one backward pass and one forward pass (the two recursions of each eta-search step),
  * the whole C-step with its eta search for 1 condition and for 4 conditions in one call, starting from
    eta = 1 ("cold") and from the eta the search found ("warm", as in training where eta carries over),
  * the same C-step with the implementation before issue 16 (src/gps_trainer/test/traj_opt_v0.py: the old
    numerics and the old eta rule) side by side, on identical input.
The machine's CPU flags and load are recorded with the figures. The last line is one JSON object.

    python benchmarks/traj_opt_speed.py [--repeats 15] [--blas-threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from gps_trainer.traj_opt import _next_eta, backward_pass, forward_pass, kl_constrained_update, random_problem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(fn, repeats: int) -> tuple[dict[str, float], Any]:
    fn()  # warm-up (imports, allocator)
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return {"median_ms": statistics.median(wall), "min_ms": min(wall), "cpu_median_ms": statistics.median(cpu),
            "cpu_min_ms": min(cpu), "repeats": repeats}, out


def machine() -> dict[str, Any]:
    """CPU model, flags (lscpu) and load, so the figures can be read against the machine they came from."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "numpy": np.__version__, "load_avg": list(os.getloadavg())}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "Flags"):
                info["cpu_model" if key.strip() == "Model name" else "cpu_flags"] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        info["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def load_reference():
    """The pre-speed-up C-step kept for the equality test; None if the test tree is not there."""
    path = os.path.join(ROOT, "src", "gps_trainer", "test", "traj_opt_v0.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location("traj_opt_v0", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="BLAS threads (1: the C-step's matrices are 7x7 to 40x40; threads only add overhead)")
    ap.add_argument("--kl-step", type=float, default=0.2)
    args = ap.parse_args()
    problems = [random_problem(seed=s) for s in range(4)]
    prev, dyn, cost = (list(x) for x in zip(*problems, strict=True))
    T, dU, dX = prev[0].K.shape
    ref = load_reference()
    result: dict[str, Any] = {"benchmark": "traj_opt_speed", "machine_before": machine(),
                              "shape": {"T": T, "dX": dX, "dU": dU}, "kl_step": args.kl_step}

    with threadpool_limits(args.blas_threads):
        p, d, c = prev[0], dyn[0], cost[0]
        b = [a[None] for a in (p.K, p.k, p.inv_pol_covar, d.Fm, d.fv, c.cm, c.cv)]
        bwd, (K, k, cov, _) = timed(lambda: backward_pass(*b, np.array([10.0])), args.repeats)
        fwd_in = (K, k, cov, d.Fm[None], d.fv[None], d.dyn_covar[None], d.x0mu[None], d.x0sigma[None])
        fwd, _ = timed(lambda: forward_pass(*fwd_in), args.repeats)
        result["backward_pass"], result["forward_pass"] = bwd, fwd
        if ref is not None:
            result["backward_pass_before"], _ = timed(lambda: ref.backward_pass(*b, np.array([10.0])), args.repeats)
            result["forward_pass_before"], _ = timed(lambda: ref.forward_pass(*fwd_in), args.repeats)

        for label, ms in (("1_condition", [0]), ("4_conditions", [0, 1, 2, 3])):
            ins = ([prev[m] for m in ms], [dyn[m] for m in ms], [cost[m] for m in ms])
            cold, res = timed(lambda ins=ins: kl_constrained_update(*ins, kl_step=args.kl_step, eta=1.0),
                              args.repeats)
            cold["eta_passes"] = [r.iterations for r in res]
            etas = np.array([r.eta for r in res])
            warm, res_w = timed(lambda ins=ins, etas=etas: kl_constrained_update(*ins, kl_step=args.kl_step,
                                                                                eta=etas), args.repeats)
            warm["eta_passes"] = [r.iterations for r in res_w]
            result[f"c_step_{label}_cold"], result[f"c_step_{label}_warm"] = cold, warm
            if ref is not None:
                before, res_b = timed(lambda ins=ins: ref.kl_constrained_update(*ins, kl_step=args.kl_step, eta=1.0),
                                      args.repeats)
                before["eta_passes"] = [r.iterations for r in res_b]
                # Same numbers? Only comparable along the same eta path: the old numerics with today's rule.
                same_path = ref.kl_constrained_update(*ins, kl_step=args.kl_step, eta=1.0, next_eta=_next_eta)
                before["max_abs_K_difference_same_eta_path"] = float(max(
                    np.abs(r.policy.K - q.policy.K).max() for r, q in zip(res, same_path, strict=True)))
                result[f"c_step_{label}_cold_before"] = before
    result["machine_after"] = machine()

    for key, value in result.items():
        if isinstance(value, dict) and "median_ms" in value:
            extra = f"  eta passes {value['eta_passes']}" if "eta_passes" in value else ""
            print(f"{key:32s} wall {value['median_ms']:7.1f} ms (min {value['min_ms']:6.1f})  "
                  f"cpu {value['cpu_median_ms']:7.1f} ms (min {value['cpu_min_ms']:6.1f}){extra}")
    print(f"load before/after: {result['machine_before']['load_avg']} / {result['machine_after']['load_avg']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
