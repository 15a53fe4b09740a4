"""The paper's training procedure (Levine et al. 2016, Sec. V / Fig. 3) as three commands on the
simulator's Python API; phases 2 and 3 are the GPS loop (gps_trainer.loop) with the SimSampler, so
their run directories are the trainer node's (a run started here resumes through the nodes and the
other way round):

1. ``pose``         pretrain the CNN's vision layers by target-pose regression
                    (gps_trainer.pose_pretraining) -> <out>/vision.safetensors (+ metrics JSON)
2. ``controllers``  local controllers by trajectory optimization alone on the full state
                    (an experiment with ``algorithm.type: traj_opt``) -> run directory <out>
3. ``gps``          end-to-end MDGPS or BADMM, the conv layers from phase 1, the local controllers from
                    phase 2 -> run directory <out> (policy.safetensors: the latest policy)

    python -m gps_trainer.procedure pose --config config/policy/pose_pretrain.yaml --out runs/p1
    python -m gps_trainer.procedure controllers --config config/experiments/reach_traj_opt.yaml --out runs/p2
    python -m gps_trainer.procedure gps --config config/experiments/reach_mdgps_visual.yaml --out runs/p3 \\
        --vision runs/p1/vision.safetensors --controllers runs/p2

The same command again resumes a stopped run at its next iteration (``--restart`` starts afresh).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gps_trainer.config import parse_overrides
from gps_trainer.loop import GPSRun
from gps_trainer.sim_sampler import SimSampler

__all__ = ["train_in_simulation", "pretrain_vision", "validation_hook", "main"]

LOGGER = logging.getLogger(__name__)


def train_in_simulation(cfg: Any, out: str | Path, *, init_controllers: str | Path | None = None,
                        pretrained_vision: str | Path | None = None, stop_at_success: float | None = None,
                        resume: bool = True, iterations: int | None = None, sim: Any = None,
                        validate: list[str] | None = None, validate_task: str | None = None,
                        on_phase: Callable[[str], None] | None = None, sampler_workers: int = 1) -> GPSRun:
    """Run experiment ``cfg`` in run directory ``out`` on the simulator's Python API (phases 2 and 3);
    returns the finished :class:`GPSRun` (``.rows``, ``.algorithm``, ``.policy``, ``.controllers``).
    ``validate``: condition sets (``name`` or ``name:trials``) of ``validate_task`` (default: the
    experiment's task) on which every iteration's policy is evaluated (:func:`validation_hook`).
    ``on_phase(phase)``: as each phase of an iteration starts (:class:`GPSRun`'s). ``sampler_workers``:
    processes the rollouts run in (:class:`SimSampler`'s ``workers``; the same rollouts as one process)."""
    visual = cfg.algorithm.type != "traj_opt" and cfg.algorithm.policy.get("type") == "visuomotor_cnn"
    sampler = SimSampler(cfg.task, cfg.horizon, image_size=getattr(cfg, "image_size", 64), record_images=visual,
                         base_seed=cfg.seed, sim=sim, workers=sampler_workers)
    try:
        hook = validation_hook(validate_task or cfg.task, validate) if validate else None
        run = GPSRun(cfg, out, sampler, init_controllers=init_controllers, pretrained_vision=pretrained_vision,
                     resume=resume, validate=hook, on_phase=on_phase)
        try:
            run.run(iterations, stop_at_success=stop_at_success)
        finally:
            run.close()
    finally:
        sampler.close()
    return run


def parse_validation_sets(specs: list[str]) -> list[tuple[str, int | None]]:
    """``["validation", "train_validation:8"]`` -> [(set, trials or None = the set's default)]."""
    out = []
    for spec in specs:
        name, _, trials = spec.partition(":")
        if not name or (trials and (not trials.isdigit() or not 1 <= int(trials) <= 10_000)):
            raise ValueError(f"--validate {spec!r}: expected SET or SET:TRIALS (1-10000 trials)")
        out.append((name, int(trials) if trials else None))
    return out


def _split(specs: str | None) -> list[str] | None:
    return [s.strip() for s in specs.split(",") if s.strip()] if specs else None


def validation_hook(task: str, specs: list[str], seed: int = 0) -> Callable[[Any, int], dict[str, Any]]:
    """A :class:`GPSRun` ``validate`` callback: the policy alone on ``task``'s condition sets, the same
    seeded situations every iteration (so iterations compare), as ``val_<set>_success`` (rate) and
    ``val_<set>_trials`` entries of the metrics row. Development sets only: a test set must not steer."""
    from gps_trainer.paper.evaluation import evaluate_policy

    sets = parse_validation_sets(specs)
    if any(name.endswith("_test") or name == "train_perturbed" for name, _ in sets):
        raise ValueError(f"--validate: {[n for n, _ in sets]} includes a test set; use development sets "
                         "(validation, visual_validation, train_validation)")

    from gps_core.tasks import load_task

    spec = load_task(task)
    missing = [name for name, _ in sets if not spec.conditions.get(name)]
    if missing:  # before the first iteration, not after its minutes of training
        raise ValueError(f"--validate: task {spec.name!r} has no condition set {missing}")

    def validate(policy: Any, iteration: int) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name, trials in sets:
            res = evaluate_policy(policy, task, (name,), trials, seed=seed).sets[name]
            row[f"val_{name}_success"], row[f"val_{name}_trials"] = res.rate, res.trials
            LOGGER.info("iteration %d: policy on %s/%s: %d/%d", iteration, task, name, res.successes, res.trials)
        return row

    return validate


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
    return pretrain_pose(PosePretrainConfig.from_dict(data, source=str(config_path) if config_path else None,
                                                      where="pose_pretrain" if config_path else ""))


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m gps_trainer.procedure {pose,controllers,gps} --config FILE --out DIR``."""
    from gps_trainer.config import load_experiment
    from gps_trainer.config_schema import arg_float, arg_int

    ap = argparse.ArgumentParser(prog="gps_trainer.procedure", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="phase", required=True)
    for name, help_ in (("pose", "phase 1: pose pretraining of the conv layers"),
                        ("controllers", "phase 2: local controllers by trajectory optimization"),
                        ("gps", "phase 3: end-to-end MDGPS / BADMM")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", required=name != "pose", default=None)
        p.add_argument("--out", required=True, help="output (run) directory")
        p.add_argument("--threads", type=arg_int(0, 256), default=0, help="torch threads (0: torch default)")
        p.add_argument("overrides", nargs="*", help="key=value (dotted keys, YAML values)")
        if name != "pose":
            p.add_argument("--workers", type=arg_int(1, 64), default=1,
                           help="processes the rollouts run in (each its own simulator, one torch thread); the "
                                "same rollouts as one process with --threads 1")
            p.add_argument("--stop-at-success", type=arg_float(0.0, 1.0), default=None,
                           help="stop once the evaluated success rate reaches this")
            p.add_argument("--restart", action="store_true",
                           help="start afresh in --out instead of resuming the run found there")
        if name == "gps":
            p.add_argument("--vision", default=None, help="phase-1 vision.safetensors")
            p.add_argument("--controllers", default=None,
                           help="phase-2 controllers: a run directory, checkpoint or controllers.npz")
            p.add_argument("--validate", default=None, metavar="SET[:TRIALS],...",
                           help="evaluate every iteration's policy on these comma-separated development sets "
                                "(metrics.jsonl)")
            p.add_argument("--validate-task", default=None,
                           help="task of the --validate sets (default: the experiment's)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        over = parse_overrides(a.overrides)
        if a.phase == "pose":
            m = pretrain_vision(a.config, a.out, over)
            print(json.dumps({k: m.get(k) for k in ("test_error_cm", "baseline_mean_error_cm", "weights")}))
            return 0
        cfg = load_experiment(a.config, over)
        if (a.phase == "controllers") != (cfg.algorithm.type == "traj_opt"):
            raise ValueError(f"{a.config}: algorithm.type {cfg.algorithm.type!r} does not fit phase {a.phase!r} "
                             "(controllers: traj_opt; gps: mdgps or badmm)")
        run = train_in_simulation(cfg, a.out, init_controllers=getattr(a, "controllers", None),
                                  pretrained_vision=getattr(a, "vision", None), stop_at_success=a.stop_at_success,
                                  resume=not a.restart, validate=_split(getattr(a, "validate", None)),
                                  validate_task=getattr(a, "validate_task", None), sampler_workers=a.workers)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"gps_trainer.procedure {a.phase}: {exc}") from None
    last = run.rows[-1] if run.rows else {}
    out = Path(a.out)
    print(json.dumps({"run": str(out), "iterations": len(run.rows), "success_rate": last.get("success_rate"),
                      "evaluated": last.get("evaluated"), "policy_cost": last.get("policy_cost"),
                      "controllers": str(out / "controllers.npz"),
                      "policy": str(out / "policy.safetensors") if run.policy is not None else None}))
    if run.policy is not None:
        print(f"evaluate it: gps eval --policy {out} --task {cfg.task} --seed 0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
