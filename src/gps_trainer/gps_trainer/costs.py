"""Costs l(x_t, u_t) with analytic first and second derivatives, evaluated on whole trajectories.

Every cost takes X (..., T, dX), U (..., T, dU) (and EE-point Jacobians (..., T, 9, 7) where needed)
and returns a :class:`CostExpansion` with l (..., T), lx (..., T, dX), lu (..., T, dU),
lxx (..., T, dX, dX), luu (..., T, dU, dU), lux (..., T, dU, dX). Leading axes are samples.

State layout (DESIGN.md): x = [q (7), qd (7), ee_points - target_points (9), ee_vel (9)].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "CostExpansion",
    "Cost",
    "ActionCost",
    "StateCost",
    "EEPointCost",
    "EEWaypointCost",
    "CostSum",
    "ramp_multiplier",
    "l1_l2_log_penalty",
    "quadratic_cost_model",
    "psd_cost_model",
    "cost_from_config",
    "RAMPS",
]

RAMPS = ("constant", "linear", "quadratic", "final_only")


class CostExpansion(NamedTuple):
    """Value and derivatives of a cost along trajectories (see module docstring for shapes)."""

    l: np.ndarray
    lx: np.ndarray
    lu: np.ndarray
    lxx: np.ndarray
    luu: np.ndarray
    lux: np.ndarray

    def scaled(self, w: float) -> CostExpansion:
        return CostExpansion(*(w * a for a in self))

    def __add__(self, other: object) -> CostExpansion:  # type: ignore[override]
        if not isinstance(other, CostExpansion):
            return NotImplemented
        return CostExpansion(*(a + b for a, b in zip(self, other, strict=True)))


def _zeros(X: np.ndarray, U: np.ndarray) -> CostExpansion:
    lead = X.shape[:-1]
    dX, dU = X.shape[-1], U.shape[-1]
    return CostExpansion(np.zeros(lead), np.zeros(lead + (dX,)), np.zeros(lead + (dU,)),
                         np.zeros(lead + (dX, dX)), np.zeros(lead + (dU, dU)), np.zeros(lead + (dU, dX)))


def ramp_multiplier(ramp: str, T: int, final_multiplier: float = 1.0) -> np.ndarray:
    """Time weights r_t (T,): constant 1, linear (t+1)/T, quadratic ((t+1)/T)^2, final_only [0..0, 1];
    then r_{T-1} *= final_multiplier."""
    s = (np.arange(T) + 1.0) / T
    if ramp == "constant":
        r = np.ones(T)
    elif ramp == "linear":
        r = s
    elif ramp == "quadratic":
        r = s**2
    elif ramp == "final_only":
        r = np.zeros(T)
        r[-1] = 1.0
    else:
        raise ValueError(f"unknown ramp {ramp!r}; expected one of {RAMPS}")
    r[-1] *= final_multiplier
    return r


def l1_l2_log_penalty(
    d: np.ndarray, wp: np.ndarray, l1: float, l2: float, l_log: float, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Penalty on a distance vector d (..., k) with weights wp (k,) and s = sum_i (wp_i d_i)^2:

        p(d) = 0.5 l2 sum_i wp_i d_i^2 + l1 sqrt(alpha + s) + 0.5 l_log log(alpha + s)

    (l2 quadratic, l1 pseudo-Huber, log term as in the GPS papers). Returns p (...), dp/dd (..., k),
    d2p/dd2 (..., k, k).
    """
    wp = np.asarray(wp, dtype=np.float64)
    w2 = wp**2
    v = w2 * d
    s = np.sum((wp * d) ** 2, axis=-1)
    a = alpha + s
    sq = np.sqrt(a)
    p = 0.5 * l2 * np.sum(wp * d**2, axis=-1) + l1 * sq + 0.5 * l_log * np.log(a)
    coef = l1 / sq + l_log / a
    grad = l2 * wp * d + coef[..., None] * v
    eye = np.eye(d.shape[-1])
    outer = v[..., :, None] * v[..., None, :]
    hess = (l2 * wp + coef[..., None] * w2)[..., None] * eye
    hess = hess - (l1 / (a * sq) + 2.0 * l_log / a**2)[..., None, None] * outer
    return p, grad, hess


