"""Component specs: a registered component named next to its options.

One spec shape serves certify configs, train configs, certifier options and
the benchmarks alike: a bare name (``"anderson"``) or a flat mapping
(``{"name": "anderson", "max_iter": 1}``).  The nested form of older train
configs, ``{"name": "anderson", "options": {"max_iter": 1}}``, is still read,
with a :class:`DeqcertDeprecationWarning`.

Options models (a certifier's, a solver's) say which of their fields hold
components with :func:`component_option` (the field's type) and
:func:`component_field` (its default spec).  :func:`component_slots` lists
those fields, which is how configs and the command line learn the solver
roles of any certifier, a plugin's included.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .errors import DeqcertError, OptionError
from .options import short_repr
from .registry import EXECUTORS, REGISTRIES, Registry

REQUIRED_MEMBERS: dict[str, tuple[str, ...]] = {
    "solver": ("solve",),
    "noise": ("sample", "radius", "norm"),
    "certifier": ("certify", "predict"),
    "executor": ("run",),
}
"""What an object given in place of a spec must have, by kind."""


class DeqcertDeprecationWarning(FutureWarning):
    """A deprecated form that still works (shown to users by default, unlike DeprecationWarning)."""


def normalise(value: Any) -> Any:
    """A spec value in flat form: ``"x"`` -> ``{"name": "x"}``; nested ``options`` folded in.

    Anything else (an object, a malformed value) is returned unchanged for
    the caller to accept or refuse.
    """
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, ComponentSpec):
        return value.to_dict()
    if (
        isinstance(value, Mapping)
        and isinstance(value.get("options"), Mapping)
        and set(value) <= {"name", "options"}
    ):
        name = value.get("name")
        flat = {"name": name, **value["options"]}
        warnings.warn(
            f"the nested spec form {{'name': {name!r}, 'options': {{...}}}} is deprecated; "
            f"write the options next to the name: {short_repr(flat, 80)}",
            DeqcertDeprecationWarning,
            stacklevel=2,
        )
        return flat
    return value


class ComponentSpec(BaseModel):
    """A registered component by name, with its options next to the name.

    Accepts a bare name, a flat mapping or (deprecated) the nested
    ``{"name", "options"}`` form; the options are checked by the component's
    own ``Options`` model when it is built.
    """

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, value: Any) -> Any:
        return normalise(value)

    @property
    def options(self) -> dict[str, Any]:
        """The component's options (everything but ``name``)."""
        return dict(self.model_extra or {})

    def with_options(self, **options: Any) -> ComponentSpec:
        """A copy with ``options`` added or replaced."""
        return ComponentSpec(name=self.name, **{**self.options, **options})

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **options}``."""
        return {"name": self.name, **self.options}


def parse_spec(value: Any, kind: str = "component") -> ComponentSpec:
    """``value`` as a :class:`ComponentSpec`; a malformed one raises :class:`OptionError`."""
    if isinstance(value, ComponentSpec):
        return value
    try:
        return ComponentSpec.model_validate(value)
    except ValidationError:
        raise OptionError(
            f"a {kind} spec is a name or a mapping with a 'name' key, e.g. "
            f"{{'name': 'anderson', 'max_iter': 1}}; got {_short_value(value)}"
        ) from None


def _short_value(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- registries ----------------------------------------------------------------
def registry_for(kind: str) -> Registry:
    """The registry of components of ``kind`` (``solver``, ``noise``, ``executor``, ...)."""
    if kind == "executor":
        return EXECUTORS
    try:
        return REGISTRIES[kind]
    except KeyError:
        known = ", ".join([*REGISTRIES, "executor"])
        raise OptionError(f"unknown component kind {kind!r}; known kinds: {known}") from None


def component_class(kind: str, name: str) -> Any:
    """The registered class (or factory) ``name`` of ``kind``; unknown names raise."""
    return registry_for(kind).get(name)


def accepted_options(kind: str, name: str) -> set[str] | None:
    """Option names component ``name`` of ``kind`` accepts (None when it cannot tell)."""
    try:
        cls = component_class(kind, name)
    except DeqcertError:
        return None
    fields = getattr(getattr(cls, "Options", None), "model_fields", None)
    if fields is None:
        return None
    return set(fields) | ({"split"} if kind == "dataset" else set())


def build(kind: str, spec: Any, *, where: str | None = None, **arguments: Any) -> Any:
    """Create the component ``spec`` describes, with ``arguments`` added to its options.

    ``where`` prefixes option errors (e.g. ``warmup_solver anderson: ...``).
    """
    parsed = parse_spec(spec, kind)
    try:
        return registry_for(kind).create(parsed.name, **parsed.options, **arguments)
    except OptionError as exc:
        if where is None:
            raise
        raise OptionError(f"{where} {exc}") from None


def as_component(kind: str, value: Any) -> Any:
    """An object of ``kind`` as it is, or one built from a spec (name or mapping)."""
    if isinstance(value, str | Mapping | ComponentSpec):
        return build(kind, value)
    missing = [member for member in REQUIRED_MEMBERS.get(kind, ()) if not hasattr(value, member)]
    if missing:
        raise ValueError(
            f"expected a {kind} object (with {', '.join(REQUIRED_MEMBERS[kind])}) or a "
            f"{{'name': ..., **options}} spec, got {type(value).__name__}"
        )
    return value


# -- component fields of options models ---------------------------------------
@dataclass(frozen=True)
class ComponentKind:
    """Marker in a field's type: the field holds a component of ``kind``."""

    kind: str
    optional: bool = False


