"""Linear-Gaussian controller: act(), validation, initial controllers, smoothed noise."""

import numpy as np
import pytest

from gps_core.linear_gaussian import LinearGaussianPolicy, init_lqr, init_pd, smooth_noise


def _policy(rng, T=5, dU=3, dX=6):
    A = rng.standard_normal((T, dU, dU))
    cov = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(dU)
    return LinearGaussianPolicy(rng.standard_normal((T, dU, dX)), rng.standard_normal((T, dU)), cov)


def test_act_mean_and_noise_distribution():
    rng = np.random.default_rng(0)
    pol = _policy(rng)
    x = rng.standard_normal(6)
    np.testing.assert_allclose(pol.act(x, 2), pol.K[2] @ x + pol.k[2])
    noise = rng.standard_normal((20000, 3))
    us = np.array([pol.act(x, 2, n) for n in noise[:2000]])
    emp = np.cov(pol.chol_pol_covar[2].T @ noise.T)
    np.testing.assert_allclose(emp, pol.pol_covar[2], rtol=0.1, atol=0.05)
    np.testing.assert_allclose(us.mean(axis=0), pol.K[2] @ x + pol.k[2], atol=0.2)
    np.testing.assert_allclose(pol.inv_pol_covar @ pol.pol_covar, np.broadcast_to(np.eye(3), (5, 3, 3)), atol=1e-9)
    # batched version agrees with per-step act (float64 einsum vs matrix-vector: rounding, 1e-16 relative;
    # the default rtol 1e-7 is far above it and far below a wrong step or noise)
    X = rng.standard_normal((4, 5, 6))
    nz = rng.standard_normal((4, 5, 3))
    np.testing.assert_allclose(pol.act_batch(X, nz)[1, 3], pol.act(X[1, 3], 3, nz[1, 3]))


def test_construction_errors_name_the_problem():
    rng = np.random.default_rng(1)
    p = _policy(rng)
    with pytest.raises(ValueError, match="k must be"):
        LinearGaussianPolicy(p.K, p.k[:, :2], p.pol_covar)
    K = p.K.copy()
    K[1, 0, 0] = np.inf
    with pytest.raises(ValueError, match="K has a non-finite"):
        LinearGaussianPolicy(K, p.k, p.pol_covar)
    cov = p.pol_covar.copy()
    cov[3] = -np.eye(3)
    with pytest.raises(ValueError, match="not positive definite at t=3"):
        LinearGaussianPolicy(p.K, p.k, cov)
    cov = p.pol_covar.copy()
    cov[0, 0, 1] += 1.0
    with pytest.raises(ValueError, match="not symmetric"):
        LinearGaussianPolicy(p.K, p.k, cov)


def test_init_lqr_holds_initial_state_under_guessed_dynamics():
    dU, dX, T, dt = 7, 32, 50, 0.05
    x0 = np.concatenate([np.linspace(-1, 1, 7), np.zeros(7), np.ones(18)])
    pol = init_lqr(x0, dU, T, dt, stiffness=1.0, stiffness_vel=0.5, init_var=1.0, final_weight=50.0)
    assert pol.K.shape == (T, dU, dX)
    np.testing.assert_allclose(pol.act(x0, 0), 0.0, atol=1e-9)  # at x0 with zero velocity: no torque
    # Displaced joint 0: the controller pushes it back.
    x = x0.copy()
    x[0] += 0.1
    assert pol.act(x, 0)[0] < 0
    assert np.all(np.linalg.eigvalsh(pol.pol_covar) > 0)
    assert np.allclose(pol.K[:, :, 14:], 0.0)  # EE entries unweighted
    pd = init_pd(x0, dU, T, pos_gains=10.0, vel_gains_mult=0.01, init_var=2.0)
    np.testing.assert_allclose(pd.act(x, 7), -10.0 * 0.1 * np.eye(7)[0], atol=1e-12)
    np.testing.assert_allclose(pd.pol_covar[0], 2.0 * np.eye(7))


def test_smooth_noise():
    raw = smooth_noise(np.random.default_rng(5), 200, 7, 0.0)
    sm = smooth_noise(np.random.default_rng(5), 200, 7, 2.0)
    np.testing.assert_array_equal(sm, smooth_noise(np.random.default_rng(5), 200, 7, 2.0))
    np.testing.assert_allclose(sm.std(axis=0), 1.0, rtol=1e-9)

    def lag1(n):
        return np.mean([np.corrcoef(n[:-1, i], n[1:, i])[0, 1] for i in range(7)])

    assert lag1(sm) > 0.8 and abs(lag1(raw)) < 0.2
    unnorm = smooth_noise(np.random.default_rng(5), 200, 7, 2.0, renormalize=False)
    assert unnorm.std() < 0.7
