"""Resolving a run's config: defaults <- config file <- ``--set key=value`` overrides.

Values are coerced to the type each ``Config`` field is annotated with (so ``--set
total_steps=1e6``, ``--set hidden=128,128`` and ``--set anneal_lr=false`` all work) and
then validated by the dataclass itself. Every failure is a :class:`ConfigError` naming
the key, the value and what is allowed, raised before anything is compiled.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metareward.algos.config import ConfigError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", "~"}


def parse_assignments(items: Sequence[str], what: str = "--set") -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` (values stay strings).

    Args:
        items: ``KEY=VALUE`` strings (keys and values are stripped).
        what: The option's name, for the message.

    Returns:
        The values by key (a later key wins).

    Raises:
        ConfigError: For an item without ``=`` or with an empty key.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _describe(tp: Any) -> str:
    if tp is bool:
        return "a bool (true/false)"
    if tp is int:
        return "an int"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple:
        elem = {int: "ints", float: "numbers", str: "strings"}.get(args[0], str(args[0]))
        return f"a list of {elem}, e.g. 64,64"
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_describe(a) for a in inner) + " or none"
    return getattr(tp, "__name__", str(tp))


def parse_literal(value: str) -> Any:
    """A Python literal (number, bool, tuple...) if ``value`` is one, else the string.

    Args:
        value: A string.

    Returns:
        ``ast.literal_eval(value)``, or ``value`` itself if it is not a literal.
    """
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


class _NonFinite(ConfigError):
    """A float field given inf or NaN (``1e400``, JSON ``Infinity``, YAML ``.inf``)."""


def coerce(key: str, tp: Any, value: Any) -> Any:
    """``value`` (a string from the command line, or a JSON/TOML/YAML value) as type
    ``tp``; :class:`ConfigError` if it does not fit. A float must be finite.

    Args:
        key: The config key, for the message.
        tp: The field's type annotation (``bool``, ``int``, ``float``, ``str``, a
            ``tuple[...]``, a union such as ``float | None``; other types pass the value
            unchanged).
        value: The value to convert.

    Returns:
        The value as ``tp``.

    Raises:
        ConfigError: If the value does not fit ``tp`` or a float is not finite.
    """

    def fail() -> ConfigError:
        return ConfigError(f"config key {key!r} expects {_describe(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in _NONE):
            if type(None) in args:
                return None
            raise fail()
        non_finite = False
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(key, arg, value)
            except _NonFinite:
                non_finite = True
            except ConfigError:
                continue
        if non_finite:
            none = " or none" if type(None) in args else ""
            raise _NonFinite(f"config key {key!r} expects a finite number{none}, got {value!r}")
        raise fail()
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise fail()
    if tp is int:
        v = parse_literal(value) if isinstance(value, str) else value
        if isinstance(v, bool):
            raise fail()
        if isinstance(v, int):
            return v
        if isinstance(v, float) and v.is_integer():  # 1e6
            return int(v)
        raise fail()
    if tp is float:
        v = parse_literal(value) if isinstance(value, str) else value
        if isinstance(v, int | float) and not isinstance(v, bool):
            if not math.isfinite(float(v)):  # 1e400, JSON Infinity/NaN, YAML .inf
                raise _NonFinite(f"config key {key!r} expects a finite number, got {value!r}")
            return float(v)
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if origin is tuple:
        v = value
        if isinstance(v, str):
            s = v.strip()
            v = parse_literal(s) if s[:1] in "([" else [p for p in s.split(",") if p.strip()]
            if isinstance(v, int | float):
                v = [v]
        if not isinstance(v, list | tuple):
            raise fail()
        elem = args[0] if args else Any
        try:
            return tuple(coerce(key, elem, x) if elem is not Any else x for x in v)
        except _NonFinite:
            raise _NonFinite(f"config key {key!r} expects a list of finite numbers, "
                             f"got {value!r}") from None
        except ConfigError:
            raise fail() from None
    return value


def field_types(config_cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass.

    Args:
        config_cls: A config dataclass type.

    Returns:
        Its field names and types (``Any`` where a field has no annotation).
    """
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_cls)}


def apply_overrides(config: Any, values: Mapping[str, Any], source: str) -> Any:
    """A copy of ``config`` with ``values`` coerced and applied; unknown keys name the
    valid ones, bad values what is allowed (via the dataclass's own checks).

    A key the config class lists in its ``renamed_fields`` (old name -> new) is read as
    the new name, so config files and run directories written before a rename still
    load (e.g. AWR-TARE's ``value_lr``, now ``value_learning_rate``).

    Args:
        config: A config dataclass instance.
        values: New values by key (strings from the command line, or values from a
            config file).
        source: Where the values come from, for the messages.

    Returns:
        The new config.

    Raises:
        ConfigError: For an unknown key or a value that does not fit its field (the
            message names ``source``).
    """
    renamed = getattr(type(config), "renamed_fields", {})
    values = {renamed.get(k, k): v for k, v in values.items()}
    types_ = field_types(type(config))
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {unknown} in {source}; valid keys for "
            f"{type(config).__module__}.Config: {sorted(types_)}"
        )
    try:
        coerced = {k: coerce(k, types_[k], v) for k, v in values.items()}
        return dataclasses.replace(config, **coerced)
    except ConfigError as e:
        raise ConfigError(f"{e} (from {source})") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Reads a config file (``.json``, ``.toml``, ``.yaml``/``.yml``) into a flat dict.

    A run directory's ``config.json`` works too: its ``"config"`` section is used, so
    ``--config runs/X/config.json`` repeats a run's settings.

    Args:
        path: The file.

    Returns:
        The config keys and values (empty for an empty file).

    Raises:
        ConfigError: If the file does not exist, cannot be read, is not UTF-8, has an
            unknown suffix, is malformed, or does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason}); "
            "a config file is .json, .toml or .yaml text"
        ) from None
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {e.strerror}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(
                f"config file {str(path)!r}: unknown format {suffix!r}; "
                "use .json, .toml, .yaml or .yml"
            )
    except ConfigError:
        raise
    except Exception as e:  # each parser has its own error type
        raise ConfigError(f"config file {str(path)!r} is malformed: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of config keys, "
            f"got {type(data).__name__}"
        )
    if "config" in data and "algo" in data and isinstance(data["config"], dict):
        data = data["config"]  # a run directory's config.json
    return data


def resolve_config(
    default: Any,
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """``default`` <- the file's values <- ``overrides`` (each validated in turn).

    Args:
        default: The starting config (a dataclass instance).
        file: A config file (:func:`load_config_file`), or ``None``.
        overrides: Values by key from the command line, or ``None``.

    Returns:
        The resulting config.

    Raises:
        ConfigError: As :func:`load_config_file` and :func:`apply_overrides`.
    """
    config = default
    if file is not None:
        config = apply_overrides(config, load_config_file(file), f"config file {str(file)!r}")
    if overrides:
        config = apply_overrides(config, overrides, "the command-line overrides")
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists).

    Args:
        config: A config dataclass instance.

    Returns:
        Its fields by name, as JSON would load them.
    """
    return json.loads(json.dumps(dataclasses.asdict(config)))


__all__ = [
    "apply_overrides",
    "coerce",
    "config_to_dict",
    "field_types",
    "load_config_file",
    "parse_assignments",
    "parse_literal",
    "resolve_config",
]
