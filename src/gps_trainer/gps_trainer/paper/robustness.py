"""Robustness curves (issue 24): a policy's success under each out-of-distribution family at each strength.

The families are condition sets of every task (gps_core.ood: lighting, camera, clutter, same_colour,
texture, image_noise; strengths 1-3; ``ood_<kind>_<strength>_<split>``). Strength 0 is the same training
positions with perturbed starts and nothing else: ``train_validation`` for the validation split,
``train_perturbed`` (Table I's training column) for the test split. :func:`evaluate_robustness` runs every
family of one split at every strength (one :func:`gps_trainer.paper.evaluation.evaluate_policy` call: the
same seeded trials, ``workers`` processes); the test split gives final numbers only, choices use the
validation split. ``gps eval --robustness [validation|test]`` prints the table and writes the JSON;

    python -m gps_trainer.paper.robustness --results a.json b.json --labels end_to_end pose_features --out fig.png

draws the curves of several policies (methods) side by side, one panel per family.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gps_core.ood import OOD_KINDS, OOD_SPLITS, OOD_STRENGTHS, ood_set_name
from gps_trainer.paper.evaluation import EvalResult, evaluate_policy, wilson_interval

#: The strength-0 set of each split: the training positions, perturbed starts, nominal visuals.
REFERENCE_SETS = {"validation": "train_validation", "test": "train_perturbed"}


def robustness_sets(split: str = "validation", kinds: tuple[str, ...] = OOD_KINDS) -> list[str]:
    """The condition sets of a split's robustness curves: the strength-0 reference, then every family at
    every strength."""
    if split not in OOD_SPLITS:
        raise ValueError(f"robustness split {split!r}: expected one of {OOD_SPLITS}")
    unknown = [k for k in kinds if k not in OOD_KINDS]
    if unknown or not kinds:
        raise ValueError(f"robustness families {list(kinds)}: expected some of {OOD_KINDS}")
    return [REFERENCE_SETS[split]] + [ood_set_name(k, s, split) for k in kinds for s in OOD_STRENGTHS]


def curves(result: EvalResult | dict[str, Any], split: str) -> dict[str, list[dict[str, Any]]]:
    """family -> [{strength, set, successes, trials, rate, ci_low, ci_high}] for strengths 0-3 (strength 0:
    the reference set, shared by every family), from an evaluation of :func:`robustness_sets`; a family
    whose sets are not in the result is left out."""
    sets = result["sets"] if isinstance(result, dict) else {k: v.to_dict() for k, v in result.sets.items()}
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in OOD_KINDS:
        names = [REFERENCE_SETS[split]] + [ood_set_name(kind, s, split) for s in OOD_STRENGTHS]
        if not all(n in sets for n in names[1:]):
            continue
        points = []
        for strength, name in enumerate(names):
            if name not in sets:  # no reference set evaluated
                continue
            s = sets[name]
            low, high = wilson_interval(int(s["successes"]), int(s["trials"]))
            points.append({"strength": strength, "set": name, "successes": int(s["successes"]),
                           "trials": int(s["trials"]), "rate": s["successes"] / s["trials"] if s["trials"] else None,
                           "ci_low": low, "ci_high": high})
        out[kind] = points
    return out


def evaluate_robustness(policy: Any, task: str, split: str = "validation", trials_per_set: int | None = None,
                        seed: int = 0, *, kinds: tuple[str, ...] = OOD_KINDS, **kwargs: Any) -> EvalResult:
    """Every family of ``split`` at every strength and the strength-0 reference, as one evaluation
    (``kwargs`` go to :func:`evaluate_policy`: image_size, policy_obs, workers, progress, ...)."""
    sets = robustness_sets(split, kinds)
    from gps_core.tasks import load_task

    spec = load_task(task)
    if not spec.conditions.get(sets[0]):  # a task without the reference: the curves start at strength 1
        sets = sets[1:]
    return evaluate_policy(policy, task, tuple(sets), trials_per_set, seed, **kwargs)


def format_robustness(result: EvalResult | dict[str, Any], split: str) -> str:
    """Plain-text table: one row per family, successes/trials and rate per strength (0 = the reference)."""
    table = curves(result, split)
    head = f"{'family':<14}" + "".join(f"{f'strength {s}':>18}" for s in (0, *OOD_STRENGTHS))
    lines = [f"robustness ({split} families; strength 0 = {REFERENCE_SETS[split]})", head]
    for kind, points in table.items():
        cells = {p["strength"]: f"{p['successes']}/{p['trials']} ({100 * p['rate']:.0f}%)" for p in points}
        lines.append(f"{kind:<14}" + "".join(f"{cells.get(s, '-'):>18}" for s in (0, *OOD_STRENGTHS)))
    return "\n".join(lines)


def write_robustness_json(result: EvalResult, split: str, path: str | Path, extra: dict[str, Any] | None = None
                          ) -> Path:
    """The evaluation's JSON (per-trial records) with the curves under ``robustness``."""
    return result.write_json(path, {"robustness": {"split": split, "curves": curves(result, split)},
                                    **(extra or {})})


