"""Config files and `key=value` overrides onto the config dataclasses: YAML read strictly (a key
given twice is an error, errors are one line), values checked against the fields' type hints,
unknown keys refused."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from kd.errors import KDError
from kd.files import read_text


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the type hint `hint`, converting int to float where due."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except KDError:
                pass
        raise KDError(f"config key {key}: expected {hint}, got {value!r}")
    if origin is Literal:
        if value is False and "no" in typing.get_args(hint):
            value = "no"  # YAML 1.1 reads a bare `no` as false: mixed_precision=no
        if value not in typing.get_args(hint):
            raise KDError(f"config key {key}: expected one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise KDError(f"config key {key}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{key}[]") for v in value]
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-3 as a string
            return float(value)
        except ValueError:
            raise KDError(f"config key {key}: expected a number, got {value!r}") from None
    if hint is bool and not isinstance(value, bool):
        raise KDError(f"config key {key}: expected true or false, got {value!r}")
    if hint in (int, float) and isinstance(value, bool):
        raise KDError(f"config key {key}: expected {hint.__name__}, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise KDError(f"config key {key}: expected {hint.__name__}, got {value!r}")
    return value


def merge(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested dict of updates to a dataclass in place, rejecting unknown keys."""
    fields = {item.name for item in dataclasses.fields(obj)}  # settings; ClassVars such as RANGES are none
    hints = {k: v for k, v in typing.get_type_hints(type(obj)).items() if k in fields}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in hints:
            known = ", ".join(sorted(f"{prefix}{k}" for k in hints))
            raise KDError(f"unknown config key '{path}' (known here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise KDError(f"config key {path}: expected a mapping, got {value!r}")
            merge(current, value, f"{path}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def nest(key: str, value: Any) -> dict[str, Any]:
    """`a.b.c`, value -> {"a": {"b": {"c": value}}}."""
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the inverse of nest."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}, the value parsed as YAML."""
    if "=" not in text:
        raise KDError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise KDError(f"override '{text}': the value is not valid YAML ({yaml_problem(err)})") from None
    return nest(key, value)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: where and what, without the quoted excerpt."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (getattr(err, "problem", None) or str(err).splitlines()[0])


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping a YAML file holds (empty file: {}); `what` names the file in errors."""
    path = Path(path)
    try:
        content = load_yaml(read_text(path, what)) or {}
    except yaml.YAMLError as err:
        raise KDError(f"{what} {path} is not valid YAML: {yaml_problem(err)}") from None
    if not isinstance(content, dict):
        raise KDError(f"{what} {path} must hold a mapping at the top level")
    return content
