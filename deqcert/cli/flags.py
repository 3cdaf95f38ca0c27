"""The command line's flags as one table: each row a flag, the config key it sets and its type.

A flag's help text is the description of the option it sets (a config
field's, or a component option's such as the Gaussian noise's ``sigma``), so
``--help`` and the config reference never disagree.  The solver-role flags
(``--solver``, ``--warmup-solver``, ...) are not written here: one is made for
every solver role a registered certifier declares (see
:mod:`deqcert.run.roles`), so a plugin certifier's new role gets its flag
with no edit here.  Adding a flag for an option is one row: ``Flag("--bound",
"certifier.bound", component=("certifier", "serialized"))``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from ..errors import DeqcertError


@dataclass(frozen=True)
class Flag:
    """One flag: ``--n`` sets config key ``n``; ``--sigma`` sets ``noise.sigma``.

    ``component`` names the ``(kind, name)`` whose options describe the last
    part of ``key`` (default: the config schema's field of the first part);
    ``help`` overrides the description.
    """

    flag: str
    key: str
    type: type = str
    component: tuple[str, str] | None = None
    help: str | None = None

    @property
    def param(self) -> str:
        """The flag's Python parameter name (``--warmup-solver`` -> ``warmup_solver``)."""
        return self.flag.lstrip("-").replace("-", "_")

    def description(self, schema: Any) -> str:
        """The help text: ``help``, else the described option's description."""
        if self.help is not None:
            return self.help
        head, _, tail = self.key.partition(".")
        if self.component is not None:
            from ..specs import component_class

            try:
                options = getattr(component_class(*self.component), "Options", None)
            except DeqcertError:
                options = None
            field = getattr(options, "model_fields", {}).get(tail or head)
        else:
            field = schema.model_fields.get(head)
        return (getattr(field, "description", None) or "").strip()


CERTIFY_FLAGS: tuple[Flag, ...] = (
    Flag("--checkpoint", "checkpoint"),
    Flag("--model", "model"),
    Flag("--weights", "weights"),
    Flag("--dataset", "dataset.name"),
    Flag("--indices", "indices"),
    Flag("--skip", "skip", int),
    Flag("--max", "max"),
    Flag("--certifier", "certifier.name"),
    Flag("--noise", "noise.name"),
    Flag("--sigma", "noise.sigma", float, ("noise", "gaussian")),
    Flag("--n0", "n0", int),
    Flag("--n", "n", int),
    Flag("--alpha", "alpha", float),
    Flag("--batch", "batch", int),
    Flag("--device", "device"),
    Flag("--seed", "seed", int),
    Flag("--out", "out"),
    Flag("--format", "format"),
    Flag("--shard", "shard"),
    Flag("--executor", "executor.name"),
    Flag("--address", "executor.address", str, ("executor", "ray")),
    Flag("--trust-solver", "trust_solver", bool),
)
"""The flags of ``certify`` and ``predict`` (:func:`role_flags` adds the solver roles')."""


def role_flags() -> list[Flag]:
    """One flag per solver role of the registered certifiers: ``--ROLE`` sets the role's solver."""
    from ..run.roles import known_roles

    flags = []
    for role, takers in known_roles().items():
        texts = dict.fromkeys(slot.description.strip() for _, slot in takers if slot.description)
        names = ", ".join(name for name, _ in takers)
        if len(texts) == 1:
            detail = next(iter(texts))
        else:
            detail = "; ".join(f"{name}: {slot.description.strip().rstrip('.')}"
                               for name, slot in takers) + "."
        flags.append(Flag(f"--{role.replace('_', '-')}", f"{role}.name",
                          help=f"Solver name ({names}). {detail}".strip()))
    return flags


def parameters(flags: Iterable[Flag], schema: Any) -> list[inspect.Parameter]:
    """Keyword parameters (typer options, default None) for ``flags``."""
    out = []
    for flag in flags:
        option = typer.Option(flag.flag, help=flag.description(schema))
        if flag.type is bool:  # an on-switch: absent leaves the key to the config file
            out.append(inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY,
                                         default=False, annotation=Annotated[bool, option]))
            continue
        annotation = Annotated[flag.type | None, option]  # type: ignore[name-defined]
        out.append(inspect.Parameter(flag.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                     annotation=annotation))
    return out


def flag_layer(flags: Sequence[Flag], values: Mapping[str, Any]) -> dict[str, Any]:
    """The config layer the given flags make: ``{"n": 500, "noise": {"sigma": 0.5}, ...}``."""
    layer: dict[str, Any] = {}
    for flag in flags:
        value = values.get(flag.param)
        if value is None or (flag.type is bool and value is False):
            continue
        *parents, last = flag.key.split(".")
        node = layer
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return layer
