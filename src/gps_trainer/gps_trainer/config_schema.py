"""Typed, range-checked dataclasses from YAML mappings: the one from-dict helper of gps_trainer's configs.

A config is a plain ``@dataclass`` whose annotations say each field's type (``int``, ``float``, ``bool``,
``str``, ``Literal[...]``, ``list[float] | float``, ``X | None``, ``dict[str, Any]``, nested dataclasses,
unions of dataclasses tagged by their ``type`` field) and whose :func:`ranged` defaults carry bounds.
:func:`typed_from_dict` builds one from a mapping: unknown keys, wrong types (``"ten"`` or ``2.7`` for an
int, ``true`` for a number, NaN), values out of range are rejected with a :class:`ConfigError` that names
the source (file), the dotted key path and the value. ``__post_init__`` checks of the dataclass may raise
:class:`ConfigError` (via :func:`invalid`) for rules that involve several fields.

This module imports nothing from gps_trainer, so every config module (config.py, policy_opt.py,
pose_pretraining.py) can use it without an import circle.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from gps_core import safe_yaml
from gps_core.safe_yaml import YAMLValueError

__all__ = ["Checked", "ConfigError", "MAX_BATCH", "MAX_SEED", "MAX_STEPS", "arg_float", "arg_int", "from_yaml_error", "load_yaml", "typed_from_dict", "ranged", "invalid", "check_fields",
           "to_plain"]

#: Every seed of a config: 32 bits, what every generator it reaches takes (numpy, torch, the trial seeds'
#: hash) and what a seed parameter of the nodes carries.
MAX_SEED = 2**32 - 1
#: Optimizer steps of one training call (S-step, pose pretraining); 1e7 is days of CPU time.
MAX_STEPS = 10_000_000
#: Minibatch and evaluation batch sizes.
MAX_BATCH = 100_000

_NO_VALUE = object()


class ConfigError(ValueError):
    """A configuration value (or key) that is not accepted; the message names source, key and value."""

    def __init__(self, key: str, reason: str, value: Any = _NO_VALUE, source: str | None = None, note: str = ""):
        self.key, self.reason, self.value, self.source, self.note = key, reason, value, source, note
        super().__init__(self._message())

    def _message(self) -> str:
        parts = [p for p in (self.source, self.key) if p]
        text = ": ".join([*parts, self.reason])
        if self.value is not _NO_VALUE:
            text += f"; got {_short(self.value)}"
        return f"{text} ({self.note})" if self.note else text

    def within(self, source: str | None = None, prefix: str = "", note: str = "") -> ConfigError:
        """The same error seen from an enclosing mapping (``prefix``) of the file ``source``."""
        return ConfigError(_join(prefix, self.key), self.reason, self.value, self.source or source,
                           note or self.note)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    if isinstance(value, str):
        text += " (a string)"
    elif isinstance(value, bool):
        text += " (a boolean)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if not key:
        return prefix
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def invalid(key: str, value: Any, reason: str) -> ConfigError:
    """The error for ``key`` (relative to the dataclass raising it) with ``value``: ``raise invalid(...)``."""
    return ConfigError(key, reason, value)


def from_yaml_error(exc: YAMLValueError, source: str | None = None) -> ConfigError:
    """The ConfigError of a YAML reader's refusal (same source, key path and value)."""
    return ConfigError(exc.key, exc.reason, exc.value if exc.has_value else _NO_VALUE, exc.source or source)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML text (gps_core.safe_yaml: safe loader, duplicate keys and out-of-range integers
    refused); errors are ConfigError naming ``source`` and the key."""
    try:
        return safe_yaml.load(text, source)
    except YAMLValueError as e:
        raise from_yaml_error(e) from None


# --------------------------------------------------------------------------- bounds


def ranged(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           finite: bool = True, nonempty: bool = False) -> Any:
    """A dataclass field with bounds, checked by :func:`check_fields` (for a list: on every element).

    ``ge``/``gt``/``le``/``lt``: inclusive / exclusive limits; ``finite``: reject inf and NaN (NaN is
    always rejected); ``nonempty``: a list must have at least one element.
    """
    meta = {"bounds": {"ge": ge, "gt": gt, "le": le, "lt": lt, "finite": finite, "nonempty": nonempty}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _range_problem(x: float, b: dict[str, Any]) -> str | None:
    if isinstance(x, float) and math.isnan(x):
        return "must be a number, not NaN"
    if b.get("finite", True) and isinstance(x, float) and math.isinf(x):
        return "must be finite"
    if b.get("ge") is not None and not x >= b["ge"]:
        return f"must be >= {b['ge']}"
    if b.get("gt") is not None and not x > b["gt"]:
        return f"must be > {b['gt']}"
    if b.get("le") is not None and not x <= b["le"]:
        return f"must be <= {b['le']}"
    if b.get("lt") is not None and not x < b["lt"]:
        return f"must be < {b['lt']}"
    return None


# --------------------------------------------------------------------------- types


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return typing.get_args(tp)
    return None


def _describe(tp: Any) -> str:
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    args = _union_args(tp)
    if args is not None:
        return " or ".join(_describe(a) for a in args)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        inner = typing.get_args(tp)
        return f"a list of {_plural(inner[0])}" if inner else "a list"
    if origin in (dict, Mapping) or tp is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _plural(tp: Any) -> str:
    d = _describe(tp)
    return {"an integer": "integers", "a number": "numbers", "a string": "strings",
            "a mapping": "mappings"}.get(d, d)


def _yaml_hint(value: Any, tp: Any) -> str:
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string: say so when a number was expected."""
    if isinstance(value, str) and tp in (float, int) and re.fullmatch(r"[-+]?\d+[eE][-+]?\d+", value.strip()):
        mantissa, exponent = re.split("[eE]", value.strip())
        return f"; YAML reads {value} as a string, write {mantissa}.0e{exponent}"
    return ""


