"""Time-varying linear-Gaussian controllers p(u_t | x_t) = N(K_t x_t + k_t, Sigma_t), their usual
initializations (LQR holding the initial state, PD) and temporally smoothed exploration noise.

Plain numpy; no ROS. The controller node calls :meth:`LinearGaussianPolicy.act` at 20 Hz.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

__all__ = ["LinearGaussianPolicy", "init_lqr", "init_pd", "smooth_noise"]


def _check_finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"LinearGaussianPolicy: {name} has a non-finite entry at index {tuple(bad)}")


class LinearGaussianPolicy:
    """p(u_t | x_t) = N(K_t x_t + k_t, Sigma_t) for t = 0..T-1.

    Arrays: ``K`` (T, dU, dX), ``k`` (T, dU), ``pol_covar`` Sigma_t (T, dU, dU),
    ``chol_pol_covar`` upper Cholesky factor C_t with Sigma_t = C_t^T C_t, ``inv_pol_covar`` Sigma_t^-1.
    The factor and inverse are computed when not given. Construction checks shapes, finiteness,
    symmetry and positive definiteness and raises ``ValueError`` naming the offending array and step.
    ``noise_smoothing_std``: the std (in steps) of the Gaussian filter applied to the exploration noise
    when this controller samples (:func:`smooth_noise`; 0 = white noise). It travels with the
    controller (LinearGaussianController.noise_smoothing_std) so a robot samples as the trainer expects.
    """

    def __init__(
        self,
        K: np.ndarray,
        k: np.ndarray,
        pol_covar: np.ndarray,
        chol_pol_covar: np.ndarray | None = None,
        inv_pol_covar: np.ndarray | None = None,
        *,
        validate: bool = True,
        noise_smoothing_std: float = 0.0,
    ) -> None:
        K = np.ascontiguousarray(K, dtype=np.float64)
        k = np.ascontiguousarray(k, dtype=np.float64)
        pol_covar = np.ascontiguousarray(pol_covar, dtype=np.float64)
        if validate:
            if K.ndim != 3:
                raise ValueError(f"LinearGaussianPolicy: K must be (T, dU, dX), got shape {K.shape}")
            T, dU, dX = K.shape
            if k.shape != (T, dU):
                raise ValueError(f"LinearGaussianPolicy: k must be (T, dU) = {(T, dU)}, got {k.shape}")
            if pol_covar.shape != (T, dU, dU):
                raise ValueError(
                    f"LinearGaussianPolicy: pol_covar must be (T, dU, dU) = {(T, dU, dU)}, got {pol_covar.shape}"
                )
            for name, a in (("K", K), ("k", k), ("pol_covar", pol_covar)):
                _check_finite(name, a)
            asym = np.abs(pol_covar - pol_covar.transpose(0, 2, 1)).max(initial=0.0)
            if asym > 1e-8 * max(1.0, np.abs(pol_covar).max(initial=0.0)):
                raise ValueError(f"LinearGaussianPolicy: pol_covar is not symmetric (max asymmetry {asym:.3e})")
        if chol_pol_covar is None:
            try:
                chol_pol_covar = np.linalg.cholesky(pol_covar).transpose(0, 2, 1)
            except np.linalg.LinAlgError:
                eig = np.linalg.eigvalsh(pol_covar).min(axis=1)
                t = int(np.argmin(eig))
                raise ValueError(
                    f"LinearGaussianPolicy: pol_covar is not positive definite at t={t} "
                    f"(smallest eigenvalue {eig[t]:.3e})"
                ) from None
        chol_pol_covar = np.ascontiguousarray(chol_pol_covar, dtype=np.float64)
        if inv_pol_covar is None:
            inv_pol_covar = np.linalg.inv(pol_covar)
        inv_pol_covar = np.ascontiguousarray(inv_pol_covar, dtype=np.float64)
        if validate:
            for name, a in (("chol_pol_covar", chol_pol_covar), ("inv_pol_covar", inv_pol_covar)):
                if a.shape != pol_covar.shape:
                    raise ValueError(f"LinearGaussianPolicy: {name} must have shape {pol_covar.shape}, got {a.shape}")
                _check_finite(name, a)
        if validate and not (np.isfinite(noise_smoothing_std) and noise_smoothing_std >= 0):
            raise ValueError(f"LinearGaussianPolicy: noise_smoothing_std must be finite and >= 0, got {noise_smoothing_std}")
        self.noise_smoothing_std = float(noise_smoothing_std)
        self.K, self.k, self.pol_covar = K, k, pol_covar
        self.chol_pol_covar, self.inv_pol_covar = chol_pol_covar, inv_pol_covar
        # Transposed factor cached so act() is one matvec per term.
        self._chol_T = np.ascontiguousarray(chol_pol_covar.transpose(0, 2, 1))

    @property
    def T(self) -> int:
        return self.K.shape[0]

    @property
    def dU(self) -> int:
        return self.K.shape[1]

    @property
    def dX(self) -> int:
        return self.K.shape[2]

    def act(self, x: np.ndarray, t: int, noise: np.ndarray | None = None) -> np.ndarray:
        """u_t = K_t x + k_t + C_t^T noise, noise ~ N(0, I) gives u_t ~ N(K_t x + k_t, Sigma_t)."""
        u = self.K[t] @ x + self.k[t]
        if noise is not None:
            u = u + self._chol_T[t] @ noise
        return u

    def act_batch(self, X: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Mean (and noisy) actions for states X (..., T, dX) at every step: U_t = K_t x_t + k_t + C_t^T n_t."""
        U = np.einsum("tux,...tx->...tu", self.K, X) + self.k
        if noise is not None:
            U = U + np.einsum("tuv,...tv->...tu", self._chol_T, noise)
        return U

    def copy(self) -> LinearGaussianPolicy:
        return self.first_steps(self.T)

    def first_steps(self, T: int) -> LinearGaussianPolicy:
        """A copy with steps 0..T-1 only (a controller of a longer run starting a shorter one)."""
        return LinearGaussianPolicy(
            self.K[:T].copy(), self.k[:T].copy(), self.pol_covar[:T].copy(), self.chol_pol_covar[:T].copy(),
            self.inv_pol_covar[:T].copy(), validate=False, noise_smoothing_std=self.noise_smoothing_std,
        )

    def __repr__(self) -> str:
        return f"LinearGaussianPolicy(T={self.T}, dX={self.dX}, dU={self.dU})"


