"""``gps report``: docs/results.md from the result files of the evaluation runs.

Reads (all optional; a missing input gives a section that says so and how to produce it):

- ``<results>/**/eval_<method>.json``  policy evaluations (``gps eval`` / gps_trainer.paper.baselines), method in
  end_to_end, pose_features, pose_prediction (any other name is listed too); one Table I per task
  (e.g. ``<results>/eval_*.json`` for reach and ``<results>/shape_sorting/eval_*.json``)
- ``<results>/architectures*.json``  architecture comparisons (python -m gps_trainer.paper.architectures), one
  table each
- ``<results>/model_free/<algo>_seed<s>/progress.json``  SB3 runs (python -m gps_trainer.paper.sample_efficiency)
- GPS runs: every run directory (``<results>/**/experiment.json`` + ``metrics.jsonl``, gps_trainer.run_dir)
  written by ``python -m gps_trainer.procedure gps`` or the trainer node
- ``<results>/**/robustness_*.json``  robustness curves (``gps eval --robustness``, gps_trainer.paper.robustness),
  one figure and table per task and split, the methods side by side

Writes the markdown file, PNG plots (cost per iteration, success vs environment steps, pose error per
architecture) and, when a visuomotor policy is available, a GIF of one visual-test rollout with the
feature points drawn on the camera image (and the same frames as an MPEG-4 video), into ``<images>``
(next to the markdown file by default).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gps_trainer.paper.baselines import METHOD_LABELS, METHODS
from gps_trainer.paper.sample_efficiency import gps_curve, load_model_free_curves, summarize

__all__ = ["PAPER_TABLE_I", "SECTIONS", "generate_report", "rollout_gif"]

# Table I of Levine, Finn, Darrell, Abbeel (seeds/visuomotor-paper.txt): success rates in %, trials in
# parentheses in the header of each task; None = "n/a" or no row in the paper.
PAPER_TABLE_I: dict[str, dict[str, Any]] = {
    "coat hanger": {"trials": (18, 24, 18), "end_to_end": (100, 100, 100), "pose_features": (88.9, 87.5, 83.3),
                    "pose_prediction": (55.6, 58.3, 66.7)},
    "shape sorting cube": {"trials": (27, 36, 40), "end_to_end": (96.3, 91.7, 87.5),
                           "pose_features": (70.4, 83.3, 40.0), "pose_prediction": (0.0, 0.0, None)},
    "toy claw hammer": {"trials": (45, 60, 60), "end_to_end": (91.1, 86.7, 78.3),
                        "pose_features": (62.2, 75.0, 53.3), "pose_prediction": (8.9, 18.3, None)},
    "bottle cap": {"trials": (27, 12, 40), "end_to_end": (88.9, 83.3, 62.5), "pose_features": (55.6, 58.3, 27.5),
                   "pose_prediction": None},
}
SETS = ("train", "spatial_test", "visual_test")
ENV_TASKS = {"GpsReach-v0": "reach", "GpsShapeSorting-v0": "shape_sorting"}  # gymnasium id -> task
SECTIONS = ("## Table I: success rates", "## Network architecture vs pose error",
            "## Sample efficiency: GPS vs model-free RL", "## GPS cost per iteration",
            "## GPS diagnostics per iteration", "## Rollout with feature points",
            "## Robustness: out-of-distribution families", "## How to reproduce")


def _fmt_rate(s: dict[str, Any]) -> str:
    # the distinct situations behind a rate, where a file records them and they are fewer than the trials
    seen = s.get("situations")
    situations = f", {seen} situations" if seen is not None and seen < s["trials"] else ""
    return (f"{100 * s['rate']:.1f}% ({s['successes']}/{s['trials']}{situations}; "
            f"95% CI {100 * s['ci_low']:.0f}-{100 * s['ci_high']:.0f}%)")


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


# The paper's Table I task first; any other task after it, alphabetically.
TASK_ORDER = ("shape_sorting",)


def _load_evals(results: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{task: {method: evaluation}} from every eval_*.json under ``results``."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for p in sorted(results.rglob("eval_*.json")):
        d = json.loads(p.read_text())
        found.setdefault(d.get("task", "?"), {})[d.get("method", p.stem[5:])] = d | {"_file": str(p)}
    order = [t for t in TASK_ORDER if t in found] + sorted(t for t in found if t not in TASK_ORDER)
    return {t: found[t] for t in order}


def _gps_runs(results: Path, extra: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(experiment.json path, {"config", "iterations"}) of every GPS run directory found."""
    from gps_trainer.run_dir import read_run

    paths = sorted(results.rglob("experiment.json")) + [p / "experiment.json" if p.is_dir() else p for p in extra]
    runs, seen = [], set()
    for p in paths:
        if p.exists() and p.resolve() not in seen:
            seen.add(p.resolve())
            cfg, rows = read_run(p.parent)
            if cfg.get("algorithm", {}).get("type") != "traj_opt":
                runs.append((p, {"config": cfg, "iterations": rows}))
    return runs


