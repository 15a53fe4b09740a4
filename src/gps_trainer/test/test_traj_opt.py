"""C-step: LQR limit against an independent Riccati/QP solution, eta limits, KL, eta search, robustness."""

import numpy as np
import pytest

from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_trainer.dynamics import LinearGaussianDynamics
from gps_trainer.traj_opt import (
    CostModel,
    TrajOptError,
    backward_pass,
    estimate_cost,
    expected_cost,
    forward_pass,
    gaussian_log_terms,
    kl_constrained_update,
    kl_divergence,
    new_step_mult,
    state_marginals,
)
from gps_trainer.traj_opt import random_problem as pr2_problem
from testing_helpers import load_traj_opt_v0


def random_problem(rng, T=15, dX=4, dU=2, noise=1e-4):
    A = np.eye(dX) + 0.1 * rng.standard_normal((T - 1, dX, dX))
    B = 0.3 * rng.standard_normal((T - 1, dX, dU))
    f = 0.05 * rng.standard_normal((T - 1, dX))
    dyn = LinearGaussianDynamics(np.concatenate([A, B], axis=2), f, np.broadcast_to(noise * np.eye(dX),
                                 (T - 1, dX, dX)).copy(), rng.standard_normal(dX), 1e-3 * np.eye(dX))
    D = dX + dU
    R = rng.standard_normal((T, D, D))
    cm = R @ R.transpose(0, 2, 1) / D + 0.5 * np.eye(D)
    cv = rng.standard_normal((T, D))
    cost = CostModel(np.zeros(T), cv, cm)
    prev = LinearGaussianPolicy(0.1 * rng.standard_normal((T, dU, dX)), 0.1 * rng.standard_normal((T, dU)),
                                np.broadcast_to(np.eye(dU), (T, dU, dU)).copy())
    return dyn, cost, prev


def riccati(A, B, f, cm, cv):
    """Textbook affine LQR: V_t(x) = 0.5 x^T P x + p^T x, P/p by the Riccati recursion."""
    T, dX, _dU = cm.shape[0], A.shape[1], B.shape[2]
    P, p = np.zeros((dX, dX)), np.zeros(dX)
    Ks, ks = [], []
    for t in range(T - 1, -1, -1):
        Cxx, Cuu, Cux = cm[t, :dX, :dX], cm[t, dX:, dX:], cm[t, dX:, :dX]
        cx, cu = cv[t, :dX], cv[t, dX:]
        if t < T - 1:
            a, b, c = A[t], B[t], P @ f[t] + p
            Qxx, Quu, Qux = Cxx + a.T @ P @ a, Cuu + b.T @ P @ b, Cux + b.T @ P @ a
            qx, qu = cx + a.T @ c, cu + b.T @ c
        else:
            Qxx, Quu, Qux, qx, qu = Cxx, Cuu, Cux, cx, cu
        Ks.append(-np.linalg.solve(Quu, Qux))
        ks.append(-np.linalg.solve(Quu, qu))
        P = Qxx - Qux.T @ np.linalg.solve(Quu, Qux)
        P = 0.5 * (P + P.T)
        p = qx - Qux.T @ np.linalg.solve(Quu, qu)
    return np.array(Ks[::-1]), np.array(ks[::-1])


def qp_actions(A, B, f, cm, cv, x0):
    """Optimal open-loop actions of the deterministic problem as one big quadratic program."""
    T, dX, dU = cm.shape[0], A.shape[1], B.shape[2]
    n = T * dU
    # z_t = [x_t; u_t] = G_t U + h_t
    Gx, hx = np.zeros((dX, n)), x0.copy()
    H, g = np.zeros((n, n)), np.zeros(n)
    for t in range(T):
        Gu = np.zeros((dU, n))
        Gu[:, t * dU:(t + 1) * dU] = np.eye(dU)
        G = np.vstack([Gx, Gu])
        h = np.concatenate([hx, np.zeros(dU)])
        H += G.T @ cm[t] @ G
        g += G.T @ (cm[t] @ h + cv[t])
        if t < T - 1:
            Gx = A[t] @ Gx + B[t] @ Gu
            hx = A[t] @ hx + f[t]
    return np.linalg.solve(H, -g).reshape(T, dU)


def _bwd(prev, dyn, cost, eta):
    def b(a):
        return (a[None])
    return backward_pass(b(prev.K), b(prev.k), b(prev.inv_pol_covar), b(dyn.Fm), b(dyn.fv), b(cost.cm), b(cost.cv),
                         np.array([eta]))


