"""KL-constrained trajectory optimization (the C-step) for time-varying linear-Gaussian controllers.

Problem (Levine & Abbeel 2014; slides "Trajectory Optimization"):

    min_p E_p[sum_t l(x_t, u_t)]  s.t.  sum_t E_p[KL(p(u_t|x_t) || p̄(u_t|x_t))] <= epsilon,

solved through its Lagrangian: for fixed dual variable eta the optimum is the maximum-entropy LQG
controller for the surrogate cost  l̃ = l / eta - log p̄(u|x), computed by one backward pass under the
fitted linear-Gaussian dynamics; eta is then searched (log-space bracketing / bisection) until the KL of
the new controller to the previous one is within 10 % of epsilon.

All core functions are batched over a leading condition axis M, so several conditions are optimized
together; each keeps its own eta. Shapes: T steps, dX states, dU actions, D = dX + dU.

The backward pass works in deviation coordinates du = u - K̄ x - k̄ around the previous controller p̄
(:func:`deviation_coordinates`), where -log p̄ is exactly 0.5 du^T P̄ du: as eta grows the answer tends
to p̄ itself, without the cancellation Q_xx - Q_xu Q_uu^-1 Q_ux ~ 0 that in (x, u) leaves round-off in V
for an unstable closed loop of the fitted dynamics to amplify step by step (issue 15's bottle_cap crash,
closed-loop spectral radius up to 2.2: V's error grew from 1e-11 to 8e4 over 40 steps, then Q_uu tested
indefinite at eta = 1e16; computed exactly, the KL bound there needed eta ~ 1e25, out of range).

A condition for which no eta up to max_eta gives a valid controller within the KL bound keeps p̄ (KL
step zero: always valid) and says why (:attr:`CStepResult.fallback`, a warning) instead of stopping the
run; NaN/Inf dynamics or costs still raise :class:`TrajOptError`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_trainer.dynamics import LinearGaussianDynamics

__all__ = [
    "TrajOptError",
    "CostModel",
    "CStepResult",
    "backward_pass",
    "gaussian_log_terms",
    "forward_pass",
    "kl_divergence",
    "estimate_cost",
    "kl_constrained_update",
    "deviation_coordinates",
    "new_step_mult",
    "random_problem",
    "state_marginals",
    "expected_cost",
    "controller_marginals",
]

LOGGER = logging.getLogger(__name__)


class TrajOptError(RuntimeError):
    """A trajectory-optimization failure with its cause in the message."""


@dataclass
class CostModel:
    """Quadratic cost in absolute coordinates: l_t(z) = cc_t + cv_t^T z + 0.5 z^T cm_t z, z = [x; u]."""

    cc: np.ndarray  # (T,)
    cv: np.ndarray  # (T, D)
    cm: np.ndarray  # (T, D, D)


@dataclass
class CStepResult:
    """Outcome of the eta search for one condition."""

    policy: LinearGaussianPolicy
    eta: float
    kl: float  # sum_t KL(p_new || p_prev) under the new state marginals
    kl_target: float
    iterations: int
    converged: bool
    #: why this condition kept its previous controller (no eta up to max_eta gave a valid controller
    #: within the KL bound), None if it did not; ``eta`` is then the search's start (the warm start to keep)
    fallback: str | None = None


def _stack_policies(policies: list[LinearGaussianPolicy]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.stack([p.K for p in policies]), np.stack([p.k for p in policies]),
            np.stack([p.pol_covar for p in policies]), np.stack([p.inv_pol_covar for p in policies]))


def _stack_dynamics(dyns: list[LinearGaussianDynamics]) -> tuple[np.ndarray, ...]:
    return tuple(np.stack([getattr(d, n) for d in dyns]) for n in ("Fm", "fv", "dyn_covar", "x0mu", "x0sigma"))


def gaussian_log_terms(K: np.ndarray, k: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-log N(u; K x + k, P^-1) up to constants as a quadratic in z = [x; u] (the KL terms of the C-step,
    Levine & Abbeel 2014 Eq. 4; BADMM's TKL/PKL terms):

        0.5 z^T [[K^T P K, -K^T P], [-P K, P]] z + z^T [K^T P k; -P k].

    K (..., dU, dX), k (..., dU), P (..., dU, dU) with any leading axes; returns (..., D, D), (..., D)."""
    dU, dX = K.shape[-2:]
    PK = P @ K  # (..., dU, dX)
    Pk = (P @ k[..., None])[..., 0]
    Cm = np.empty((*K.shape[:-2], dX + dU, dX + dU))
    Cm[..., :dX, :dX] = K.swapaxes(-1, -2) @ PK
    np.negative(PK.swapaxes(-1, -2), out=Cm[..., :dX, dX:])
    np.negative(PK, out=Cm[..., dX:, :dX])
    Cm[..., dX:, dX:] = P
    cv = np.empty((*K.shape[:-2], dX + dU))
    cv[..., :dX] = (K.swapaxes(-1, -2) @ Pk[..., None])[..., 0]
    np.negative(Pk, out=cv[..., dX:])
    return Cm, cv