def _table_i(evals_by_task: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = ["Success of the policy alone (mean action, no noise) at the end of the episode, per condition set;",
             "95% Wilson intervals. Paper numbers: Table I of the visuomotor paper (real PR2).", ""]
    for task, evals in evals_by_task.items():
        lines += [f"**Ours (simulation, task `{task}`)**", "",
                  "| method | training | spatial test | visual test |", "|---|---|---|---|"]
        order = [m for m in METHODS if m in evals] + [m for m in evals if m not in METHODS]
        for m in order:
            sets = evals[m]["sets"]
            # the training column: perturbed starts (the honest protocol), or plain starts in older files
            sets = {"train": sets.get("train_perturbed", sets.get("train")), **sets}
            cells = [_fmt_rate(sets[s]) if sets.get(s) else "not run" for s in SETS]
            lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
        missing = [METHOD_LABELS[m] for m in METHODS if m not in evals]
        if missing:
            lines += ["", f"Not run: {', '.join(missing)} (see the notes at the end)."]
        lines.append("")
    if not evals_by_task:
        lines += ["No policy evaluation found (`gps eval ... --out <results>/eval_end_to_end.json`)."]
    lines += ["", "**Paper (Table I)**", "", "| task | method | training | spatial test | visual test |",
              "|---|---|---|---|---|"]
    for task, row in PAPER_TABLE_I.items():
        n = row["trials"]
        for m in METHODS:
            vals = row.get(m)
            if vals is None:
                continue
            cells = [("n/a" if v is None else f"{v:g}%") + f" ({k})" for v, k in zip(vals, n, strict=True)]
            lines.append(f"| {task} | {METHOD_LABELS[m]} | " + " | ".join(cells) + " |")
    return lines


def _plot_architectures(arch: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = arch["architectures"]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(range(len(names)), [rows[n]["test_error_cm"] for n in names],
           yerr=[rows[n]["test_error_std_cm"] for n in names], capsize=4, color="#4c72b0")
    ax.axhline(arch["baseline_mean_error_cm"], ls="--", c="gray", label="predict the mean")
    ax.set_xticks(range(len(names)), [rows[n]["label"].replace(" + ", "\n+ ").replace(" (ours)", "\n(ours)")
                                      for n in names], fontsize=7)
    ax.set_ylabel("held-out pose error (cm)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _architectures(archs: list[tuple[Path, dict[str, Any]]], img_dir: Path, md_dir: Path) -> list[str]:
    if not archs:
        return ["No architecture comparison found (`python -m gps_trainer.paper.architectures`)."]
    lines: list[str] = []
    for path, arch in archs:
        lines += _architecture_table(arch, img_dir / f"pose_error_per_{path.stem}.png", md_dir) + [""]
    return lines + ["The seeds text does not contain the paper's numbers for this comparison, so none are "
                    "shown next to ours."]


def _architecture_table(arch: dict[str, Any], png: Path, md_dir: Path) -> list[str]:
    cfg = arch.get("config", {})
    lines = [f"Target-position regression from {cfg.get('image_size')}x{cfg.get('image_size')} images of task "
             f"`{cfg.get('task')}`: {cfg.get('num_train')} training / {cfg.get('num_test')} held-out images, "
             f"{cfg.get('iterations')} Adam steps (batch {cfg.get('batch_size')}, lr {cfg.get('learning_rate')}), "
             f"seed {cfg.get('seed')}; the same conv trunk for all.", "",
             "| network architecture | test error (cm), mean +- std | train error (cm) | parameters |",
             "|---|---|---|---|"]
    for row in arch["architectures"].values():
        lines.append(f"| {row['label']} | {row['test_error_cm']:.2f} +- {row['test_error_std_cm']:.2f} | "
                     f"{row['train_error_cm']:.2f} | {row['parameters']:,} |")
    lines += [f"| (always predict the training mean) | {arch['baseline_mean_error_cm']:.2f} | | |", ""]
    _plot_architectures(arch, png)
    return lines + [f"![pose error per architecture]({_rel(png, md_dir)})"]


def _plot_success(mf: list[dict[str, Any]], gps: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    colors = {"sac": "#dd8452", "ppo": "#55a868"}
    for r in mf:
        xs = [e["env_steps"] for e in r["evaluations"]]
        ys = [100 * e["success_rate"] for e in r["evaluations"]]
        ax.plot(xs, ys, marker=".", c=colors.get(r["algorithm"], None), alpha=0.8,
                label=f"{r['algorithm'].upper()} seed {r['seed']}")
    for g in gps:
        xs, ys = zip(*g["curve"], strict=True) if g["curve"] else ((), ())
        ax.plot(xs, [100 * y for y in ys], marker="o", c="#4c72b0", label=f"GPS ({g['algorithm'].upper()})")
    ax.axhline(90, ls="--", c="gray", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-3, 103)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sample_efficiency(mf: list[dict[str, Any]], gps: list[dict[str, Any]], img_dir: Path, md_dir: Path) -> list[str]:
    if not mf and not gps:
        return ["No runs found (`python -m gps_trainer.paper.sample_efficiency`, `python -m gps_trainer.procedure gps`)."]
    lines = ["Environment steps used for learning until the policy's success rate first reaches 90% (evaluation "
             "episodes not counted). SB3: deterministic policy, success over the listed number of episodes from "
             "the training conditions (cycled) every 'eval every' steps. GPS: iterations x conditions x samples "
             "x T; success of the policy alone from each training condition once per iteration.", "",
             "| method | seed | env steps to 90% | budget used | final success | eval every (episodes) |",
             "|---|---|---|---|---|---|"]
    for row in summarize(mf, gps[0] if gps else None):
        reached = (f"{row['steps_to_threshold']:,}" if row["steps_to_threshold"] is not None
                   else f"not reached within {row['budget']:,}")
        note = "" if row["done"] else f" (running; planned {row['planned_budget']:,})"
        lines.append(f"| {row['method']} | {row['seed']} | {reached} | {row['budget']:,}{note} | "
                     f"{100 * row['final_success']:.0f}% | {row['eval_every']} ({row['eval_episodes']}) |")
    png = img_dir / "success_vs_env_steps.png"
    _plot_success(mf, gps[:1], png)
    lines += ["", f"![success vs environment steps]({_rel(png, md_dir)})"]
    return lines


def _gps_cost(runs: list[tuple[Path, dict[str, Any]]], img_dir: Path, md_dir: Path) -> list[str]:
    if not runs:
        return ["No GPS run found (`python -m gps_trainer.procedure gps --config ... --out <results>/<name>`)."]
    import matplotlib.pyplot as plt

    # One panel per task: costs of different tasks are not comparable (shape_sorting's log terms go negative).
    tasks = sorted({d.get("config", {}).get("task", "?") for _, d in runs})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 3.4), squeeze=False)
    lines = ["| run | iterations | sample cost, first -> last | policy cost, first -> last | policy success, last |",
             "|---|---|---|---|---|"]
    for path, data in runs:
        rows = data.get("iterations", [])
        name = data.get("config", {}).get("name", path.parent.name)
        ax = axes[0][tasks.index(data.get("config", {}).get("task", "?"))]
        cost = [float(np.mean(r["cost_per_condition"])) for r in rows]
        pcost = [float(r.get("policy_cost", math.nan)) for r in rows]
        ax.plot(range(len(cost)), cost, marker="o", label=f"{name}: samples")
        if any(math.isfinite(c) for c in pcost):
            ax.plot(range(len(pcost)), pcost, marker="x", ls="--", label=f"{name}: policy alone")
        succ = rows[-1].get("success_rate", math.nan) if rows else math.nan
        lines.append(f"| {name} (`{path.parent.name}`) | {len(rows)} | "
                     f"{cost[0]:.1f} -> {cost[-1]:.1f} | {pcost[0]:.1f} -> {pcost[-1]:.1f} | "
                     f"{100 * succ:.0f}% |" if rows else f"| {name} | 0 | - | - | - |")
    for task, ax in zip(tasks, axes[0], strict=True):
        values = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y)]
        if values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(f"task {task}", fontsize=9)
        ax.set_xlabel("GPS iteration")
        ax.set_ylabel("mean cost per episode")
        ax.legend(fontsize=6)
    fig.tight_layout()
    png = img_dir / "cost_per_iteration.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return lines + ["", f"![cost per iteration]({_rel(png, md_dir)})"]


