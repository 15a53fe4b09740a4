"""GPS diagnostics of one run: does the run improve past its first iteration, or drift (issue 21)?

Reads a run directory's ``metrics.jsonl`` (rows written by :class:`gps_trainer.loop.GPSRun`; the MDGPS
terms come from :func:`gps_trainer.algorithms.mdgps.drift_diagnostics`) and draws six panels per
iteration:

1. trust region: the C-step's KL bound per step (kl_step x step multiplier), KL(sampler || pi_lin) and
   KL(new controller || pi_lin) per step, the step multiplier;
2. expected cost (Laplace, this iteration's models) of the controller that sampled, the policy
   linearization and the C-step's output, beside the samples' and the policy's measured cost;
3. the step rule's predicted and actual improvement;
4. the S-step's loss before and after, and before on its worst condition (one condition's outlying loss
   drives the mean);
5. exploration noise: mean action variance of the samplers, the new controllers, the policy, and the
   regression residual of the linearization;
6. success: noisy samples, the policy alone at the training conditions, the development sets.

    python -m gps_trainer.paper.diagnostics runs/results/toy_hammer/gps_end_to_end --out diag.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["has_diagnostics", "plot_diagnostics", "summary_table", "main"]


def _mean(v: Any) -> float:
    """Mean of a number or a per-condition list; NaN where missing or diverged (None)."""
    if v is None:
        return math.nan
    if isinstance(v, list):
        vals = [float(x) for x in v if x is not None]
        return float(np.mean(vals)) if len(vals) == len(v) and vals else math.nan
    return float(v)


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [_mean(r.get(key)) for r in rows]


def _worst(v: Any) -> float:
    """Largest entry of a per-condition list (None entries left out); NaN where there is none."""
    vals = [float(x) for x in v if x is not None] if isinstance(v, list) else []
    return max(vals) if vals else math.nan


def has_diagnostics(rows: list[dict[str, Any]]) -> bool:
    """True when the rows carry the MDGPS drift terms (runs before issue 21 do not)."""
    return any("kl_bound" in r for r in rows)


def _validation_keys(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({k for r in rows for k in r if k.startswith("val_") and k.endswith("_success")})


def _robust_ylim(ax) -> None:
    """Y range of the central values: one diverged estimate (1e6 beside costs of -400) would flatten the rest."""
    ys = np.array([y for ln in ax.get_lines() for y in ln.get_ydata() if math.isfinite(y)])
    if ys.size < 4:
        return
    lo, hi = np.percentile(ys, [10, 90])
    pad = 0.5 * (hi - lo) + 1e-6 * max(1.0, abs(hi))
    ax.set_ylim(max(ys.min(), lo - pad) - pad * 0.1, min(ys.max(), hi + pad) + pad * 0.1)


def plot_diagnostics(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """The six panels of the module docstring for ``rows`` (one per iteration) as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = list(range(len(rows)))
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    (a_kl, a_cost, a_impr), (a_loss, a_var, a_succ) = axes

    def line(ax, key, label, **kw):
        ys = _series(rows, key)
        if any(math.isfinite(y) for y in ys):
            ax.plot(it, ys, marker="o", ms=3, label=label, **kw)

    line(a_kl, "kl_bound", "KL bound per step")
    line(a_kl, "kl_sampler_policy_lin", "KL(sampler || pi_lin) per step")
    line(a_kl, "kl_new_policy_lin", "KL(new || pi_lin) per step")
    a_kl.set_yscale("log")
    twin = a_kl.twinx()
    twin.plot(it, _series(rows, "step_mult"), c="grey", ls=":", label="step multiplier")
    twin.set_ylabel("step multiplier", fontsize=8)
    a_kl.set_title("trust region", fontsize=9)

    line(a_cost, "expected_cost_sampler", "E[cost] sampler")
    line(a_cost, "expected_cost_policy_lin", "E[cost] pi_lin")
    line(a_cost, "expected_cost_new", "E[cost] new controller")
    line(a_cost, "cost_per_condition", "samples (measured)", ls="--")
    line(a_cost, "policy_cost", "policy alone (measured)", ls="--")
    _robust_ylim(a_cost)
    a_cost.set_title("expected cost (this iteration's models; outliers off the axis)", fontsize=9)

    line(a_impr, "predicted_improvement", "predicted")
    line(a_impr, "actual_improvement", "actual")
    _robust_ylim(a_impr)
    a_impr.set_title("step rule: improvement of pi_lin", fontsize=9)

    line(a_loss, "policy_loss_before", "before")
    line(a_loss, "policy_loss_after", "after")
    worst = [_worst(r.get("policy_loss_before_per_condition")) for r in rows]
    if any(math.isfinite(y) for y in worst):
        a_loss.plot(it, worst, marker="x", ms=3, ls=":", label="before, worst condition")
    a_loss.set_yscale("symlog", linthresh=1.0)
    a_loss.set_title("S-step loss", fontsize=9)

    line(a_var, "variance_sampler", "samplers")
    line(a_var, "variance_new", "new controllers")
    line(a_var, "policy_var", "policy")
    line(a_var, "policy_lin_residual_var", "pi_lin residual")
    a_var.set_yscale("symlog", linthresh=1e-4)
    a_var.set_title("mean action variance", fontsize=9)

    line(a_succ, "sample_success_rate", "noisy samples")
    line(a_succ, "success_rate", "policy, training conditions")
    for key in _validation_keys(rows):
        line(a_succ, key, "policy, " + key[4:-8])
    a_succ.set_ylim(-0.05, 1.05)
    a_succ.set_title("success rate", fontsize=9)

    for ax in axes.flat:
        ax.set_xlabel("GPS iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.get_lines():
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


COLUMNS = (("it", None), ("samples%", "sample_success_rate"), ("policy%", "success_rate"),
           ("mult", "step_mult"), ("KLbound", "kl_bound"), ("KL(s||pi)", "kl_sampler_policy_lin"),
           ("E[s]", "expected_cost_sampler"), ("E[pi]", "expected_cost_policy_lin"), ("E[new]", "expected_cost_new"),
           ("pred", "predicted_improvement"), ("actual", "actual_improvement"), ("var_s", "variance_sampler"),
           ("var_pi", "policy_var"), ("resid", "policy_lin_residual_var"), ("loss", "policy_loss_after"))


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The diagnostics as a plain-text table, one line per iteration (rates in %)."""
    val = _validation_keys(rows)
    head = [c for c, _ in COLUMNS] + [k[4:-8] + "%" for k in val]
    lines = [" ".join(f"{h:>10}" for h in head)]
    for i, r in enumerate(rows):
        cells = []
        for name, key in COLUMNS:
            v = i if key is None else _mean(r.get(key))
            cells.append(100 * v if name.endswith("%") else v)
        cells += [100 * _mean(r.get(k)) for k in val]
        lines.append(" ".join(f"{c:>10.4g}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m gps_trainer.paper.diagnostics RUN_DIR [--out PNG]``: print the table, draw the panels."""
    from gps_trainer.run_dir import read_run

    ap = argparse.ArgumentParser(prog="gps_trainer.paper.diagnostics", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a GPS run directory (metrics.jsonl)")
    ap.add_argument("--out", default=None, help="PNG to write (default: <run>/diagnostics.png)")
    a = ap.parse_args(argv)
    cfg, rows = read_run(Path(a.run))
    if not rows:
        raise SystemExit(f"gps_trainer.paper.diagnostics: {a.run} has no iterations yet")
    print(summary_table(rows))
    out = plot_diagnostics(rows, a.out or Path(a.run) / "diagnostics.png", cfg.get("name", ""))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
