"""SimSampler's rollouts over worker processes equal the one-process rollouts bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gps_controller.policies import make_policy
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_trainer.sim_sampler import SimSampler

TINY_CNN = {"type": "visuomotor_cnn", "init_var": 0.1,
            "net": {"image_height": 16, "image_width": 16, "conv_filters": [4, 4, 4], "conv_kernels": [3, 3, 3],
                    "conv_strides": [2, 1, 1], "fc_hidden": [8]}}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the workers' thread count: equality holds against a one-thread process


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.condition == y.condition
        for name in ("X", "U", "obs", "noise", "ee_jacobians", "images"):
            u, v = getattr(x, name), getattr(y, name)
            assert (u is None) == (v is None), name
            if u is not None:
                assert u.dtype == v.dtype and u.shape == v.shape, name
                np.testing.assert_array_equal(u, v, err_msg=name)


def test_rollouts_in_two_workers_equal_one_process():
    """Two conditions x 3 noisy rollouts of linear-Gaussian controllers (smoothed noise), then of a tiny CNN
    policy with its own noise, images recorded: the same arrays from workers=1 and workers=2. In the workers
    the rollouts of a condition run on different simulators, after other rollouts than in the single
    process: state left behind by a reset, or a seed taken from the order, would show."""
    rng = np.random.default_rng(0)
    T = 6
    ctrls = [LinearGaussianPolicy(rng.normal(0, 0.05, (T, 7, 32)), rng.normal(0, 1.0, (T, 7)),
                                  np.tile(0.5 * np.eye(7), (T, 1, 1)), noise_smoothing_std=1.0) for _ in range(2)]
    cnn = make_policy(TINY_CNN, 32, 7, seed=1)
    cnn.observes = "observation"
    out = {}
    for workers in (1, 2):
        sampler = SimSampler("reach", T, image_size=16, record_images=True, base_seed=5, workers=workers)
        try:
            out[workers] = (sampler.sample(3, ctrls, 3), sampler.sample_policy(4, cnn, 2, 3),
                            sampler.sample(3, ctrls, 3))  # the pool again, after a policy's rollouts
        finally:
            sampler.close()
    for one, two in zip(out[1], out[2], strict=True):
        _assert_same(one, two)
    ctrl_batches = out[1][0]
    assert ctrl_batches[0].X.shape == (3, T + 1, 32) and ctrl_batches[0].images.shape == (3, T + 1, 16, 16, 3)
    assert not np.array_equal(ctrl_batches[0].U[0], ctrl_batches[0].U[1])  # the rollouts differ
    _assert_same(out[1][0], out[1][2])


def test_workers_refuse_bad_counts_and_a_given_sim():
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            SimSampler("reach", 4, workers=bad)
    from gps_sim import ArmSim

    sim = ArmSim("reach")
    try:
        with pytest.raises(ValueError, match="pass sim only with workers=1"):
            SimSampler("reach", 4, sim=sim, workers=2)
    finally:
        sim.close()


def test_a_gps_run_with_sampler_workers_equals_the_one_process_run(tmp_path):
    """Two tiny MDGPS iterations (state policy) through train_in_simulation: every metrics row (timings
    aside), the controllers and the policy's weights equal with sampler_workers=2 and 1."""
    import json
    from pathlib import Path

    from gps_trainer.config import load_experiment
    from gps_trainer.procedure import train_in_simulation

    exp = Path(__file__).resolve().parents[3] / "config" / "experiments" / "reach_mdgps.yaml"
    cfg = load_experiment(exp, {"conditions": 2, "samples_per_condition": 2, "horizon": 8, "iterations": 2,
                                "algorithm.dynamics.prior.max_clusters": 2, "algorithm.policy_prior.max_clusters": 2,
                                "algorithm.policy_opt.iterations": 5, "algorithm.policy_opt.device": "cpu"})
    runs = {w: train_in_simulation(cfg, tmp_path / f"w{w}", sampler_workers=w) for w in (1, 2)}
    strip = lambda row: json.dumps({k: v for k, v in row.items() if not k.endswith("_s")}, sort_keys=True)  # noqa: E731
    assert [strip(r) for r in runs[1].rows] == [strip(r) for r in runs[2].rows]
    for a, b in zip(runs[1].controllers, runs[2].controllers, strict=True):
        np.testing.assert_array_equal(a.K, b.K)
        np.testing.assert_array_equal(a.k, b.k)
    for (name, p), (_, q) in zip(runs[1].policy.state_dict().items(), runs[2].policy.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
