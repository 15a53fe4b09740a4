"""The paper's baselines for Table I (Sec. IV), built from the existing training phases.

- ``pose_prediction`` (modular pipeline): the pose-pretrained CNN (phase 1, ``PoseRegressor``) predicts
  the target position from the image; the state-based policy trained by MDGPS on the true target
  (``policy_obs: state``) acts on the state reconstructed from the robot configuration and the
  *predicted* target: x_hat = [q, qd, ee_points - target_points(predicted), ee_velocities]. The target's
  orientation follows from its position by the task file's rule (``face_targets_towards``), so only the
  position has to be seen. :class:`PosePredictionActor`.
- ``pose_features``: the visuomotor CNN with the pretrained conv layers and spatial softmax *frozen*;
  only the fully connected control layers are trained by MDGPS. Implemented as an MDGPS experiment whose
  S-step trains the head only (``policy_opt.iterations: 0``, ``fc_only_iterations: F``).
- ``end_to_end``: ours; the same run, and after the head steps of each S-step every layer (conv included)
  is trained too (``policy_opt.iterations: E > 0``).

:func:`baseline_overrides` gives the experiment overrides for the two visuomotor variants (used with
``python -m gps_trainer.procedure gps --config config/experiments/reach_mdgps_visual.yaml``);
:func:`evaluate_baselines` evaluates whatever runs exist on the three condition sets and writes one
JSON per method; ``python -m gps_trainer.paper.baselines`` does both (a finished GPS run is not rerun).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gps_controller.policies.neural import GaussianPolicy, images_to_tensor
from gps_controller.policies.serialization import load_policy
from gps_core import safe_yaml
from gps_core.layout import EE_POINTS, EE_VELOCITIES, quat_wxyz_to_matrix
from gps_core.progress import Progress
from gps_core.tasks import CONDITION_SETS as TASK_CONDITION_SETS
from gps_core.tasks import TaskConfig, load_task, yaw_quaternion
from gps_trainer.pose_pretraining import PoseRegressor, load_pose_regressor

__all__ = ["METHODS", "METHOD_LABELS", "PosePredictionActor", "baseline_overrides", "evaluate_baselines"]

METHODS = ("end_to_end", "pose_features", "pose_prediction")
METHOD_LABELS = {"end_to_end": "end-to-end training", "pose_features": "pose features",
                 "pose_prediction": "pose prediction",
                 "state_oracle": "state policy on the true target (reference, not in the paper)"}


def _yaw_origin(task: TaskConfig) -> np.ndarray | None:
    if not task.path:
        return None
    raw = safe_yaml.load(Path(task.path).read_text(), str(task.path)) or {}
    v = raw.get("face_targets_towards")
    return None if v is None else np.asarray(v, dtype=float)


class PosePredictionActor:
    """Image -> predicted target position -> reconstructed state -> state policy's mean torques."""

    uses_images = True
    name = "pose prediction (pretrained CNN -> state policy)"

    def __init__(self, state_policy: GaussianPolicy, regressor: PoseRegressor, task: TaskConfig | str):
        if state_policy.uses_images or state_policy.obs_dim != 32:
            raise ValueError("pose prediction needs a state-based (32-d x) policy")
        self.policy = state_policy.eval()
        self.regressor = regressor.eval()
        self.task = task if isinstance(task, TaskConfig) else load_task(task)
        self.origin = _yaw_origin(self.task)
        self.last_prediction: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c = self.regressor.net.config
        return (c.image_height, c.image_width, c.image_channels)

    def target_points(self, position: np.ndarray) -> np.ndarray:
        if self.origin is not None:
            d = position[:2] - self.origin[:2]
            quat = yaw_quaternion(math.atan2(d[1], d[0]))
        else:
            quat = np.array([1.0, 0.0, 0.0, 0.0])
        return position + self.task.target_points @ quat_wxyz_to_matrix(quat).T

    def act(self, obs_config: np.ndarray, image: np.ndarray, noise: Any = None) -> np.ndarray:
        with torch.inference_mode():
            pos = self.regressor(images_to_tensor(np.asarray(image)[None]))[0][0].double().numpy()
        self.last_prediction = pos
        c = np.asarray(obs_config, dtype=float)
        ee = c[EE_POINTS].reshape(3, 3)  # o: absolute EE points; x: relative to the (predicted) targets
        x_hat = np.concatenate([c[:EE_POINTS.start], (ee - self.target_points(pos)).ravel(), c[EE_VELOCITIES]])
        return self.policy.act(x_hat, None, noise)