def _check_steps(owner: str, steps: Any) -> tuple[int, int]:
    """A step window [start, end) of two integers (negative ones count from T, as Python slices)."""
    if (not isinstance(steps, list | tuple) or len(steps) != 2
            or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in steps)):
        raise ValueError(f"{owner}: steps must be [start, end) (two integers), got steps={steps!r}")
    return int(steps[0]), int(steps[1])


def _window(steps: tuple[int, int] | None, T: int) -> np.ndarray:
    """Weights (T,): 1 on the steps slice(*steps) (all steps when None), 0 elsewhere."""
    if steps is None:
        return np.ones(T)
    w = np.zeros(T)
    w[slice(*steps)] = 1.0
    return w


class Cost(ABC):
    """A cost l(x, u) over trajectories."""

    @abstractmethod
    def eval(self, X: np.ndarray, U: np.ndarray, ee_jacobians: np.ndarray | None = None) -> CostExpansion:
        """Value and derivatives at every (sample, step)."""


class ActionCost(Cost):
    """Torque penalty l = 0.5 sum_i wu_i u_i^2 (times a ramp): lu = wu u, luu = diag(wu)."""

    def __init__(self, wu: np.ndarray | float, ramp: str = "constant", final_multiplier: float = 1.0) -> None:
        self.wu = np.asarray(wu, dtype=np.float64)
        self.ramp, self.final_multiplier = ramp, final_multiplier
        ramp_multiplier(ramp, 1)  # validates the name

    def eval(self, X: np.ndarray, U: np.ndarray, ee_jacobians: np.ndarray | None = None) -> CostExpansion:
        out = _zeros(X, U)
        r = ramp_multiplier(self.ramp, X.shape[-2], self.final_multiplier)
        wu = np.broadcast_to(self.wu, (U.shape[-1],))
        out.l[...] = r * 0.5 * np.sum(wu * U**2, axis=-1)
        out.lu[...] = r[:, None] * wu * U
        out.luu[...] = (r[:, None] * wu)[:, :, None] * np.eye(U.shape[-1])
        return out


class StateCost(Cost):
    """Distance of selected state entries to a target: l = r_t p(x_t[idx] - target) with
    :func:`l1_l2_log_penalty` (reference defaults l1 = 0, l2 = 1, alpha = 1e-2). With ``steps = [start, end)``
    it is active only on those steps (zero elsewhere; negative indices count from T; the ramp applies within),
    e.g. the bottle task's wrist spin only once the cap is on the neck."""

    def __init__(
        self,
        target: np.ndarray,
        idx: np.ndarray | slice | None = None,
        wp: np.ndarray | float = 1.0,
        l1: float = 0.0,
        l2: float = 1.0,
        l_log: float = 0.0,
        alpha: float = 1e-2,
        ramp: str = "constant",
        final_multiplier: float = 1.0,
        steps: tuple[int, int] | list[int] | None = None,
    ) -> None:
        self.steps = None if steps is None else _check_steps("StateCost", steps)
        self.target = np.asarray(target, dtype=np.float64)
        self.idx = idx
        self.wp = np.broadcast_to(np.asarray(wp, dtype=np.float64), self.target.shape)
        self.l1, self.l2, self.l_log, self.alpha = l1, l2, l_log, alpha
        self.ramp, self.final_multiplier = ramp, final_multiplier
        ramp_multiplier(ramp, 1)

    def eval(self, X: np.ndarray, U: np.ndarray, ee_jacobians: np.ndarray | None = None) -> CostExpansion:
        out = _zeros(X, U)
        idx = np.arange(X.shape[-1])[self.idx if self.idx is not None else slice(None)]
        if idx.shape != self.target.shape:
            raise ValueError(f"StateCost: target shape {self.target.shape} does not match {idx.size} indices")
        r = ramp_multiplier(self.ramp, X.shape[-2], self.final_multiplier) * _window(self.steps, X.shape[-2])
        p, g, H = l1_l2_log_penalty(X[..., idx] - self.target, self.wp, self.l1, self.l2, self.l_log, self.alpha)
        out.l[...] = r * p
        out.lx[..., idx] = r[:, None] * g
        out.lxx[..., idx[:, None], idx[None, :]] = r[:, None, None] * H
        return out


