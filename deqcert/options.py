"""Validated constructor options shared by every registered component.

Each component class declares a pydantic ``Options`` model with
``extra="forbid"``; :class:`Configurable` validates keyword arguments against
it, so a mistyped option is an error naming it instead of being silently
ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import OptionError


class ComponentOptions(BaseModel):
    """Base for per-component option models: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=False)


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
            parts.append(f"option '{loc}': {msg} (got {err.get('input')!r})")
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
