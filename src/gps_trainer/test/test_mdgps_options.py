"""MDGPS options of issue 21, each on a tiny real run (MuJoCo, torch): sampling the global policy
(``sample_on_policy``)."""

from __future__ import annotations

import numpy as np
import pytest

from gps_core.tasks import repo_root
from gps_trainer.config import load_experiment
from gps_trainer.loop import GPSRun
from gps_trainer.sim_sampler import SimSampler

TINY = {"conditions": 2, "samples_per_condition": 3, "horizon": 10,
        "algorithm.dynamics.prior.max_clusters": 2, "algorithm.policy_prior.max_clusters": 2,
        "algorithm.policy_opt.iterations": 20, "algorithm.policy_opt.device": "cpu"}


def tiny_config(**over):
    return load_experiment(repo_root() / "config/experiments/reach_mdgps.yaml", {**TINY, **over})


class PolicyRecordingSampler(SimSampler):
    """The SimSampler, remembering the policy's variance whenever the policy is sampled."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.policy_samples: list[tuple[np.ndarray, list]] = []
        self.controller_samples = 0

    def sample(self, *args, **kwargs):
        self.controller_samples += 1
        return super().sample(*args, **kwargs)

    def sample_policy(self, iteration, policy, conditions, samples):
        batches = super().sample_policy(iteration, policy, conditions, samples)
        self.policy_samples.append((policy.variance().copy(), batches, policy))
        return batches


def test_on_policy_sampling_samples_the_global_policy_from_the_second_iteration(tmp_path):
    cfg = tiny_config(**{"algorithm.sample_on_policy": True})
    sampler = PolicyRecordingSampler(cfg.task, cfg.horizon, base_seed=cfg.seed)
    try:
        run = GPSRun(cfg, tmp_path / "run", sampler)
        rows = run.run(3)
        assert [r["sampled"] for r in rows] == ["local_controllers", "global_policy", "global_policy"]
        assert sampler.controller_samples == 1 and len(sampler.policy_samples) == 2
        var, batches, policy = sampler.policy_samples[0]
        assert [b.N for b in batches] == [3, 3] and [b.condition for b in batches] == [0, 1]
        # the policy's own noise: u_t = mu(x_t) + sqrt(pol_var) eps_t, eps seeded per trial, unsmoothed
        b = batches[0]
        assert np.all(np.abs(b.noise[:, :5]) > 0) and np.ptp(b.noise[0], axis=0).min() > 0
    finally:
        sampler.close()


def test_on_policy_actions_are_the_policys_mean_plus_its_scaled_noise(tmp_path):
    """Known answer on the sampler alone: a fixed policy, its rollouts' actions (before the torque clamp)
    equal mu(x_t) + sqrt(pol_var) eps_t with the recorded eps."""
    from gps_controller.policies import make_policy

    cfg = tiny_config()
    sampler = SimSampler(cfg.task, cfg.horizon, base_seed=7)
    try:
        policy = make_policy({"type": "mlp", "init_var": 0.05, "net": {"hidden": [8]}}, sampler.dX, sampler.dU,
                             seed=0)
        policy.observes = "state"
        batches = sampler.sample_policy(4, policy, 2, 2)
        again = sampler.sample_policy(4, policy, 2, 2)
        b = batches[1]
        mu, _ = policy.predict(b.X, None)
        expected = mu + np.sqrt(policy.variance()) * b.noise
        # float32 network: the batched and the per-step pass agree to float32 round-off, not bit for bit
        np.testing.assert_allclose(b.U, expected, rtol=1e-5, atol=1e-5)
        for x, y in zip(batches, again, strict=True):  # seeded per (iteration, condition, sample)
            np.testing.assert_array_equal(x.U, y.U)
            np.testing.assert_array_equal(x.noise, y.noise)
        other = sampler.sample_policy(5, policy, 2, 2)
        assert not np.array_equal(other[1].noise, b.noise)
    finally:
        sampler.close()


@pytest.mark.parametrize("bad", ["yes please", 3])
def test_sample_on_policy_is_a_boolean(bad):
    with pytest.raises(ValueError, match="sample_on_policy"):
        tiny_config(**{"algorithm.sample_on_policy": bad})


def test_s_step_history_trains_on_the_latest_iterations_with_their_own_targets(tmp_path):
    cfg = tiny_config(**{"algorithm.s_step_history": 2})
    sampler = SimSampler(cfg.task, cfg.horizon, base_seed=cfg.seed)
    try:
        run = GPSRun(cfg, tmp_path / "run", sampler)
        algo = run.algorithm
        per_iteration = cfg.conditions * cfg.samples_per_condition  # rollouts
        sizes, trained = [], []
        for _ in range(3):
            run.iteration()
            sizes.append(sum(len(d[0]) for d in algo.s_step_data))
            trained.append(algo.last_s_step.num_samples)
        # iteration 0: the catch-up S-step (not remembered) and its S-step; then 2 iterations' data at most
        assert sizes == [per_iteration, 2 * per_iteration, 2 * per_iteration]
        assert trained == [n * cfg.horizon for n in sizes]  # what the S-step actually trained on
        first_targets = [d[2] for d in algo.s_step_data]
        run.iteration()
        # the oldest entry dropped out; the kept one keeps the targets computed at its own iteration
        np.testing.assert_array_equal(algo.s_step_data[0][2], first_targets[1])
    finally:
        sampler.close()


def test_s_step_history_refuses_the_auxiliary_pose_loss():
    with pytest.raises(ValueError, match="s_step_history"):
        tiny_config(**{"algorithm.s_step_history": 3, "algorithm.policy_opt.aux_pose_weight": 1.0})
    with pytest.raises(ValueError, match="s_step_history"):
        tiny_config(**{"algorithm.s_step_history": 0})


@pytest.mark.parametrize("persistent", [False, True])
def test_a_persistent_optimizer_carries_adams_steps_through_the_iterations(tmp_path, persistent):
    """policy_opt.persistent_optimizer: the S-step's Adam state outlives the S-step (its step count adds up
    over the iterations' S-steps, the catch-up included); off, nothing is kept."""
    cfg = tiny_config(**{"algorithm.policy_opt.persistent_optimizer": persistent})
    sampler = SimSampler(cfg.task, cfg.horizon, base_seed=cfg.seed)
    try:
        run = GPSRun(cfg, tmp_path / "run", sampler)
        for _ in range(2):
            run.iteration()
        memory = run.algorithm.s_step_optimizer
        if not persistent:
            assert memory == {}
            return
        steps = cfg.algorithm.policy_opt_config().iterations
        s_steps = run.algorithm.s_step_count  # iteration 0's catch-up and its own, then one per iteration
        assert s_steps == 3
        assert {float(v) for k, v in memory.items() if k.endswith(".step")} == {3.0 * steps}
    finally:
        sampler.close()


