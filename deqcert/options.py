"""Validated constructor options shared by every registered component.

Each component class declares a pydantic ``Options`` model with
``extra="forbid"``; :class:`Configurable` validates keyword arguments against
it, so a mistyped option is an error naming it instead of being silently
ignored.
"""

from __future__ import annotations

import reprlib
import types
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import OptionError


def _numeric(annotation: Any) -> bool:
    """True for ``int``/``float`` fields (also inside ``X | None``), never for ``bool`` ones."""
    if annotation is bool:
        return False
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(annotation)
        return bool not in args and any(_numeric(arg) for arg in args)
    return False


def refuse_bool_numbers(model: type[BaseModel], data: Any) -> Any:
    """A ``mode="before"`` check: ``true`` given for a number is an error, not ``1``.

    Pydantic reads ``True`` as ``1`` for an ``int`` field, so ``--set n=true``
    would run with ``n = 1``.
    """
    if isinstance(data, dict):
        for key, value in data.items():
            field = model.model_fields.get(key) if isinstance(key, str) else None
            if isinstance(value, bool) and field is not None and _numeric(field.annotation):
                raise OptionError(f"'{key}' must be a number, not {str(value).lower()}")
    return data


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, keeping a dict's own key order."""

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [
            f"{self.repr1(key, level - 1)}: {self.repr1(x[key], level - 1)}"
            for key in list(x)[: self.maxdict]
        ]
        return "{" + ", ".join(items) + (", ..." if len(x) > self.maxdict else "") + "}"


_REPR = _ShortRepr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 6, 6, 40, 40


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, built without expanding deep or huge values.

    Error messages quote what a user gave with this, never in full: a YAML alias
    bomb's repr would take forever to build.
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ComponentOptions(BaseModel):
    """Base for per-component option models: unknown keys are rejected.

    Numbers must be finite (``inf`` and ``nan`` are refused) and of the right
    type (``true`` is no number).
    """

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, frozen=False, allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        return refuse_bool_numbers(cls, data)


def format_validation_error(exc: ValidationError, owner: str, model: type[BaseModel]) -> str:
    """Render a pydantic error as one line naming the offending option(s)."""
    accepted = ", ".join(sorted(model.model_fields))
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            parts.append(f"unknown option '{loc}'")
        elif not loc:  # a model-level check: the input is every option, not worth echoing
            parts.append(msg)
        else:
            parts.append(f"option '{loc}': {msg} (got {short_repr(err.get('input'))})")
    return f"{owner}: " + "; ".join(parts) + f". Accepted options: {accepted or 'none'}"


def validate_options(model: type[BaseModel], options: dict[str, Any], owner: str) -> Any:
    """Validate ``options`` against ``model``; raise :class:`OptionError` on failure."""
    try:
        return model(**options)
    except ValidationError as exc:
        raise OptionError(format_validation_error(exc, owner, model)) from None


class Configurable:
    """Mixin: ``__init__(**options)`` validated by the class's ``Options`` model.

    Subclasses read their settings from ``self.options``.
    """

    Options: ClassVar[type[ComponentOptions]] = ComponentOptions
    registry_name: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        owner = self.registry_name or type(self).__name__
        self.options = validate_options(self.Options, options, owner)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description: the component's name and its options."""
        out: dict[str, Any] = {"name": self.registry_name or type(self).__name__}
        for key in type(self.options).model_fields:
            value = getattr(self.options, key)
            out[key] = value.describe() if hasattr(value, "describe") else value
        return out
