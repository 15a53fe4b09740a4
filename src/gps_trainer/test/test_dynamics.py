"""Dynamics fitting: recovery of a linear system, the GMM prior on few samples, generic policy fits."""

import numpy as np
import pytest

from gps_core.samples import SampleBatch
from gps_trainer.dynamics import GMMPrior, fit_dynamics, fit_linear_gaussian


def test_recovers_known_linear_system_from_noisy_samples():
    rng = np.random.default_rng(0)
    N, T, dX, dU, s = 60, 8, 3, 2, 0.01
    A = np.eye(dX) + 0.2 * rng.standard_normal((T - 1, dX, dX))
    B = rng.standard_normal((T - 1, dX, dU))
    f = rng.standard_normal((T - 1, dX))
    X = np.zeros((N, T, dX))
    U = rng.standard_normal((N, T, dU))
    X[:, 0] = rng.standard_normal((N, dX))
    for t in range(T - 1):
        X[:, t + 1] = X[:, t] @ A[t].T + U[:, t] @ B[t].T + f[t] + s * rng.standard_normal((N, dX))
    dyn = fit_dynamics(SampleBatch(X, U))
    np.testing.assert_allclose(dyn.Fm, np.concatenate([A, B], axis=2), atol=0.02)
    np.testing.assert_allclose(dyn.fv, f, atol=0.02)
    # Residual covariance ~ s^2 I (ML estimate with 6 regressors on 60 samples: ~10 % low).
    diag = np.diagonal(dyn.dyn_covar, axis1=1, axis2=2)
    assert np.all((diag > 0.5 * s**2) & (diag < 1.5 * s**2))
    np.testing.assert_allclose(dyn.x0mu, X[:, 0].mean(axis=0))
    assert dyn.T == T and dyn.dX == dX and dyn.dU == dU


def _pendulums(rng, N, T, gain_noise=0.3):
    """Two damped pendulums (x = [th1, th2, w1, w2]) under a noisy linear controller; dt = 0.05."""
    dt = 0.05
    X = np.zeros((N, T, 4))
    U = np.zeros((N, T, 2))
    X[:, 0, :2] = np.array([1.0, -0.5]) + 0.05 * rng.standard_normal((N, 2))
    for t in range(T):
        th, w = X[:, t, :2], X[:, t, 2:]
        U[:, t] = -2.0 * th - 0.5 * w + gain_noise * rng.standard_normal((N, 2))
        if t < T - 1:
            acc = -9.8 * np.sin(th) - 0.3 * w + 3.0 * U[:, t]
            X[:, t + 1, 2:] = w + dt * acc
            X[:, t + 1, :2] = th + dt * X[:, t + 1, 2:]
    return X, U


def _prediction_error(dyn, X, U):
    Z = np.concatenate([X[:, :-1], U[:, :-1]], axis=2)
    pred = np.einsum("txd,ntd->ntx", dyn.Fm, Z) + dyn.fv
    return float(np.mean((pred - X[:, 1:]) ** 2))


def test_prior_beats_plain_least_squares_on_five_samples_of_nonlinear_system():
    rng = np.random.default_rng(1)
    T = 40
    old_X, old_U = _pendulums(rng, 20, T)
    new = SampleBatch(*_pendulums(rng, 5, T))
    test_X, test_U = _pendulums(rng, 200, T)
    prior = GMMPrior(max_clusters=20, min_samples_per_cluster=40, max_samples=20, seed=0)
    prior.update(np.concatenate([old_X[:, :-1], old_U[:, :-1]], axis=2), old_X[:, 1:])
    with_prior = fit_dynamics(new, prior=prior, update_prior=True)
    plain = fit_dynamics(new)
    assert prior.num_samples == 20  # the 20 most recent rollouts are kept
    err_prior, err_plain = _prediction_error(with_prior, test_X, test_U), _prediction_error(plain, test_X, test_U)
    assert err_prior < 0.5 * err_plain, (err_prior, err_plain)
    assert np.all(np.linalg.eigvalsh(with_prior.dyn_covar) > 0)


def test_gmm_prior_cluster_count_and_moments():
    rng = np.random.default_rng(2)
    X, U = _pendulums(rng, 10, 30)
    prior = GMMPrior(max_clusters=5, min_samples_per_cluster=40, max_samples=20, seed=0)
    inputs, outputs = np.concatenate([X[:, :-1], U[:, :-1]], axis=2), X[:, 1:]
    prior.update(inputs, outputs)
    assert prior._gmm.n_components == 5  # min(5, 290 // 40)
    niw = prior.eval(inputs, outputs)
    D = inputs.shape[2] + outputs.shape[2]
    assert niw.mu0.shape == (29, D) and niw.Phi.shape == (29, D, D)
    assert np.all(np.linalg.eigvalsh(niw.Phi) > 0)
    assert niw.m == 1.0 and niw.n0 == pytest.approx((290 - 2 - D) / 290)


def test_generic_fit_linearizes_a_policy():
    """Same machinery fits p(u|x) (MDGPS policy linearization)."""
    rng = np.random.default_rng(3)
    N, T, dX, dU = 40, 5, 4, 2
    K = rng.standard_normal((T, dU, dX))
    k = rng.standard_normal((T, dU))
    X = rng.standard_normal((N, T, dX))
    U = np.einsum("tux,ntx->ntu", K, X) + k + 0.1 * rng.standard_normal((N, T, dU))
    F, f, cov = fit_linear_gaussian(X, U)
    np.testing.assert_allclose(F, K, atol=0.1)
    np.testing.assert_allclose(f, k, atol=0.1)
    np.testing.assert_allclose(np.diagonal(cov, axis1=1, axis2=2), 0.01, rtol=0.6)


def test_fit_rejects_nan_and_mismatched_shapes():
    X = np.zeros((3, 4, 2))
    with pytest.raises(ValueError, match="must be"):
        fit_linear_gaussian(X, np.zeros((3, 5, 1)))
    bad = X.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_linear_gaussian(bad, np.zeros((3, 4, 1)))
    with pytest.raises(ValueError, match="SampleBatch.U"):
        SampleBatch(X, np.zeros((3, 5, 1)))