def _load_robustness(results: Path) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """{(task, split): {method: result}} from every robustness_*.json (gps eval --robustness) under ``results``."""
    found: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for p in sorted(results.rglob("robustness_*.json")):
        d = json.loads(p.read_text())
        if isinstance(d.get("robustness"), dict):
            key = (d.get("task", "?"), d["robustness"].get("split", "?"))
            found.setdefault(key, {})[d.get("method") or p.stem] = d | {"_file": str(p)}
    return found


def _robustness(found: dict[tuple[str, str], dict[str, dict[str, Any]]], img_dir: Path, md_dir: Path) -> list[str]:
    """Per task and split: the robustness curves (one panel per family, the methods side by side) and a table
    of successes per family and strength."""
    from gps_core.ood import OOD_STRENGTHS
    from gps_trainer.paper.robustness import REFERENCE_SETS, curves, plot_robustness

    if not found:
        return ["No robustness evaluation found (`gps eval --policy P --task T --robustness --method M` writes "
                "robustness_validation.json; `--robustness test` the final numbers' robustness_test.json)."]
    lines = ["Success of the policy alone under each out-of-distribution family (gps_core.ood: the training "
             "positions, perturbed starts, and one change the training never draws) at strengths 1-3; strength 0 "
             "is the plain scene (`train_validation` for the validation families, `train_perturbed` for the test "
             "families). Validation families steer choices; test families give final numbers only.", ""]
    for (task, split), by_method in sorted(found.items()):
        labelled = [(METHOD_LABELS.get(m, m), d) for m, d in by_method.items()]
        png = plot_robustness(labelled, img_dir / f"robustness_{task}_{split}.png",
                              f"{task}: {split} families (Wilson 95% intervals)")
        lines += [f"**Task `{task}`, {split} families** (strength 0 = `{REFERENCE_SETS.get(split, '?')}`)", "",
                  f"![robustness curves of {task}]({_rel(png, md_dir)})", "",
                  "| method | family | " + " | ".join(f"strength {k}" for k in (0, *OOD_STRENGTHS)) + " |",
                  "|---|---|" + "---|" * (1 + len(OOD_STRENGTHS))]
        for label, d in labelled:
            for kind, points in curves(d, split).items():
                cells = {p["strength"]: f"{100 * p['rate']:.0f}% ({p['successes']}/{p['trials']})" for p in points}
                lines.append(f"| {label} | {kind} | " + " | ".join(cells.get(k, "-") for k in (0, *OOD_STRENGTHS))
                             + " |")
        lines.append("")
    return lines


