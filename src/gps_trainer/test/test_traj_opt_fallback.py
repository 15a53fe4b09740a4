"""C-step robustness (issue 15's bottle_cap crash): the backward pass in deviation coordinates around the
previous controller, and the per-condition fallback to the previous controller when no eta <= max_eta
gives a valid answer, in kl_constrained_update, BADMM's C-step and the algorithms' metrics."""

import logging

import numpy as np
import pytest
import torch

from gps_controller.policies.neural import make_policy
from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_trainer.algorithms.badmm import badmm_c_step
from gps_trainer.algorithms.mdgps import MDGPS
from gps_trainer.algorithms.traj_opt_only import TrajOptOnly
from gps_trainer.config import MDGPSConfig, TrajOptOnlyConfig
from gps_trainer.costs import ActionCost, CostSum, StateCost
from gps_trainer.dynamics import LinearGaussianDynamics
from gps_trainer.loop import _iteration_metrics
from gps_trainer.traj_opt import (
    CostModel,
    TrajOptError,
    backward_pass,
    deviation_coordinates,
    kl_constrained_update,
)
from gps_trainer.traj_opt import random_problem as pr2_problem
from testing_helpers import load_traj_opt_v0, point_mass_batch


def _args(prev, Fm, fv, cm, cv):
    return tuple(a[None] for a in (prev.K, prev.k, prev.inv_pol_covar, Fm, fv, cm, cv))


def unstable_closed_loop(T=60, dX=4, dU=2, radius=1.6, seed=0):
    """Dynamics under which the previous controller's closed loop F_x + F_u K̄ is a scaled rotation
    (every eigenvalue of modulus ``radius`` > 1), large gains K̄ and a generic covariance: the case where
    round-off in the previous controller's term grows backwards in time by radius^2 per step."""
    rng = np.random.default_rng(seed)
    Fu = rng.standard_normal((T - 1, dX, dU))
    K = 20.0 * rng.standard_normal((T, dU, dX))
    A = radius * np.linalg.qr(rng.standard_normal((T - 1, dX, dX)))[0]
    Fm = np.concatenate([A - Fu @ K[:-1], Fu], axis=2)
    fv = rng.standard_normal((T - 1, dX))
    S = rng.standard_normal((T, dU, dU))
    prev = LinearGaussianPolicy(K, rng.standard_normal((T, dU)), S @ S.transpose(0, 2, 1) + 0.1 * np.eye(dU))
    dyn = LinearGaussianDynamics(Fm, fv, np.tile(1e-4 * np.eye(dX), (T - 1, 1, 1)), rng.standard_normal(dX),
                                 1e-4 * np.eye(dX))
    return prev, dyn


def concave_explosive(T=40, gain=3.0):
    """x' = gain x + u (1-D), a previous controller without feedback, a cost concave in x: near p̄ the
    value function falls like -gain^(2(T-t)) / eta, so Q_uu = P̄ + F_u^T V F_u is indefinite for every
    eta up to 1e16 (9^39 ~ 1e37): no valid C-step exists."""
    dyn = LinearGaussianDynamics(np.tile([[gain, 1.0]], (T - 1, 1, 1)), np.zeros((T - 1, 1)),
                                 np.tile([[1e-4]], (T - 1, 1, 1)), np.array([0.5]), np.array([[1e-4]]))
    cm = np.tile(np.diag([-1.0, 1e-3]), (T, 1, 1))
    cost = CostModel(np.zeros(T), np.tile([0.1, 0.0], (T, 1)), cm)
    prev = LinearGaussianPolicy(np.zeros((T, 1, 1)), np.full((T, 1), 0.2), np.full((T, 1, 1), 0.3))
    return prev, dyn, cost