def _guess_dynamics(gains: np.ndarray, acc: np.ndarray, dX: int, dU: int, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Double-integrator guess x' = Fd [x; u] + fc with q' = q + dt qd + dt^2 g u, qd' = qd + dt g u."""
    Fd = np.zeros((dX, dX + dU))
    eye = np.eye(dU)
    Fd[:dU, :dU] = eye
    Fd[:dU, dU:2 * dU] = dt * eye
    Fd[dU:2 * dU, dU:2 * dU] = eye
    Fd[:dU, dX:] = dt**2 * np.diag(gains)
    Fd[dU:2 * dU, dX:] = dt * np.diag(gains)
    fc = np.zeros(dX)
    fc[:dU] = dt**2 * acc
    fc[dU:2 * dU] = dt * acc
    return Fd, fc


def init_lqr(
    x0: np.ndarray,
    dU: int,
    T: int,
    dt: float,
    *,
    stiffness: float = 1.0,
    stiffness_vel: float = 0.5,
    init_var: float = 1.0,
    final_weight: float = 1.0,
    gains: np.ndarray | float = 1.0,
    acc: np.ndarray | float = 0.0,
) -> LinearGaussianPolicy:
    """LQR controller holding the initial joint configuration, as the reference initializer.

    Assumes x = [q (dU), qd (dU), ...]. Dynamics guess: double integrator with per-joint gains (inverse
    inertias). Cost per step: 0.5 (z - z0)^T L (z - z0), z = [x; u], L = diag(s, s*s_v, 0, 1) / init_var,
    multiplied by ``final_weight`` at t = T-1. The max-entropy LQR solution gives
    K_t = -Q_uu^-1 Q_ux, k_t = -Q_uu^-1 q_u and Sigma_t = Q_uu^-1 (so Sigma is about init_var).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    dX = x0.shape[0]
    if dX < 2 * dU:
        raise ValueError(f"init_lqr: state dimension {dX} must hold joint angles and velocities (>= 2*dU={2 * dU})")
    gains = np.broadcast_to(np.asarray(gains, dtype=np.float64), (dU,))
    acc = np.broadcast_to(np.asarray(acc, dtype=np.float64), (dU,))
    Fd, fc = _guess_dynamics(gains, acc, dX, dU, dt)
    diag = np.concatenate([stiffness * np.ones(dU), stiffness * stiffness_vel * np.ones(dU),
                           np.zeros(dX - 2 * dU), np.ones(dU)])
    Ltt = np.diag(diag) / init_var
    lt = -Ltt @ np.concatenate([x0, np.zeros(dU)])
    ix, iu = slice(0, dX), slice(dX, dX + dU)
    K = np.zeros((T, dU, dX))
    k = np.zeros((T, dU))
    covar = np.zeros((T, dU, dU))
    Vxx = np.zeros((dX, dX))
    vx = np.zeros(dX)
    for t in range(T - 1, -1, -1):
        w = final_weight if t == T - 1 else 1.0
        Qtt = w * Ltt + Fd.T @ Vxx @ Fd
        Qt = w * lt + Fd.T @ (vx + Vxx @ fc)
        Quu_inv = np.linalg.inv(Qtt[iu, iu])
        covar[t] = 0.5 * (Quu_inv + Quu_inv.T)
        K[t] = -Quu_inv @ Qtt[iu, ix]
        k[t] = -Quu_inv @ Qt[iu]
        Vxx = Qtt[ix, ix] + Qtt[ix, iu] @ K[t]
        Vxx = 0.5 * (Vxx + Vxx.T)
        vx = Qt[ix] + Qtt[ix, iu] @ k[t]
    return LinearGaussianPolicy(K, k, covar)


def init_pd(
    x0: np.ndarray,
    dU: int,
    T: int,
    *,
    pos_gains: np.ndarray | float = 10.0,
    vel_gains_mult: float = 0.01,
    init_var: float = 10.0,
    action_offset: np.ndarray | None = None,
) -> LinearGaussianPolicy:
    """PD controller towards the initial configuration: u = -g (q - q0) - g v qd + offset, Sigma = init_var I."""
    x0 = np.asarray(x0, dtype=np.float64)
    dX = x0.shape[0]
    if dX < 2 * dU:
        raise ValueError(f"init_pd: state dimension {dX} must hold joint angles and velocities (>= 2*dU={2 * dU})")
    g = np.broadcast_to(np.asarray(pos_gains, dtype=np.float64), (dU,))
    K0 = np.zeros((dU, dX))
    K0[:, :dU] = -np.diag(g)
    K0[:, dU:2 * dU] = -np.diag(g * vel_gains_mult)
    k0 = -K0 @ x0
    if action_offset is not None:
        k0 = k0 + np.asarray(action_offset, dtype=np.float64)
    K = np.broadcast_to(K0, (T, dU, dX)).copy()
    k = np.broadcast_to(k0, (T, dU)).copy()
    covar = np.broadcast_to(init_var * np.eye(dU), (T, dU, dU)).copy()
    return LinearGaussianPolicy(K, k, covar)


def smooth_noise(
    rng: np.random.Generator, T: int, dU: int, smoothing_std: float = 0.0, renormalize: bool = True
) -> np.ndarray:
    """Standard normal noise (T, dU), optionally Gaussian-filtered over time with std ``smoothing_std``
    steps and rescaled so each action dimension has unit empirical variance again."""
    noise = rng.standard_normal((T, dU))
    if smoothing_std > 0:
        noise = gaussian_filter1d(noise, smoothing_std, axis=0, mode="reflect")
        if renormalize:
            std = noise.std(axis=0)
            noise = noise / np.where(std > 0, std, 1.0)
    return noise