def test_small_eta_is_the_riccati_lqr_solution():
    rng = np.random.default_rng(0)
    dyn, cost, prev = random_problem(rng)
    dX = dyn.dX
    A, B = dyn.Fm[:, :, :dX], dyn.Fm[:, :, dX:]
    K, k, covar, failed = _bwd(prev, dyn, cost, 1e-10)
    assert failed[0] == -1
    K_ref, k_ref = riccati(A, B, dyn.fv, cost.cm, cost.cv)
    np.testing.assert_allclose(K[0], K_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(k[0], k_ref, rtol=1e-6, atol=1e-8)
    # The closed-loop mean trajectory equals the optimal open-loop plan of the big QP.
    x, us = dyn.x0mu.copy(), []
    for t in range(cost.cm.shape[0]):
        u = K[0, t] @ x + k[0, t]
        us.append(u)
        if t < cost.cm.shape[0] - 1:
            x = A[t] @ x + B[t] @ u + dyn.fv[t]
    np.testing.assert_allclose(np.array(us), qp_actions(A, B, dyn.fv, cost.cm, cost.cv, dyn.x0mu), rtol=1e-6,
                               atol=1e-8)
    # Max-entropy covariance is eta * Q_uu^-1: vanishes with eta.
    assert np.abs(covar).max() < 1e-8


def test_large_eta_returns_previous_controller():
    rng = np.random.default_rng(1)
    dyn, cost, prev = random_problem(rng)
    K, k, covar, failed = _bwd(prev, dyn, cost, 1e12)
    assert failed[0] == -1
    np.testing.assert_allclose(K[0], prev.K, atol=1e-8)
    np.testing.assert_allclose(k[0], prev.k, atol=1e-8)
    np.testing.assert_allclose(covar[0], prev.pol_covar, atol=1e-8)


def _marginals(pol, dyn):
    def b(a):
        return (a[None])
    return forward_pass(b(pol.K), b(pol.k), b(pol.pol_covar), b(dyn.Fm), b(dyn.fv), b(dyn.dyn_covar),
                        b(dyn.x0mu), b(dyn.x0sigma))


def test_kl_of_identical_controllers_is_zero_and_matches_closed_form():
    rng = np.random.default_rng(2)
    dyn, cost, prev = random_problem(rng)
    mu, sigma = _marginals(prev, dyn)
    kl = kl_divergence(mu[0], sigma[0], prev.K, prev.k, prev.pol_covar, prev.K, prev.k, prev.pol_covar,
                       prev.inv_pol_covar)
    assert np.abs(kl).max() < 1e-12
    # State-independent controllers: KL(N(a, S1) || N(b, S2)) in closed form.
    T, dU, dX = prev.K.shape
    S1, S2 = np.diag([0.5, 2.0]), np.array([[1.0, 0.3], [0.3, 1.5]])
    a, b = np.array([0.1, -0.2]), np.array([1.0, 0.5])
    p1 = LinearGaussianPolicy(np.zeros((T, dU, dX)), np.tile(a, (T, 1)), np.tile(S1, (T, 1, 1)))
    p2 = LinearGaussianPolicy(np.zeros((T, dU, dX)), np.tile(b, (T, 1)), np.tile(S2, (T, 1, 1)))
    S2i = np.linalg.inv(S2)
    ref = 0.5 * (np.trace(S2i @ S1) + (b - a) @ S2i @ (b - a) - dU + np.log(np.linalg.det(S2) / np.linalg.det(S1)))
    kl = kl_divergence(mu[0], sigma[0], p1.K, p1.k, p1.pol_covar, p2.K, p2.k, p2.pol_covar, p2.inv_pol_covar)
    np.testing.assert_allclose(kl, ref, rtol=1e-10)


def test_eta_search_lands_within_ten_percent_of_kl_target_batched():
    rng = np.random.default_rng(3)
    probs = [random_problem(rng, T=30) for _ in range(3)]
    res = kl_constrained_update([p[2] for p in probs], [p[0] for p in probs], [p[1] for p in probs],
                                kl_step=[0.2, 0.05, 0.5], eta=1.0)
    for r, step in zip(res, [0.2, 0.05, 0.5], strict=True):
        assert r.converged
        assert r.kl_target == pytest.approx(step * 30)
        assert abs(r.kl - r.kl_target) < 0.1 * r.kl_target
    # Each condition is independent of the others in the batch.
    single = kl_constrained_update([probs[1][2]], [probs[1][0]], [probs[1][1]], kl_step=0.05, eta=1.0)[0]
    # Alone against in a stack of 3: numpy is free to loop or block a stack differently, so float64
    # rounding (1e-16) grown through the 30-step recursion and the eta search, not bit-equality; a
    # condition that saw another would differ at O(1).
    np.testing.assert_allclose(single.policy.K, res[1].policy.K, rtol=1e-9, atol=1e-12)
    assert single.eta == pytest.approx(res[1].eta, rel=1e-9)
    # The new controller improves the expected cost predicted by the model.
    dyn, cost, prev = probs[0]
    new = res[0].policy
    assert estimate_cost(*(a[0] for a in _marginals(new, dyn)), cost) < estimate_cost(
        *(a[0] for a in _marginals(prev, dyn)), cost)


def test_non_pd_quu_raises_eta_instead_of_failing():
    rng = np.random.default_rng(4)
    dyn, cost, prev = random_problem(rng)
    dX = dyn.dX
    cost.cm[:, dX:, dX:] -= 5.0 * np.eye(dyn.dU)  # concave in u: Q_uu not PD for small eta
    K, k, covar, failed = _bwd(prev, dyn, cost, 1e-3)
    assert failed[0] >= 0
    res = kl_constrained_update([prev], [dyn], [cost], kl_step=0.2, eta=1e-3)[0]
    assert np.all(np.isfinite(res.policy.K))
    assert res.eta > 1.0  # eta had to grow past the cost's negative curvature
    assert np.all(np.linalg.eigvalsh(res.policy.pol_covar) > 0)


def test_nan_dynamics_error_names_cause():
    rng = np.random.default_rng(5)
    dyn, cost, prev = random_problem(rng)
    dyn.Fm[3, 0, 0] = np.nan
    with pytest.raises(TrajOptError, match="Fm contains NaN"):
        kl_constrained_update([prev], [dyn], [cost], kl_step=0.2)


def test_step_mult_adaptation():
    # Model prediction confirmed: step grows (capped by factor 5 and max_step_mult).
    assert new_step_mult(1.0, 1.0, 1.0) == pytest.approx(5.0)
    assert new_step_mult(1.0, 1.0, 4.0) == pytest.approx(10.0)
    # No actual improvement: ratio 1/2 shrinks the step.
    assert new_step_mult(1.0, 0.0, 1.0) == pytest.approx(0.5)
    # Cost got worse: shrink by the maximum factor, bounded below.
    assert new_step_mult(1.0, -3.0, 1.0) == pytest.approx(0.125)
    assert new_step_mult(1.0, -100.0, 0.02) == pytest.approx(0.01)
    with pytest.raises(TrajOptError, match="non-finite"):
        new_step_mult(np.nan, 1.0, 1.0)


# ----- the fast path (issue 16) against the implementation it replaced -------------------------------


def _close(a, b, tol=1e-8):
    """Equal to ``tol`` relative to the larger array's scale."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-300)
    assert np.abs(a - b).max(initial=0.0) <= tol * scale, np.abs(a - b).max() / scale


def test_fast_backward_and_forward_equal_the_previous_implementation():
    """PR2 size (T=100, dX=32, dU=7), two conditions batched, etas from LQR-like to prior-like."""
    v0 = load_traj_opt_v0()

    probs = [pr2_problem(seed=s) for s in (11, 12)]
    prev, dyn, cost = (list(x) for x in zip(*probs, strict=True))

    def st(objs, name):
        return np.stack([getattr(o, name) for o in objs])

    args = (st(prev, "K"), st(prev, "k"), st(prev, "inv_pol_covar"), st(dyn, "Fm"), st(dyn, "fv"), st(cost, "cm"),
            st(cost, "cv"))
    for eta in ([1e-3, 1e-2], [1.0, 10.0], [1e3, 1e6]):
        new = backward_pass(*args, np.array(eta))
        ref = v0.backward_pass(*args, np.array(eta))
        assert np.array_equal(new[3], ref[3]) and np.all(new[3] == -1)
        for a, b in zip(new[:3], ref[:3], strict=True):
            _close(a, b)
        fwd_args = (*new[:3], st(dyn, "Fm"), st(dyn, "fv"), st(dyn, "dyn_covar"), st(dyn, "x0mu"),
                    st(dyn, "x0sigma"))
        for a, b in zip(forward_pass(*fwd_args), v0.forward_pass(*fwd_args), strict=True):
            _close(a, b)
        mx, sxx = state_marginals(*fwd_args)
        mu, sigma = forward_pass(*fwd_args)
        assert np.array_equal(mx, mu[..., :32]) and np.array_equal(sxx, sigma[..., :32, :32])


def test_fast_c_step_equals_the_previous_implementation():
    v0 = load_traj_opt_v0()

    probs = [pr2_problem(seed=s) for s in (21, 22, 23)]
    prev, dyn, cost = (list(x) for x in zip(*probs, strict=True))
    steps = [0.2, 0.05, 0.5]
    new = kl_constrained_update(prev, dyn, cost, kl_step=steps, eta=1.0)
    from gps_trainer.traj_opt import _next_eta

    ref = v0.kl_constrained_update(prev, dyn, cost, kl_step=steps, eta=1.0, next_eta=_next_eta)
    for a, b in zip(new, ref, strict=True):
        assert a.converged and b.converged and a.iterations == b.iterations
        assert a.eta == pytest.approx(b.eta, rel=1e-8) and a.kl == pytest.approx(b.kl, rel=1e-8)
        _close(a.policy.K, b.policy.K)
        _close(a.policy.k, b.policy.k)
        _close(a.policy.pol_covar, b.policy.pol_covar)


def test_fast_path_reports_the_same_non_pd_step():
    v0 = load_traj_opt_v0()

    prev, dyn, cost = pr2_problem(seed=5, T=30)
    dX, dU = dyn.dX, dyn.dU
    cost.cm[:, dX:, dX:] -= 3.0 * np.eye(dU)  # concave in u at small eta
    cost.cm[:12, dX:, dX:] += 6.0 * np.eye(dU)  # ... except early on
    args = tuple(a[None] for a in (prev.K, prev.k, prev.inv_pol_covar, dyn.Fm, dyn.fv, cost.cm, cost.cv))
    new, ref = backward_pass(*args, np.array([1e-3])), v0.backward_pass(*args, np.array([1e-3]))
    assert new[3][0] == ref[3][0] == 29  # the last step is the first non-PD one in backward order
    nan_cost = cost.cm.copy()
    nan_cost[20, dX, dX] = np.nan
    args = (*args[:5], nan_cost[None], args[6])
    assert backward_pass(*args, np.array([1e6]))[3][0] == 20


def test_expected_cost_matches_monte_carlo():
    """E[sum_t l] of a controller under linear-Gaussian dynamics, against the mean over simulated rollouts."""
    rng = np.random.default_rng(7)
    dyn, cost, _ = random_problem(rng, T=6, dX=3, dU=2, noise=1e-2)
    dyn.x0sigma = 0.05 * np.eye(3)
    cost.cc[:] = rng.standard_normal(6)
    T, dX, dU = 6, 3, 2
    ctrl = LinearGaussianPolicy(0.2 * rng.standard_normal((T, dU, dX)), rng.standard_normal((T, dU)),
                                np.tile(0.1 * np.eye(dU), (T, 1, 1)))
    n = 200_000
    x = rng.multivariate_normal(dyn.x0mu, dyn.x0sigma, size=n)
    total = np.zeros(n)
    for t in range(T):
        u = x @ ctrl.K[t].T + ctrl.k[t] + rng.multivariate_normal(np.zeros(dU), ctrl.pol_covar[t], size=n)
        z = np.concatenate([x, u], axis=1)
        total += cost.cc[t] + z @ cost.cv[t] + 0.5 * np.einsum("ni,ij,nj->n", z, cost.cm[t], z)
        if t < T - 1:
            x = z @ dyn.Fm[t].T + dyn.fv[t] + rng.multivariate_normal(np.zeros(dX), dyn.dyn_covar[t], size=n)
    est = expected_cost(ctrl, dyn, cost)
    assert abs(est - total.mean()) < 4 * total.std() / np.sqrt(n)


def test_gaussian_log_terms_is_minus_log_density_up_to_a_constant():
    rng = np.random.default_rng(8)
    dX, dU = 3, 2
    K, k = rng.standard_normal((dU, dX)), rng.standard_normal(dU)
    S = rng.standard_normal((dU, dU))
    S = S @ S.T + np.eye(dU)
    P = np.linalg.inv(S)
    Cm, cv = gaussian_log_terms(K, k, P)

    def neg_log_p(x, u):
        r = u - K @ x - k
        return 0.5 * r @ P @ r

    zs = rng.standard_normal((5, dX + dU))
    vals = [0.5 * z @ Cm @ z + cv @ z - neg_log_p(z[:dX], z[dX:]) for z in zs]
    np.testing.assert_allclose(vals, vals[0], atol=1e-10)  # differ by the same constant 0.5 k^T P k


def test_eta_search_converges_in_few_passes_from_a_cold_start():
    """Illinois regula falsi in (log eta, log KL): within 5 backward/forward passes from eta = 1 on seeded
    PR2-size problems (the bisecting safeguard it replaced needed up to 7 here)."""
    for seed in range(6):
        prev, dyn, cost = pr2_problem(seed=seed)
        for kl_step in (0.05, 0.2, 1.0):
            r = kl_constrained_update([prev], [dyn], [cost], kl_step=kl_step, eta=1.0)[0]
            assert r.converged and abs(r.kl - r.kl_target) < 0.1 * r.kl_target
            assert r.iterations <= 5, (seed, kl_step, r.iterations)
