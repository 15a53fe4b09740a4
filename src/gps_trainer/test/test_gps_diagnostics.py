"""The MDGPS drift diagnostics (issue 21): every iteration records the trust region, the expected costs of
the sampler, the policy linearization and the C-step's output, the exploration noise and the policy's success
on development sets; they obey the identities of their definitions; `gps report` and the diagnostics CLI
draw them."""

from __future__ import annotations

import numpy as np
import pytest

from gps_core.tasks import repo_root
from gps_trainer.config import load_experiment

TINY = {"iterations": 3, "conditions": 2, "samples_per_condition": 3, "horizon": 10,
        "algorithm.dynamics.prior.max_clusters": 2, "algorithm.policy_prior.max_clusters": 2,
        "algorithm.policy_opt.iterations": 20, "algorithm.policy_opt.device": "cpu"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from gps_trainer.procedure import train_in_simulation

    out = tmp_path_factory.mktemp("diag") / "run"
    cfg = load_experiment(repo_root() / "config/experiments/reach_mdgps.yaml", TINY)
    run = train_in_simulation(cfg, out, validate=["train_validation:2"])
    return out, run


def test_every_iteration_records_the_drift_terms(tiny_run):
    _, run = tiny_run
    rows = run.rows
    assert len(rows) == 3
    for r in rows:
        for key in ("kl_bound", "kl_sampler_policy_lin", "kl_new_policy_lin", "expected_cost_sampler",
                    "expected_cost_policy_lin", "expected_cost_new", "variance_sampler", "variance_new",
                    "policy_var", "policy_lin_residual_var", "policy_var_after_s_step"):
            assert key in r, key
        assert len(r["expected_cost_sampler"]) == 2 and len(r["kl_sampler_policy_lin"]) == 2
        assert r["val_train_validation_trials"] == 2 and 0.0 <= r["val_train_validation_success"] <= 1.0
        # pi_lin's covariance is a regression residual (PSD) plus the policy's variance: never below it
        assert r["policy_lin_residual_var"] >= -1e-9 * max(1.0, r["policy_var"])
        assert r["variance_sampler"] > 0 and r["policy_var"] > 0
        # the S-step's loss per condition: every sample is evaluated and each condition has as many, so the
        # mean over conditions is the loss (fp32 sums in another order: a relative 1e-5)
        for when in ("before", "after"):
            per_condition = r[f"policy_loss_{when}_per_condition"]
            assert len(per_condition) == 2 and all(v >= 0 for v in per_condition)
            assert np.mean(per_condition) == pytest.approx(r[f"policy_loss_{when}"], rel=1e-5)
        # the C-step meets its bound (tolerance 10 %, kl_constrained_update) wherever it converged
        for kl_new, fell_back in zip(r["kl_new_policy_lin"], [False] * 2, strict=True):
            if not fell_back and r["c_step_fallbacks"] == 0:
                assert kl_new == pytest.approx(r["kl_bound"], rel=0.1 + 1e-6) or kl_new < r["kl_bound"]
    # the step multiplier of iteration i scales the bound: kl_bound = kl_step * step_mult
    kl_step = run.cfg.algorithm.traj_opt.kl_step
    for r in rows:
        assert r["kl_bound"] == pytest.approx(kl_step * r["step_mult"], rel=1e-12)


def test_known_answers_on_a_random_problem():
    """A sampler that IS the policy linearization: KL 0, equal expected costs, no residual variance; a
    linearization with the mean shifted by d (covariance I): KL = |d|^2 / 2 per step (closed form)."""
    from gps_core.linear_gaussian import LinearGaussianPolicy
    from gps_trainer.algorithms.mdgps import drift_diagnostics
    from gps_trainer.traj_opt import expected_cost, random_problem

    ctrl, dyn, cost = random_problem(T=12, dX=6, dU=2, seed=3)
    pol_var = np.ones(2)  # ctrl's covariance is the identity: all of it is the policy's variance
    d = drift_diagnostics([ctrl], [ctrl.copy()], [ctrl], [dyn], [cost], pol_var)
    assert d["kl_sampler_policy_lin"][0] == pytest.approx(0.0, abs=1e-12)
    assert d["expected_cost_sampler"][0] == d["expected_cost_policy_lin"][0] == d["expected_cost_new"][0]
    assert d["expected_cost_sampler"][0] == pytest.approx(expected_cost(ctrl, dyn, cost), rel=1e-12)
    assert d["policy_lin_residual_var"] == pytest.approx(0.0, abs=1e-12)
    assert d["variance_sampler"] == pytest.approx(1.0)
    shift = np.array([0.3, -0.4])
    moved = LinearGaussianPolicy(ctrl.K.copy(), ctrl.k + shift, ctrl.pol_covar.copy())
    d = drift_diagnostics([ctrl], [moved], [ctrl], [dyn], [cost], pol_var)
    assert d["kl_sampler_policy_lin"][0] == pytest.approx(0.5 * float(shift @ shift), rel=1e-9)
    # a diverged estimate is reported as None (JSON has no Inf/NaN), not as a crash
    wild = LinearGaussianPolicy(ctrl.K * 1e200, ctrl.k, ctrl.pol_covar.copy())
    d = drift_diagnostics([ctrl], [wild], [ctrl], [dyn], [cost], pol_var)
    assert d["expected_cost_policy_lin"][0] is None and d["expected_cost_sampler"][0] is not None


def test_report_and_cli_draw_the_diagnostics(tiny_run, tmp_path, capsys):
    from gps_trainer.paper.diagnostics import main

    out, _ = tiny_run
    png = tmp_path / "d.png"
    assert main([str(out), "--out", str(png)]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("wrote")]
    assert len(lines) == 1 + 3 and "train_validation%" in lines[0]
    assert png.stat().st_size > 10_000


def test_validation_refuses_test_sets_and_bad_specs():
    from gps_trainer.procedure import parse_validation_sets, validation_hook

    assert parse_validation_sets(["validation", "visual_validation:8"]) == [("validation", None),
                                                                            ("visual_validation", 8)]
    for bad in ("validation:0", "validation:x", ":3", "validation:-2"):
        with pytest.raises(ValueError, match="--validate"):
            parse_validation_sets([bad])
    with pytest.raises(ValueError, match="test set"):
        validation_hook("reach", ["spatial_test"])
    with pytest.raises(ValueError, match="no condition set"):  # reach_grid has no train_validation
        validation_hook("reach_grid", ["validation", "train_validation"])
    # the out-of-distribution families (issue 24): the validation ones may steer, the test ones may not
    validation_hook("toy_hammer", ["train_validation", "ood_lighting_2_validation:4"])
    for test_family in ("ood_lighting_2_test", "ood_clutter_3_test"):
        with pytest.raises(ValueError, match="test set"):
            validation_hook("shape_sorting", ["ood_camera_1_validation", test_family])
    with pytest.raises(ValueError, match="no condition set"):
        validation_hook("reach", ["iterations=12"])