class EEPointCost(Cost):
    """End-effector points to their targets: l = r_t p(d_t), d_t = x_t[ee] - target (target 0 when the
    state already holds EE points minus targets), p = :func:`l1_l2_log_penalty`.

    With ``map_to_joints`` (the reference) derivatives are carried to the joint angles through the
    EE-point Jacobian J_t = d ee / d q (9, 7): lx[q] = J^T p'(d), lxx[q, q] = J^T p''(d) J (FK curvature
    neglected). Otherwise they are placed on the EE-point entries of x directly.
    """

    def __init__(
        self,
        wp: np.ndarray | float = 1.0,
        l1: float = 0.0,
        l2: float = 1.0,
        l_log: float = 0.0,
        alpha: float = 1e-5,
        ramp: str = "constant",
        final_multiplier: float = 1.0,
        ee_idx: slice = slice(14, 23),
        joint_idx: slice = slice(0, 7),
        target: np.ndarray | float = 0.0,
        map_to_joints: bool = True,
    ) -> None:
        n = ee_idx.stop - ee_idx.start
        self.wp = np.broadcast_to(np.asarray(wp, dtype=np.float64), (n,))
        self.target = np.broadcast_to(np.asarray(target, dtype=np.float64), (n,))
        self.l1, self.l2, self.l_log, self.alpha = l1, l2, l_log, alpha
        self.ramp, self.final_multiplier = ramp, final_multiplier
        self.ee_idx, self.joint_idx, self.map_to_joints = ee_idx, joint_idx, map_to_joints
        ramp_multiplier(ramp, 1)

    def eval(self, X: np.ndarray, U: np.ndarray, ee_jacobians: np.ndarray | None = None) -> CostExpansion:
        out = _zeros(X, U)
        r = ramp_multiplier(self.ramp, X.shape[-2], self.final_multiplier)
        p, g, H = l1_l2_log_penalty(X[..., self.ee_idx] - self.target, self.wp, self.l1, self.l2, self.l_log,
                                    self.alpha)
        out.l[...] = r * p
        if self.map_to_joints:
            if ee_jacobians is None:
                raise ValueError("EEPointCost(map_to_joints=True) needs ee_jacobians (..., T, 9, 7)")
            J = ee_jacobians
            nq = self.joint_idx.stop - self.joint_idx.start
            if J.shape[:-2] != X.shape[:-1] or J.shape[-2:] != (g.shape[-1], nq):
                raise ValueError(f"EEPointCost: ee_jacobians shape {J.shape} does not match X {X.shape}")
            out.lx[..., self.joint_idx] = r[:, None] * np.einsum("...ej,...e->...j", J, g)
            out.lxx[..., self.joint_idx, self.joint_idx] = r[:, None, None] * np.einsum(
                "...ei,...ef,...fj->...ij", J, H, J, optimize=True)
        else:
            out.lx[..., self.ee_idx] = r[:, None] * g
            out.lxx[..., self.ee_idx, self.ee_idx] = r[:, None, None] * H
        return out


