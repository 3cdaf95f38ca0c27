"""What the conformance suites share: the failure type, named checks and declared options.

Every suite (:mod:`.solvers`, :mod:`.noise`, :mod:`.models`,
:mod:`.certifiers`) is a dict of named ``check_*`` functions that each take
one *subject* (a factory of the component under test) and raise
:class:`ConformanceError` naming what is wrong.

A component class may set ``conformance_options``, a dict of the options the
suites build it with from its registry name (tiny sizes, required options);
:func:`declared_options` reads it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..registry import REGISTRIES


class ConformanceError(AssertionError):
    """A component broke its protocol's contract (the message says how)."""


def expect(condition: bool, message: str) -> None:
    """Raise :class:`ConformanceError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConformanceError(message)


Check = Callable[[Any], None]


def cases(checks: Mapping[str, Check]) -> Iterator[tuple[str, Check]]:
    """``(name, check)`` pairs, for ``pytest.mark.parametrize``."""
    yield from checks.items()


def run_checks(checks: Mapping[str, Check], subject: Any) -> None:
    """Run every check on ``subject``; re-raise the first failure prefixed with its name."""
    for name, check in checks.items():
        try:
            check(subject)
        except ConformanceError as exc:
            raise ConformanceError(f"{name}: {exc}") from exc


def declared_options(kind: str, name: str) -> dict[str, Any]:
    """The ``conformance_options`` of the registered ``kind`` component ``name`` ({} if none)."""
    target = REGISTRIES[kind].get(name)
    declared = getattr(target, "conformance_options", None)
    if declared is None:
        return {}
    expect(
        isinstance(declared, Mapping),
        f"{kind} '{name}': conformance_options must be a dict of options, "
        f"got {type(declared).__name__}",
    )
    return copy.deepcopy(dict(declared))