def _validator(kind: str, optional: bool = False) -> BeforeValidator:
    def validate(value: Any) -> Any:
        if value is None and optional:
            return None
        return as_component(kind, value)

    return BeforeValidator(validate)


def component_option(kind: str, *, optional: bool = False) -> Any:
    """The type of an options field holding a component of ``kind`` (object or spec).

    With ``optional`` the field also accepts ``None`` (no component).  For
    solvers and noise use the ready aliases below (static type checkers
    accept them as types).
    """
    return Annotated[Any, _validator(kind, optional), ComponentKind(kind, optional)]


NoiseOption = Annotated[Any, _validator("noise"), ComponentKind("noise")]
"""Option type: a noise sampler or a ``{"name": ..., **options}`` spec."""

SolverOption = Annotated[Any, _validator("solver"), ComponentKind("solver")]
"""Option type: a fixed-point solver or a ``{"name": ..., **options}`` spec."""

OptionalSolverOption = Annotated[
    Any, _validator("solver", optional=True), ComponentKind("solver", optional=True)
]
"""Option type: a fixed-point solver, a spec, or None."""


def component_field(kind: str, description: str, default: Any = None) -> Any:
    """A pydantic ``Field`` for a component option whose default is the spec ``default``.

    A fresh component is built for every options object.  The spec is kept in
    the field's schema (``default_spec``), so configs and the command line
    start from the same defaults as the Python API.
    """
    if default is None:
        return Field(description=description)
    spec = normalise(default)
    return Field(
        default_factory=lambda: as_component(kind, dict(spec)),
        description=description,
        json_schema_extra={"default_spec": dict(spec)},
    )


@dataclass(frozen=True)
class ComponentSlot:
    """One component field of an options model."""

    name: str
    kind: str
    description: str
    default_spec: dict[str, Any] | None
    optional: bool


def component_slots(options: Any, kind: str | None = None) -> dict[str, ComponentSlot]:
    """The fields of the options model ``options`` that hold components (of ``kind``)."""
    fields = getattr(options, "model_fields", None) or {}
    slots: dict[str, ComponentSlot] = {}
    for name, info in fields.items():
        marker = next((m for m in info.metadata if isinstance(m, ComponentKind)), None)
        if marker is None or (kind is not None and marker.kind != kind):
            continue
        extra = info.json_schema_extra
        spec = extra.get("default_spec") if isinstance(extra, dict) else None
        slots[name] = ComponentSlot(
            name=name,
            kind=marker.kind,
            description=info.description or "",
            default_spec=dict(spec) if isinstance(spec, dict) else None,
            optional=marker.optional,
        )
    return slots


__all__ = [
    "ComponentKind",
    "ComponentSlot",
    "ComponentSpec",
    "DeqcertDeprecationWarning",
    "NoiseOption",
    "OptionalSolverOption",
    "SolverOption",
    "accepted_options",
    "as_component",
    "build",
    "component_class",
    "component_field",
    "component_option",
    "component_slots",
    "normalise",
    "parse_spec",
    "registry_for",
]
