"""Where the time of one task's Table I pipeline goes: every phase and stage, small budgets, in-process.

The phases of ``scripts/table1.sh`` on the simulator's Python API with budgets scaled down so that the run
takes minutes; each phase and stage gets its wall seconds and CPU seconds (user + system of this process
and of its finished children, ``resource.getrusage``). CPU above wall means several cores worked; CPU
well below wall means the process waited (another job on the core, I/O).

    render          pose pretraining's images (MuJoCo + EGL / OSMesa rendering), ``--pose-images``
    pose training   the pose regressor's Adam steps, ``--pose-steps``
    traj opt        trajectory optimization of the local controllers, ``--traj-opt-iterations``
                    (its sampling / dynamics / C-step split from the run's metrics rows)
    MDGPS           one end-to-end visuomotor MDGPS iteration from those controllers and that trunk:
                    sampling, dynamics fit, policy linearization, C-step, S-step (head steps on fixed
                    feature points, ``--head-steps``; steps on every layer, ``--full-steps``; the rest:
                    the loss on all samples before and after (``evaluate_full_loss``); the rest: targets,
                    precisions, normalization; the first iteration's S-step on the initial controllers
                    is included in each), the loop's noise-free evaluation, checkpointing
    evaluation      the trained policy on Table I's condition sets, ``--eval-trials`` per set

Stages inside the GPS loop's phases come from the metrics rows (wall only: they are timed inside one
iteration); the loop's phases (sampling / iterating / evaluating / checkpointing) get CPU seconds too.
With ``--sampler-workers`` / ``--eval-workers`` > 1 the workers' CPU seconds count once they have exited
(the evaluation's pool ends with it, a sampler's with its GPS run).

    python benchmarks/table1_phases.py [--task reach] [--json out.json] [--threads 1]

Last line: one JSON object (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

# The recipe of scripts/table1.sh per task: (traj-opt experiment + overrides, visuomotor experiment + overrides).
RECIPES = {
    "reach": (("reach_grid_traj_opt.yaml", {}), ("reach_grid_dr_mdgps_visual.yaml", {})),
    "shape_sorting": (("shape_sorting_traj_opt.yaml", {"task": "shape_sorting_grid", "conditions": 9}),
                      ("shape_sorting_mdgps_visual.yaml", {"task": "shape_sorting_grid_dr", "conditions": 9})),
    "coat_hanger": (("coat_hanger_traj_opt.yaml", {}), ("coat_hanger_mdgps_visual.yaml", {})),
    "toy_hammer": (("toy_hammer_traj_opt.yaml", {}), ("toy_hammer_mdgps_visual.yaml", {})),
    "bottle_cap": (("bottle_cap_traj_opt.yaml", {}), ("bottle_cap_mdgps_visual.yaml", {})),
}
SCENES = {"toy_hammer": 0.75}  # share of pose images with a random scene (table1.sh's SCENES)


def cpu_seconds(who: str = "all") -> float:
    """User + system CPU seconds of this process ("self"), of its reaped children ("children"), or both."""
    total = 0.0
    for kind, which in (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN)):
        if who in (kind, "all"):
            r = resource.getrusage(which)
            total += r.ru_utime + r.ru_stime
    return total


class Timer:
    """Rows of (phase, stage, wall s, CPU s or None)."""

    def __init__(self):
        self.rows: list[dict] = []

    @contextmanager
    def phase(self, phase: str, stage: str = "total"):
        w0, c0 = time.perf_counter(), cpu_seconds()
        yield
        self.add(phase, stage, time.perf_counter() - w0, cpu_seconds() - c0)

    def add(self, phase: str, stage: str, wall: float, cpu: float | None = None) -> None:
        self.rows.append({"phase": phase, "stage": stage, "wall_s": float(wall),
                          "cpu_s": None if cpu is None else float(cpu)})


class LoopPhases:
    """``on_phase`` of the GPS loop: wall and CPU seconds (this process's: worker processes are reaped only
    when the run closes its sampler) of each loop phase, summed over iterations."""

    def __init__(self):
        self.sums: dict[str, list[float]] = {}
        self._cur: tuple[str, float, float] | None = None

    def __call__(self, phase: str) -> None:
        self.stop()
        self._cur = (phase, time.perf_counter(), cpu_seconds("self"))

    def stop(self) -> None:
        if self._cur is not None:
            name, w0, c0 = self._cur
            s = self.sums.setdefault(name, [0.0, 0.0])
            s[0] += time.perf_counter() - w0
            s[1] += cpu_seconds("self") - c0
            self._cur = None


def gps_phase(timer: Timer, name: str, cfg, out: Path, *, stages: dict[str, str], **kw) -> list[dict]:
    """Run a GPS experiment, add its loop phases (wall + CPU) and its metrics-row stages (wall, summed)."""
    from gps_trainer.procedure import train_in_simulation

    loop = LoopPhases()
    children = cpu_seconds("children")
    with timer.phase(name):
        run = train_in_simulation(cfg, out, on_phase=loop, resume=False, **kw)
        loop.stop()
    for phase, (wall, cpu) in loop.sums.items():
        timer.add(name, f"loop: {phase}", wall, cpu)
    if kw.get("sampler_workers", 1) > 1:
        timer.add(name, "sampler workers' CPU", 0.0, cpu_seconds("children") - children)
    for key, label in stages.items():
        vals = [r[key] for r in run.rows if key in r]
        if vals:
            timer.add(name, label, sum(vals))
    return run.rows


def compare_workers(a, cfg, tmp: Path, timer: Timer) -> dict:
    """Sampling and evaluation with 1 and with ``a.compare_workers`` processes, back to back."""
    from gps_trainer.paper.evaluation import CONDITION_SETS, evaluate_policy
    from gps_trainer.run_dir import load_controllers
    from gps_trainer.sim_sampler import SimSampler

    n = a.compare_workers
    controllers = load_controllers(tmp / "controllers")  # the sampler extends them to T + 1 steps
    out: dict = {"workers": n}
    batches = {}
    for w in (1, n):
        with timer.phase(f"compare: {w} process(es)", "sampling, cold"):
            sampler = SimSampler(cfg.task, cfg.horizon, image_size=cfg.image_size, record_images=True, base_seed=0,
                                 workers=w)
            batches[w] = sampler.sample(0, controllers[:cfg.conditions], cfg.samples_per_condition)
        with timer.phase(f"compare: {w} process(es)", "sampling, warm"):
            sampler.sample(1, controllers[:cfg.conditions], cfg.samples_per_condition)
            sampler.close()
    out["sampling_identical"] = all(
        all(np.array_equal(getattr(x, k), getattr(y, k)) for k in ("X", "U", "obs", "images", "noise"))
        for x, y in zip(batches[1], batches[n], strict=True))
    results = {}
    for w in (1, n):
        with timer.phase(f"compare: {w} process(es)", f"evaluation, {3 * a.compare_trials} trials"):
            results[w] = evaluate_policy(tmp / "gps" / "policy.safetensors", task=a.task,
                                         condition_sets=CONDITION_SETS, trials_per_set=a.compare_trials, seed=1,
                                         workers=w).to_dict()["sets"]
    out["evaluation_identical"] = results[1] == results[n]
    print(f"compare: {n} processes give the same rollouts: {out['sampling_identical']}, the same evaluation: "
          f"{out['evaluation_identical']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="reach", choices=sorted(RECIPES))
    ap.add_argument("--pose-images", type=int, default=200)
    ap.add_argument("--pose-steps", type=int, default=100)
    ap.add_argument("--traj-opt-iterations", type=int, default=2)
    ap.add_argument("--samples", type=int, default=None,
                    help="samples per condition in both GPS phases (default: the experiments')")
    ap.add_argument("--head-steps", type=int, default=300)
    ap.add_argument("--full-steps", type=int, default=20)
    ap.add_argument("--eval-trials", type=int, default=3, help="trials per Table I condition set")
    ap.add_argument("--eval-workers", type=int, default=1, help="worker processes of the evaluation")
    ap.add_argument("--sampler-workers", type=int, default=1, help="worker processes of the GPS runs' sampling")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (table1.sh: 1)")
    ap.add_argument("--compare-workers", type=int, default=0, metavar="N",
                    help="afterwards, under the same load: one MDGPS iteration's sampling (a cold and a warm pool) "
                         "and the evaluation (--compare-trials per set) with 1 and with N processes, results compared")
    ap.add_argument("--compare-trials", type=int, default=9)
    ap.add_argument("--json", default=None, help="also write the JSON here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from gps_trainer.config import load_experiment
    from gps_trainer.paper.baselines import baseline_overrides
    from gps_trainer.paper.evaluation import CONDITION_SETS, evaluate_policy
    from gps_trainer.pose_pretraining import (
        PosePretrainConfig,
        PoseRegressor,
        collect_pose_dataset,
        save_pose_weights,
        train_pose_regressor,
    )

    (traj_file, traj_over), (vis_file, vis_over) = RECIPES[a.task]
    exp = ROOT / "config" / "experiments"
    samples = {} if a.samples is None else {"samples_per_condition": a.samples}
    timer, t_start = Timer(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gps_table1_bench_") as tmp:
        tmp = Path(tmp)
        # phase 1: pose pretraining (table1.sh: 2000 images, 3000 steps); 10 % of the images held out
        n_test = max(1, a.pose_images // 10)
        pcfg = PosePretrainConfig.from_dict({"task": a.task, "image_size": 64, "num_train": a.pose_images - n_test,
                                             "num_test": n_test, "iterations": a.pose_steps, "seed": 0,
                                             "scene_randomization": SCENES.get(a.task, 1.0), "device": "cpu",
                                             "output": str(tmp / "vision.safetensors")})
        with timer.phase("pose pretraining", "render"):
            tr_img, tr_pos, te_img, te_pos = collect_pose_dataset(pcfg)
        with timer.phase("pose pretraining", "training"):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = PoseRegressor(pcfg.vision_config())
            train_pose_regressor(model, tr_img, tr_pos, pcfg, te_img, te_pos)
            save_pose_weights(model, pcfg.output)

        # phase 2: local controllers
        cfg = load_experiment(exp / traj_file, {**traj_over, **samples, "iterations": a.traj_opt_iterations})
        traj_rows = gps_phase(timer, "traj opt", cfg, tmp / "controllers", sampler_workers=a.sampler_workers,
                              stages={"sampling_s": "sampling", "dynamics_s": "dynamics fit", "cost_s": "cost",
                               "c_step_s": "C-step", "evaluation_s": "evaluation (loop)"})

        # phase 3: one end-to-end MDGPS iteration from the controllers and the pretrained trunk
        over = {**vis_over, **samples, **baseline_overrides("end_to_end", a.head_steps, a.full_steps),
                "iterations": 1, "algorithm.policy_opt.device": "cpu"}
        cfg = load_experiment(exp / vis_file, over)
        rows = gps_phase(timer, "MDGPS (1 iteration)", cfg, tmp / "gps", sampler_workers=a.sampler_workers, stages={
            "sampling_s": "sampling", "dynamics_s": "dynamics fit", "policy_fit_s": "policy linearization",
            "c_step_s": "C-step", "s_step_s": "S-step (all)", "s_step_head_s": "S-step head",
            "s_step_full_s": "S-step full network", "s_step_loss_eval_s": "S-step loss on all samples",
            "evaluation_s": "evaluation (loop)"},
            init_controllers=tmp / "controllers", pretrained_vision=pcfg.output)
        row = rows[-1]
        timer.add("MDGPS (1 iteration)", "S-step rest", row["s_step_s"] - row["s_step_head_s"] - row["s_step_full_s"]
                  - row["s_step_loss_eval_s"])

        # phase 4: evaluation on Table I's sets
        with timer.phase("evaluation"):
            ev = evaluate_policy(tmp / "gps" / "policy.safetensors", task=a.task, condition_sets=CONDITION_SETS,
                                 trials_per_set=a.eval_trials, seed=0, workers=a.eval_workers)
        total_wall = time.perf_counter() - t_start
        compare = compare_workers(a, cfg, tmp, timer) if a.compare_workers > 1 else None
    trials = sum(s.trials for s in ev.sets.values())

    print(f"{'phase':<26}{'stage':<24}{'wall s':>9}{'CPU s':>9}")
    for r in timer.rows:
        cpu = "" if r["cpu_s"] is None else f"{r['cpu_s']:.2f}"
        print(f"{r['phase']:<26}{r['stage']:<24}{r['wall_s']:>9.2f}{cpu:>9}")
    print(f"{'all (pipeline)':<26}{'':<24}{total_wall:>9.2f}")
    budgets = {"pose_images": a.pose_images, "pose_steps": a.pose_steps,
               "traj_opt_iterations": len(traj_rows), "conditions_traj_opt": len(traj_rows[0]["cost_per_condition"]),
               "conditions_mdgps": len(row["cost_per_condition"]), "samples_per_condition": cfg.samples_per_condition,
               "head_steps": a.head_steps, "full_steps": a.full_steps, "eval_trials": trials,
               "eval_workers": a.eval_workers, "sampler_workers": a.sampler_workers, "threads": a.threads}
    print("budgets: " + ", ".join(f"{k} {v}" for k, v in budgets.items()))
    loadavg = os.getloadavg()
    result = {"benchmark": "table1_phases", "task": a.task, "cpu_count": os.cpu_count(), "loadavg_1_5_15": loadavg,
              "machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
              "torch": torch.__version__, "budgets": budgets, "rows": timer.rows, "total_wall_s": total_wall,
              "compare_workers": compare}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