def baseline_overrides(method: str, fc_steps: int, e2e_steps: int) -> dict[str, Any]:
    """S-step overrides of the visuomotor MDGPS experiment. Both variants first train the control layers
    on fixed feature points for ``fc_steps``; ``end_to_end`` then trains every layer for ``e2e_steps``,
    ``pose_features`` never touches the conv layers or the softmax."""
    if method == "pose_features":
        return {"algorithm.policy_opt.iterations": 0, "algorithm.policy_opt.fc_only_iterations": int(fc_steps)}
    if method == "end_to_end":
        if e2e_steps < 1:
            raise ValueError("end_to_end needs e2e_steps >= 1")
        return {"algorithm.policy_opt.iterations": int(e2e_steps),
                "algorithm.policy_opt.fc_only_iterations": int(fc_steps)}
    raise ValueError(f"no visuomotor GPS run for {method!r}")


def evaluate_baselines(task: str, out_dir: str | Path, *, vision: str | Path | None = None,
                       state_policy: str | Path | None = None, end_to_end: str | Path | None = None,
                       pose_features: str | Path | None = None, trials_per_set: int | None = None, seed: int = 0,
                       condition_sets: tuple[str, ...] | None = None,
                       command: str = "", progress: Progress | None = None, workers: int = 1) -> dict[str, Any]:
    """Evaluate the methods whose inputs are given (on Table I's condition sets by default, with the task's
    trial counts); writes <out_dir>/eval_<method>.json each. ``progress``: told each trial; the tables are
    printed through it (so a live progress line ends first). ``workers``: processes per evaluation
    (:func:`~gps_trainer.paper.evaluation.evaluate_policy`)."""
    from gps_trainer.paper.evaluation import CONDITION_SETS, evaluate_policy, format_table

    condition_sets = condition_sets or CONDITION_SETS

    out = Path(out_dir)
    results: dict[str, Any] = {}
    jobs: list[tuple[str, dict[str, Any]]] = []
    if vision and state_policy:
        actor = PosePredictionActor(load_policy(state_policy), load_pose_regressor(vision), task)
        jobs.append(("pose_prediction", {"policy_or_path": f"{state_policy} + {vision}", "actor": actor,
                                         "image_size": actor.image_shape[0]}))
    for method, path in (("pose_features", pose_features), ("end_to_end", end_to_end)):
        if path:
            jobs.append((method, {"policy_or_path": str(path)}))
    for method, kw in jobs:
        if progress is not None:
            progress.label = f"baselines, {method}"
        res = evaluate_policy(task=task, condition_sets=condition_sets, trials_per_set=trials_per_set, seed=seed,
                              progress=progress, workers=workers, **kw)
        res.write_json(out / f"eval_{method}.json", {"method": method, "command": command})
        table = f"{METHOD_LABELS[method]}:\n{format_table(res)}"
        if progress is not None:
            progress.note(table)
        else:
            print(table, flush=True)
        results[method] = res
    return results


SELECT_RULES = ("last", "best", "validation")