def test_deviation_coordinates_are_a_change_of_variables():
    """l(z) - l'(z') is the same constant for every z, and F z + f = F' z' + f', with z' = [x; u - K̄x - k̄]."""
    prev, dyn, cost = pr2_problem(T=6, dX=5, dU=3, seed=1)
    dcm, dcv, dFm, dfv = deviation_coordinates(prev.K, prev.k, cost.cm, cost.cv, dyn.Fm, dyn.fv)
    rng = np.random.default_rng(0)
    dX = dyn.dX
    consts = []
    for _ in range(5):
        z = rng.standard_normal((6, 8))
        zd = z.copy()
        zd[:, dX:] -= np.einsum("tux,tx->tu", prev.K, z[:, :dX]) + prev.k
        lz = np.einsum("ti,ti->t", cost.cv, z) + 0.5 * np.einsum("ti,tij,tj->t", z, cost.cm, z)
        lzd = np.einsum("ti,ti->t", dcv, zd) + 0.5 * np.einsum("ti,tij,tj->t", zd, dcm, zd)
        consts.append(lz - lzd)
        np.testing.assert_allclose(np.einsum("tij,tj->ti", dyn.Fm, z[:-1]) + dyn.fv,
                                   np.einsum("tij,tj->ti", dFm, zd[:-1]) + dfv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(consts, np.broadcast_to(consts[0], (5, 6)), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dcm, dcm.transpose(0, 2, 1), atol=1e-12)


def test_previous_controller_term_is_exact_under_an_unstable_closed_loop():
    """With no cost the C-step's answer is the previous controller for every eta. In (x, u) coordinates
    (the former implementation) the term's round-off grows through the unstable closed loop until Q_uu
    tests indefinite (the bottle_cap crash); in deviation coordinates the answer is p̄ to round-off."""
    prev, dyn = unstable_closed_loop()
    T, dU, dX = prev.K.shape
    args = _args(prev, dyn.Fm, dyn.fv, np.zeros((T, dX + dU, dX + dU)), np.zeros((T, dX + dU)))
    old = load_traj_opt_v0().backward_pass(*args, np.array([1.0]))
    assert old[3][0] >= 0  # the failure this guards against: "not PD" where the exact answer is p̄
    for eta in (1e-3, 1.0, 1e8, 1e16):
        K, k, covar, failed = backward_pass(*args, np.array([eta]))
        assert failed[0] == -1
        np.testing.assert_allclose(K[0], prev.K, rtol=0, atol=1e-10 * np.abs(prev.K).max())
        np.testing.assert_allclose(k[0], prev.k, rtol=0, atol=1e-10)
        np.testing.assert_allclose(covar[0], prev.pol_covar, rtol=1e-10, atol=1e-12)


def test_large_eta_tends_to_the_previous_controller_with_a_cost():
    """KL(eta) falls towards 0 as eta grows on the unstable problem with a (convex) cost too, and every
    eta gives a PD Q_uu."""
    prev, dyn = unstable_closed_loop(T=30, radius=1.3, seed=2)
    _, _, cost = pr2_problem(T=30, dX=4, dU=2, seed=3)
    args = _args(prev, dyn.Fm, dyn.fv, cost.cm, cost.cv)
    dev = []
    for eta in 10.0 ** np.arange(0, 40, 4):
        K, _, _, failed = backward_pass(*args, np.array([eta]))
        assert failed[0] == -1
        dev.append(np.abs(K[0] - prev.K).max())
    assert dev[-1] < 1e-12 * np.abs(prev.K).max() and dev[-1] < dev[0]


def test_no_valid_eta_keeps_the_previous_controller_and_reports_it(caplog):
    """No eta up to max_eta makes Q_uu PD: that condition keeps its previous controller (KL 0, the
    warm-start eta kept), says where and at which eta, logs a warning; the other condition of the same
    batch is solved exactly as on its own."""
    prev, dyn, cost = concave_explosive()
    T = prev.T
    assert backward_pass(*_args(prev, dyn.Fm, dyn.fv, cost.cm, cost.cv), np.array([1e16]))[3][0] >= 0
    gprev, gdyn, gcost = concave_explosive(gain=0.9)
    gcost.cm[:] = np.diag([1.0, 1.0])  # convex and stable: a well-posed condition
    with caplog.at_level(logging.WARNING, logger="gps_trainer.traj_opt"):
        bad, good = kl_constrained_update([prev, gprev], [dyn, gdyn], [cost, gcost], kl_step=0.05, eta=[3.0, 1.0])
    assert bad.fallback is not None and "not positive definite at t=" in bad.fallback and "1e+16" in bad.fallback
    assert not bad.converged and bad.kl == 0.0 and bad.eta == 3.0
    np.testing.assert_array_equal(bad.policy.K, prev.K)
    np.testing.assert_array_equal(bad.policy.k, prev.k)
    np.testing.assert_array_equal(bad.policy.pol_covar, prev.pol_covar)
    assert bad.policy is not prev
    assert any("condition 0" in r.message and "keeping its previous controller" in r.message for r in caplog.records)
    alone = kl_constrained_update([gprev], [gdyn], [gcost], kl_step=0.05, eta=1.0)[0]
    assert good.fallback is None and good.converged and abs(good.kl - 0.05 * T) < 0.1 * 0.05 * T
    # alone against in a batch of 2: float64 rounding grown through the recursion, not bit-equality (numpy
    # may loop or block a stack differently); a condition that saw the other would differ at O(1)
    np.testing.assert_allclose(good.policy.K, alone.policy.K, rtol=1e-9, atol=1e-12 * np.abs(alone.policy.K).max())


def test_kl_bound_out_of_reach_at_max_eta_falls_back():
    """The bottle_cap case after the fix: every eta is valid but the KL at max_eta is still above the
    target; the search tries max_eta itself, then keeps the previous controller instead of returning one
    far outside the trust region."""
    rng = np.random.default_rng(4)
    prev, dyn, cost = pr2_problem(T=20, dX=4, dU=2, seed=4)
    cost.cv[:] = 100.0 * rng.standard_normal(cost.cv.shape)
    r = kl_constrained_update([prev], [dyn], [cost], kl_step=0.01, eta=1e-3, max_eta=1.0)[0]
    assert r.fallback is not None and "still above the target" in r.fallback and "eta = 1" in r.fallback
    assert r.kl == 0.0 and r.iterations <= 5  # 1e-3 -> 1e-2 -> 1 (max_eta), then stop
    np.testing.assert_array_equal(r.policy.K, prev.K)
    loose = kl_constrained_update([prev], [dyn], [cost], kl_step=0.01, eta=1e-3)[0]
    assert loose.fallback is None and loose.converged  # the default range holds the answer


@pytest.mark.parametrize("where", ["Fm", "fv", "cm", "cv", "dyn_covar"])
def test_non_finite_inputs_still_raise(where):
    prev, dyn, cost = pr2_problem(T=10, dX=4, dU=2, seed=6)
    arr = {"Fm": dyn.Fm, "fv": dyn.fv, "cm": cost.cm, "cv": cost.cv, "dyn_covar": dyn.dyn_covar}[where]
    arr.flat[7] = np.inf if where == "fv" else np.nan
    with pytest.raises(TrajOptError, match="NaN/Inf"):
        kl_constrained_update([prev], [dyn], [cost], kl_step=0.2)
    if where != "dyn_covar":
        with pytest.raises(TrajOptError, match="NaN/Inf"):
            badmm_c_step(prev, prev, np.ones(10), np.zeros((10, 2, 4)), np.zeros((10, 2)), dyn, cost, 1.0, 1.0)


def test_badmm_c_step_keeps_the_previous_controller_when_no_eta_is_valid(caplog):
    prev, dyn, cost = concave_explosive()
    T = prev.T
    with caplog.at_level(logging.WARNING, logger="gps_trainer.algorithms.badmm"):
        r = badmm_c_step(prev, prev, np.full(T, 0.01), np.zeros((T, 1, 1)), np.zeros((T, 1)), dyn, cost,
                         kl_target=1.0, eta=2.0)
    assert r.fallback is not None and "not positive definite" in r.fallback
    assert r.kl == 0.0 and r.eta == 2.0 and not r.converged
    np.testing.assert_array_equal(r.policy.K, prev.K)
    assert any("keeping the previous controller" in rec.message for rec in caplog.records)


def test_badmm_c_step_tends_to_the_previous_controller_under_an_unstable_closed_loop():
    """With no cost and no policy weight BADMM's C-step is the previous controller (the same deviation
    coordinates as the trajectory library)."""
    prev, dyn = unstable_closed_loop(T=40)
    T, dU, dX = prev.K.shape
    cost = CostModel(np.zeros(T), np.zeros((T, dX + dU)), np.zeros((T, dX + dU, dX + dU)))
    r = badmm_c_step(prev, prev, np.zeros(T), np.zeros((T, dU, dX)), np.zeros((T, dU)), dyn, cost, 1.0, 1.0)
    assert r.fallback is None
    np.testing.assert_allclose(r.policy.K, prev.K, rtol=0, atol=1e-10 * np.abs(prev.K).max())


# --------------------------------------------------------------------------- the algorithms record it


def _fallback_config(cfg):
    """A KL bound out of reach: max_eta so small that the cost dominates the surrogate at every eta."""
    cfg.dynamics.prior.min_samples_per_cluster = 20
    cfg.traj_opt.kl_step = 1e-4
    cfg.traj_opt.init_eta = 1e-6
    cfg.traj_opt.max_eta = 1e-5
    return cfg


def test_traj_opt_only_iteration_records_fallbacks_in_its_metrics():
    rng = np.random.default_rng(0)
    T = 20
    cost = CostSum([ActionCost(0.01), StateCost(np.zeros(2), idx=slice(0, 2), l2=1.0)])
    init = LinearGaussianPolicy(np.zeros((T, 2, 4)), np.zeros((T, 2)), np.tile(0.5 * np.eye(2), (T, 1, 1)))
    alg = TrajOptOnly(_fallback_config(TrajOptOnlyConfig()), [init, init.copy()], cost=cost, seed=0)
    before = [p.copy() for p in alg.policies]
    diags = alg.iteration([point_mass_batch(alg.policies[m], rng, T=20, condition=m) for m in range(2)])
    assert [d.fallback for d in diags] == [True, True]
    for p, b in zip(alg.policies, before, strict=True):
        np.testing.assert_array_equal(p.K, b.K)
        np.testing.assert_array_equal(p.k, b.k)
    np.testing.assert_array_equal(alg.eta, [1e-6, 1e-6])  # the warm start is kept
    assert _iteration_metrics(alg, diags)["c_step_fallbacks"] == 2


def test_mdgps_iteration_keeps_the_sampling_controller_on_a_fallback():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    T = 20
    cfg = _fallback_config(MDGPSConfig())
    cfg.policy_opt = {"iterations": 20, "device": "cpu"}
    cfg.policy_prior.min_samples_per_cluster = 20
    cost = CostSum([ActionCost(0.01), StateCost(np.zeros(2), idx=slice(0, 2), l2=1.0)])
    init = LinearGaussianPolicy(np.zeros((T, 2, 4)), np.zeros((T, 2)), np.tile(0.5 * np.eye(2), (T, 1, 1)))
    policy = make_policy(cfg.policy, 4, 2, seed=0)
    alg = MDGPS(cfg, [init, init.copy()], policy, cost=cost, seed=0)
    out = alg.iteration([point_mass_batch(alg.controllers[m], rng, T=20, condition=m) for m in range(2)])
    assert [d.fallback for d in out.conditions] == [True, True]
    assert out.as_metrics()["c_step_fallbacks"] == 2
    for c in alg.controllers:  # the controllers that sampled, not the policy linearization
        np.testing.assert_array_equal(c.K, init.K)
        np.testing.assert_array_equal(c.pol_covar, init.pol_covar)
    assert all(np.isfinite(d.kl) and d.kl > 0 for d in out.conditions)  # their KL to pi_lin, reported