@pytest.mark.parametrize("limit", [0.0, 10.0])
def test_a_diverged_laplace_estimate_leaves_the_step_multiplier_alone(tmp_path, limit):
    """algorithm.step_estimate_limit: last iteration's expected cost of the policy linearization made 1e17
    (a closed loop unstable under the fitted dynamics, as on toy_hammer): with the limit the multiplier
    stays and the iteration says why; without it (the reference's rule) the 1e17 rescales it. With sane
    estimates the limit changes nothing (the first two iterations, compared with the rule's own numbers)."""
    from gps_trainer.algorithms.mdgps import _MDGPSIterate

    cfg = tiny_config(**{"algorithm.step_estimate_limit": limit})
    sampler = SimSampler(cfg.task, cfg.horizon, base_seed=cfg.seed)
    try:
        run = GPSRun(cfg, tmp_path / "run", sampler)
        rows = [run.iteration() for _ in range(2)]
        assert [r["step_estimate_diverged"] for r in rows] == [False, False]
        mult = run.algorithm.step_mult
        run.algorithm._prev = [_MDGPSIterate(1e17, p.new_cost, p.sample_cost) for p in run.algorithm._prev]
        row = run.iteration()
        assert row["step_estimate_diverged"] == (limit > 0)
        if limit > 0:
            assert row["step_mult"] == mult
        else:
            assert row["step_mult"] != mult and row["actual_improvement"] > 1e16
    finally:
        sampler.close()


def test_the_estimate_limit_does_not_change_a_run_whose_estimates_are_sane(tmp_path):
    rows = {}
    for limit in (0.0, 1e6):
        cfg = tiny_config(**{"algorithm.step_estimate_limit": limit})
        sampler = SimSampler(cfg.task, cfg.horizon, base_seed=cfg.seed)
        try:
            run = GPSRun(cfg, tmp_path / f"run{limit}", sampler)
            rows[limit] = [run.iteration() for _ in range(3)]
        finally:
            sampler.close()
    assert [r["step_mult"] for r in rows[0.0]] == [r["step_mult"] for r in rows[1e6]]
    assert [r["cost_per_condition"] for r in rows[0.0]] == [r["cost_per_condition"] for r in rows[1e6]]


LOG_COST = [{"type": "action", "wu": 1.0e-3},
            {"type": "ee_points", "wp": 1.0, "l1": 0.1, "l2": 10.0, "alpha": 1.0e-5},
            {"type": "ee_points", "wp": 1.0, "l1": 1.0, "l2": 0.0, "l_log": 1.0, "alpha": 1.0e-5,
             "ramp": "final_only", "final_multiplier": 10.0}]


def _rows_and_cost_models(tmp_path, monkeypatch, name, **over):
    """Two iterations of a tiny run; the cost models every C-step received."""
    from gps_trainer.algorithms import mdgps

    seen = []

    def recording(cost, batches, hessian="exact"):
        models, sample_costs = local_cost_models(cost, batches, hessian)
        seen.append(models)
        return models, sample_costs

    local_cost_models = mdgps.local_cost_models
    monkeypatch.setattr(mdgps, "local_cost_models", recording)
    cfg = tiny_config(**over)
    sampler = SimSampler(cfg.task, cfg.horizon, base_seed=cfg.seed)
    try:
        run = GPSRun(cfg, tmp_path / name, sampler)
        return [run.iteration() for _ in range(2)], seen
    finally:
        sampler.close()
        monkeypatch.undo()


