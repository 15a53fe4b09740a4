"""Time-varying linear-Gaussian models fitted from a few rollouts.

Per step t, with z = [inputs; outputs] (for dynamics: inputs [x_t; u_t], outputs x_{t+1}):

    p(out_t | in_t) = N(F_t in_t + f_t, Sigma_t)

is read off a joint Gaussian over z_t fitted by regularized maximum likelihood, optionally under a
normal-inverse-Wishart prior whose mean and scale come from a Gaussian mixture over recent (in, out)
points ("GMM prior", Levine & Abbeel 2014). The fit is generic in inputs/outputs so the same code
linearizes a policy p(u_t | x_t) for MDGPS.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from gps_core.samples import SampleBatch

__all__ = [
    "NIWPrior",
    "GMMPrior",
    "LinearGaussianDynamics",
    "fit_linear_gaussian",
    "fit_initial_state",
    "fit_dynamics",
]


class NIWPrior(NamedTuple):
    """Normal-inverse-Wishart prior per step: mean mu0 (T, D), scale Phi (T, D, D), strengths m, n0."""

    mu0: np.ndarray
    Phi: np.ndarray
    m: float
    n0: float


@dataclass
class LinearGaussianDynamics:
    """x_{t+1} ~ N(Fm_t [x_t; u_t] + fv_t, dyn_covar_t) for t = 0..T-2, and x_0 ~ N(x0mu, x0sigma)."""

    Fm: np.ndarray  # (T-1, dX, dX+dU)
    fv: np.ndarray  # (T-1, dX)
    dyn_covar: np.ndarray  # (T-1, dX, dX)
    x0mu: np.ndarray  # (dX,)
    x0sigma: np.ndarray  # (dX, dX)

    @property
    def dX(self) -> int:
        return self.Fm.shape[1]

    @property
    def dU(self) -> int:
        return self.Fm.shape[2] - self.Fm.shape[1]

    @property
    def T(self) -> int:
        return self.Fm.shape[0] + 1


def fit_linear_gaussian(
    inputs: np.ndarray,
    outputs: np.ndarray,
    prior: NIWPrior | None = None,
    regularization: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step conditional Gaussian out_t | in_t from N samples, vectorized over t.

    inputs (N, T, Di), outputs (N, T, Do). With z = [in; out], sample mean z̄_t and covariance S_t:

        Sigma_t = (N S_t + Phi_t + N m / (N + m) (z̄_t - mu0_t)(z̄_t - mu0_t)^T) / (N + n0)   (prior)
        Sigma_t = S_t                                                                      (no prior)
        Sigma_t[in, in] += regularization I
        F_t = Sigma_t[out, in] Sigma_t[in, in]^-1,   f_t = z̄_t[out] - F_t z̄_t[in],
        Sigma_out|in = Sigma_t[out, out] - F_t Sigma_t[in, in] F_t^T.

    Returns F (T, Do, Di), f (T, Do), covar (T, Do, Do).
    """
    if inputs.ndim != 3 or outputs.ndim != 3 or inputs.shape[:2] != outputs.shape[:2]:
        raise ValueError(f"fit_linear_gaussian: inputs {inputs.shape} and outputs {outputs.shape} must be "
                         "(N, T, Di) and (N, T, Do)")
    N, _, Di = inputs.shape
    if N < 1:
        raise ValueError("fit_linear_gaussian: no samples")
    pts = np.concatenate([inputs, outputs], axis=2)
    if not np.all(np.isfinite(pts)):
        raise ValueError("fit_linear_gaussian: samples contain NaN or Inf")
    mean = pts.mean(axis=0)  # (T, D)
    diff = pts - mean
    sigma = np.einsum("ntd,nte->tde", diff, diff) / N
    if prior is not None:
        d0 = mean - prior.mu0
        sigma = (N * sigma + prior.Phi + (N * prior.m / (N + prior.m)) * d0[:, :, None] * d0[:, None, :]) / (
            N + prior.n0
        )
    sigma = 0.5 * (sigma + sigma.transpose(0, 2, 1))
    sigma[:, np.arange(Di), np.arange(Di)] += regularization
    s_ii = sigma[:, :Di, :Di]
    s_io = sigma[:, :Di, Di:]
    try:
        F = np.linalg.solve(s_ii, s_io).transpose(0, 2, 1)
    except np.linalg.LinAlgError:
        raise ValueError(
            "fit_linear_gaussian: input covariance is singular; increase regularization or use a prior"
        ) from None
    f = mean[:, Di:] - np.einsum("toi,ti->to", F, mean[:, :Di])
    covar = sigma[:, Di:, Di:] - F @ s_ii @ F.transpose(0, 2, 1)
    covar = 0.5 * (covar + covar.transpose(0, 2, 1))
    if not (np.all(np.isfinite(F)) and np.all(np.isfinite(covar))):
        raise ValueError("fit_linear_gaussian: fit produced NaN/Inf (ill-conditioned data)")
    return F, f, covar