def select_policy(run_dir: str | Path, rule: str = "last", later_of_equals: bool = False) -> Path:
    """The policy file of a GPS run directory to evaluate: its latest ("last"), the checkpoint whose
    policy succeeded most often at the training positions in the run's own noise-free evaluation ("best";
    the earliest of equals; an early-stopping rule that sees only training conditions), or the one with
    the most successes over the development sets the run validated on every iteration ("validation":
    ``--validate``; ties go to the training success, then to the later iteration, which has trained more).
    ``later_of_equals``: "best" takes the latest of equals instead (the demo's rule)."""
    from gps_trainer.run_dir import read_run
    from gps_trainer.storage import CheckpointStore

    run_dir = Path(run_dir)
    if rule == "last":
        return run_dir / "policy.safetensors"
    if rule not in SELECT_RULES:
        raise ValueError(f"select: expected one of {SELECT_RULES}, got {rule!r}")
    _, rows = read_run(run_dir)
    checkpoints = CheckpointStore(run_dir)
    rows = [r for r in rows if r.get("success_rate") is not None
            and (checkpoints.path(int(r["iteration"])) / "policy.safetensors").exists()]
    if rule == "best":
        order = 1 if later_of_equals else -1
        scored = [((float(r["success_rate"]), order * int(r["iteration"])), int(r["iteration"])) for r in rows]
    else:
        def successes(r: dict) -> float:
            return sum(float(r[k]) * float(r[k[:-len("success")] + "trials"]) for k in r
                       if k.startswith("val_") and k.endswith("_success"))
        scored = [((successes(r), float(r["success_rate"]), int(r["iteration"])), int(r["iteration"]))
                  for r in rows if any(k.startswith("val_") and k.endswith("_success") for k in r)]
        if rows and not scored:
            raise ValueError(f"{run_dir}: select 'validation' needs a run trained with --validate")
    if not scored:
        raise FileNotFoundError(f"{run_dir}: no checkpoint with a policy and a success rate")
    return checkpoints.path(max(scored)[1]) / "policy.safetensors"


