"""What an algorithm carries from one iteration to the next, as a flat dict of named arrays: the form a
checkpoint's algorithm.npz holds (gps_trainer.run_dir), so no pickles. Keys are dotted paths
("prev.0.new_cost", "dynamics_prior.1.means"); every array round-trips bit for bit through npz (dtype and memory order kept)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import numpy as np

__all__ = ["to_arrays", "from_arrays", "prefixed", "under", "indexed", "items_under"]


def to_arrays(obj: Any) -> dict[str, np.ndarray]:
    """``obj`` (an array, a number, or a dataclass of such and of dataclasses) as named arrays;
    :func:`from_arrays` inverts it given the type."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            out.update(prefixed(to_arrays(getattr(obj, f.name)), f.name))
        return out
    return {"": np.asarray(obj)}


def from_arrays(cls: type, arrays: dict[str, np.ndarray]) -> Any:
    """The ``cls`` object that :func:`to_arrays` wrote as ``arrays``."""
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: from_arrays(hints[f.name], under(arrays, f.name)) for f in dataclasses.fields(cls)})
    value = arrays[""]
    if cls is float or cls is int or cls is bool:  # float(np.float64) is the same double: exact
        return cls(value)
    return np.array(value)


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """``arrays`` under ``prefix`` (a value of key "" becomes ``prefix`` itself)."""
    return {f"{prefix}.{k}" if k else prefix: v for k, v in arrays.items()}


def under(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays under ``prefix``, the prefix taken off ({} if none): the inverse of :func:`prefixed`."""
    return {("" if k == prefix else k[len(prefix) + 1:]): v for k, v in arrays.items()
            if k == prefix or k.startswith(prefix + ".")}


def indexed(items: typing.Sequence[dict[str, np.ndarray]], prefix: str) -> dict[str, np.ndarray]:
    """Per-condition arrays under ``prefix.m`` (an empty dict, e.g. a condition with nothing yet, writes nothing)."""
    out: dict[str, np.ndarray] = {}
    for m, arrays in enumerate(items):
        out.update(prefixed(arrays, f"{prefix}.{m}"))
    return out


def items_under(arrays: dict[str, np.ndarray], prefix: str, count: int) -> list[dict[str, np.ndarray]]:
    """The inverse of :func:`indexed` for ``count`` conditions ({} where one wrote nothing)."""
    return [under(arrays, f"{prefix}.{m}") for m in range(count)]