def _gps_diagnostics(runs: list[tuple[Path, dict[str, Any]]], results: Path, img_dir: Path,
                     md_dir: Path) -> list[str]:
    """One diagnostics figure (gps_trainer.paper.diagnostics) per GPS run that records the MDGPS terms."""
    from gps_trainer.paper.diagnostics import has_diagnostics, plot_diagnostics

    lines = []
    for path, data in runs:
        rows = data.get("iterations", [])
        if not has_diagnostics(rows):
            continue
        name = _run_name(path.parent, results)
        png = plot_diagnostics(rows, img_dir / f"diagnostics_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png", name)
        lines += [f"**{name}** ({len(rows)} iterations): trust region, expected costs, step rule, S-step loss, "
                  "exploration noise and success per iteration (`python -m gps_trainer.paper.diagnostics "
                  f"{path.parent}` prints them).", "", f"![diagnostics of {name}]({_rel(png, md_dir)})", ""]
    return lines or ["No GPS run with per-iteration diagnostics (MDGPS runs record them since issue 21)."]


def rollout_gif(policy_path: str | Path, task: str, path: str | Path, condition_set: str = "visual_test",
                condition: int = 0, seed: int = 0, frame_every: int = 2, scale: int = 4,
                mp4: str | Path | None = None) -> dict[str, Any]:
    """Run a visuomotor policy alone once and save a GIF (and, if ``mp4`` is given, an MPEG-4 video at
    the control rate) of the camera image with its feature points."""
    from PIL import Image

    from gps_controller.policies.serialization import load_policy
    from gps_sim import ArmSim
    from gps_trainer.paper.evaluation import run_trial
    from gps_trainer.run_dir import feature_point_overlay

    policy = load_policy(policy_path)
    if not policy.uses_images:
        raise ValueError("a feature-point GIF needs a visuomotor policy")
    sim = ArmSim(task, image_size=policy.image_shape[0], render_images=True)
    frames: list[tuple[np.ndarray, np.ndarray | None]] = []
    try:
        ok, dist = run_trial(sim, policy, "observation", condition, condition_set, seed, sim.task.horizon, frames)
    finally:
        sim.close()
    overlays = [feature_point_overlay(img, pts, scale=scale) for img, pts in frames]
    imgs = [Image.fromarray(o) for o in overlays[::frame_every]]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(50 * frame_every), loop=0)
    info = {"success": ok, "final_distance_m": dist, "frames": len(imgs), "condition_set": condition_set,
            "condition": condition, "seed": seed}
    if mp4 is not None:
        info["mp4_frames"] = write_mp4(overlays, mp4, fps=1.0 / sim.task.control_dt)
    return info


