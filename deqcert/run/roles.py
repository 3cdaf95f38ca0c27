"""What a certifier takes: its solver *roles*, read from its own ``Options``.

A certifier's options model marks the fields that hold components with
:func:`deqcert.specs.component_option`; every solver field is a role
(``solver``, ``warmup_solver``, ``reference_solver``, or whatever name a
plugin certifier declares).  Configs turn each role into a top-level key and
the command line into a flag (``draft_solver`` -> ``--draft-solver``), so a
new role needs no edit outside the certifier's module.  An unmarked options
field whose name ends in ``solver`` counts as a role too (plugins written
before the markers existed).
"""

from __future__ import annotations

from typing import Any

from ..errors import DeqcertError
from ..specs import ComponentSlot, component_class, component_slots

COMPONENT_KEYS: dict[str, str] = {
    "dataset": "dataset",
    "certifier": "certifier",
    "noise": "noise",
    "executor": "executor",
}
"""Config keys that always hold a component spec, and the kind of each."""

SHARED_ARGUMENTS: dict[str, str] = {"n0": "n0", "n": "n", "alpha": "alpha", "batch": "batch_size"}
"""Config keys passed to every certifier that accepts them: config key -> option name."""


def certifier_options(name: str) -> Any:
    """The ``Options`` model of certifier ``name`` (None if it has none); unknown names raise."""
    return getattr(component_class("certifier", name), "Options", None)


def solver_roles(certifier: str) -> dict[str, ComponentSlot]:
    """The solver roles of ``certifier``, in the order its options declare them."""
    options = certifier_options(certifier)
    fields = getattr(options, "model_fields", None)
    if fields is None:  # a certifier without an options model: assume the plain role
        return {"solver": ComponentSlot("solver", "solver", "Per-sample solver.", None, False)}
    slots = component_slots(options)
    roles: dict[str, ComponentSlot] = {}
    for name, info in fields.items():
        slot = slots.get(name)
        if slot is not None and slot.kind == "solver":
            roles[name] = slot
        elif slot is None and name.endswith("solver"):
            roles[name] = ComponentSlot(name, "solver", info.description or "", None, False)
    return roles


def certifier_arguments(certifier: str) -> set[str] | None:
    """Option names ``certifier`` accepts (None when it declares no options model)."""
    fields = getattr(certifier_options(certifier), "model_fields", None)
    return None if fields is None else set(fields)


def known_roles() -> dict[str, list[tuple[str, ComponentSlot]]]:
    """Every solver role of every registered certifier that loads: role -> [(certifier, slot)]."""
    from ..registry import certifiers

    out: dict[str, list[tuple[str, ComponentSlot]]] = {}
    for name in certifiers.names():
        try:
            roles = solver_roles(name)
        except DeqcertError:  # a broken plugin is reported by `deqcert list`, not here
            continue
        for role, slot in roles.items():
            out.setdefault(role, []).append((name, slot))
    return out


def component_keys(certifier: str) -> dict[str, str]:
    """Config keys holding a component for a run with ``certifier``: key -> kind."""
    return {**COMPONENT_KEYS, **{role: "solver" for role in solver_roles(certifier)}}


def key_kind(key: str) -> str | None:
    """The component kind of config key ``key`` for any certifier (None for plain keys)."""
    if key in COMPONENT_KEYS:
        return COMPONENT_KEYS[key]
    return "solver" if key in known_roles() else None
