"""Costs: analytic gradients/Hessians against finite differences; ramps; sums; quadratic model."""

import re

import numpy as np
import pytest

from gps_trainer.costs import (
    ActionCost,
    CostSum,
    EEPointCost,
    StateCost,
    cost_from_config,
    psd_cost_model,
    quadratic_cost_model,
    ramp_multiplier,
)

T, dX, dU, H = 6, 32, 7, 1e-5


def _traj(rng, N=2):
    X = rng.standard_normal((N, T, dX)) * 0.3
    U = rng.standard_normal((N, T, dU))
    J = rng.standard_normal((N, T, 9, 7))
    return X, U, J


def _fd_check(cost, X, U, J):
    """Central differences of l (gradient) and of the analytic gradient (Hessian), per coordinate."""
    e = cost.eval(X, U, J)
    for i in range(dX):
        d = np.zeros(dX)
        d[i] = H
        ep, em = cost.eval(X + d, U, J), cost.eval(X - d, U, J)
        np.testing.assert_allclose((ep.l - em.l) / (2 * H), e.lx[..., i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose((ep.lx - em.lx) / (2 * H), e.lxx[..., :, i], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose((ep.lu - em.lu) / (2 * H), e.lux[..., :, i], rtol=1e-4, atol=1e-5)
    for i in range(dU):
        d = np.zeros(dU)
        d[i] = H
        ep, em = cost.eval(X, U + d, J), cost.eval(X, U - d, J)
        np.testing.assert_allclose((ep.l - em.l) / (2 * H), e.lu[..., i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose((ep.lu - em.lu) / (2 * H), e.luu[..., :, i], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(e.lxx, e.lxx.swapaxes(-1, -2), atol=1e-12)
    return e


def test_action_cost_matches_finite_differences():
    X, U, J = _traj(np.random.default_rng(0))
    e = _fd_check(ActionCost(np.linspace(0.1, 1.0, dU), ramp="linear"), X, U, J)
    assert np.all(e.l >= 0) and np.any(e.luu != 0)


@pytest.mark.parametrize("ramp", ["constant", "quadratic", "final_only"])
def test_state_cost_matches_finite_differences(ramp):
    rng = np.random.default_rng(1)
    X, U, J = _traj(rng)
    cost = StateCost(target=rng.standard_normal(7), idx=slice(0, 7), wp=np.linspace(0.5, 2, 7), l1=0.3, l2=2.0,
                     l_log=0.5, alpha=1e-2, ramp=ramp, final_multiplier=3.0)
    e = _fd_check(cost, X, U, J)
    assert np.all(e.lx[..., 7:] == 0)


def test_state_cost_step_window_matches_finite_differences_and_is_zero_outside():
    """steps = [1, -2] (negative counts from T, as EEWaypointCost): the full cost on steps 1..T-3, zero on the
    others, derivatives still match finite differences (the bottle task's wrist spin after the descent)."""
    rng = np.random.default_rng(5)
    X, U, J = _traj(rng)
    kw = dict(target=np.array([2.0]), idx=slice(13, 14), wp=0.5, l1=0.2, l2=1.0, l_log=0.3, alpha=1e-2,
              ramp="linear", final_multiplier=2.0)
    full = StateCost(**kw).eval(X, U, J)
    cost = cost_from_config({"type": "state", "steps": [1, -2], **kw})
    assert isinstance(cost, StateCost) and cost.steps == (1, -2)
    e = _fd_check(cost, X, U, J)
    inside = np.zeros(T, bool)
    inside[1:T - 2] = True
    for a, b in zip(e, full, strict=True):
        np.testing.assert_allclose(a[:, inside], b[:, inside])
        assert not np.any(a[:, ~inside])
    assert np.all(e.l[:, inside] > 0)
    for bad in ([1, 2, 3], [1.5, 4], "1:4", 3):
        with pytest.raises(ValueError, match=r"StateCost: steps .*steps=" + re.escape(repr(bad))):
            cost_from_config({"type": "state", "steps": bad, **kw})


def test_ee_point_cost_on_state_matches_finite_differences():
    X, U, J = _traj(np.random.default_rng(2))
    cost = EEPointCost(wp=np.linspace(0.5, 1.5, 9), l1=0.1, l2=10.0, l_log=1.0, alpha=1e-5, map_to_joints=False)
    _fd_check(cost, X, U, J)


def test_ee_point_cost_maps_to_joints_through_jacobian():
    """With ee = J q + c (linear kinematics, so J^T p'' J is the exact Hessian) derivatives w.r.t. q
    match finite differences of l(q)."""
    rng = np.random.default_rng(3)
    X, U, J = _traj(rng)
    c = rng.standard_normal((2, T, 9)) * 0.2
    q0 = rng.standard_normal((2, T, 7)) * 0.1
    cost = EEPointCost(wp=1.0, l1=0.1, l2=10.0, l_log=1.0, alpha=1e-5, ramp="constant", final_multiplier=10.0)

    def state(q):
        Y = X.copy()
        Y[..., :7] = q
        Y[..., 14:23] = np.einsum("ntej,ntj->nte", J, q) + c
        return Y

    e = cost.eval(state(q0), U, J)
    assert np.all(e.lx[..., 7:] == 0)
    for i in range(7):
        d = np.zeros(7)
        d[i] = H
        ep, em = cost.eval(state(q0 + d), U, J), cost.eval(state(q0 - d), U, J)
        np.testing.assert_allclose((ep.l - em.l) / (2 * H), e.lx[..., i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose((ep.lx[..., :7] - em.lx[..., :7]) / (2 * H), e.lxx[..., :7, i], rtol=1e-4,
                                   atol=1e-4)
    with pytest.raises(ValueError, match="ee_jacobians"):
        cost.eval(X, U, None)


def test_ramps():
    np.testing.assert_allclose(ramp_multiplier("constant", 4, 2.0), [1, 1, 1, 2])
    np.testing.assert_allclose(ramp_multiplier("linear", 4), [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(ramp_multiplier("quadratic", 2, 3.0), [0.25, 3.0])
    np.testing.assert_allclose(ramp_multiplier("final_only", 3, 10.0), [0, 0, 10.0])
    with pytest.raises(ValueError, match="unknown ramp"):
        ramp_multiplier("cubic", 3)


def test_cost_sum_and_config_and_quadratic_model():
    rng = np.random.default_rng(4)
    X, U, J = _traj(rng)
    spec = [{"type": "action", "wu": 0.1, "weight": 2.0},
            {"type": "ee_points", "l1": 0.1, "l2": 10.0, "alpha": 1e-5, "map_to_joints": False},
            {"type": "ee_points", "l1": 1.0, "l2": 0.0, "ramp": "final_only", "final_multiplier": 10.0,
             "map_to_joints": False}]
    cost = cost_from_config(spec)
    assert isinstance(cost, CostSum)
    e = _fd_check(cost, X, U, J)
    a = ActionCost(0.1).eval(X, U)
    np.testing.assert_allclose(e.luu, 2 * a.luu)
    # For a purely quadratic cost the absolute-coordinate model reproduces l exactly at any z.
    q = CostSum([ActionCost(0.3), StateCost(np.ones(7), idx=slice(0, 7), l2=2.0)])
    cc, cv, cm = quadratic_cost_model(q.eval(X, U), X, U)
    Z = rng.standard_normal((T, dX + dU))
    model = cc + np.einsum("ti,ti->t", cv, Z) + 0.5 * np.einsum("ti,tij,tj->t", Z, cm, Z)
    np.testing.assert_allclose(model, q.eval(Z[None, :, :dX], Z[None, :, dX:]).l[0], rtol=1e-10)
    with pytest.raises(ValueError, match="unknown"):
        cost_from_config({"type": "torque"})


def test_psd_cost_model_known_answer():
    """cm = diag(2, -3) at the mean z = (1, 1): cm' = diag(2, 0), cv' = (cm - cm') z = (0, -3),
    cc' = -0.5 z^T (cm - cm') z = 1.5; the model's value (-0.5) and gradient (2, -3) at z are kept."""
    cc, cv, cm = np.zeros(1), np.zeros((1, 2)), np.diag([2.0, -3.0])[None]
    z = np.ones((1, 2))
    cc2, cv2, cm2 = psd_cost_model(cc, cv, cm, z)
    np.testing.assert_allclose(cm2[0], np.diag([2.0, 0.0]), atol=1e-15)
    np.testing.assert_allclose(cv2[0], [0.0, -3.0], atol=1e-15)
    np.testing.assert_allclose(cc2, [1.5], atol=1e-15)
    assert cm[0, 1, 1] == -3.0  # the inputs are not modified


def test_psd_cost_model_of_the_log_term_keeps_value_and_gradient_at_the_mean():
    """The log penalty is concave beyond sqrt(alpha) of its target: its sample-averaged model has negative
    curvature there, the projected one none; value and gradient at the samples' mean are the same, and a
    step whose model is already convex (the action cost alone) is returned bit for bit."""
    rng = np.random.default_rng(7)
    N = 20
    X = np.zeros((N, T, dX))
    X[..., 14:23] = 0.05 + 0.01 * rng.standard_normal((N, T, 9))  # EE points 5 cm from their targets
    U = rng.standard_normal((N, T, dU))
    log_cost = EEPointCost(l1=0.0, l2=0.0, l_log=1.0, alpha=1e-5, map_to_joints=False)
    window = np.r_[np.zeros(T - 2), np.ones(2)]  # the log term on the last two steps only
    e = log_cost.eval(X, U)
    e = type(e)(e.l * window, e.lx * window[:, None], e.lu, e.lxx * window[:, None, None], e.luu, e.lux)
    e = e + ActionCost(0.1).eval(X, U)
    cc, cv, cm = quadratic_cost_model(e, X, U)
    z = np.concatenate([X, U], axis=-1).mean(axis=0)
    cc2, cv2, cm2 = psd_cost_model(cc, cv, cm, z)
    assert np.linalg.eigvalsh(cm[-1]).min() < -20.0  # about -1/|d|^2 = -44 (9 coordinates 5 cm off)
    scale = np.abs(np.linalg.eigvalsh(cm2)).max()
    assert np.linalg.eigvalsh(cm2).min() >= -1e-12 * scale

    def value(c0, c1, c2):
        return c0 + np.einsum("ti,ti->t", c1, z) + 0.5 * np.einsum("ti,tij,tj->t", z, c2, z)

    np.testing.assert_allclose(value(cc2, cv2, cm2), value(cc, cv, cm), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cv2 + np.einsum("tij,tj->ti", cm2, z), cv + np.einsum("tij,tj->ti", cm, z),
                               rtol=1e-9, atol=1e-7)
    for out, ref in ((cc2, cc), (cv2, cv), (cm2, cm)):
        assert np.array_equal(out[: T - 2], ref[: T - 2])
