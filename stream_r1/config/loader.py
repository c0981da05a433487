"""Strict YAML <-> dataclass loader with ``--set a.b=c`` overrides (stdlib + PyYAML only).

Unknown keys are errors that name the dotted path, the valid keys and the closest match; values
are type-checked against the schema (``Literal`` choices, ``tuple[...]``, nested dataclasses).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from stream_r1.config.schema import RunConfig

T = TypeVar("T")

PRESET_DIR = "presets"


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the dotted path and the fix."""


def list_presets() -> list[str]:
    """Names of the presets shipped in ``stream_r1/config/presets`` (without ``.yaml``)."""
    root = resources.files("stream_r1.config") / PRESET_DIR
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_source(source: str | Path) -> tuple[dict[str, Any], str]:
    """Read a preset name or a YAML path into a mapping; returns (mapping, description)."""
    text: str
    path = Path(source)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise FileNotFoundError(
                f"config file {str(path)!r} does not exist; pass a YAML path or one of the presets "
                f"{list_presets()}"
            )
        text = path.read_text(encoding="utf-8")
        where = str(path)
    else:
        presets = list_presets()
        if str(source) not in presets:
            close = difflib.get_close_matches(str(source), presets, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FileNotFoundError(
                f"config {str(source)!r} is neither a YAML file nor a preset (presets: {presets}){hint}"
            )
        text = (resources.files("stream_r1.config") / PRESET_DIR / f"{source}.yaml").read_text("utf-8")
        where = f"preset {source}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: {_yaml_problem(e)}; fix the YAML syntax there") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping, got {type(data).__name__}")
    return data, where


def _yaml_problem(e: yaml.YAMLError) -> str:
    """``line L, column C: problem`` of a YAML parse error (one line, 1-based positions)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"YAML syntax error at {where}{problem}"


_FLOAT_SPELLING = re.compile(r"[+-]?(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?")
"""Decimal float spellings: ``2e-6``, ``2E-6``, ``1.5e+3``, ``.5``, ``5.``, ``1_000.0``. PyYAML follows
YAML 1.1, where ``2e-6`` (no dot) and ``5.`` are strings, so a number written the way papers write it
would be refused; this pattern accepts them for ``float`` fields. ``inf``/``nan`` are not accepted: no
setting of a run is meaningfully infinite, and a NaN learning rate is always a typo."""


def _as_float(value: Any, path: str) -> float:
    """A ``float`` field's value: a YAML number or a decimal float spelling; finite."""
    if isinstance(value, str) and _FLOAT_SPELLING.fullmatch(value.strip()):
        value = float(value.strip().replace("_", ""))
    elif isinstance(value, str) and value.strip().lstrip("+-.").lower() in ("inf", "infinity", "nan"):
        raise ConfigError(f"{path}={value!r} must be a finite number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path} must be a number (e.g. 2e-6, 0.5, 3), got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{path}={value!r} must be a finite number")
    return float(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert YAML lists to tuples."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, path)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{path}={value!r} is not one of {list(choices)}{hint}")
        return value
    if origin in (tuple,):
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Union, types.UnionType):
        errors = []
        for arm in get_args(tp):
            try:
                return _coerce(value, arm, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{path}={value!r} matches none of {_type_name(tp)}")
    if tp is Any:
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path} must be null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return value
    if tp is float:
        return _as_float(value, path)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported annotation {tp!r}")  # pragma: no cover


def _build(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {(path + '.' if path else '') + close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {dotted!r} (valid keys here: {names}){hint}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=c`` into (["a", "b"], yaml-parsed c)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.seed=3)")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key; use section.key=value")
    if raw == "":
        return key.split("."), ""
    try:
        return key.split("."), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(e)}); "
                          "quote it or fix the brackets") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b=c`` override applied (checked later by ``_build``)."""
    out = json.loads(json.dumps(data, default=list))
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {k!r} is a value, not a section")
            node = child
        node[keys[-1]] = value
    return out


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a plain mapping."""
    return _build(RunConfig, data)


def load_config(source: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a preset name or YAML file, apply ``--set`` overrides, validate.

    Args:
        source: a preset name (``tiny_cpu``) or a path to a YAML file.
        overrides: ``section.key=value`` strings; values are parsed as YAML.

    Returns:
        The frozen, validated run configuration.

    Raises:
        FileNotFoundError: the file or preset does not exist.
        ConfigError: an unknown key, a wrongly typed value or a violated rule.
    """
    data, _ = _read_source(source)
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def dump_config(cfg: Any) -> str:
    """Resolved config as YAML text (every field, stable key order)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def config_hash(cfg: Any) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of the resolved config."""
    blob = json.dumps(config_to_dict(cfg), sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def write_resolved_config(cfg: Any, directory: str | Path, name: str = "config.yaml") -> Path:
    """Atomically write the resolved config next to an output (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(dump_config(cfg), encoding="utf-8")
    tmp.replace(target)
    return target
