"""YAML configuration files validated against typed dataclasses.

A config schema is a (nested) dataclass; `load_config(path, Schema)` reads
the YAML, checks every key against the field types, and raises one
`ConfigError` naming the file, the dotted key and the fix. Unknown keys are
errors too (a typo must not silently fall back to a default). Relative paths
in a config are resolved against the config file's folder, so a config can
be moved together with its data.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from fedehr.shared.errors import ConfigError

T = TypeVar("T")


def load_config(path: str | Path, schema: type[T]) -> T:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", where=str(path),
                          fix="check the path (see --help for an example config)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{line}: {getattr(exc, 'problem', exc)}",
                          where=str(path), fix="fix the YAML syntax") from None
    return from_dict(raw, schema, source=str(path), base_dir=path.parent)


def from_dict(raw: Any, schema: type[T], *, source: str = "<config>",
              base_dir: Path | None = None, prefix: str = "") -> T:
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping at '{prefix or 'top level'}'", where=source,
                          fix="write key: value pairs")
    hints = get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    values = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        dotted = f"{prefix}{key}"
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else \
                f"allowed keys: {', '.join(sorted(fields))}"
            raise ConfigError(f"unknown key '{dotted}'", where=source, fix=hint)
        values[name] = _coerce(value, hints[name], dotted, source, base_dir)
    for name, field in fields.items():
        missing = field.default is dataclasses.MISSING and \
            field.default_factory is dataclasses.MISSING  # type: ignore[misc]
        if missing and name not in values:
            raise ConfigError(f"missing required key '{prefix}{name}'", where=source,
                              fix=f"add '{prefix}{name}: ...' to the file")
    obj = schema(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:  # schemas raise ValueError("key: problem; fix")
            key, _, rest = str(exc).partition(": ")
            problem, _, fix = rest.partition("; ")
            raise ConfigError(f"'{prefix}{key}' {problem}", where=source,
                              fix=fix or None) from None
    return obj


def _coerce(value: Any, tp: Any, key: str, source: str, base_dir: Path | None) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, source, base_dir)
    if dataclasses.is_dataclass(tp):
        return from_dict(value or {}, tp, source=source, base_dir=base_dir, prefix=f"{key}.")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"'{key}' is {value!r}", where=source,
                              fix=f"use one of: {', '.join(map(str, get_args(tp)))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list", where=source, fix="write [a, b] or - a")
        (item,) = get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]", source, base_dir) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping", where=source, fix="write k: v pairs")
        _, vt = get_args(tp)
        return {str(k): _coerce(v, vt, f"{key}.{k}", source, base_dir) for k, v in value.items()}
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a path", where=source, fix="write a quoted path")
        path = Path(value).expanduser()
        return path if path.is_absolute() or base_dir is None else (base_dir / path).resolve()
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, not {value!r}", where=source,
                              fix="write true or false")
        return value
    if tp in (int, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and isinstance(value, float):  # nan/inf pass every range check and fail late
            ok = math.isfinite(value) and (tp is float or value.is_integer())
        ok = ok and abs(value) < 2**63  # beyond int64 nothing downstream can hold it
        if not ok:
            raise ConfigError(f"'{key}' must be a{'n integer' if tp is int else ' number'}, "
                              f"not {value!r}", where=source, fix="write a plain number")
        return tp(value)
    if tp is str:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"'{key}' must be a string", where=source, fix="quote the value")
        return str(value)
    return value


def to_dict(obj: Any) -> dict:
    """A JSON/YAML-safe dict of a config dataclass (paths as strings)."""
    def convert(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [convert(x) for x in v]
        return v
    return convert(dataclasses.asdict(obj))