def plot_robustness(results: list[tuple[str, dict[str, Any]]], out: str | Path, title: str = "") -> Path:
    """One panel per family: success rate (Wilson 95% interval) against strength, a line per labelled
    result (a JSON of ``gps eval --robustness``). All results must be of one split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = {r.get("robustness", {}).get("split") for _, r in results}
    if len(splits) != 1 or None in splits:
        raise ValueError(f"robustness results of one split expected (from gps eval --robustness), got {splits}")
    split = splits.pop()
    per = [(label, curves(r, split)) for label, r in results]
    kinds = [k for k in OOD_KINDS if any(k in c for _, c in per)]
    if not kinds:
        raise ValueError("no family's curve in the results")
    cols = 3
    rows = (len(kinds) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax in axes.ravel()[len(kinds):]:
        ax.axis("off")
    for ax, kind in zip(axes.ravel(), kinds, strict=False):
        for j, (label, c) in enumerate(per):
            points = c.get(kind, [])
            if not points:
                continue
            x = [p["strength"] + 0.06 * (j - (len(per) - 1) / 2) for p in points]  # side by side
            y = [100 * p["rate"] for p in points]
            err = [[100 * (p["rate"] - p["ci_low"]) for p in points], [100 * (p["ci_high"] - p["rate"]) for p in points]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        ax.set_title(kind)
        ax.set_xticks([0, *OOD_STRENGTHS])
        ax.set_xlabel("strength (0 = nominal)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("success (%)")
    axes.ravel()[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title or f"robustness curves ({split} families, Wilson 95% intervals)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gps_trainer.paper.robustness",
                                 description="Draw robustness curves from `gps eval --robustness` JSON files.")
    ap.add_argument("--results", nargs="+", required=True, help="JSON files of gps eval --robustness")
    ap.add_argument("--labels", nargs="*", default=None,
                    help="one per result (default: the JSON's method, else the file's name)")
    ap.add_argument("--out", required=True, help="PNG path")
    ap.add_argument("--title", default="")
    a = ap.parse_args(argv)
    if a.labels and len(a.labels) != len(a.results):
        ap.error(f"--labels: {len(a.labels)} labels for {len(a.results)} results")
    results = []
    for i, path in enumerate(a.results):
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            ap.error(f"--results {path}: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("robustness"), dict):
            ap.error(f"--results {path}: not a result of gps eval --robustness (no 'robustness' entry)")
        label = a.labels[i] if a.labels else data.get("method") or Path(path).stem
        results.append((label, data))
    try:
        out = plot_robustness(results, a.out, a.title)
    except ValueError as exc:
        ap.error(str(exc))
    for label, data in results:
        print(f"{label}:")
        print(format_robustness(data, data["robustness"]["split"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