def test_psd_cost_hessians_leave_a_convex_cost_alone_and_make_the_log_terms_models_convex(tmp_path, monkeypatch):
    """algorithm.cost_hessian: reach's cost (quadratic and pseudo-Huber terms) is convex, so "psd" gives the
    same run as "exact", number for number; with a log term at the final step the exact models have
    negative curvature there and the C-step gets convex ones under "psd"."""
    rows = {h: _rows_and_cost_models(tmp_path, monkeypatch, h, **{"algorithm.cost_hessian": h})[0]
            for h in ("exact", "psd")}
    for key in ("step_mult", "cost_per_condition", "kl_per_condition"):
        assert [r[key] for r in rows["exact"]] == [r[key] for r in rows["psd"]], key
    curvature = {}
    for h in ("exact", "psd"):
        _, seen = _rows_and_cost_models(tmp_path, monkeypatch, f"log_{h}",
                                        **{"algorithm.cost_hessian": h, "algorithm.cost": LOG_COST})
        curvature[h] = min(np.linalg.eigvalsh(m.cm).min() / np.abs(np.linalg.eigvalsh(m.cm)).max()
                           for models in seen for m in models)
    assert curvature["exact"] < -1e-3 and curvature["psd"] >= -1e-12, curvature


def test_the_s_step_leaves_out_rollouts_whose_targets_leave_the_effort_limits(tmp_path, caplog):
    """s_step_within_limits: a rollout at one of whose states a target controller's mean action exceeds the
    robot's effort limits (here: one rollout's states pushed far off, where the linear controller's actions
    grow with the distance) is not trained on; the others are; every rollout out leaves them all in."""
    cfg = tiny_config(**{"algorithm.s_step_within_limits": True})
    sampler = SimSampler(cfg.task, cfg.horizon, base_seed=cfg.seed)
    try:
        run = GPSRun(cfg, tmp_path / "run", sampler)
        algo = run.algorithm
        np.testing.assert_array_equal(algo.action_limits, sampler.sim.effort_limits)
        row = run.iteration()
        assert row["s_step_rollouts_dropped"] == algo.s_step_dropped and len(algo.s_step_dropped) == 2
        batches = sampler.sample(1, algo.controllers, 3)
        batches = [type(b)(X=b.X[:, :cfg.horizon], U=b.U[:, :cfg.horizon], obs=b.obs[:, :cfg.horizon],
                           condition=b.condition) for b in batches]
        T = batches[0].T
        for b, c in zip(batches, algo.controllers, strict=True):  # every rollout within the limits as sampled
            assert np.all(np.abs(c.act_batch(b.X)) <= algo.action_limits)
        far = batches[1].X.copy()
        far[2] += 1e3 * np.sign(far[2] + 1e-12)
        batches[1] = type(batches[1])(X=far, U=batches[1].U, obs=batches[1].obs, condition=1)
        d = algo._s_step(batches, algo.controllers)
        assert algo.s_step_dropped == [0, 1] and d.num_samples == 5 * T
        far = batches[1].X.copy()
        far += 1e3 * np.sign(far + 1e-12)  # the last condition entirely out: its loss is None, not missing
        whole = [batches[0], type(batches[1])(X=far, U=batches[1].U, obs=batches[1].obs, condition=1)]
        d = algo._s_step(whole, algo.controllers)
        assert algo.s_step_dropped == [0, 3] and d.num_samples == 3 * T
        assert d.loss_before_per_group[0] is not None and d.loss_before_per_group[1] is None
        assert len(d.loss_after_per_group) == 2
        cfg_off = tiny_config()
        algo.config = cfg_off.algorithm  # the option off: every rollout
        d = algo._s_step(batches, algo.controllers)
        assert algo.s_step_dropped == [0, 0] and d.num_samples == 6 * T
        algo.config = cfg.algorithm
        algo.action_limits = np.full(sampler.dU, 1e-9)  # every rollout out: all stay in (and a warning)
        with caplog.at_level("WARNING"):
            d = algo._s_step(batches, algo.controllers)
        assert d.num_samples == 6 * T and "leave the effort limits" in caplog.text
        algo.action_limits = None
        with pytest.raises(ValueError, match="effort limits"):
            algo._s_step(batches, algo.controllers)
    finally:
        sampler.close()


def test_s_step_within_limits_needs_a_sampler_that_knows_the_limits(tmp_path):
    cfg = tiny_config(**{"algorithm.s_step_within_limits": True})
    sampler = SimSampler(cfg.task, cfg.horizon, base_seed=cfg.seed)
    try:
        sampler.action_limits = None  # as NodeSampler: the robots' controller nodes keep them
        with pytest.raises(ValueError, match="s_step_within_limits needs the robot's effort limits"):
            GPSRun(cfg, tmp_path / "run", sampler)
    finally:
        sampler.close()