def main(argv: list[str] | None = None) -> int:
    """``python -m gps_trainer.paper.baselines --vision V --state-policy P [--controllers C] --out runs/results``"""
    import argparse
    import shlex
    import sys

    from gps_trainer.config import load_experiment, parse_overrides
    from gps_trainer.config_schema import MAX_SEED, arg_float, arg_int
    from gps_trainer.procedure import train_in_simulation

    ap = argparse.ArgumentParser(prog="gps_trainer.paper.baselines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/experiments/reach_mdgps_visual.yaml")
    ap.add_argument("--vision", required=True, help="phase-1 vision.safetensors (pose pretraining)")
    ap.add_argument("--state-policy", default=None, help="state-based MDGPS policy.safetensors (pose prediction)")
    ap.add_argument("--controllers", default=None, help="initial local controllers (.npz) for the GPS runs")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--fc-steps", type=arg_int(0, 10_000_000), default=300)
    ap.add_argument("--e2e-steps", type=arg_int(0, 10_000_000), default=50)
    ap.add_argument("--trials", type=arg_int(1, 100_000), default=None,
                    help="evaluation trials per condition set (default: the task's, e.g. 27 / 36 / 40)")
    ap.add_argument("--seed", type=arg_int(0, MAX_SEED, "32 bits"), default=0)
    ap.add_argument("--threads", type=arg_int(1, 256), default=1)
    ap.add_argument("--workers", type=arg_int(1, 64), default=1,
                    help="processes the evaluation trials run in (each its own simulator, one torch thread); "
                         "the result equals one process's with --threads 1")
    ap.add_argument("--stop-at-success", type=arg_float(0.0, 1.0), default=None,
                    help="end a GPS run once its policy's training-condition success rate reaches this")
    ap.add_argument("--out", default="runs/results")
    ap.add_argument("--select", choices=SELECT_RULES, default="last",
                    help="which iteration's policy to evaluate: the last, the one with the highest noise-free "
                         "success at the training positions (best: the earliest of equals; training data only), "
                         "or the one with the most successes on the --validate development sets (validation)")
    ap.add_argument("--eval-task", default=None,
                    help="task whose condition sets evaluate the policies (default: the experiment's task; e.g. "
                         "shape_sorting for a run trained on shape_sorting_grid_dr)")
    # choices: an override written after --sets (`--sets validation iterations=6`) is refused before any
    # training, not taken for a set name that fails the evaluation after the GPS runs
    ap.add_argument("--sets", nargs="+", default=None, choices=TASK_CONDITION_SETS, metavar="SET",
                    help="condition sets to evaluate (default: Table I's; validation visual_validation "
                         "train_validation for development choices); key=value overrides go before it")
    ap.add_argument("--validate", default=None, metavar="SET[:TRIALS],...",
                    help="evaluate every GPS iteration's policy on these development sets of the --eval-task "
                         "(metrics.jsonl; gps report plots them)")
    ap.add_argument("overrides", nargs="*", help="experiment key=value overrides (dotted keys)")
    a = ap.parse_intermixed_args(argv)  # overrides may come before and after options (scripts/table1.sh)
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    if set(a.methods) - set(METHODS):
        ap.error(f"--methods: unknown {sorted(set(a.methods) - set(METHODS))}")
    torch.set_num_threads(max(1, a.threads))
    command = "python -m gps_trainer.paper.baselines " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    out = Path(a.out)
    policies: dict[str, str] = {}
    base = load_experiment(a.config)
    # Progress on stdout: the phase, iterations or trials done, the ETA; the heartbeat repeats it while an
    # S-step or a long sampling phase gives no news, so a log never stays silent for long.
    progress = Progress("baselines")
    with progress.heartbeat():
        for method in ("pose_features", "end_to_end"):
            if method not in a.methods:
                continue
            over = {**parse_overrides(a.overrides), **baseline_overrides(method, a.fc_steps, a.e2e_steps),
                    "algorithm.pretrained_vision": str(a.vision), "name": f"{base.name}_{method}"}
            if a.controllers:
                over["algorithm.init_controllers_file"] = str(a.controllers)
            cfg = load_experiment(a.config, over)
            run_dir = out / f"gps_{method}"
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "command.txt").write_text(command + "\n")
            progress.note(f"== {method}: up to {cfg.iterations} MDGPS iterations -> {run_dir} (resumes a stopped run)")
            progress.label = f"baselines, {method}"
            done_before = _iterations_done(run_dir)
            on_phase = _iteration_progress(progress, done_before, cfg.iterations)
            # (a finished run returns at once)
            run = train_in_simulation(cfg, run_dir, stop_at_success=a.stop_at_success, on_phase=on_phase,
                                      validate=a.validate.split(",") if a.validate else None,
                                      validate_task=a.eval_task)
            progress.update(len(run.rows) - done_before, f"MDGPS: {len(run.rows)} of up to {cfg.iterations} "
                            "iterations done", force=True)
            policies[method] = str(select_policy(run_dir, a.select))
            progress.note(f"== {method}: evaluating {policies[method]}")
        evaluate_baselines(a.eval_task or load_experiment(a.config, parse_overrides(a.overrides)).task, out,
                           vision=a.vision,
                           state_policy=a.state_policy if "pose_prediction" in a.methods else None,
                           end_to_end=policies.get("end_to_end"), pose_features=policies.get("pose_features"),
                           trials_per_set=a.trials, seed=a.seed, command=command,
                           condition_sets=tuple(a.sets) if a.sets else None, progress=progress,
                           workers=a.workers)
    progress.label = "baselines"
    progress.finish(f"results in {out}")
    return 0


def _iterations_done(run_dir: Path) -> int:
    """Iterations a run directory already holds (a stopped run resumes after them); 0 for a new one."""
    from gps_trainer.run_dir import read_run

    try:
        return len(read_run(run_dir)[1])
    except FileNotFoundError:
        return 0


def _iteration_progress(progress: Progress, done_before: int, total: int):
    """An ``on_phase`` callback that reports a GPS run's iterations (a line per phase) to ``progress``."""
    progress.restart(max(total - done_before, 0), f"MDGPS iteration {done_before + 1}/{total}, starting")
    started = 0

    def on_phase(phase: str) -> None:
        nonlocal started
        started += phase == "sampling"  # each iteration starts by sampling
        progress.update(started - 1, f"MDGPS iteration {done_before + started}/{total}, {phase}", force=True)

    return on_phase


if __name__ == "__main__":
    raise SystemExit(main())
