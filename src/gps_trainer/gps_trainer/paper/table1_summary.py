"""The closing table of ``scripts/table1.sh``: per task and method the success on Table I's three test sets
(from the ``eval_<method>.json`` files), per task the wall time of every phase and of the task.

The wall times come from the script's phase records, ``<task dir>/.table1/<phase>.done`` (JSON: the start
and end of the run that finished the phase, epoch seconds). Phases ran side by side, so a task's wall time
is the length of the union of its phases' intervals (not their sum), and the total is the union over all
tasks; a phase resumed after an interruption counts the run that finished it.

    python -m gps_trainer.paper.table1_summary --out runs/results/summary.md reach=runs/results/reach ...

Prints the table (Markdown) and writes it to ``--out``. A missing or unreadable evaluation is shown as
such, never as a rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gps_core.progress import format_duration

__all__ = ["METHOD_ORDER", "SETS", "merged_length", "phase_records", "summary_markdown", "main"]

SETS = ("train_perturbed", "spatial_test", "visual_test")
METHOD_ORDER = (("end_to_end", "end-to-end"), ("pose_features", "pose features"),
                ("pose_prediction", "pose prediction"), ("state_oracle", "state policy, true target (reference)"))
PHASE_ORDER = ("pose", "controllers", "state", "state_oracle", "pose_features", "end_to_end", "pose_prediction")


def merged_length(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``[start, end]`` intervals (overlaps counted once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def phase_records(task_dir: Path) -> dict[str, dict[str, Any]]:
    """{phase: record} from ``task_dir/.table1/*.done``; an unreadable record is left out."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted((task_dir / ".table1").glob("*.done")):
        try:
            rec = json.loads(p.read_text())
            float(rec["start"]), float(rec["end"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out[p.stem] = rec
    return out


def _rates(task_dir: Path, method: str) -> list[str]:
    path = task_dir / f"eval_{method}.json"
    if not path.exists():
        return ["missing"] * len(SETS)
    try:
        sets = json.loads(path.read_text())["sets"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["unreadable"] * len(SETS)
    cells = []
    for name in SETS:
        s = sets.get(name) if isinstance(sets, dict) else None
        try:
            k, n = int(s["successes"]), int(s["trials"])
            cells.append(f"{k}/{n} ({100 * k / n:.0f}%)" if n else "0 trials")
        except (TypeError, KeyError, ValueError):
            cells.append("not evaluated")
    return cells


def summary_markdown(tasks: list[tuple[str, Path]], budget: str = "") -> str:
    """The summary of ``tasks`` ((task, its output folder) pairs) as Markdown."""
    lines = ["# Table I (scripts/table1.sh)" + (f", budget {budget}" if budget else ""), "",
             "Success on Table I's test sets (successes/trials).", "",
             "| task | method | " + " | ".join(SETS) + " |", "|---|---|" + "---|" * len(SETS)]
    for task, d in tasks:
        for method, label in METHOD_ORDER:
            lines.append(f"| {task} | {label} | " + " | ".join(_rates(d, method)) + " |")
    lines += ["", "Wall time per task (phases side by side: the union of their run times) and of each phase.", "",
              "| task | wall | " + " | ".join(PHASE_ORDER) + " |", "|---|---|" + "---|" * len(PHASE_ORDER)]
    everything: list[tuple[float, float]] = []
    for task, d in tasks:
        recs = phase_records(d)
        spans = [(float(r["start"]), float(r["end"])) for r in recs.values()]
        everything += spans
        cells = [format_duration(float(recs[p]["end"]) - float(recs[p]["start"])) if p in recs else "not run"
                 for p in PHASE_ORDER]
        lines.append(f"| {task} | {format_duration(merged_length(spans))} | " + " | ".join(cells) + " |")
    if len(tasks) > 1:
        lines += ["", f"All tasks: {format_duration(merged_length(everything))} wall."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gps_trainer.paper.table1_summary", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="Markdown file to write")
    ap.add_argument("--budget", default="", help="the script's budget, named in the title")
    ap.add_argument("tasks", nargs="+", metavar="TASK=DIR", help="a task and its output folder")
    a = ap.parse_args(argv)
    tasks = []
    for item in a.tasks:
        task, sep, d = item.partition("=")
        if not sep or not task or not d:
            ap.error(f"expected TASK=DIR, got {item!r}")
        tasks.append((task, Path(d)))
    text = summary_markdown(tasks, a.budget)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
