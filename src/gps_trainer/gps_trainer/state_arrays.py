"""What an algorithm carries from one iteration to the next, as a flat dict of named arrays: the form a
checkpoint's algorithm.npz holds (gps_trainer.run_dir), so no pickles. Keys are dotted paths
("prev.0.dynamics.Fm"); every array round-trips bit for bit through npz (dtype and memory order kept)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import numpy as np

from gps_core.linear_gaussian import LinearGaussianPolicy

__all__ = ["to_arrays", "from_arrays", "prefixed", "under"]

#: A linear-Gaussian policy is its mean and covariance; its Cholesky factor and inverse are recomputed from
#: pol_covar on construction, as they were when the algorithms built it (the C-step and the policy fit
#: construct every controller from (K, k, pol_covar)), so they come back bit for bit too.
_POLICY_FIELDS = ("K", "k", "pol_covar")


def to_arrays(obj: Any) -> dict[str, np.ndarray]:
    """``obj`` (a LinearGaussianPolicy, a dataclass of such, arrays, numbers and dataclasses) as named
    arrays; :func:`from_arrays` inverts it given the type."""
    if isinstance(obj, LinearGaussianPolicy):
        return {name: getattr(obj, name) for name in _POLICY_FIELDS}
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            out.update(prefixed(to_arrays(getattr(obj, f.name)), f.name))
        return out
    return {"": np.asarray(obj)}


def from_arrays(cls: type, arrays: dict[str, np.ndarray]) -> Any:
    """The ``cls`` object that :func:`to_arrays` wrote as ``arrays``."""
    if cls is LinearGaussianPolicy:
        return LinearGaussianPolicy(*(arrays[name] for name in _POLICY_FIELDS))
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: from_arrays(hints[f.name], under(arrays, f.name)) for f in dataclasses.fields(cls)})
    value = arrays[""]
    if cls is float or cls is int or cls is bool:
        return cls(value)
    return np.array(value)


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """``arrays`` under ``prefix`` (a value of key "" becomes ``prefix`` itself)."""
    return {f"{prefix}.{k}" if k else prefix: v for k, v in arrays.items()}


def under(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays under ``prefix``, the prefix taken off ({} if none): the inverse of :func:`prefixed`."""
    return {("" if k == prefix else k[len(prefix) + 1:]): v for k, v in arrays.items()
            if k == prefix or k.startswith(prefix + ".")}