def write_mp4(frames: list[np.ndarray], path: str | Path, fps: float) -> int:
    """Write RGB uint8 frames (H, W, 3) as an MPEG-4 Part 2 video (OpenCV's bundled FFmpeg has no H.264
    encoder in the PyPI wheel); returns the number of frames written."""
    import cv2

    if not frames:
        raise ValueError("no frames to write")
    h, w = frames[0].shape[:2]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot open an mp4v writer for {path}")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return len(frames)


def _run_name(run_dir: Path, results: Path | None) -> str:
    """A run's folder relative to the results folder (runs of several tasks share folder names)."""
    try:
        return run_dir.relative_to(results).as_posix() if results is not None else run_dir.name
    except ValueError:
        return run_dir.name


def _first_success(evaluation: dict[str, Any]) -> tuple[int, int] | None:
    """(condition, reset seed) of the first successful visual-test trial of an evaluation, None if none
    succeeded; replaying it gives the same rollout (the simulator and the policy's mean are deterministic)."""
    vt = evaluation.get("sets", {}).get("visual_test", {})
    for ok, condition, seed in zip(vt.get("success", []), vt.get("conditions", []), vt.get("reset_seeds", []),
                                   strict=False):
        if ok:
            return int(condition), int(seed)
    return None


def _gif(evals_by_task: dict[str, dict[str, dict[str, Any]]], runs: list[tuple[Path, dict[str, Any]]],
         img_dir: Path, md_dir: Path) -> list[str]:
    from gps_controller.policies.serialization import load_policy

    evaluated = [(m, Path(evals[m]["policy"]), task, _first_success(evals[m]))
                 for task, evals in evals_by_task.items() for m in ("end_to_end", "pose_features") if m in evals]
    # A successful visual-test trial of any evaluated CNN policy first (tasks in report order, end-to-end
    # before pose features); else visual-test condition 0 of the first CNN policy found.
    candidates = [(m, p, t, trial) for m, p, t, trial in evaluated if trial is not None]
    candidates += [(m, p, t, (0, 0)) for m, p, t, _ in evaluated]
    candidates += [(p.parent.name, p.parent / "policy.safetensors", d.get("config", {}).get("task", "reach"), (0, 0))
                   for p, d in runs]
    for name, pol, task, (condition, seed) in candidates:
        if not pol.exists():
            continue
        try:
            if not load_policy(pol).uses_images:
                continue
        except Exception:  # noqa: BLE001  (an unreadable file is skipped, the next one tried)
            continue
        gif = img_dir / "rollout_visual_test.gif"
        mp4 = img_dir / "rollout_visual_test.mp4"
        info = rollout_gif(pol, task, gif, mp4=mp4, condition=condition, seed=seed)
        return [f"Policy `{pol}` ({name}, task `{task}`) alone on visual-test condition {condition} "
                f"(reset seed {seed}): "
                f"{'success' if info['success'] else 'failure'}, final mean EE-point distance "
                f"{100 * info['final_distance_m']:.1f} cm. Coloured dots: the CNN's feature points. "
                f"Video at the 20 Hz control rate: [{mp4.name}]({_rel(mp4, md_dir)}).", "",
                f"![rollout with feature points]({_rel(gif, md_dir)})"]
    return ["No visuomotor (CNN) policy available, so no rollout GIF (train one with "
            "`python -m gps_trainer.procedure gps --config config/experiments/reach_mdgps_visual.yaml ...`)."]