def _convert(value: Any, tp: Any, path: str, bounds: dict[str, Any] | None) -> Any:
    """``value`` checked against annotation ``tp`` (and ``bounds``), nested mappings turned into dataclasses;
    raises ConfigError(path, ...)."""
    if tp is Any:
        return value
    args = _union_args(tp)
    if args is not None:
        return _convert_union(value, args, tp, path, bounds)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None or isinstance(value, Mapping):
            return typed_from_dict(tp, value, where=path)
        raise ConfigError(path, f"expected {_describe(tp)}", value)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) or value not in choices:
            raise ConfigError(path, f"expected one of {', '.join(repr(c) for c in choices)}", value)
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"expected {_describe(tp)}", value)
        inner = typing.get_args(tp)
        elem = inner[0] if inner else Any
        if bounds and bounds.get("nonempty") and not value:
            raise ConfigError(path, "must not be empty", value)
        out = [_convert(v, elem, f"{path}[{i}]", bounds) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(path, "expected a mapping", value)
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, "expected true or false", value)
        return value
    if tp is int:
        if not _is_int(value):
            raise ConfigError(path, "expected an integer" + _yaml_hint(value, tp), value)
        value = int(value)
    elif tp is float:
        if not _is_real(value):
            raise ConfigError(path, "expected a number" + _yaml_hint(value, tp), value)
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, "expected a string", value)
        return value
    elif tp is type(None):
        if value is not None:
            raise ConfigError(path, "expected null", value)
        return None
    else:
        if not isinstance(value, tp):
            raise ConfigError(path, f"expected {_describe(tp)}", value)
        return value
    if bounds:
        problem = _range_problem(value, bounds)
        if problem:
            raise ConfigError(path, problem, value)
    elif isinstance(value, float) and math.isnan(value):
        raise ConfigError(path, "must be a number, not NaN", value)
    return value


def _tag(cls: Any) -> Any:
    """The default of a dataclass's ``type`` field (its tag in a union), or MISSING."""
    for f in dataclasses.fields(cls):
        if f.name == "type":
            return f.default
    return dataclasses.MISSING


