"""Typed, range-checked node parameters: the one check of every node's parameter table (plain Python).

A node describes its parameters as ``SPECS: name -> (kind, check, description)``; ``kind`` is one of
bool, int, float, str, floats, strs and ``check`` returns '' or what is wrong (:func:`num_range`,
:func:`one_of`, :func:`nonempty`, :func:`each`, ...). :func:`check_value` types and checks one value;
a :class:`ParameterError` names where the value came from (file or ``-p``), the key and the value.
:func:`param_sources` reads which parameter file (or ``-p``) set each key from a ``--ros-args`` command
line (gps_core.safe_yaml reads the files).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gps_core import safe_yaml

__all__ = ["ParameterError", "check_value", "coerce", "each", "nonempty", "not_nan", "num_range", "one_of",
           "param_sources", "refuse_undeclared", "shown"]

Check = Callable[[Any], str]


class ParameterError(ValueError):
    """A parameter value (or key) a node does not accept; the message names source, key, value."""


def shown(value: Any, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's 4300-digit conversion limit
        text = f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def num_range(lo: float, hi: float, lo_open: bool = False) -> Check:
    """A number in [lo, hi] (``lo_open``: (lo, hi]); NaN and inf are refused."""
    def check(v) -> str:
        finite = isinstance(v, int) or math.isfinite(v)
        ok = finite and (v > lo if lo_open else v >= lo) and v <= hi
        return "" if ok else f"must be {'>' if lo_open else '>='} {_bound(lo)} and <= {_bound(hi)}"
    return check


def one_of(*options: str) -> Check:
    return lambda v: "" if v in options else f"must be one of {list(options)}"


def nonempty(v) -> str:
    return "" if v else "must not be empty"


def not_nan(v) -> str:
    return "" if not math.isnan(v) else "must not be NaN"


def each(check: Check, max_len: int = 64) -> Check:
    """Every entry of a list passes ``check``; 1 to ``max_len`` entries."""
    def run(values) -> str:
        if not values or len(values) > max_len:
            return f"must have 1 to {max_len} entries"
        for v in values:
            err = check(v)
            if err:
                return f"every entry {err} (entry {shown(v)})"
        return ""
    return run


def coerce(kind: str, value: Any) -> Any:
    """The value as the parameter's type, or raise ValueError saying which type was expected."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError("must be a boolean")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError("must be a list")
    if kind == "strs":
        if not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        return tuple(value)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ValueError("must be a list of numbers")
    return tuple(float(v) for v in value)


def check_value(specs: Mapping[str, tuple[str, Check, str]], name: str, value: Any, source: str = "") -> Any:
    """The typed value of parameter ``name`` of the table ``specs``; ParameterError naming source, key
    and value otherwise."""
    where = f"{source}: " if source else ""
    if name not in specs:
        raise ParameterError(f"{where}unknown parameter {name!r} (value {shown(value)}); known: {sorted(specs)}")
    kind, check, _ = specs[name]
    try:
        typed = coerce(kind, value)
        err = check(typed)
    except (ValueError, OverflowError) as exc:
        err = str(exc)
    if err:
        raise ParameterError(f"{where}{name}: {err}, got {shown(value)}")
    return typed


class _ParamsLoader(safe_yaml.StrictLoader):
    """Safe YAML plus the tuple tag `ros2 launch` writes into the parameter files it generates."""


_ParamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


def refuse_undeclared(node: Any, result_type: Any) -> None:
    """Make the rclpy ``node`` refuse a run-time change of any parameter it did not declare. rclpy's own
    check tests the names' truth value, so a parameter named '' passed it, and a node with no set-parameters
    callback of its own stored it (found by test_service_fuzz.py). ``result_type``: rcl_interfaces'
    SetParametersResult (passed in: gps_core imports no ROS package). Call after the node's declarations."""

    def check(params):
        unknown = [p.name for p in params if not node.has_parameter(p.name)]
        if unknown:
            return result_type(successful=False, reason=f"unknown parameter {shown(unknown[0])}")
        return result_type(successful=True)

    node.add_on_set_parameters_callback(check)


def param_sources(argv: Sequence[str], node_name: str) -> dict[str, str]:
    """Which parameter file (or '-p') set each key, from a ``--ros-args`` command line. Also rejects
    an empty or unreadable parameter file (ParameterError naming the file, and the key where one is
    at fault)."""
    sources: dict[str, str] = {}
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--params-file" and i + 1 < len(args):
            path = args[i + 1]
            try:
                with open(path) as f:
                    doc = safe_yaml.load(f.read(), path, loader=_ParamsLoader)
            except OSError as exc:
                raise ParameterError(f"{path}: cannot read the parameter file: {exc}") from None
            except safe_yaml.YAMLValueError as exc:
                raise ParameterError(str(exc)) from None
            if not isinstance(doc, dict) or not doc:
                raise ParameterError(f"{path}: parameter file is empty (expected '<node>: ros__parameters: ...')")
            for node_key, section in doc.items():
                if not _matches(str(node_key), node_name) or not isinstance(section, dict):
                    continue
                for key in _flatten(section.get("ros__parameters") or {}):
                    sources[key] = path
        elif arg in ("-p", "--param") and i + 1 < len(args) and ":=" in args[i + 1]:
            sources[args[i + 1].split(":=", 1)[0]] = f"-p {args[i + 1]}"
    return sources


def _matches(key: str, node_name: str) -> bool:
    return key in ("/**", node_name) or key.endswith("/" + node_name) or key.endswith("/**")


def _flatten(section: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for k, v in section.items():
        name = f"{prefix}{k}"
        keys += _flatten(v, name + ".") if isinstance(v, dict) else [name]
    return keys