# Result files written before the paper's tooling moved to gps_trainer.paper record the old module
# paths; the reproduction section prints commands that still run.
_MOVED = re.compile(r"\bgps_trainer\.(report|baselines|architectures|sample_efficiency|evaluation)\b")


def _current_command(cmd: str) -> str:
    return _MOVED.sub(r"gps_trainer.paper.\1", cmd)


def pose_overrides(config: dict[str, Any]) -> str:
    """The key=value overrides that turn config/policy/pose_pretrain.yaml into ``config`` (a pose run's
    recorded configuration): the task, the seed and every other setting that differs from the file's."""
    import shlex

    from gps_core.tasks import repo_root
    from gps_trainer.pose_pretraining import PosePretrainConfig

    defaults = PosePretrainConfig.from_yaml(repo_root() / "config/policy/pose_pretrain.yaml").__dict__
    keys = ["task", "seed"] + [k for k in config if k not in ("task", "seed", "output", "log_every")
                               and config[k] != defaults.get(k)]
    return " ".join(shlex.quote(f"{k}={json.dumps(config[k]) if isinstance(config[k], (dict, list)) else config[k]}")
                    for k in keys if k in config)


def _reproduce(evals_by_task: dict[str, dict[str, dict[str, Any]]], archs: list[tuple[Path, dict[str, Any]]],
               mf: list[dict[str, Any]], runs: list[tuple[Path, dict[str, Any]]], results: Path | None = None,
               robust: dict[tuple[str, str], dict[str, dict[str, Any]]] | None = None) -> list[str]:
    lines = ["Every result file records the command that produced it; all runs are seeded "
             "(numpy Generators, seeded torch), so the same command gives the same numbers on the same machine.", ""]
    items: list[tuple[str, str, str]] = []
    for path, data in runs:
        cfg = data.get("config", {})
        cmd_file = path.parent / "command.txt"
        cmd = (cmd_file.read_text().strip() if cmd_file.exists() else
               f"python -m gps_trainer.procedure gps --config config/experiments/{cfg.get('name', '?')}.yaml "
               f"--out {path.parent}")
        items.append((f"GPS run `{_run_name(path.parent, results)}`", cmd,
                      f"seed {cfg.get('seed')}; the full resolved config is the `config` entry of {path}"))
    for vm in sorted(Path(results).rglob("vision.metrics.json")) if results is not None else []:
        c = json.loads(vm.read_text()).get("config", {})
        items.append((f"pose pretraining `{_run_name(vm.parent, results)}`",
                      f"python -m gps_trainer.procedure pose --config config/policy/pose_pretrain.yaml --out {vm.parent} "
                      + pose_overrides(c), f"seed {c.get('seed')}; full config in {vm}"))
    for _, arch in archs:
        items.append((f"architecture comparison `{arch.get('config', {}).get('task')}`",
                      arch.get("command") or "python -m gps_trainer.paper.architectures",
                      f"seed {arch.get('config', {}).get('seed')}"))
    cmds = sorted({r.get("command", "") for r in mf if r.get("command")})
    for c in cmds:
        seeds = sorted({r["seed"] for r in mf if r.get("command") == c})
        items.append(("model-free RL (SB3)", c, f"seeds {seeds}; resumable: rerun the same command"))
    for m, e in ((m, e) for evals in evals_by_task.values() for m, e in evals.items()):
        items.append((f"evaluation `{e.get('task')}`: {METHOD_LABELS.get(m, m)}", e.get("command") or
                      f"gps eval --policy {e['policy']} --task {e['task']} --trials {e['trials_per_set']} "
                      f"--seed {e['seed']}", f"seed {e['seed']}, {e['trials_per_set']} trials per set"))
    for (task, split), by_method in sorted((robust or {}).items()):
        for m, e in by_method.items():
            items.append((f"robustness `{task}` ({split} families): {METHOD_LABELS.get(m, m)}",
                          e.get("command") or f"gps eval --policy {e['policy']} --task {task} --robustness {split}",
                          f"seed {e['seed']}"))
    for what, cmd, note in items:
        lines += [f"- {what} ({note}):", "", "  ```", f"  {_current_command(cmd)}", "  ```"]
    lines += ["- this report:", "", "  ```", "  gps report --results runs/results --out docs/results.md", "  ```"]
    return lines


