"""Algorithm "trajectory optimization only": config loading, one iteration on a toy linear system, and
the learning test on the simulator's reach task."""

from pathlib import Path

import numpy as np
import pytest

from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_trainer.algorithms.traj_opt_only import TrajOptOnly, initial_controllers
from gps_trainer.config import ExperimentConfig, TrajOptOnlyConfig, load_experiment
from gps_trainer.costs import ActionCost, CostSum, StateCost
from testing_helpers import point_mass_batch

ROOT = Path(__file__).resolve().parents[3]
REACH = ROOT / "config" / "experiments" / "reach_traj_opt.yaml"


def test_reach_config_loads_with_reference_defaults(tmp_path):
    cfg = load_experiment(REACH)
    assert isinstance(cfg, ExperimentConfig)
    assert (cfg.conditions, cfg.samples_per_condition, cfg.task) == (4, 5, "reach")
    t, d = cfg.algorithm.traj_opt, cfg.algorithm.dynamics
    assert (t.kl_step, t.min_step_mult, t.max_step_mult, t.init_eta) == (0.2, 0.01, 10.0, 1.0)
    assert (d.prior.max_clusters, d.prior.min_samples_per_cluster, d.prior.max_samples) == (20, 40, 20)
    assert d.regularization == 1e-6
    assert len(cfg.algorithm.init_controller.gains) == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm:\n  type: traj_opt\n  traj_opt:\n    kl_stepp: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: algorithm.traj_opt.kl_stepp: unknown key"):
        load_experiment(bad)


def test_iterations_reduce_cost_on_toy_system_within_kl_budget():
    rng = np.random.default_rng(0)
    T = 30
    cfg = TrajOptOnlyConfig()
    cfg.dynamics.prior.min_samples_per_cluster = 20
    cost = CostSum([ActionCost(0.01), StateCost(np.zeros(2), idx=slice(0, 2), l2=1.0)])
    init = LinearGaussianPolicy(np.zeros((T, 2, 4)), np.zeros((T, 2)), np.tile(0.5 * np.eye(2), (T, 1, 1)))
    alg = TrajOptOnly(cfg, [init, init.copy()], cost=cost, seed=0)
    costs = []
    for it in range(4):
        diags = alg.iteration([point_mass_batch(alg.policies[m], rng, condition=m) for m in range(2)])
        costs.append(np.mean([d.cost for d in diags]))
        for d in diags:
            assert d.converged and abs(d.kl - d.kl_target) < 0.1 * d.kl_target
            assert d.kl_target == pytest.approx(0.2 * d.step_mult * T)
            assert np.isnan(d.predicted_improvement) == (it == 0)
    assert costs[-1] < 0.5 * costs[0], costs
    assert set(alg.timings) == {"dynamics", "cost", "c_step"}
    assert alg.iteration_count == 4
    with pytest.raises(ValueError, match="2 conditions"):
        alg.iteration([point_mass_batch(alg.policies[0], rng)])


@pytest.mark.slow
def test_reach_learning_traj_opt_only(tmp_path):
    """4 conditions x 5 samples, from the initial LQR, through the GPS loop: every training condition's
    noise-free controller succeeds within 10 iterations."""
    from gps_trainer.config import load_experiment
    from gps_trainer.procedure import train_in_simulation
    from gps_trainer.sim_sampler import SimSampler

    cfg = load_experiment(REACH)
    sampler = SimSampler(cfg.task)
    try:
        init = [c for c in TrajOptOnly(cfg.algorithm, initial_controllers(
            cfg.algorithm, sampler.initial_states(range(cfg.conditions)), sampler.dU, sampler.T,
            sampler.task.control_dt)).controllers]
        before = sampler.evaluate(0, init, range(cfg.conditions))
    finally:
        sampler.close()
    from gps_core.layout import mean_ee_distance

    dist0 = [float(mean_ee_distance(b.X[0, -1])) for b in before]
    rows = train_in_simulation(cfg, tmp_path, stop_at_success=1.0).rows
    print("success per iteration:", [r["success"] for r in rows], "final distances:",
          [[round(d, 3) for d in r["final_distance"]] for r in rows])
    assert rows[0]["success_rate"] < 1.0 or len(rows) == 1
    assert rows[-1]["success_rate"] == 1.0, f"not all conditions succeed after {len(rows)} iterations: {rows[-1]}"
    assert len(rows) <= 10
    assert max(rows[-1]["final_distance"]) < min(dist0)