def _convert_union(value: Any, args: tuple[Any, ...], tp: Any, path: str, bounds: dict[str, Any] | None) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(path, f"expected {_describe(tp)}", value)
    classes = [a for a in args if dataclasses.is_dataclass(a)]
    if len(classes) > 1:  # a tagged union: the mapping's "type" picks the dataclass
        for cls in classes:
            if isinstance(value, cls) and type(value) is cls:
                return value
        tags = {_tag(c): c for c in classes}
        if not isinstance(value, Mapping):
            raise ConfigError(path, "expected a mapping", value)
        if "type" not in value:
            raise ConfigError(_join(path, "type"), f"missing; expected one of {', '.join(map(repr, tags))}")
        kind = value["type"]
        if isinstance(kind, bool) or kind not in tags:
            raise ConfigError(_join(path, "type"), f"expected one of {', '.join(map(repr, tags))}", kind)
        return typed_from_dict(tags[kind], value, where=path)
    errors: list[ConfigError] = []
    for a in args:
        if a is type(None):
            continue
        try:
            return _convert(value, a, path, bounds)
        except ConfigError as e:
            errors.append(e)
    # Right type, wrong range (or a nested error): that member's message is the useful one.
    for e in errors:
        if e.key != path or not e.reason.startswith("expected"):
            raise e
    raise ConfigError(path, f"expected {_describe(tp)}", value)


def _bounds(f: dataclasses.Field) -> dict[str, Any] | None:
    return f.metadata.get("bounds") if f.metadata else None


def check_fields(obj: Any) -> None:
    """Type and range checks of a dataclass instance's fields (for ``__post_init__``: direct construction
    is checked as strictly as :func:`typed_from_dict`). Converts ints given for float fields to float."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            continue  # checked when it was built
        object.__setattr__(obj, f.name, _convert(value, hints[f.name], f.name, _bounds(f)))


class Checked:
    """Mixin for config dataclasses: type and range checks on every construction (from YAML or in code),
    then the class's own multi-field rules in :meth:`_check`."""

    def __post_init__(self) -> None:
        check_fields(self)
        self._check()

    def _check(self) -> None:
        """Rules involving several fields; ``raise invalid(key, value, reason)``."""


def typed_from_dict(cls: type, data: Mapping[str, Any] | None, *, source: str | None = None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping (None: all defaults), checking every key and value.

    ``source`` (a file name) and ``where`` (the mapping's dotted key path in it) go into the errors.
    """
    try:
        return _from_dict(cls, data, where)
    except ConfigError as e:
        if source and not e.source:
            raise ConfigError(e.key, e.reason, e.value, source) from None
        raise


def _from_dict(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(where, f"expected a mapping of {cls.__name__} keys", data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_join(where, str(key)), f"unknown key; known keys: {', '.join(sorted(fields))}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(_join(where, missing[0]), "missing (required)")
    kwargs = {key: _convert(value, hints[key], _join(where, key), _bounds(fields[key])) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a __post_init__ rule (or a nested dataclass's)
        raise e.within(prefix=where) from None
    except (ValueError, TypeError) as e:  # a plain __post_init__ check: name the field it starts with
        text = str(e)
        key = next((k for k in kwargs if text == k or text.startswith((f"{k} ", f"{k}:", f"{k}="))), None)
        if key is None:
            raise ConfigError(where or cls.__name__, text) from None
        raise ConfigError(_join(where, key), text, kwargs[key]) from None


def to_plain(obj: Any) -> Any:
    """JSON-able plain data of a (nested) config dataclass: dicts, lists, numbers, strings, None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if _is_int(obj):
        return int(obj)
    if _is_real(obj):
        return float(obj)
    return obj


# --------------------------------------------------------------------------- command-line numbers


def arg_int(low: int, high: int, what: str = "") -> Any:
    """An argparse ``type`` for an integer in [low, high] (``what``: why that bound, for the message);
    argparse then names the option in its error and exits with status 2."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also Python's refusal of more than 4300 digits
            raise argparse.ArgumentTypeError(f"expected an integer, got {_short(text, 40)}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}{f' ({what})' if what else ''}, "
                                             f"got {_short(value, 40)}")
        return value

    return parse


def arg_float(low: float, high: float, what: str = "") -> Any:
    """An argparse ``type`` for a finite number in [low, high]."""
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {_short(text, 40)}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}{f' ({what})' if what else ''}, "
                                             f"got {text}")
        return value

    return parse
