"""The C-step as it was before the issue-16 speed-up (commit aa95419), frozen as the reference that
test_traj_opt.py compares the fast path with: LU solves, a separate PD test and inverse over all steps,
3-D products batched over conditions in both recursions, and the eta rule that bisected whenever one end
of the bracket moved twice (``next_eta`` swaps in another rule, e.g. the current one, so the numerics
can be compared along the same eta path). Not used by the library."""

from __future__ import annotations

import logging

import numpy as np

from gps_core.linear_gaussian import LinearGaussianPolicy
from gps_trainer.dynamics import LinearGaussianDynamics
from gps_trainer.traj_opt import CostModel, CStepResult, TrajOptError, kl_divergence

LOGGER = logging.getLogger(__name__)


def _stack_policies(policies):
    return (np.stack([p.K for p in policies]), np.stack([p.k for p in policies]),
            np.stack([p.pol_covar for p in policies]), np.stack([p.inv_pol_covar for p in policies]))


def _stack_dynamics(dyns):
    return tuple(np.stack([getattr(d, n) for d in dyns]) for n in ("Fm", "fv", "dyn_covar", "x0mu", "x0sigma"))


def _prev_log_terms(K: np.ndarray, k: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quadratic form of -log p̄(u|x) (up to constants): with P = Sigmā^-1,
    0.5 z^T [[K^T P K, -K^T P], [-P K, P]] z + z^T [K^T P k; -P k]."""
    PK = P @ K  # (..., dU, dX)
    KtPK = K.swapaxes(-1, -2) @ PK
    top = np.concatenate([KtPK, -PK.swapaxes(-1, -2)], axis=-1)
    bot = np.concatenate([-PK, P], axis=-1)
    Pk = np.einsum("...uv,...v->...u", P, k)
    v = np.concatenate([np.einsum("...ux,...u->...x", K, Pk), -Pk], axis=-1)
    return np.concatenate([top, bot], axis=-2), v


def backward_pass(
    prev_K: np.ndarray,
    prev_k: np.ndarray,
    prev_inv_covar: np.ndarray,
    Fm: np.ndarray,
    fv: np.ndarray,
    cm: np.ndarray,
    cv: np.ndarray,
    eta: np.ndarray,
    prev_terms: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Max-entropy LQG backward pass for the surrogate cost l/eta - log p̄, batched over M conditions.

    With Q_T+1 = 0 and, for t = T-1..0 (the dynamics term only for t < T-1):
        Q_zz = cm_t/eta + Pm_t + F_t^T V_xx F_t,   q_z = cv_t/eta + pv_t + F_t^T (v_x + V_xx f_t)
        Sigma_t = Q_uu^-1,  K_t = -Q_uu^-1 Q_ux,  k_t = -Q_uu^-1 q_u
        V_xx = Q_xx + Q_xu K_t,  v_x = q_x + Q_xu k_t
    (Pm, pv: :func:`_prev_log_terms`, which may be passed precomputed as ``prev_terms``).
    Shapes: prev_* (M, T, ...), Fm (M, T-1, dX, D), cm (M, T, D, D), eta (M,).
    Returns K, k, Sigma, and per condition the (latest) time step whose Q_uu was not positive definite,
    -1 if none; a failed condition's outputs are meaningless.
    """
    M, T, dU, dX = prev_K.shape
    n = dX + 1  # homogeneous state [x; 1]: V = [[V_xx, v_x], [v_x^T, .]] carries value and gradient at once
    inv_eta = (1.0 / np.asarray(eta, dtype=np.float64))[:, None, None]
    Pm, pv = prev_terms if prev_terms is not None else _prev_log_terms(prev_K, prev_k, prev_inv_covar)
    # Surrogate cost in z~ = [x; 1; u]: [[C_xx, c_x, C_xu], [c_x^T, 0, c_u^T], [C_ux, c_u, C_uu]].
    Cm = cm * inv_eta[..., None] + Pm
    Cv = cv * inv_eta + pv
    C = np.zeros((M, T, n + dU, n + dU))
    C[..., :dX, :dX], C[..., :dX, n:], C[..., n:, :dX], C[..., n:, n:] = (
        Cm[..., :dX, :dX], Cm[..., :dX, dX:], Cm[..., dX:, :dX], Cm[..., dX:, dX:])
    C[..., :dX, dX], C[..., n:, dX] = Cv[..., :dX], Cv[..., dX:]
    C[..., dX, :dX], C[..., dX, n:] = Cv[..., :dX], Cv[..., dX:]
    # Dynamics in homogeneous form: [x'; 1] = [[F_x, f, F_u], [0, 1, 0]] z~.
    F = np.zeros((M, T - 1, n, n + dU))
    F[..., :dX, :dX], F[..., :dX, dX], F[..., :dX, n:], F[..., dX, dX] = Fm[..., :dX], fv, Fm[..., dX:], 1.0
    Ft = F.swapaxes(-1, -2)
    G = np.empty((M, T, dU, n))  # [K_t, k_t]
    Quu_all = np.empty((M, T, dU, dU))
    V = np.zeros((M, n, n))
    failed = np.zeros(M, dtype=bool)
    eye_u = np.eye(dU)
    with np.errstate(all="ignore"):  # a failed condition may overflow; it is detected below
        for t in range(T - 1, -1, -1):
            Q = C[:, t] + Ft[:, t] @ V @ F[:, t] if t < T - 1 else C[:, t]
            Quu = Q[:, n:, n:]
            Quu_all[:, t] = Quu
            try:
                Gt = -np.linalg.solve(Quu, Q[:, n:, :n])
            except np.linalg.LinAlgError:  # exactly singular somewhere: fail those, continue the others
                sing = ~(np.isfinite(np.linalg.cond(Quu)) & np.isfinite(Quu).all(axis=(-1, -2)))
                failed |= sing
                Gt = -np.linalg.solve(np.where(sing[:, None, None], eye_u, Quu), Q[:, n:, :n])
            G[:, t] = Gt
            V = Q[:, :n, :n] + Q[:, :n, n:] @ Gt
    failed_at = _first_non_pd(Quu_all, failed)
    ok = failed_at < 0
    covar = np.empty((M, T, dU, dU))
    covar[ok] = np.linalg.inv(Quu_all[ok])
    covar[~ok] = np.eye(dU)
    covar = 0.5 * (covar + covar.swapaxes(-1, -2))
    return G[..., :dX], G[..., dX], covar, failed_at


def _first_non_pd(Quu: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Per condition, the largest t (first in backward order) with Q_uu not PD or not finite, else -1."""
    out = np.full(Quu.shape[0], -1)
    try:
        if not failed.any():
            np.linalg.cholesky(Quu)  # fast path: everything PD
            return out
    except np.linalg.LinAlgError:
        pass
    finite = np.isfinite(Quu).all(axis=(-1, -2))
    safe = np.where(finite[..., None, None], Quu, np.eye(Quu.shape[-1]))
    bad = ~finite | (np.linalg.eigvalsh(safe).min(axis=-1) <= 0)  # (M, T)
    for m in np.flatnonzero(bad.any(axis=1) | failed):
        ts = np.flatnonzero(bad[m])
        out[m] = ts.max() if ts.size else Quu.shape[1] - 1
    return out


def forward_pass(
    K: np.ndarray, k: np.ndarray, covar: np.ndarray, Fm: np.ndarray, fv: np.ndarray, dyn_covar: np.ndarray,
    x0mu: np.ndarray, x0sigma: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """State-action marginals p(z_t) = N(mu_t, S_t) of a controller under linear-Gaussian dynamics:

        mu_0[x] = x0mu, S_0[xx] = x0sigma;  mu_t[u] = K_t mu_t[x] + k_t,
        S_t[ux] = K_t S_t[xx],  S_t[uu] = K_t S_t[xx] K_t^T + Sigma_t,
        mu_{t+1}[x] = F_t mu_t + f_t,  S_{t+1}[xx] = F_t S_t F_t^T + Sigma^dyn_t.

    The recursion runs on the closed loop A_t = Fx_t + Fu_t K_t (noise Fu Sigma Fu^T + Sigma^dyn), the
    action blocks are filled in afterwards for all t at once. Batched over the leading axis M.
    Returns mu (M, T, D), sigma (M, T, D, D).
    """
    M, T, dU, dX = K.shape
    Fx, Fu = Fm[..., :dX], Fm[..., dX:]
    A = Fx + Fu @ K[:, :-1]  # (M, T-1, dX, dX)
    a = (Fu @ k[:, :-1, :, None])[..., 0] + fv
    W = Fu @ covar[:, :-1] @ Fu.swapaxes(-1, -2) + dyn_covar
    At = A.swapaxes(-1, -2)
    mx = np.empty((M, T, dX))
    sxx = np.empty((M, T, dX, dX))
    mx[:, 0], sxx[:, 0] = x0mu, x0sigma
    m, s = x0mu[..., None], x0sigma
    for t in range(T - 1):
        m = A[:, t] @ m + a[:, t, :, None]
        s = A[:, t] @ s @ At[:, t] + W[:, t]
        mx[:, t + 1], sxx[:, t + 1] = m[..., 0], s
    sxx = 0.5 * (sxx + sxx.swapaxes(-1, -2))
    KS = K @ sxx
    mu = np.concatenate([mx, (K @ mx[..., None])[..., 0] + k], axis=-1)
    sigma = np.concatenate([np.concatenate([sxx, KS.swapaxes(-1, -2)], axis=-1),
                            np.concatenate([KS, KS @ K.swapaxes(-1, -2) + covar], axis=-1)], axis=-2)
    return mu, sigma


def _backward_robust(prev, terms, Fm, fv, cm, cv, eta, del0, max_eta):
    """backward_pass; conditions whose Q_uu is not PD retry with eta <- eta0 + del, del <- 2 del."""
    eta = eta.astype(np.float64).copy()
    eta0 = eta.copy()
    delta = np.full_like(eta, del0)
    while True:
        K, k, covar, failed_at = backward_pass(prev[0], prev[1], prev[3], Fm, fv, cm, cv, eta, terms)
        bad = failed_at >= 0
        if not bad.any():
            return K, k, covar, eta
        for m in np.flatnonzero(bad):
            LOGGER.debug("non-PD Q_uu at t=%d (condition slot %d): eta %.3g -> %.3g", failed_at[m], m, eta[m],
                         eta0[m] + delta[m])
        eta[bad] = eta0[bad] + delta[bad]
        delta[bad] = np.minimum(2.0 * delta[bad], 1e16)
        if np.any(eta[bad] >= max_eta):
            m = int(np.flatnonzero(bad & (eta >= max_eta))[0])
            if not (np.all(np.isfinite(Fm[m])) and np.all(np.isfinite(fv[m]))):
                raise TrajOptError("trajectory optimization: dynamics contain NaN/Inf")
            raise TrajOptError(
                f"trajectory optimization: Q_uu not positive definite at t={int(failed_at[m])} even for eta >= "
                f"{max_eta:.1e}; check that the fitted dynamics and the cost are reasonably conditioned"
            )


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
    next_eta=None,
) -> list[CStepResult]:
    """C-step for M conditions at once: find eta_m with |KL_m(eta) - eps_m| < tolerance eps_m.

    eps_m = kl_step_m * T (a per-step budget summed over the horizon, as the reference). Search per
    condition from eta_m over a bracket in log-space (:func:`_next_eta`). Returns one :class:`CStepResult` per condition; a condition that does not converge keeps
    its last controller and logs a warning (``converged`` False).
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
    Pm, pv = _prev_log_terms(P[0], P[1], P[3])  # -log p̄ does not depend on eta: once per C-step
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
    eta_res = eta.copy()
    iters = np.zeros(M, dtype=int)
    for _ in range(max_iterations):
        a = np.flatnonzero(~done)
        sub = tuple(x[a] for x in P)
        terms = (Pm[a], pv[a])
        K, k, covar, eta_used = _backward_robust(sub, terms, Fm[a], fv[a], cm[a], cv[a], eta[a], del0, max_eta)
        mu, sigma = forward_pass(K, k, covar, Fm[a], fv[a], dyn_covar[a], x0mu[a], x0sigma[a])
        kl = kl_divergence(mu, sigma, K, k, covar, *sub, prev_logdet=prev_logdet[a]).sum(axis=-1)
        if not np.all(np.isfinite(kl)):
            raise TrajOptError("trajectory optimization: KL divergence is NaN/Inf (ill-conditioned controller)")
        out_K[a], out_k[a], out_cov[a], kl_tot[a], eta_res[a] = K, k, covar, kl, eta_used
        iters[a] += 1
        for j, m in enumerate(a):
            e, c = float(eta_used[j]), float(kl[j])
            if abs(c - target[m]) < tolerance * target[m]:
                done[m] = True
                continue
            eta[m] = (next_eta or _next_eta)(m, e, c, target[m], lo, hi, ylo, yhi, last_side)
        if done.all():
            break
    results = []
    for m in range(M):
        if not done[m]:
            LOGGER.warning("C-step condition %d: eta search did not converge (KL %.3g vs target %.3g, eta %.3g)",
                           m, kl_tot[m], target[m], eta[m])
        policy = LinearGaussianPolicy(out_K[m], out_k[m], out_cov[m])
        results.append(CStepResult(policy, float(eta_res[m]), float(kl_tot[m]),
                                   float(target[m]), int(iters[m]), bool(done[m])))
    return results


def _next_eta(m: int, eta: float, kl: float, target: float, lo: np.ndarray, hi: np.ndarray, ylo: np.ndarray,
              yhi: np.ndarray, last_side: np.ndarray) -> float:
    """Next dual variable for condition m after KL(eta) = kl missed the target (updates the bracket).

    KL falls with eta. Update the bracket: KL > target -> lo = eta, else hi = eta. Until both ends are
    evaluated, jump as the reference does but at most 10x: eta <- min(sqrt(lo hi), 10 lo) or
    max(sqrt(lo hi), hi / 10). Once bracketed, interpolate log KL linearly in log eta (secant), kept
    inside the inner 90 % of the log-bracket and replaced by bisection when the same end moved twice
    (Illinois-style safeguard), so the search never does worse than log-space bisection.
    """
    y = np.log(max(kl, 1e-300))
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
        return float(min(geom, 10.0 * lo[m]) if side > 0 else max(geom, 0.1 * hi[m]))
    w = xh - xl
    x = xl + (np.log(target) - ylo[m]) * w / (yhi[m] - ylo[m]) if yhi[m] != ylo[m] else np.nan
    if repeated or not np.isfinite(x) or not (xl + 0.05 * w <= x <= xh - 0.05 * w):
        x = 0.5 * (xl + xh)
    return float(np.exp(x))
