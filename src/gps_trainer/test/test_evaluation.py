"""Policy evaluation (Table I style): Wilson intervals, per-set success counting, determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gps_controller.policies import make_policy
from gps_trainer.paper.evaluation import evaluate_policy, format_table, wilson_interval


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# Closed form, z = 1.96: 0/10 -> [0, z^2/(n+z^2)], 10/10 -> [n/(n+z^2), 1], 5/10 -> 0.5 +- 0.2634104,
# 1/4 -> 0.372475 +- 0.326889 (worked by hand from the score-interval formula).
@pytest.mark.parametrize("k, n, low, high", [
    (0, 10, 0.0, 3.8416 / 13.8416),
    (10, 10, 10 / 13.8416, 1.0),
    (5, 10, 0.2365896, 0.7634104),
    (1, 4, 0.0455861, 0.6993639),
])
def test_wilson_interval_known_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-6)
    assert hi == pytest.approx(high, abs=1e-6)


def test_wilson_interval_edges_and_errors():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo90, hi90 = wilson_interval(3, 10, z=1.645)
    lo95, hi95 = wilson_interval(3, 10)
    assert lo95 < lo90 < 0.3 < hi90 < hi95  # wider for a higher confidence
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)


class _ScriptedSim:
    """Stands in for ArmSim: success decided by (set, condition) to check the bookkeeping."""

    dX = dO = 32
    effort_limits = np.full(7, 10.0)

    def __init__(self, task):
        self.task = task
        self.cur = None

    def num_conditions(self, cset):
        return self.task.num_conditions(cset)

    def reset(self, m, seed=0, condition_set="train"):
        self.cur = (condition_set, m)
        return type("O", (), {"config": np.zeros(32), "image": None})()

    def step(self, u):
        return type("O", (), {"config": np.zeros(32), "image": None})()

    def state(self):
        return np.zeros(32)

    def is_success(self):
        cset, m = self.cur
        return cset == "train" or (cset == "spatial_test" and m == 0)

    def mean_distance(self):
        return 0.01


def test_success_counting_and_intervals_per_set():
    from gps_core.tasks import load_task

    pol = make_policy({"type": "mlp", "net": {"hidden": [8]}}, 32, 7, seed=0)
    task = load_task("reach")
    res = evaluate_policy(pol, "reach", ("train", "spatial_test", "visual_test"), trials_per_set=40, seed=0,
                          horizon=2, sim=_ScriptedSim(task))
    tr, sp, vi = res.sets["train"], res.sets["spatial_test"], res.sets["visual_test"]
    n_sp = task.num_conditions("spatial_test")
    assert (tr.successes, sp.successes, vi.successes) == (40, 2, 0)  # spatial: 36 conditions cycled, cond 0 twice
    assert sp.conditions == [i % n_sp for i in range(40)]
    assert sp.rate == pytest.approx(2 / 40)
    assert (sp.ci_low, sp.ci_high) == pytest.approx(wilson_interval(2, 40))
    # distinct situations: the unperturbed train set repeats its 4; on the spatial test the 4 repeated
    # positions start from other perturbations; each visual-test trial is its own distractor scene
    assert (tr.situations, sp.situations, vi.situations) == (4, 40, 40)
    assert "2/40" in format_table(res)
    # default trial counts: the task's (the paper's 27 / 36 / 40 on the Table I sets)
    res = evaluate_policy(pol, "reach", seed=0, horizon=1, sim=_ScriptedSim(task))
    assert list(res.sets) == ["train_perturbed", "spatial_test", "visual_test"] and res.trials_per_set is None
    assert [s.trials for s in res.sets.values()] == [27, 36, 40]
    assert [s.situations for s in res.sets.values()] == [27, 36, 40]


def test_a_set_the_task_lacks_fails_before_any_trial():
    """`gps eval --sets validation visual_validation train_validation` on toy_hammer (then without
    train_validation) ran the first two sets for 7 minutes, then failed. (reach_grid has no train_validation.)"""
    from gps_core.tasks import load_task

    pol = make_policy({"type": "mlp", "net": {"hidden": [8]}}, 32, 7, seed=0)
    sim = _ScriptedSim(load_task("reach_grid"))
    sim.reset = None  # any trial would fail with a TypeError instead of the errors below
    with pytest.raises(ValueError, match="no 'train_validation' conditions"):
        evaluate_policy(pol, "reach_grid", ("train", "validation", "train_validation"), trials_per_set=2,
                        horizon=2, sim=sim)
    with pytest.raises(KeyError, match="unknown condition set 'no_such_set'"):
        evaluate_policy(pol, "reach_grid", ("train", "no_such_set"), trials_per_set=2, horizon=2, sim=sim)


def test_evaluation_is_deterministic_and_sets_differ(tmp_path):
    pol = make_policy({"type": "mlp", "init_var": 0.1, "net": {"hidden": [16]}}, 32, 7, seed=3)
    kw = dict(trials_per_set=3, seed=5, horizon=12)
    a = evaluate_policy(pol, "reach", **kw).to_dict()
    b = evaluate_policy(pol, "reach", **kw).to_dict()
    assert a == b
    c = evaluate_policy(pol, "reach", trials_per_set=3, seed=6, horizon=12).to_dict()
    assert c["sets"]["visual_test"]["reset_seeds"] != a["sets"]["visual_test"]["reset_seeds"]
    tr = np.array(a["sets"]["train_perturbed"]["initial_target_positions"])
    sp = np.array(a["sets"]["spatial_test"]["initial_target_positions"])
    assert np.min(np.linalg.norm(tr[:, None] - sp[None], axis=-1)) > 0.01  # new positions on the spatial test
    # the policy moved the arm differently from different targets
    assert len({round(d, 6) for d in a["sets"]["train_perturbed"]["final_distance"]}) == 3
    assert all(math.isfinite(d) for s in a["sets"].values() for d in s["final_distance"])
    from gps_trainer.paper.evaluation import EvalResult  # noqa: F401

    path = evaluate_policy(pol, "reach", condition_sets=("train",), trials_per_set=1, horizon=3).write_json(
        tmp_path / "e.json", {"method": "x"})
    d = json.loads(path.read_text())
    assert d["method"] == "x" and set(d["sets"]) == {"train"} and d["sets"]["train"]["trials"] == 1


def test_a_sets_trials_do_not_depend_on_the_other_sets_of_the_call():
    # the in-run validation (one set per call) and `gps eval --sets a b` must draw the same situations
    pol = make_policy({"type": "mlp", "init_var": 0.1, "net": {"hidden": [16]}}, 32, 7, seed=3)
    kw = dict(trials_per_set=3, seed=5, horizon=6)
    both = evaluate_policy(pol, "reach", ("train_perturbed", "visual_test"), **kw).to_dict()["sets"]
    alone = evaluate_policy(pol, "reach", ("visual_test",), **kw).to_dict()["sets"]
    swapped = evaluate_policy(pol, "reach", ("visual_test", "train_perturbed"), **kw).to_dict()["sets"]
    assert alone["visual_test"] == both["visual_test"] == swapped["visual_test"]
    assert swapped["train_perturbed"] == both["train_perturbed"]
    # ... while sets still draw apart from each other
    assert both["visual_test"]["reset_seeds"] != both["train_perturbed"]["reset_seeds"]


def test_eval_cli_writes_json(tmp_path, capsys):
    from gps_controller.policies import save_policy
    from gps_trainer.cli import main

    pol = make_policy({"type": "mlp", "net": {"hidden": [8]}}, 32, 7, seed=0)
    save_policy(pol, tmp_path / "policy.safetensors")
    rc = main(["eval", "--policy", str(tmp_path / "policy.safetensors"), "--trials", "1", "--sets", "train",
               "spatial_test", "--out", str(tmp_path / "eval.json"), "--method", "end_to_end"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "spatial_test" in out and "visual_test" not in out
    d = json.loads((tmp_path / "eval.json").read_text())
    assert d["method"] == "end_to_end" and d["command"].startswith("gps eval --policy")
    assert d["policy_obs"] == "state"


TINY_CNN = {"type": "visuomotor_cnn", "init_var": 0.1,
            "net": {"image_height": 16, "image_width": 16, "conv_filters": [4, 4, 4], "conv_kernels": [3, 3, 3],
                    "conv_strides": [2, 1, 1], "fc_hidden": [8]}}


def test_trials_over_worker_processes_equal_one_process(tmp_path):
    """workers=2 (spawned processes, each its own rendering ArmSim and one torch thread) gives the one-process
    result bit for bit: per trial success, final distance (exact floats), condition, reset seed. The
    workers take trials in another order than the single process, so a reset that left state behind
    (scene, arm, renderer) or a policy with state between calls would show here."""
    from gps_controller.policies import save_policy

    cnn = make_policy(TINY_CNN, 32, 7, seed=2)
    with torch.no_grad():  # an untrained head acts near zero; larger outputs move the arm differently per trial
        for p in cnn.net.parameters():
            p.mul_(4.0)
    path = tmp_path / "policy.safetensors"
    save_policy(cnn, path)
    kw = dict(task="reach", condition_sets=("train_perturbed", "visual_test"), trials_per_set=5, seed=7,
              horizon=6, joint_limit_margin=0.05)
    one = evaluate_policy(path, workers=1, **kw)
    two = evaluate_policy(path, workers=2, **kw)
    assert one.to_dict() == two.to_dict()
    dists = [d for s in one.sets.values() for d in s.final_distance]
    assert len(dists) == 10 and len(set(dists)) == 10  # every trial its own situation and outcome
    assert one.sets["visual_test"].reset_seeds == two.sets["visual_test"].reset_seeds
    # an in-memory policy travels to the workers with its weights
    assert evaluate_policy(cnn, workers=2, **kw).sets == evaluate_policy(cnn, workers=1, **kw).sets


def test_workers_refuse_bad_counts_and_a_given_sim():
    from gps_core.tasks import load_task

    pol = make_policy({"type": "mlp", "net": {"hidden": [8]}}, 32, 7, seed=0)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            evaluate_policy(pol, "reach", ("train",), trials_per_set=1, horizon=1, workers=bad)
    with pytest.raises(ValueError, match="pass sim only with workers=1"):
        evaluate_policy(pol, "reach", ("train",), trials_per_set=1, horizon=1, workers=2,
                        sim=_ScriptedSim(load_task("reach")))


def test_eval_cli_workers(tmp_path, capsys):
    from gps_controller.policies import save_policy
    from gps_trainer.cli import main

    pol = make_policy({"type": "mlp", "net": {"hidden": [8]}}, 32, 7, seed=0)
    save_policy(pol, tmp_path / "policy.safetensors")
    args = ["eval", "--policy", str(tmp_path / "policy.safetensors"), "--trials", "2", "--sets", "train_perturbed"]
    for bad, why in (("0", "must be between 1 and 64"), ("two", "expected an integer")):
        with pytest.raises(SystemExit):
            main([*args, "--workers", bad])
        assert f"--workers: {why}" in capsys.readouterr().err
    for extra in (["--workers", "2"], ["--pose-regressor", str(tmp_path / "vision.safetensors")]):
        assert main([*args, *extra, "--through-nodes"]) == 2
        assert "--pose-regressor run on the simulation API only (drop --through-nodes)" in capsys.readouterr().err
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "two.json")]) == 0
    assert main([*args, "--out", str(tmp_path / "one.json")]) == 0
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["sets"] == two["sets"]
