"""KL-constrained trajectory optimization (the C-step) for time-varying linear-Gaussian controllers.

Problem (Levine & Abbeel 2014; slides "Trajectory Optimization"):

    min_p E_p[sum_t l(x_t, u_t)]  s.t.  sum_t E_p[KL(p(u_t|x_t) || p̄(u_t|x_t))] <= epsilon,

solved through its Lagrangian: for fixed dual variable eta the optimum is the maximum-entropy LQG
controller for the surrogate cost  l̃ = l / eta - log p̄(u|x), computed by one backward pass under the
fitted linear-Gaussian dynamics; eta is then searched (log-space bracketing / bisection) until the KL of
the new controller to the previous one is within 10 % of epsilon.

All core functions are batched over a leading condition axis M, so several conditions are optimized
together; each keeps its own eta. Shapes: T steps, dX states, dU actions, D = dX + dU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gps_controller.policies.linear_gaussian import LinearGaussianPolicy
from gps_trainer.dynamics import LinearGaussianDynamics

__all__ = [
    "TrajOptError",
    "CostModel",
    "CStepResult",
    "backward_pass",
    "forward_pass",
    "kl_divergence",
    "estimate_cost",
    "kl_constrained_update",
    "new_step_mult",
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


def _stack_policies(policies: list[LinearGaussianPolicy]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (np.stack([p.K for p in policies]), np.stack([p.k for p in policies]),
            np.stack([p.pol_covar for p in policies]), np.stack([p.inv_pol_covar for p in policies]))


def _stack_dynamics(dyns: list[LinearGaussianDynamics]) -> tuple[np.ndarray, ...]:
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Max-entropy LQG backward pass for the surrogate cost l/eta - log p̄, batched over M conditions.

    With Q_T+1 = 0 and, for t = T-1..0 (the dynamics term only for t < T-1):
        Q_zz = cm_t/eta + Pm_t + F_t^T V_xx F_t,   q_z = cv_t/eta + pv_t + F_t^T (v_x + V_xx f_t)
        Sigma_t = Q_uu^-1,  K_t = -Q_uu^-1 Q_ux,  k_t = -Q_uu^-1 q_u
        V_xx = Q_xx + Q_xu K_t,  v_x = q_x + Q_xu k_t
    (Pm, pv: :func:`_prev_log_terms`). Shapes: prev_* (M, T, ...), Fm (M, T-1, dX, D), cm (M, T, D, D),
    eta (M,). Returns K, k, Sigma, and the index of the first time step whose Q_uu was not positive
    definite per condition (-1 if none; that condition's outputs are then meaningless).
    """
    M, T, dU, dX = prev_K.shape
    inv_eta = (1.0 / eta)[:, None, None, None]
    Pm, pv = _prev_log_terms(prev_K, prev_k, prev_inv_covar)
    Cm = cm * inv_eta + Pm
    Cv = cv * inv_eta[..., 0] + pv
    K = np.zeros((M, T, dU, dX))
    k = np.zeros((M, T, dU))
    covar = np.zeros((M, T, dU, dU))
    failed_at = np.full(M, -1)
    Vxx = np.zeros((M, dX, dX))
    vx = np.zeros((M, dX))
    eye_u = np.broadcast_to(np.eye(dU), (M, dU, dU))
    Ft = Fm.swapaxes(-1, -2)
    for t in range(T - 1, -1, -1):
        Qtt = Cm[:, t]
        Qt = Cv[:, t]
        if t < T - 1:
            FtV = Ft[:, t] @ Vxx
            Qtt = Qtt + FtV @ Fm[:, t]
            Qt = Qt + np.einsum("mdx,mx->md", Ft[:, t], vx) + np.einsum("mdx,mx->md", FtV, fv[:, t])
        Qtt = 0.5 * (Qtt + Qtt.swapaxes(-1, -2))
        Quu = Qtt[:, dX:, dX:]
        try:
            np.linalg.cholesky(Quu)
        except np.linalg.LinAlgError:
            bad = np.linalg.eigvalsh(Quu).min(axis=-1) <= 0
            failed_at[(failed_at < 0) & bad] = t
            Quu = np.where(bad[:, None, None], eye_u, Quu)
        rhs = np.concatenate([Qtt[:, dX:, :dX], Qt[:, dX:, None], eye_u], axis=-1)
        sol = np.linalg.solve(Quu, rhs)
        K[:, t] = -sol[:, :, :dX]
        k[:, t] = -sol[:, :, dX]
        covar[:, t] = sol[:, :, dX + 1:]
        Qxu = Qtt[:, :dX, dX:]
        Vxx = Qtt[:, :dX, :dX] + Qxu @ K[:, t]
        Vxx = 0.5 * (Vxx + Vxx.swapaxes(-1, -2))
        vx = Qt[:, :dX] + np.einsum("mxu,mu->mx", Qxu, k[:, t])
        if failed_at.max() >= 0:  # stop propagating a failed condition's value function
            Vxx[failed_at >= 0] = 0.0
            vx[failed_at >= 0] = 0.0
    covar = 0.5 * (covar + covar.swapaxes(-1, -2))
    return K, k, covar, failed_at