#: The fitted GaussianMixture's parameters a checkpoint keeps (see GMMPrior.state_arrays).
_MIXTURE_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


class GMMPrior:
    """Gaussian-mixture prior over points z = [in; out] of the most recent ``max_samples`` rollouts.

    ``update`` refits a scikit-learn GaussianMixture with K = max(2, min(max_clusters, #points //
    min_samples_per_cluster)) components (warm-started). ``eval`` returns, per step t, the moments of the
    mixture under the cluster weights w_tk = mean_n p(k | z_nt):

        mu0_t = sum_k w_tk mu_k,   Phi_t = m sum_k w_tk (Sigma_k + (mu_k - mu0_t)(mu_k - mu0_t)^T),
        m = strength,              n0 = strength (P - 2 - D) / P   (P points in the mixture),

    i.e. the reference's normalized NIW strengths.
    """

    def __init__(
        self,
        max_clusters: int = 20,
        min_samples_per_cluster: int = 40,
        max_samples: int = 20,
        strength: float = 1.0,
        seed: int = 0,
        max_iterations: int = 100,
    ) -> None:
        self.max_clusters = max_clusters
        self.min_samples_per_cluster = min_samples_per_cluster
        self.max_samples = max_samples
        self.strength = strength
        self.seed = seed
        self.max_iterations = max_iterations
        self._buffer: np.ndarray | None = None  # (S, T, D)
        self._gmm: GaussianMixture | None = None
        self._num_points = 0

    @property
    def fitted(self) -> bool:
        return self._gmm is not None

    @property
    def num_samples(self) -> int:
        return 0 if self._buffer is None else self._buffer.shape[0]

    def update(self, inputs: np.ndarray, outputs: np.ndarray) -> None:
        """Append rollouts (N, T, Di) / (N, T, Do), keep the newest ``max_samples``, refit the mixture."""
        pts = np.concatenate([inputs, outputs], axis=2)
        if self._buffer is not None and self._buffer.shape[1:] != pts.shape[1:]:
            raise ValueError(f"GMMPrior.update: points of shape {pts.shape[1:]} do not match the buffer's "
                             f"{self._buffer.shape[1:]}")
        buf = pts if self._buffer is None else np.concatenate([self._buffer, pts], axis=0)
        self._buffer = buf[-self.max_samples:]
        data = self._buffer.reshape(-1, self._buffer.shape[2])
        P = data.shape[0]
        K = int(max(2, min(self.max_clusters, P // self.min_samples_per_cluster)))
        K = min(K, P)
        if self._gmm is None or self._gmm.n_components != K:
            self._gmm = self._mixture(K)
        # EM on a few thousand points in ~70 dimensions: BLAS threads only add contention.
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._gmm.fit(data)
        self._num_points = P

    def _mixture(self, K: int) -> GaussianMixture:
        return GaussianMixture(n_components=K, covariance_type="full", reg_covar=1e-6, max_iter=self.max_iterations,
                               random_state=self.seed, warm_start=True)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything :meth:`update` and :meth:`eval` read, as arrays ({} before the first update): the buffered
        points, the point count and the fitted mixture. The mixture matters beyond its use in ``eval``: the
        next update's fit is warm-started, i.e. its EM starts from these parameters (weights_, means_,
        precisions_cholesky_: the first E-step) and from lower_bound_ (the first convergence test), so a
        prior refitted from the buffer alone would be another prior (tested)."""
        if self._gmm is None or self._buffer is None:
            return {}
        g = self._gmm
        out = {name.rstrip("_"): getattr(g, name) for name in _MIXTURE_ARRAYS}
        out.update(buffer=self._buffer, num_points=np.asarray(self._num_points, dtype=np.int64),
                   lower_bound=np.asarray(g.lower_bound_, dtype=np.float64),
                   converged=np.asarray(g.converged_, dtype=bool), n_iter=np.asarray(g.n_iter_, dtype=np.int64))
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """The inverse of :meth:`state_arrays`: this prior as the saved one was, its mixture a fitted,
        warm-startable GaussianMixture ({} leaves it empty, as a new prior)."""
        if not arrays:
            self._buffer, self._gmm, self._num_points = None, None, 0
            return
        self._buffer = np.array(arrays["buffer"], dtype=np.float64)
        self._num_points = int(arrays["num_points"])
        g = self._mixture(int(arrays["means"].shape[0]))
        for name in _MIXTURE_ARRAYS:
            setattr(g, name, np.array(arrays[name.rstrip("_")], dtype=np.float64))
        # precisions_ is read neither by a warm-started fit nor by predict_proba; it is rebuilt from the
        # Cholesky factors as sklearn's GaussianMixture._set_parameters builds it ('full'), so the object
        # has every attribute a fitted one has.
        g.precisions_ = np.empty_like(g.precisions_cholesky_)
        for k in range(g.precisions_cholesky_.shape[0]):
            g.precisions_[k] = g.precisions_cholesky_[k] @ g.precisions_cholesky_[k].T
        # converged_'s presence is what makes the next fit a warm start (BaseMixture.fit_predict's do_init)
        g.converged_, g.lower_bound_, g.n_iter_ = bool(arrays["converged"]), float(arrays["lower_bound"]), int(
            arrays["n_iter"])
        g.n_features_in_ = int(g.means_.shape[1])  # predict_proba checks the points' dimension against it
        self._gmm = g

    def eval(self, inputs: np.ndarray, outputs: np.ndarray) -> NIWPrior:
        """NIW prior per step for points (N, T, Di) / (N, T, Do) (see class docstring)."""
        if self._gmm is None:
            raise RuntimeError("GMMPrior.eval called before update")
        pts = np.concatenate([inputs, outputs], axis=2)
        N, T, D = pts.shape
        with threadpool_limits(limits=1):
            resp = self._gmm.predict_proba(pts.reshape(-1, D)).reshape(N, T, -1)
        w = resp.mean(axis=0)  # (T, K)
        means, covs = self._gmm.means_, self._gmm.covariances_
        mu0 = w @ means
        diff = means[None, :, :] - mu0[:, None, :]
        Phi = np.einsum("tk,kde->tde", w, covs) + np.einsum("tk,tkd,tke->tde", w, diff, diff)
        P = self._num_points
        m = self.strength
        n0 = self.strength * (P - 2.0 - D) / P
        return NIWPrior(mu0, m * Phi, m, n0)

    def initial_state(self, dX: int) -> NIWPrior:
        """Prior on x_0 from the buffered rollouts: mu0 = mean, Phi = diag(var), m = n0 = 1 (shape (1, ...))."""
        if self._buffer is None:
            raise RuntimeError("GMMPrior.initial_state called before update")
        x0 = self._buffer[:, 0, :dX]
        return NIWPrior(x0.mean(axis=0)[None], np.diag(x0.var(axis=0))[None], 1.0, 1.0)


def fit_initial_state(
    X0: np.ndarray, initial_state_var: float = 1e-6, prior: NIWPrior | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """x_0 ~ N(mean(X0), diag(max(var(X0), initial_state_var))), plus with a prior the NIW terms
    (Phi + N m/(N+m) (x̄ - mu0)(x̄ - mu0)^T) / (N + n0)."""
    N = X0.shape[0]
    mu = X0.mean(axis=0)
    sigma = np.diag(np.maximum(X0.var(axis=0), initial_state_var))
    if prior is not None:
        d0 = mu - prior.mu0[0]
        sigma = sigma + (prior.Phi[0] + (N * prior.m / (N + prior.m)) * np.outer(d0, d0)) / (N + prior.n0)
    return mu, sigma


def dynamics_points(batch: SampleBatch) -> tuple[np.ndarray, np.ndarray]:
    """Transition data: inputs [x_t; u_t] (N, T-1, dX+dU), outputs x_{t+1} (N, T-1, dX)."""
    return np.concatenate([batch.X[:, :-1], batch.U[:, :-1]], axis=2), batch.X[:, 1:]


def fit_dynamics(
    batch: SampleBatch,
    prior: GMMPrior | None = None,
    regularization: float = 1e-6,
    initial_state_var: float = 1e-6,
    update_prior: bool = True,
) -> LinearGaussianDynamics:
    """Fit p(x_{t+1} | x_t, u_t) and p(x_0) from one condition's rollouts.

    With a prior, the mixture is first updated with these rollouts (``update_prior``) and then used as the
    NIW prior of every step (:func:`fit_linear_gaussian`).
    """
    if batch.T < 2:
        raise ValueError("fit_dynamics: rollouts need at least two time steps")
    inputs, outputs = dynamics_points(batch)
    niw = x0_prior = None
    if prior is not None:
        if update_prior:
            prior.update(inputs, outputs)
        niw = prior.eval(inputs, outputs)
        x0_prior = prior.initial_state(batch.dX)
    Fm, fv, covar = fit_linear_gaussian(inputs, outputs, niw, regularization)
    x0mu, x0sigma = fit_initial_state(batch.X[:, 0], initial_state_var, x0_prior)
    return LinearGaussianDynamics(Fm, fv, covar, x0mu, x0sigma)