def backward_pass(
    prev_K: np.ndarray,
    prev_k: np.ndarray,
    prev_inv_covar: np.ndarray,
    Fm: np.ndarray,
    fv: np.ndarray,
    cm: np.ndarray,
    cv: np.ndarray,
    eta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Max-entropy LQG backward pass for the surrogate cost l/eta - log p̄, batched over M conditions.

    With Q_T+1 = 0 and, for t = T-1..0 (the dynamics term only for t < T-1):
        Q_zz = cm_t/eta + Pm_t + F_t^T V_xx F_t,   q_z = cv_t/eta + pv_t + F_t^T (v_x + V_xx f_t)
        Sigma_t = Q_uu^-1,  K_t = -Q_uu^-1 Q_ux,  k_t = -Q_uu^-1 q_u
        V_xx = Q_xx + Q_xu K_t,  v_x = q_x + Q_xu k_t
    (Pm, pv: :func:`gaussian_log_terms` of p̄), computed in the coordinates of :func:`deviation_coordinates`
    (the same solution, without the cancellation as eta grows).
    Shapes: prev_* (M, T, ...), Fm (M, T-1, dX, D), cm (M, T, D, D), eta (M,).
    Returns K, k, Sigma, and per condition the (latest) time step whose Q_uu was not positive definite,
    -1 if none; a failed condition's outputs are meaningless.
    """
    dX = prev_K.shape[-1]
    dcm, dcv, dFm, dfv = deviation_coordinates(prev_K, prev_k, cm, cv, Fm, fv)
    dK, dk, covar, failed_at = _backward(_homogeneous_cost(dcm, dcv, dX), _homogeneous_precision(prev_inv_covar, dX),
                                         _homogeneous_dynamics(dFm, dfv), np.asarray(eta, dtype=np.float64))
    return prev_K + dK, prev_k + dk, covar, failed_at


def deviation_coordinates(
    prev_K: np.ndarray, prev_k: np.ndarray, cm: np.ndarray, cv: np.ndarray, Fm: np.ndarray, fv: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cost and dynamics in the coordinates z' = [x; du], du = u - K̄_t x - k̄_t (z = S z' + s with
    S = [[I, 0], [K̄, I]], s = [0; k̄]):

        cm' = S^T cm S,  cv' = S^T (cv + cm s)  (the constant dropped),
        F' = [F_x + F_u K̄, F_u],  f' = f + F_u k̄.

    There -log p̄(u|x) = 0.5 du^T P̄ du exactly, so the previous controller's term alone gives V = 0
    with no round-off, where in (x, u) it is K̄^T P̄ K̄ - K̄^T P̄ P̄^-1 P̄ K̄, whose error the closed loop
    F_x + F_u K̄ amplifies backwards in time when it is unstable. Any leading axes: K̄ (..., T, dU, dX),
    k̄ (..., T, dU), cm (..., T, D, D), cv (..., T, D), Fm (..., T-1, dX, D), fv (..., T-1, dX)."""
    dX = prev_K.shape[-1]
    Cxx, Cxu, Cux, Cuu = cm[..., :dX, :dX], cm[..., :dX, dX:], cm[..., dX:, :dX], cm[..., dX:, dX:]
    Kt = prev_K.swapaxes(-1, -2)
    CuxK = Cux + Cuu @ prev_K  # (C S)_ux
    dcm = np.empty(np.broadcast_shapes(cm.shape, (*prev_K.shape[:-2], *cm.shape[-2:])))
    dcm[..., dX:, dX:] = Cuu
    dcm[..., dX:, :dX] = CuxK
    dcm[..., :dX, dX:] = Cxu + Kt @ Cuu
    dcm[..., :dX, :dX] = Cxx + Cxu @ prev_K + Kt @ CuxK
    wx = cv[..., :dX] + (Cxu @ prev_k[..., None])[..., 0]
    wu = cv[..., dX:] + (Cuu @ prev_k[..., None])[..., 0]
    dcv = np.concatenate([wx + (Kt @ wu[..., None])[..., 0], wu], axis=-1)
    Fx, Fu = Fm[..., :dX], Fm[..., dX:]
    dFm = np.concatenate([Fx + Fu @ prev_K[..., :-1, :, :], Fu], axis=-1)
    dfv = fv + (Fu @ prev_k[..., :-1, :, None])[..., 0]
    return dcm, dcv, dFm, dfv


def _homogeneous_precision(P: np.ndarray, dX: int) -> np.ndarray:
    """-log p̄ in deviation coordinates, 0.5 du^T P du, in the homogeneous form of :func:`_homogeneous_cost`."""
    dU = P.shape[-1]
    C = np.zeros((*P.shape[:-2], dX + 1 + dU, dX + 1 + dU))
    C[..., dX + 1:, dX + 1:] = P
    return C


def _homogeneous_cost(cm: np.ndarray, cv: np.ndarray, dX: int) -> np.ndarray:
    """A quadratic 0.5 z^T cm z + cv^T z, z = [x; u], as one matrix over z~ = [x; 1; u]:
    [[C_xx, c_x, C_xu], [c_x^T, 0, c_u^T], [C_ux, c_u, C_uu]]. cm (..., D, D), cv (..., D) -> (..., D+1, D+1)."""
    D = cm.shape[-1]
    n = dX + 1
    C = np.zeros((*cm.shape[:-2], D + 1, D + 1))
    C[..., :dX, :dX], C[..., :dX, n:], C[..., n:, :dX], C[..., n:, n:] = (
        cm[..., :dX, :dX], cm[..., :dX, dX:], cm[..., dX:, :dX], cm[..., dX:, dX:])
    C[..., :dX, dX], C[..., n:, dX] = cv[..., :dX], cv[..., dX:]
    C[..., dX, :dX], C[..., dX, n:] = cv[..., :dX], cv[..., dX:]
    return C


def _backward(Ccost: np.ndarray, Cprev: np.ndarray, F: np.ndarray, eta: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`backward_pass` on the homogeneous surrogate cost C = Ccost / eta + Cprev (M, T, n+dU, n+dU)
    and homogeneous dynamics F (M, T-1, n, n+dU), n = dX + 1.

    Per step one Cholesky factorization of Q_uu (LAPACK dpotrf, which reports a non-PD matrix instead of
    raising: the positive-definiteness test) and one solve with the factor give [K_t, k_t]; a condition
    stops at its first non-PD step. Plain 2-D products per condition: at these sizes (33x40) the cost is
    per-call overhead, not flops."""
    M, T, nz, _ = Ccost.shape
    n = F.shape[-2]
    dX, dU = n - 1, nz - n
    C = Ccost * (1.0 / eta)[:, None, None, None] + Cprev
    Ft = F.swapaxes(-1, -2)
    G = np.zeros((M, T, dU, n))  # [K_t, k_t]
    Quu_all = np.empty((M, T, dU, dU))
    failed_at = np.full(M, -1)
    potrf, potrs = _lapack_cholesky()
    Q, VF, Vs = np.empty((nz, nz)), np.empty((n, nz)), np.empty((n, n))  # work buffers: none allocated in the loop
    Quu, Qun, Qnu, Qnn = Q[n:, n:], Q[n:, :n], Q[:n, n:], Q[:n, :n]
    with np.errstate(all="ignore"):  # a failed condition may overflow; the factorization detects it
        for m in range(M):
            Cm, Fmat, Ftm, Gm, Qm = C[m], F[m], Ft[m], G[m], Quu_all[m]
            V = np.empty((n, n))  # value function of step t + 1 in homogeneous form
            Q[...] = Cm[T - 1]
            for t in range(T - 1, -1, -1):
                if t < T - 1:
                    np.matmul(V, Fmat[t], out=VF)
                    np.matmul(Ftm[t], VF, out=Q)
                    Q += Cm[t]
                Qm[t] = Quu
                L, info = potrf(Quu, lower=1)
                if info != 0 or not math.isfinite(L[-1, -1]):  # not PD, or NaN/Inf anywhere in Q_uu
                    failed_at[m] = t
                    break
                np.negative(potrs(L, Qun, lower=1)[0], out=Gm[t])
                np.matmul(Qnu, Gm[t], out=V)
                V += Qnn
                # V is symmetric in exact arithmetic; its round-off asymmetry otherwise grows through the
                # recursion (dpotrf reads one triangle of Q_uu) until a PD Q_uu tests as not PD.
                np.add(V, V.T, out=Vs)
                np.multiply(Vs, 0.5, out=V)
    ok = failed_at < 0
    covar = np.empty((M, T, dU, dU))
    covar[ok] = np.linalg.inv(Quu_all[ok])
    covar[~ok] = np.eye(dU)
    covar = 0.5 * (covar + covar.swapaxes(-1, -2))
    return G[..., :dX], G[..., dX], covar, failed_at


def _homogeneous_dynamics(Fm: np.ndarray, fv: np.ndarray) -> np.ndarray:
    """Dynamics in homogeneous form: [x'; 1] = [[F_x, f, F_u], [0, 1, 0]] z~, (M, T-1, dX+1, dX+1+dU)."""
    M, T1, dX, D = Fm.shape
    n = dX + 1
    F = np.zeros((M, T1, n, D + 1))
    F[..., :dX, :dX], F[..., :dX, dX], F[..., :dX, n:], F[..., dX, dX] = Fm[..., :dX], fv, Fm[..., dX:], 1.0
    return F


def _lapack_cholesky():
    """LAPACK dpotrf/dpotrs: a factorization that reports non-PD (info > 0) instead of raising, and a
    solve with the factor, at a fraction of np.linalg's per-call overhead on 7x7 matrices."""
    from scipy.linalg import lapack

    return lapack.dpotrf, lapack.dpotrs


def forward_pass(
    K: np.ndarray, k: np.ndarray, covar: np.ndarray, Fm: np.ndarray, fv: np.ndarray, dyn_covar: np.ndarray,
    x0mu: np.ndarray, x0sigma: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """State-action marginals p(z_t) = N(mu_t, S_t) of a controller under linear-Gaussian dynamics:

        mu_0[x] = x0mu, S_0[xx] = x0sigma;  mu_t[u] = K_t mu_t[x] + k_t,
        S_t[ux] = K_t S_t[xx],  S_t[uu] = K_t S_t[xx] K_t^T + Sigma_t,
        mu_{t+1}[x] = F_t mu_t + f_t,  S_{t+1}[xx] = F_t S_t F_t^T + Sigma^dyn_t.

    The recursion runs on the closed loop (:func:`state_marginals`), the action blocks are filled in
    afterwards for all t at once. Batched over the leading axis M. Returns mu (M, T, D), sigma (M, T, D, D).
    """
    mx, sxx = state_marginals(K, k, covar, Fm, fv, dyn_covar, x0mu, x0sigma)
    M, T, dU, dX = K.shape
    D = dX + dU
    KS = K @ sxx
    mu = np.empty((M, T, D))
    mu[..., :dX] = mx
    mu[..., dX:] = (K @ mx[..., None])[..., 0] + k
    sigma = np.empty((M, T, D, D))
    sigma[..., :dX, :dX] = sxx
    sigma[..., dX:, :dX] = KS
    sigma[..., :dX, dX:] = KS.swapaxes(-1, -2)
    sigma[..., dX:, dX:] = KS @ K.swapaxes(-1, -2) + covar
    return mu, sigma


def state_marginals(
    K: np.ndarray, k: np.ndarray, covar: np.ndarray, Fm: np.ndarray, fv: np.ndarray, dyn_covar: np.ndarray,
    x0mu: np.ndarray, x0sigma: np.ndarray, symmetrize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The state part of :func:`forward_pass`: mu_t[x] (M, T, dX) and S_t[xx] (M, T, dX, dX), from the
    closed loop A_t = Fx_t + Fu_t K_t with offset Fu_t k_t + f_t and noise Fu_t Sigma_t Fu_t^T + Sigma^dyn_t
    (all of it what the KL of the eta search needs). ``symmetrize=False`` leaves S_t as computed,
    symmetric up to round-off (enough for traces against symmetric matrices, as in the KL)."""
    M, T, dU, dX = K.shape
    Fx, Fu = Fm[..., :dX], np.ascontiguousarray(Fm[..., dX:])
    A = Fx + Fu @ K[:, :-1]  # (M, T-1, dX, dX)
    a = (Fu @ k[:, :-1, :, None])[..., 0] + fv
    W = Fu @ covar[:, :-1] @ Fu.swapaxes(-1, -2) + dyn_covar
    At = A.swapaxes(-1, -2)
    mx = np.empty((M, T, dX))
    sxx = np.empty((M, T, dX, dX))
    mx[:, 0], sxx[:, 0] = x0mu, x0sigma
    for i in range(M):  # plain 2-D products: the per-call overhead, not the flops, is the cost here
        Ai, Ati, ai, Wi, mi, si = A[i], At[i], a[i], W[i], mx[i], sxx[i]
        for t in range(T - 1):
            mi[t + 1] = Ai[t] @ mi[t] + ai[t]
            si[t + 1] = Ai[t] @ si[t] @ Ati[t] + Wi[t]
    if symmetrize:
        sxx = 0.5 * (sxx + sxx.swapaxes(-1, -2))
    return mx, sxx


def kl_divergence(
    mu: np.ndarray, sigma: np.ndarray, K: np.ndarray, k: np.ndarray, covar: np.ndarray,
    prev_K: np.ndarray, prev_k: np.ndarray, prev_covar: np.ndarray, prev_inv_covar: np.ndarray,
    prev_logdet: np.ndarray | None = None,
) -> np.ndarray:
    """Per-step KL(p(u_t|x_t) || p̄(u_t|x_t)) averaged over the new state marginal N(mu_t[x], S_t[xx]):

        0.5 [log|Sigmā| - log|Sigma| - dU + tr(Sigmā^-1 Sigma)
             + (dK mu + dk)^T Sigmā^-1 (dK mu + dk) + tr(dK^T Sigmā^-1 dK S_xx)],
    dK = K̄ - K, dk = k̄ - k. Works on any leading axes (..., T); clipped at 0 against round-off.
    """
    dX = K.shape[-1]
    mx = mu[..., :dX, None]
    sxx = sigma[..., :dX, :dX]
    dK = prev_K - K
    P = prev_inv_covar
    if prev_logdet is None:
        prev_logdet = np.linalg.slogdet(prev_covar)[1]
    logdet_new = np.linalg.slogdet(covar)[1]
    r = dK @ mx + (prev_k - k)[..., None]
    quad = np.sum(r * (P @ r), axis=(-1, -2))
    tr_cov = np.sum(P * covar, axis=(-1, -2))  # both symmetric
    tr_state = np.sum((P @ dK @ sxx) * dK, axis=(-1, -2))
    kl = 0.5 * (prev_logdet - logdet_new - K.shape[-2] + tr_cov + quad + tr_state)
    return np.maximum(kl, 0.0)


def estimate_cost(mu: np.ndarray, sigma: np.ndarray, cost: CostModel) -> np.ndarray:
    """Expected cost under Gaussian marginals: sum_t cc_t + cv_t^T mu_t + 0.5 mu_t^T cm_t mu_t
    + 0.5 tr(cm_t S_t). mu (..., T, D); returns (...)."""
    quad = np.einsum("...ti,tij,...tj->...t", mu, cost.cm, mu)
    tr = np.einsum("tij,...tji->...t", cost.cm, sigma)
    return np.sum(cost.cc + np.einsum("...ti,ti->...t", mu, cost.cv) + 0.5 * quad + 0.5 * tr, axis=-1)


def controller_marginals(controller: LinearGaussianPolicy, dyn: LinearGaussianDynamics
                         ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`forward_pass` for one controller under one dynamics model: mu (T, D), sigma (T, D, D)."""
    mu, sigma = forward_pass(controller.K[None], controller.k[None], controller.pol_covar[None], dyn.Fm[None],
                             dyn.fv[None], dyn.dyn_covar[None], dyn.x0mu[None], dyn.x0sigma[None])
    return mu[0], sigma[0]


def expected_cost(controller: LinearGaussianPolicy, dyn: LinearGaussianDynamics, cost: CostModel,
                  marginals: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Laplace estimate of E[sum_t l(x_t, u_t)] of a linear-Gaussian controller under linear-Gaussian
    dynamics, no sampling: the forward pass to its Gaussian state-action marginals
    (:func:`controller_marginals`, or ``marginals`` if already computed), then the quadratic cost model's
    expectation (:func:`estimate_cost`). The step-size rules of every algorithm use this one estimate."""
    mu, sigma = controller_marginals(controller, dyn) if marginals is None else marginals
    return float(estimate_cost(mu, sigma, cost))


def _backward_robust(Ccost, Cprev, F, eta, del0, max_eta):
    """:func:`_backward`; conditions whose Q_uu is not PD retry with eta <- min(eta0 + del, max_eta),
    del <- 2 del. Returns K, k, Sigma, the eta used and, per condition, the step whose Q_uu is still not
    PD at max_eta (-1 where a valid controller was found; the others' outputs are meaningless)."""
    eta = np.minimum(eta.astype(np.float64), max_eta)
    eta0 = eta.copy()
    delta = np.full_like(eta, del0)
    gave_up = np.full(eta.shape, -1)
    while True:
        K, k, covar, failed_at = _backward(Ccost, Cprev, F, eta)
        bad = failed_at >= 0
        at_max = bad & (eta >= max_eta)  # no eta left to try: the caller keeps the previous controller
        gave_up[at_max] = failed_at[at_max]
        bad &= ~at_max
        if not bad.any():
            return K, k, covar, eta, gave_up
        for m in np.flatnonzero(bad):
            LOGGER.debug("non-PD Q_uu at t=%d (condition slot %d): eta %.3g -> %.3g", failed_at[m], m, eta[m],
                         min(eta0[m] + delta[m], max_eta))
        eta[bad] = np.minimum(eta0[bad] + delta[bad], max_eta)
        delta[bad] *= 2.0  # eta0 + delta reaches max_eta, whatever max_eta is


def kl_constrained_update(
    prev: list[LinearGaussianPolicy],
    dynamics: list[LinearGaussianDynamics],
    costs: list[CostModel],
    kl_step: np.ndarray | float,
    eta: np.ndarray | float = 1.0,
    *,
    min_eta: float = 1e-8,
    max_eta: float = 1e16,
    del0: float = 1e-4,
    max_iterations: int = 50,
    tolerance: float = 0.1,
) -> list[CStepResult]:
    """C-step for M conditions at once: find eta_m with |KL_m(eta) - eps_m| < tolerance eps_m.

    eps_m = kl_step_m * T (a per-step budget summed over the horizon, as the reference). Search per
    condition from eta_m over a bracket in log-space (:func:`_next_eta`). Returns one :class:`CStepResult`
    per condition; a condition that does not converge keeps its last controller and logs a warning
    (``converged`` False). A condition with no valid answer for any eta <= max_eta (Q_uu not positive
    definite even at max_eta, the KL still above the target at max_eta, or a non-finite KL) keeps its
    previous controller, the eta -> infinity limit (KL 0), logs a warning naming the condition, the step
    and the eta reached, and reports it in ``fallback``. NaN/Inf dynamics or costs raise TrajOptError.
    """
    M = len(prev)
    if not (len(dynamics) == M and len(costs) == M):
        raise ValueError(f"kl_constrained_update: {M} controllers, {len(dynamics)} dynamics, {len(costs)} costs")
    T, dU, dX = prev[0].K.shape
    for m in range(M):
        if dynamics[m].Fm.shape != (T - 1, dX, dX + dU):
            raise ValueError(f"kl_constrained_update: condition {m} dynamics Fm {dynamics[m].Fm.shape} does not "
                             f"match the controller (T={T}, dX={dX}, dU={dU})")
        if costs[m].cm.shape != (T, dX + dU, dX + dU):
            raise ValueError(f"kl_constrained_update: condition {m} cost cm {costs[m].cm.shape} does not match")
    P = _stack_policies(prev)
    Fm, fv, dyn_covar, x0mu, x0sigma = _stack_dynamics(dynamics)
    cm = np.stack([c.cm for c in costs])
    cv = np.stack([c.cv for c in costs])
    for name, a in (("Fm", Fm), ("fv", fv), ("dyn_covar", dyn_covar), ("cost cm", cm), ("cost cv", cv)):
        if not np.all(np.isfinite(a)):
            raise TrajOptError(f"trajectory optimization: {name} contains NaN/Inf")
    # Everything but the 1/eta scaling is fixed during the search: assemble it once per C-step, in
    # deviation coordinates around the previous controllers (backward_pass).
    dcm, dcv, dFm, dfv = deviation_coordinates(P[0], P[1], cm, cv, Fm, fv)
    Ccost, Cprev, F = _homogeneous_cost(dcm, dcv, dX), _homogeneous_precision(P[3], dX), _homogeneous_dynamics(dFm, dfv)
    for name, a in (("cost", Ccost), ("dynamics", F)):
        if not np.all(np.isfinite(a)):
            raise TrajOptError(f"trajectory optimization: the {name} relative to the previous controller "
                               "overflows (NaN/Inf)")
    prev_logdet = np.linalg.slogdet(P[2])[1]
    target = np.broadcast_to(np.asarray(kl_step, dtype=np.float64), (M,)) * T
    eta = np.clip(np.broadcast_to(np.asarray(eta, dtype=np.float64), (M,)).copy(), min_eta, max_eta)
    # Bracket [lo, hi]: KL(lo) > target > KL(hi); log KL at the ends once evaluated (nan before).
    lo, hi = np.full(M, min_eta), np.full(M, max_eta)
    ylo, yhi = np.full(M, np.nan), np.full(M, np.nan)
    last_side = np.zeros(M, dtype=int)  # +1: lo moved last, -1: hi moved last
    done = np.zeros(M, dtype=bool)
    out_K, out_k, out_cov = np.zeros((M, T, dU, dX)), np.zeros((M, T, dU)), np.zeros((M, T, dU, dU))
    kl_tot = np.full(M, np.nan)
    eta_start = eta.copy()
    eta_res = eta.copy()
    iters = np.zeros(M, dtype=int)
    fallback: list[str | None] = [None] * M
    for _ in range(max_iterations):
        a = np.flatnonzero(~done)
        sel = slice(None) if a.size == M else a  # no copies while every condition is still searching
        sub = tuple(x[sel] for x in P)
        dK, dk, covar, eta_used, gave_up = _backward_robust(Ccost[sel], Cprev[sel], F[sel], eta[a], del0, max_eta)
        K, k = sub[0] + dK, sub[1] + dk
        for j in np.flatnonzero(gave_up >= 0):  # its outputs are meaningless: evaluate p̄ instead (KL 0)
            K[j], k[j], covar[j] = sub[0][j], sub[1][j], sub[2][j]
        with np.errstate(all="ignore"):  # a non-finite KL is handled per condition below
            mx, sxx = state_marginals(K, k, covar, Fm[sel], fv[sel], dyn_covar[sel], x0mu[sel], x0sigma[sel],
                                      symmetrize=False)
            kl = kl_divergence(mx, sxx, K, k, covar, *sub, prev_logdet=prev_logdet[sel]).sum(axis=-1)
        out_K[a], out_k[a], out_cov[a], kl_tot[a], eta_res[a] = K, k, covar, kl, eta_used
        iters[a] += 1
        for j, m in enumerate(a):
            e, c = float(eta_used[j]), float(kl[j])
            if gave_up[j] >= 0:
                fallback[m] = f"Q_uu not positive definite at t={int(gave_up[j])} even for eta = {e:.3g}"
            elif not math.isfinite(c):
                fallback[m] = f"the KL divergence is not finite at eta = {e:.3g}"
            elif e >= max_eta and c > (1.0 + tolerance) * target[m]:
                fallback[m] = f"KL {c:.3g} still above the target {target[m]:.3g} at eta = {e:.3g}"
            if fallback[m] is not None or abs(c - target[m]) < tolerance * target[m]:
                done[m] = True
                continue
            eta[m] = _next_eta(m, e, c, target[m], lo, hi, ylo, yhi, last_side)
        if done.all():
            break
    results = []
    for m in range(M):
        policy = None
        if fallback[m] is None:
            if not done[m]:
                LOGGER.warning("C-step condition %d: eta search did not converge (KL %.3g vs target %.3g, eta %.3g)",
                               m, kl_tot[m], target[m], eta[m])
            try:
                policy = LinearGaussianPolicy(out_K[m], out_k[m], out_cov[m])
            except ValueError as exc:  # e.g. a covariance that round-off left indefinite
                fallback[m] = f"invalid controller at eta = {eta_res[m]:.3g} ({exc})"
        if fallback[m] is not None:
            LOGGER.warning("C-step condition %d: %s; keeping its previous controller (KL step 0)", m, fallback[m])
            results.append(CStepResult(prev[m].copy(), float(eta_start[m]), 0.0, float(target[m]), int(iters[m]),
                                       False, fallback[m]))
        else:
            results.append(CStepResult(policy, float(eta_res[m]), float(kl_tot[m]),
                                       float(target[m]), int(iters[m]), bool(done[m])))
    return results


def _next_eta(m: int, eta: float, kl: float, target: float, lo: np.ndarray, hi: np.ndarray, ylo: np.ndarray,
              yhi: np.ndarray, last_side: np.ndarray) -> float:
    """Next dual variable for condition m after KL(eta) = kl missed the target (updates the bracket).

    KL falls with eta. Update the bracket: KL > target -> lo = eta, else hi = eta. Until both ends are
    evaluated, jump as the reference does but at most 10x: eta <- min(sqrt(lo hi), 10 lo) or
    max(sqrt(lo hi), hi / 10) (within 100x of an unevaluated upper end, that end: max_eta itself is tried
    and the search can tell that the bound is out of reach). Once bracketed, regula falsi on log KL - log target against log eta with
    the Illinois modification: when the same end moved twice in a row, the other end's residual is halved
    (so a convex curve cannot pin one end and crawl); the step is kept inside the inner 98 % of the
    log-bracket. (Bisecting instead, as before issue 16, threw away good secant steps: 7 passes where
    this takes 4 on the PR2-size benchmark problem.)
    """
    y = np.log(max(kl, 1e-300))
    lt = np.log(target)
    side = 1 if kl > target else -1
    if side > 0:
        lo[m], ylo[m] = eta, y
    else:
        hi[m], yhi[m] = eta, y
    repeated = last_side[m] == side
    last_side[m] = side
    xl, xh = np.log(lo[m]), np.log(hi[m])
    if np.isnan(ylo[m]) or np.isnan(yhi[m]):
        geom = np.sqrt(lo[m] * hi[m])
        if side > 0 and 100.0 * lo[m] >= hi[m]:
            return float(hi[m])  # max_eta itself, not an endless approach: the caller stops there
        return float(min(geom, 10.0 * lo[m]) if side > 0 else max(geom, 0.1 * hi[m]))
    if repeated:  # Illinois: the end that did not move keeps only half its residual
        if side > 0:
            yhi[m] = lt + 0.5 * (yhi[m] - lt)
        else:
            ylo[m] = lt + 0.5 * (ylo[m] - lt)
    w = xh - xl
    x = xl + (lt - ylo[m]) * w / (yhi[m] - ylo[m]) if yhi[m] != ylo[m] else np.nan
    if not np.isfinite(x):
        x = 0.5 * (xl + xh)
    x = min(max(x, xl + 0.01 * w), xh - 0.01 * w)
    return float(np.exp(x))


def new_step_mult(
    predicted_improvement: float,
    actual_improvement: float,
    step_mult: float,
    min_step_mult: float = 0.01,
    max_step_mult: float = 10.0,
) -> float:
    """Step-size adaptation from the quadratic model's prediction (reference rule):
    r = predicted / (2 max(1e-4, predicted - actual)), clipped to [0.1, 5];
    step_mult <- clip(r step_mult, min_step_mult, max_step_mult)."""
    if not (np.isfinite(predicted_improvement) and np.isfinite(actual_improvement)):
        raise TrajOptError(f"step adjustment: non-finite improvement (predicted {predicted_improvement}, "
                           f"actual {actual_improvement})")
    r = predicted_improvement / (2.0 * max(1e-4, predicted_improvement - actual_improvement))
    r = float(np.clip(r, 0.1, 5.0))
    return float(np.clip(r * step_mult, min_step_mult, max_step_mult))


def random_problem(
    T: int = 100, dX: int = 32, dU: int = 7, seed: int = 0, dt: float = 0.05
) -> tuple[LinearGaussianPolicy, LinearGaussianDynamics, CostModel]:
    """A random, well-posed C-step input of the PR2 arm's size by default (T=100, dX=32, dU=7): stable-ish
    discrete dynamics x' = (I + dt A~) x + dt B u + f with small process noise, a convex quadratic cost
    (heavier at the last step) and a unit-covariance initial controller. For benchmarks and tests."""
    rng = np.random.default_rng(seed)
    A = np.eye(dX) + dt * 0.3 * rng.standard_normal((T - 1, dX, dX)) / np.sqrt(dX)
    B = dt * rng.standard_normal((T - 1, dX, dU))
    W = 1e-4 * rng.standard_normal((T - 1, dX, dX))
    dyn = LinearGaussianDynamics(np.concatenate([A, B], axis=2), 0.01 * rng.standard_normal((T - 1, dX)),
                                 W @ W.swapaxes(-1, -2) + 1e-5 * np.eye(dX), rng.standard_normal(dX),
                                 1e-4 * np.eye(dX))
    D = dX + dU
    R = rng.standard_normal((T, D, D)) / np.sqrt(D)
    cm = 0.1 * R @ R.swapaxes(-1, -2)
    cm[:, dX:, dX:] += 1e-3 * np.eye(dU)
    cm[-1] *= 10.0
    cost = CostModel(np.zeros(T), rng.standard_normal((T, D)), cm)
    prev = LinearGaussianPolicy(0.1 * rng.standard_normal((T, dU, dX)), rng.standard_normal((T, dU)),
                                np.broadcast_to(np.eye(dU), (T, dU, dU)).copy())
    return prev, dyn, cost
