"""Config is data: frozen dataclasses built from the matching top-level section of params.yaml.

Every stage module defines a frozen ``Config`` dataclass (one comment per field with its unit) and
builds it with :func:`build`, which rejects unknown or missing keys with a message a person can act
on, converts YAML scalars to the annotated type and lets ``__post_init__`` validate values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from acneops.core.errors import AcneopsError

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(AcneopsError, ValueError):
    """A params value a person must fix; the message names the file, key, value and the fix."""


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read params.yaml (or another YAML file) into a dict; a missing or malformed file is a ConfigError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the repository root or pass --params PATH")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax") from exc
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(params).__name__}")
    return params


def section(params: dict[str, Any], key: str) -> dict[str, Any]:
    """The top-level section ``key`` of params, or a clear error naming the missing section."""
    if key not in params:
        raise ConfigError(f"params.yaml: section '{key}' is missing; add it (see README, 'params')")
    value = params[key]
    if not isinstance(value, dict):
        raise ConfigError(f"params.yaml: section '{key}' must be a mapping, got {value!r}")
    return value


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML scalar/list to ``annotation`` (int, float, str, bool, Path, tuple[...], X | None)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {value!r}")
        return tuple(_convert(v, a, where) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if annotation is int and float(value) != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return annotation(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if annotation is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    return value


def build(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Build the frozen dataclass ``cls`` from ``values``; ``where`` names the params section in errors.

    Unknown keys are rejected (a typo must not silently fall back to a default); keys without a
    default must be present.
    """
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"params.yaml [{where}]: unknown key(s) {unknown}; valid keys are {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in values:
            kwargs[name] = _convert(values[name], hints[name], f"params.yaml [{where}.{name}]")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"params.yaml [{where}]: required key '{name}' is missing")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"params.yaml [{where}]: {exc}") from exc


def require(condition: bool, message: str) -> None:
    """Raise a ConfigError with ``message`` unless ``condition``; used in ``__post_init__``."""
    if not condition:
        raise ConfigError(message)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-friendly dict of a config dataclass (Paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if dataclasses.is_dataclass(v):
            return to_dict(v)
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{'a.b.c': leaf}`` (keys joined with '.'; every non-dict value is a leaf, kept as is).

    MLflow params take ``str`` of the leaves, MLflow metrics the numeric leaves (:func:`numeric_leaves`).
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric_leaves(tree: dict[str, Any]) -> dict[str, float]:
    """:func:`flatten` keeping numbers only, as floats (bools, strings, lists and None are dropped)."""
    return {k: float(v) for k, v in flatten(tree).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_upstream(values: dict[str, Any], expected: str | Path, where: str) -> None:
    """Pop a foreach run's ``upstream`` key and check it names the input the run really reads.

    dvc.yaml cannot derive a run's dependency from its settings, so each run of a foreach stage declares
    ``upstream`` (the one input it adds to the stage's common inputs) and dvc.yaml lists
    ``${item.upstream}``. A declared value that differs from what the run reads would let DVC miss a
    change, so it is an error; runs outside dvc.yaml may omit the key.
    """
    declared = values.pop("upstream", None)
    if declared is None:
        return
    if Path(str(declared)) != Path(expected):
        raise ConfigError(
            f"params.yaml [{where}.upstream]: is {declared!r} but this run reads {str(expected)!r}; "
            f"set upstream: {expected} so dvc.yaml re-runs it when that input changes"
        )