class EEWaypointCost(EEPointCost):
    """:class:`EEPointCost` active only on the steps ``steps = [start, end)`` (zero elsewhere): an
    intermediate waypoint, e.g. ``target`` = [0, 0, 0.08] x 3 asks for the EE points 8 cm above their targets
    (the state holds EE points minus targets). Negative indices count from T. The ramp applies within."""

    def __init__(self, steps: tuple[int, int] | list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps = _check_steps("EEWaypointCost", steps)

    def eval(self, X: np.ndarray, U: np.ndarray, ee_jacobians: np.ndarray | None = None) -> CostExpansion:
        e = super().eval(X, U, ee_jacobians)
        w = _window(self.steps, X.shape[-2])
        return CostExpansion(e.l * w, e.lx * w[:, None], e.lu * w[:, None], e.lxx * w[:, None, None],
                             e.luu * w[:, None, None], e.lux * w[:, None, None])


class CostSum(Cost):
    """l = sum_i w_i l_i (derivatives likewise)."""

    def __init__(self, costs: list[Cost], weights: list[float] | None = None) -> None:
        if not costs:
            raise ValueError("CostSum needs at least one cost")
        self.costs = list(costs)
        self.weights = [1.0] * len(costs) if weights is None else list(weights)
        if len(self.weights) != len(self.costs):
            raise ValueError(f"CostSum: {len(self.costs)} costs but {len(self.weights)} weights")

    def eval(self, X: np.ndarray, U: np.ndarray, ee_jacobians: np.ndarray | None = None) -> CostExpansion:
        total = None
        for w, c in zip(self.weights, self.costs, strict=True):
            e = c.eval(X, U, ee_jacobians).scaled(w)
            total = e if total is None else total + e
        assert total is not None
        return total


def quadratic_cost_model(
    exp: CostExpansion, X: np.ndarray, U: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample-averaged quadratic model of the cost in absolute coordinates z = [x; u]:

        l(z) ~ cc_t + cv_t^T z + 0.5 z^T cm_t z,   with, per sample n around z_n,
        cm = H_n,  cv = g_n - H_n z_n,  cc = l_n - g_n^T z_n + 0.5 z_n^T H_n z_n,  averaged over n.

    exp holds derivatives for X (N, T, dX), U (N, T, dU). Returns cc (T,), cv (T, D), cm (T, D, D).
    """
    Z = np.concatenate([X, U], axis=-1)
    g = np.concatenate([exp.lx, exp.lu], axis=-1)
    H = np.concatenate([np.concatenate([exp.lxx, exp.lux.swapaxes(-1, -2)], axis=-1),
                        np.concatenate([exp.lux, exp.luu], axis=-1)], axis=-2)
    Hz = np.einsum("...ij,...j->...i", H, Z)
    cm = H.mean(axis=0)
    cv = (g - Hz).mean(axis=0)
    cc = (exp.l - np.sum(g * Z, axis=-1) + 0.5 * np.sum(Z * Hz, axis=-1)).mean(axis=0)
    return cc, cv, cm


def psd_cost_model(
    cc: np.ndarray, cv: np.ndarray, cm: np.ndarray, z_mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The quadratic model with every Hessian cm_t projected onto the positive semidefinite cone
    (eigenvalues below zero set to zero), cv_t and cc_t shifted so that the model keeps its value and
    gradient at the samples' mean z_mean_t (T, D):

        cm' = V max(L, 0) V^T,  cv' = cv + (cm - cm') z,  cc' = cc + 0.5 z^T (cm' - cm) z.

    Why: the log term of :func:`l1_l2_log_penalty` is concave beyond sqrt(alpha) of its target (curvature
    about -1/d^2), so a wide batch of samples gets a model that is a saddle; under the fitted dynamics its
    expected cost is unbounded below and the C-step and the step rule read nonsense (a Gauss-Newton model,
    as is usual in iLQR, keeps only the convex part). Steps whose Hessian is PSD up to the rounding of
    the eigendecomposition (a most negative eigenvalue within 1e-10 of the largest magnitude) are
    returned unchanged, bit for bit.
    """
    cc, cv, cm = cc.copy(), cv.copy(), cm.copy()
    sym = 0.5 * (cm + cm.swapaxes(-1, -2))
    eigval, eigvec = np.linalg.eigh(sym)
    rounding = 1e-10 * np.abs(eigval).max(axis=-1)
    for t in np.flatnonzero(eigval.min(axis=-1) < -rounding):
        projected = (eigvec[t] * np.maximum(eigval[t], 0.0)) @ eigvec[t].T
        delta = cm[t] - projected
        cv[t] = cv[t] + delta @ z_mean[t]
        cc[t] = cc[t] - 0.5 * z_mean[t] @ delta @ z_mean[t]
        cm[t] = projected
    return cc, cv, cm


def cost_from_config(spec: dict[str, Any] | list[dict[str, Any]]) -> Cost:
    """Build a cost from YAML-style specs: a list (summed, each item may carry ``weight``) or one dict with
    ``type`` in {action, state, ee_points, ee_waypoint} and the constructor's keyword arguments."""
    if isinstance(spec, list):
        costs, weights = [], []
        for item in spec:
            item = dict(item)
            weights.append(float(item.pop("weight", 1.0)))
            costs.append(cost_from_config(item))
        return costs[0] if len(costs) == 1 and weights[0] == 1.0 else CostSum(costs, weights)
    spec = dict(spec)
    kind = spec.pop("type", None)
    types: dict[str, type[Cost]] = {"action": ActionCost, "state": StateCost, "ee_points": EEPointCost,
                                    "ee_waypoint": EEWaypointCost}
    if kind not in types:
        raise ValueError(f"cost type {kind!r} unknown; expected one of {sorted(types)}")
    for key in ("ee_idx", "joint_idx", "idx"):
        if key in spec and isinstance(spec[key], list | tuple) and len(spec[key]) == 2:
            spec[key] = slice(int(spec[key][0]), int(spec[key][1]))
    try:
        return types[kind](**spec)
    except TypeError as e:
        raise ValueError(f"cost {kind!r}: {e}") from None