def forward_pass(
    K: np.ndarray, k: np.ndarray, covar: np.ndarray, Fm: np.ndarray, fv: np.ndarray, dyn_covar: np.ndarray,
    x0mu: np.ndarray, x0sigma: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """State-action marginals p(z_t) = N(mu_t, S_t) of a controller under linear-Gaussian dynamics:

        mu_0[x] = x0mu, S_0[xx] = x0sigma;  mu_t[u] = K_t mu_t[x] + k_t,
        S_t[ux] = K_t S_t[xx],  S_t[uu] = K_t S_t[xx] K_t^T + Sigma_t,
        mu_{t+1}[x] = F_t mu_t + f_t,  S_{t+1}[xx] = F_t S_t F_t^T + Sigma^dyn_t.

    Batched over the leading axis M. Returns mu (M, T, D), sigma (M, T, D, D).
    """
    M, T, dU, dX = K.shape
    D = dX + dU
    mu = np.zeros((M, T, D))
    sigma = np.zeros((M, T, D, D))
    mx = x0mu
    sxx = x0sigma
    Ft = Fm.swapaxes(-1, -2)
    for t in range(T):
        Kt = K[:, t]
        KS = Kt @ sxx
        mu[:, t, :dX] = mx
        mu[:, t, dX:] = np.einsum("mux,mx->mu", Kt, mx) + k[:, t]
        sigma[:, t, :dX, :dX] = sxx
        sigma[:, t, dX:, :dX] = KS
        sigma[:, t, :dX, dX:] = KS.swapaxes(-1, -2)
        sigma[:, t, dX:, dX:] = KS @ Kt.swapaxes(-1, -2) + covar[:, t]
        if t < T - 1:
            mx = np.einsum("mxd,md->mx", Fm[:, t], mu[:, t]) + fv[:, t]
            sxx = Fm[:, t] @ sigma[:, t] @ Ft[:, t] + dyn_covar[:, t]
            sxx = 0.5 * (sxx + sxx.swapaxes(-1, -2))
    return mu, sigma


def kl_divergence(
    mu: np.ndarray, sigma: np.ndarray, K: np.ndarray, k: np.ndarray, covar: np.ndarray,
    prev_K: np.ndarray, prev_k: np.ndarray, prev_covar: np.ndarray, prev_inv_covar: np.ndarray,
) -> np.ndarray:
    """Per-step KL(p(u_t|x_t) || p̄(u_t|x_t)) averaged over the new state marginal N(mu_t[x], S_t[xx]):

        0.5 [log|Sigmā| - log|Sigma| - dU + tr(Sigmā^-1 Sigma)
             + (dK mu + dk)^T Sigmā^-1 (dK mu + dk) + tr(dK^T Sigmā^-1 dK S_xx)],
    dK = K̄ - K, dk = k̄ - k. Works on any leading axes (..., T); clipped at 0 against round-off.
    """
    dX = K.shape[-1]
    mx = mu[..., :dX]
    sxx = sigma[..., :dX, :dX]
    dK = prev_K - K
    dk = prev_k - k
    P = prev_inv_covar
    logdet_prev = np.linalg.slogdet(prev_covar)[1]
    logdet_new = np.linalg.slogdet(covar)[1]
    r = np.einsum("...ux,...x->...u", dK, mx) + dk
    Pr = np.einsum("...uv,...v->...u", P, r)
    PdK = P @ dK
    tr_cov = np.einsum("...uv,...vu->...", P, covar)
    tr_state = np.einsum("...ux,...uy,...yx->...", dK, PdK, sxx)
    kl = 0.5 * (logdet_prev - logdet_new - K.shape[-2] + tr_cov + np.sum(r * Pr, axis=-1) + tr_state)
    return np.maximum(kl, 0.0)


def estimate_cost(mu: np.ndarray, sigma: np.ndarray, cost: CostModel) -> np.ndarray:
    """Expected cost under Gaussian marginals: sum_t cc_t + cv_t^T mu_t + 0.5 mu_t^T cm_t mu_t
    + 0.5 tr(cm_t S_t). mu (..., T, D); returns (...)."""
    quad = np.einsum("...ti,tij,...tj->...t", mu, cost.cm, mu)
    tr = np.einsum("tij,...tji->...t", cost.cm, sigma)
    return np.sum(cost.cc + np.einsum("...ti,ti->...t", mu, cost.cv) + 0.5 * quad + 0.5 * tr, axis=-1)


def _backward_robust(prev, Fm, fv, cm, cv, eta, del0, max_eta):
    """backward_pass; conditions whose Q_uu is not PD retry with eta <- eta0 + del, del <- 2 del."""
    eta = eta.astype(np.float64).copy()
    eta0 = eta.copy()
    delta = np.full_like(eta, del0)
    while True:
        K, k, covar, failed_at = backward_pass(prev[0], prev[1], prev[3], Fm, fv, cm, cv, eta)
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
) -> list[CStepResult]:
    """C-step for M conditions at once: find eta_m with |KL_m(eta) - eps_m| < tolerance eps_m.

    eps_m = kl_step_m * T (a per-step budget summed over the horizon, as the reference). Search per
    condition as the reference: start at eta_m; if KL > eps the step was too large, so min_eta <- eta and
    eta <- min(sqrt(min_eta max_eta), 10 eta); else max_eta <- eta and eta <- max(sqrt(min_eta max_eta),
    eta / 10). Returns one :class:`CStepResult` per condition; a condition that does not converge keeps
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
    target = np.broadcast_to(np.asarray(kl_step, dtype=np.float64), (M,)) * T
    eta = np.broadcast_to(np.asarray(eta, dtype=np.float64), (M,)).copy()
    eta = np.clip(eta, min_eta, max_eta)
    lo = np.full(M, min_eta)
    hi = np.full(M, max_eta)
    done = np.zeros(M, dtype=bool)
    out_K, out_k, out_cov = np.zeros((M, T, dU, dX)), np.zeros((M, T, dU)), np.zeros((M, T, dU, dU))
    kl_tot = np.full(M, np.nan)
    eta_res = eta.copy()
    iters = np.zeros(M, dtype=int)
    for _ in range(max_iterations):
        a = np.flatnonzero(~done)
        sub = tuple(x[a] for x in P)
        K, k, covar, eta_used = _backward_robust(sub, Fm[a], fv[a], cm[a], cv[a], eta[a], del0, max_eta)
        mu, sigma = forward_pass(K, k, covar, Fm[a], fv[a], dyn_covar[a], x0mu[a], x0sigma[a])
        kl = kl_divergence(mu, sigma, K, k, covar, sub[0], sub[1], sub[2], sub[3]).sum(axis=-1)
        if not np.all(np.isfinite(kl)):
            raise TrajOptError("trajectory optimization: KL divergence is NaN/Inf (ill-conditioned controller)")
        out_K[a], out_k[a], out_cov[a], kl_tot[a], eta[a], eta_res[a] = K, k, covar, kl, eta_used, eta_used
        iters[a] += 1
        con = kl - target[a]
        ok = np.abs(con) < tolerance * target[a]
        done[a[ok]] = True
        too_big = (con > 0) & ~ok  # KL too large: eta too small
        too_small = (con < 0) & ~ok
        i = a[too_big]
        lo[i] = eta[i]
        eta[i] = np.minimum(np.sqrt(lo[i] * hi[i]), 10.0 * lo[i])
        i = a[too_small]
        hi[i] = eta[i]
        eta[i] = np.maximum(np.sqrt(lo[i] * hi[i]), 0.1 * hi[i])
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
