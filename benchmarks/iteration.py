"""GPS iteration wall time through the real nodes, with one and with two simulated robots.

For each robot count: ``gps up --robots N`` (gps_sim in lockstep + gps_controller per robot namespace,
one gps_trainer), ``gps train --iterations I``, ``gps down``; the split comes from the trainer's
``metrics.jsonl`` (timed inside the trainer node):

    sampling   trials run over ROS: run_trial service calls, sim + controller stepping, rollouts over DDS
               to the trainer and stored (MCAP); the part that more robots parallelise
    evaluation the new controllers' means, no noise, one trial per condition (the loop's step 3)
    dynamics   linear-Gaussian dynamics fit (GMM prior)
    cost       cost evaluation + expansion
    C-step     trajectory optimisation (LQR + eta search)
    S-step     0: trajectory-only GPS has no policy step

    python benchmarks/iteration.py [--iterations 2] [--samples 2] [--robots 1 2]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("sampling", "evaluation", "dynamics", "cost", "c_step", "s_step")


def _cli(env, out: Path, *args: str, timeout: float) -> None:
    subprocess.run([sys.executable, "-m", "gps_trainer.cli", "--output-dir", str(out), *args], cwd=ROOT, env=env,
                   check=True, timeout=timeout, stdout=subprocess.DEVNULL)


def run(robots: int, iterations: int, samples: int, workdir: Path, env: dict) -> dict:
    out = workdir / f"robots{robots}"
    params = yaml.safe_load((ROOT / "config" / "trainer.yaml").read_text())["gps_trainer"]["ros__parameters"]
    params.update(overrides=[f"samples_per_condition={samples}"], fsync=False)
    tp = workdir / f"trainer{robots}.yaml"
    tp.write_text(yaml.safe_dump({"/**/gps_trainer": {"ros__parameters": params}}))
    _cli(env, out, "up", "--robots", str(robots), "--trainer-params", str(tp), timeout=60)
    t0 = time.perf_counter()
    try:
        _cli(env, out, "train", "--iterations", str(iterations), timeout=600 * iterations)
    finally:
        wall = time.perf_counter() - t0
        _cli(env, out, "down", timeout=60)
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows[row["iteration"]] = row
    per_it = []
    for it in sorted(rows):
        r = rows[it]
        per_it.append({"sampling": r["sampling_s"], "evaluation": r["evaluation_s"],
                       "dynamics": r["dynamics_s"], "cost": r["cost_s"], "c_step": r["c_step_s"], "s_step": 0.0,
                       "mean_cost": sum(r["cost_per_condition"]) / len(r["cost_per_condition"]),
                       "rollouts": samples * len(r["cost_per_condition"])})
    mean = {k: sum(p[k] for p in per_it) / len(per_it) for k in STAGES}
    mean["total"] = sum(mean[k] for k in STAGES)
    return {"robots": robots, "iterations": len(per_it), "rollouts_per_iteration": per_it[0]["rollouts"],
            "per_iteration_mean_s": mean, "train_wall_s": wall,
            "mean_cost_per_iteration": [p["mean_cost"] for p in per_it]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--samples", type=int, default=5, help="samples per condition (4 conditions on reach; 5 = the experiment)")
    ap.add_argument("--robots", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))  # stay off other sessions' graphs
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    src = [str(ROOT / "src" / p) for p in ("gps_core", "gps_sim", "gps_trainer", "gps_controller")]
    env["PYTHONPATH"] = os.pathsep.join(src + [env.get("PYTHONPATH", "")])
    results = []
    with tempfile.TemporaryDirectory(prefix="gps_iter_bench_") as tmp:
        for n in a.robots:
            res = run(n, a.iterations, a.samples, Path(tmp), env)
            results.append(res)
            m = res["per_iteration_mean_s"]
            print(f"{n} robot(s), {res['rollouts_per_iteration']} rollouts/iteration, mean over {res['iterations']} "
                  f"iterations: " + ", ".join(f"{k} {m[k]:.2f} s" for k in (*STAGES, "total"))
                  + "  (S-step 0: trajectory-only); mean cost per iteration "
                  + ", ".join(f"{c:.4g}" for c in res["mean_cost_per_iteration"]))
    by = {r["robots"]: r for r in results}
    speedup = None
    if 1 in by and 2 in by:
        speedup = by[1]["per_iteration_mean_s"]["sampling"] / by[2]["per_iteration_mean_s"]["sampling"]
        print(f"sampling speed-up, 2 robots vs 1: {speedup:.2f}x (target >= 1.6x; {os.cpu_count()} CPU cores)")
    print(json.dumps({"benchmark": "iteration", "cpu_count": os.cpu_count(), "samples_per_condition": a.samples,
                      "results": results, "sampling_speedup_2v1": speedup}))


if __name__ == "__main__":
    main()
