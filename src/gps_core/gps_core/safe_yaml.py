"""The one YAML reader of the stack's configuration (experiments, tasks, parameter files, overrides).

PyYAML's safe loader with three refusals, each a :class:`YAMLValueError` naming the source, the key path
and the value: a key given twice in one mapping (PyYAML keeps the last one silently), an integer outside
the signed 64-bit range (the widest integer a ROS parameter or message field carries; Python's int()
refuses to even read one of more than 4300 digits) and nesting deeper than the parser's recursion allows.
Tags that would build Python objects (``!!python/object``) are refused as the safe loader refuses them,
with the key that carries them.
"""

from __future__ import annotations

import typing
from typing import Any

import yaml

__all__ = ["INT64_MAX", "INT64_MIN", "StrictLoader", "YAMLValueError", "load", "load_value"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The longest integer literal read at all (signs, 0b prefixes and '_' separators included); longer ones
# are out of range without being converted.
_MAX_INT_LITERAL = 100
_INT_TAG = "tag:yaml.org,2002:int"
_NO_VALUE = object()


class YAMLValueError(ValueError):
    """YAML text that is not accepted; ``key`` is the dotted path of the offending value ('' for the
    document), ``value`` the text of the value when known."""

    def __init__(self, source: str, key: str, reason: str, value: Any = _NO_VALUE):
        self.source, self.key, self.reason, self.value = source, key, reason, value
        parts = [p for p in (source, key) if p]
        text = ": ".join([*parts, reason])
        if value is not _NO_VALUE:
            shown = repr(value)
            text += f"; got {shown if len(shown) <= 120 else shown[:117] + '...'}"
        super().__init__(text)

    @property
    def has_value(self) -> bool:
        return self.value is not _NO_VALUE


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def _key_text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "?"


def _check_tree(root: yaml.Node, loader: yaml.SafeLoader, source: str, prefix: str) -> None:
    """Integers in range and only the safe loader's tags, anywhere in the node tree (walked without
    recursion; an alias is visited once)."""
    stack, seen = [(root, prefix)], set()
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key_path = _join(path, _key_text(key_node))
                stack += [(key_node, key_path), (value_node, key_path)]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, _join(path, f"[{i}]")) for i, item in enumerate(node.value)]
        if node.tag not in loader.yaml_constructors:
            raise YAMLValueError(source, path, f"the YAML tag {node.tag!r} is not allowed (plain data only)",
                                 node.value if isinstance(node, yaml.ScalarNode) else _NO_VALUE)
        if isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
            text = str(node.value)
            value = loader.construct_yaml_int(node) if len(text) <= _MAX_INT_LITERAL else None
            if value is None or not INT64_MIN <= value <= INT64_MAX:
                digits = sum(c.isdigit() for c in text)
                raise YAMLValueError(source, path, f"an integer of {digits} digits is outside the 64-bit range "
                                                   f"[{INT64_MIN}, {INT64_MAX}]", text)


def load(text: str, source: str, loader: type[yaml.SafeLoader] = StrictLoader, prefix: str = "") -> Any:
    """Parse one YAML document of ``text`` (None when empty) with ``loader`` (a SafeLoader subclass);
    every problem is a :class:`YAMLValueError` naming ``source`` and, where there is one, the key path
    (``prefix`` comes first in it)."""
    reader = loader(text)
    try:
        node = reader.get_single_node()
        if node is None:
            return None
        _check_tree(node, reader, source, prefix)
        return reader.construct_document(node)
    except yaml.YAMLError as exc:
        raise YAMLValueError(source, prefix, f"not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise YAMLValueError(source, prefix, "not valid YAML: nested too deeply") from None
    finally:
        reader.dispose()


def load_value(text: str, key: str, source: str = "") -> Any:
    """One value written in YAML (a ``key=value`` override), errors naming ``key`` and the text."""
    if not isinstance(text, str):
        raise YAMLValueError(source, key, "expected YAML text", text)
    try:
        return load(text, source, prefix=key)
    except YAMLValueError as exc:
        raise YAMLValueError(source, exc.key or key, exc.reason, exc.value if exc.has_value else text) from None