def generate_report(results_dir: str | Path = "runs/results", out: str | Path = "docs/results.md",
                    images_dir: str | Path | None = None, gps_runs: list[str | Path] | None = None,
                    gif: bool = True, notes: str = "") -> Path:
    """Write the markdown report (and its images); returns its path. ``notes`` (markdown), then the
    contents of ``<out stem>-notes.md`` beside the report and of ``<results>/notes.md``, end it."""
    import matplotlib

    matplotlib.use("Agg")
    results = Path(results_dir)
    out = Path(out)
    md_dir = out.parent
    img_dir = Path(images_dir) if images_dir else md_dir / "images" / "results"
    img_dir.mkdir(parents=True, exist_ok=True)
    evals = _load_evals(results)
    archs = [(p, json.loads(p.read_text())) for p in sorted(results.glob("architectures*.json"))]
    archs.sort(key=lambda a: a[1].get("config", {}).get("task") not in TASK_ORDER)  # the paper's task first
    mf = load_model_free_curves(results / "model_free")
    runs = _gps_runs(results, [Path(p) for p in (gps_runs or [])])
    robust = _load_robustness(results)
    # GPS is compared with the model-free runs on their environment's task only (reach by default).
    mf_tasks = {ENV_TASKS.get(r.get("env_id", "GpsReach-v0"), "reach") for r in mf} or {"reach"}
    state_runs = [gps_curve(p) for p, d in runs
                  if d.get("config", {}).get("algorithm", {}).get("policy_obs", "state") == "state"
                  and d.get("config", {}).get("task", "reach") in mf_tasks]
    body = ["# Results", "",
            "Generated by `gps report` from the result files in "
            f"`{results}`; regenerate after new runs. Numbers are what these runs measured.", ""]
    body += [SECTIONS[0], "", *_table_i(evals), "",
             SECTIONS[1], "", *_architectures(archs, img_dir, md_dir), "",
             SECTIONS[2], "", *_sample_efficiency(mf, state_runs, img_dir, md_dir), "",
             SECTIONS[3], "", *_gps_cost(runs, img_dir, md_dir), "",
             SECTIONS[4], "", *_gps_diagnostics(runs, results, img_dir, md_dir), "",
             SECTIONS[5], "", *(_gif(evals, runs, img_dir, md_dir) if gif else ["(skipped: --no-gif)"]), "",
             SECTIONS[6], "", *_robustness(robust, img_dir, md_dir), "",
             SECTIONS[7], "", *_reproduce(evals, archs, mf, runs, results, robust), ""]
    # Hand-written notes live beside the report (committed), so regenerating it never drops them;
    # <results>/notes.md, if present, is added for notes that belong to one set of runs.
    for notes_file in (out.with_name(out.stem + "-notes.md"), results / "notes.md"):
        if notes_file.exists():
            notes = "\n\n".join(part for part in (notes, notes_file.read_text().strip()) if part)
    body += ["## Notes and what remains", "", notes or "(none)", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(body))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m gps_trainer.paper.report --results runs/results --out docs/results.md`` (= ``gps report``)."""
    import argparse

    ap = argparse.ArgumentParser(prog="gps_trainer.paper.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="runs/results", help="folder with the result files")
    ap.add_argument("--out", default="docs/results.md")
    ap.add_argument("--images", default=None, help="image folder (default: <out dir>/images/results)")
    ap.add_argument("--gps-run", nargs="*", default=[], help="extra GPS run directories")
    ap.add_argument("--no-gif", action="store_true")
    a = ap.parse_args(argv)
    print(f"wrote {generate_report(a.results, a.out, a.images, gps_runs=a.gps_run, gif=not a.no_gif)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
