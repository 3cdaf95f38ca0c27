"""Config layers, shared by ``certify`` and ``train``: files, ``--set`` overrides, merging.

A run's settings come from layers, lowest first: the defaults, a config file
(TOML or YAML), explicit values (the command line's flags), then ``--set
key=value`` overrides.  :func:`merge_layer` lays one over another,
recursively.  For keys that hold a component spec (``kinds``), a layer that
names a *different* component than the layer below keeps only the options the
new component accepts: ``--solver broyden`` over the serialized default keeps
``max_iter=1``.  :func:`validate_config` turns pydantic's errors into one
line naming each offending key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import DeqcertError, OptionError
from ..options import short_repr
from ..results.integrity import regular_or_absent
from ..specs import accepted_options

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")
MAX_CONFIG_BYTES = 4 * 2**20
"""A config file is read up to this size (4 MiB); a larger one is refused."""
MAX_CONFIG_VALUES = 1_000_000
"""A config's values, counted with YAML aliases expanded, up to this many."""


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file into a dict."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise OptionError(f"config file {path}: unsupported type '{suffix}'; use .toml or .yaml")
    regular_or_absent(path, "a config file", OptionError)  # a FIFO or /dev/zero would hang
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise OptionError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise OptionError(f"config file {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"config file {path} is unreadable: {short_repr(exc, 80)}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise OptionError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; "
            "a config holds settings, not data"
        )
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # both parsers raise their own error types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptionError(f"config file {path} is malformed: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OptionError(
            f"config file {path} must hold a table of keys, not {type(data).__name__}"
        )
    check_tree(data, f"config file {path}")
    return data


def check_tree(data: Any, where: str) -> None:
    """Refuse non-string keys, self-references and trees too large once YAML aliases expand.

    YAML anchors share one object between many places; a few lines of nested
    aliases (an "alias bomb") expand to billions of values, so sizes are
    counted per distinct object (linear in the file) before anything walks
    the tree.
    """
    sizes: dict[int, int] = {}

    def size(node: Any, path: tuple[int, ...]) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in path:
            raise OptionError(f"{where}: a YAML alias refers to itself; expand it by hand")
        if key not in sizes:
            children = node.items() if isinstance(node, dict) else enumerate(node)
            total = 1
            for name, child in children:
                if isinstance(node, dict) and not isinstance(name, str):
                    raise OptionError(
                        f"{where}: key {short_repr(name, 30)} ({type(name).__name__}) is not "
                        "a string; config keys must be text (quote it)"
                    )
                total += size(child, (*path, key))
                if total > MAX_CONFIG_VALUES:
                    break
            sizes[key] = total
        if sizes[key] > MAX_CONFIG_VALUES:
            raise OptionError(
                f"{where} expands to more than {MAX_CONFIG_VALUES} values (YAML aliases?); "
                "a config holds settings, not data"
            )
        return sizes[key]

    try:
        size(data, ())
    except RecursionError:
        raise OptionError(f"{where} is nested too deeply") from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON (``1e-3``, ``true``, ``[1, 2]``), a TOML scalar, or a string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["solver.max_iter=2", "n=500"]`` into a nested layer dict."""
    layer: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise OptionError(f"--set {item!r}: expected key=value, e.g. solver.max_iter=2")
        node = layer
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise OptionError(f"--set {item!r}: '{part}' is already set to a value")
            node = child
        node[parts[-1]] = parse_value(raw.strip())
    return layer


def source_layers(
    file: str | Path | None, values: Mapping[str, Any] | None, sets: Iterable[str]
) -> list[dict[str, Any]]:
    """The file, values and ``--set`` layers, lowest first (defaults not included)."""
    return [
        load_config_file(file) if file is not None else {},
        dict(values or {}),
        parse_assignments(sets),
    ]


def merge_layer(
    lower: Mapping[str, Any], upper: Mapping[str, Any], *, kinds: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``upper`` over ``lower``, recursively; ``kinds`` maps component keys to their kind."""
    out = dict(lower)
    for key, value in upper.items():
        if kinds and key in kinds:
            out[key] = _merge_component(kinds[key], lower.get(key), value)
        elif isinstance(value, Mapping) and isinstance(lower.get(key), Mapping):
            out[key] = merge_layer(lower[key], value)
        else:
            out[key] = value
    return out


def merge_layers(layers: Iterable[Mapping[str, Any]], kinds: Mapping[str, str]) -> dict[str, Any]:
    """All ``layers`` merged in order (see :func:`merge_layer`)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge_layer(merged, layer, kinds=kinds)
    return merged


def _merge_component(kind: str, lower: Any, upper: Any) -> Any:
    if upper is None or not isinstance(upper, Mapping | str):
        return upper  # None disables an optional component; anything else fails validation
    upper = {"name": upper} if isinstance(upper, str) else dict(upper)
    if not isinstance(lower, Mapping | str):
        return upper
    lower = {"name": lower} if isinstance(lower, str) else dict(lower)
    name = upper.get("name", lower.get("name"))
    if name == lower.get("name"):
        return {**lower, **upper}
    accepted = accepted_options(kind, str(name)) or set()
    kept = {k: v for k, v in lower.items() if k != "name" and k in accepted}
    return {**kept, **upper}


def last_named(layers: Iterable[Mapping[str, Any]], key: str) -> str | None:
    """The component name the highest layer gives ``key`` (None if no layer names one)."""
    name: str | None = None
    for layer in layers:
        spec = layer.get(key)
        if isinstance(spec, str):
            name = spec
        elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
            name = spec["name"]
    return name


def validate_config(model: type[BaseModel], data: Mapping[str, Any]) -> Any:
    """``model.model_validate(data)`` with errors turned into one-line :class:`OptionError` s."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise OptionError(format_config_error(exc, model)) from None


def format_config_error(
    exc: ValidationError, model: type[BaseModel], accepted: Iterable[str] | None = None
) -> str:
    """One line naming each offending config key (and the accepted keys for unknown ones)."""
    parts: list[str] = []
    unknown = False
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, DeqcertError):
            parts.append(str(cause))
            continue
        loc = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-"))
        if err.get("type") == "extra_forbidden":
            unknown = True
            parts.append(f"unknown config key '{loc}'")
        else:
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"config key '{loc}': {msg} (got {short_repr(err.get('input'))})")
    text = "; ".join(dict.fromkeys(parts))
    if unknown:
        text += ". Accepted keys: " + ", ".join(accepted or model.model_fields)
    return text
