"""The ``deqcert`` Typer app: the command group, one-line errors, shared options.

The commands live in their own modules (:mod:`.run`, :mod:`.train`,
:mod:`.files`, :mod:`.inspect`) and register themselves on :data:`app`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from typer.core import TyperGroup

from .. import __version__
from ..errors import DeqcertError
from . import signals

EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with ``code``."""
    text = " ".join(str(message).split()) or "unknown error"
    sys.stderr.write(f"deqcert: error: {text}\n")
    sys.stderr.flush()
    raise SystemExit(code)


COMMAND_ORDER = ("certify", "predict", "train", "report", "merge", "list", "info")
"""How ``deqcert --help`` lists the commands (others, e.g. added later, come after)."""


class OneLineErrors(TyperGroup):
    """The ``deqcert`` group: user mistakes become one line on stderr and exit code 2."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            with warnings.catch_warnings(), signals.raising():
                warnings.showwarning = _one_line_warning
                rv = super().main(
                    args=args,
                    prog_name=prog_name or "deqcert",
                    complete_var=complete_var,
                    standalone_mode=False,
                    **extra,
                )
        except typer.TyperException as exc:  # click's usage errors
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # type: ignore[attr-defined]
                raise SystemExit(0) from None
            ctx = getattr(exc, "ctx", None)
            where = f"{ctx.command_path}: " if ctx is not None else ""
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            fail(f"{where}{message}{hint}", getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)
        except DeqcertError as exc:
            fail(str(exc))
        except ValidationError as exc:
            fail(_validation_message(exc))
        except typer.Abort:
            fail("aborted", 1)
        except signals.Interrupted as exc:
            fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            fail(signals.Interrupted(2).message, 130)
        except OSError as exc:
            name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{name}")
        if not standalone_mode:
            return rv
        raise SystemExit(rv if isinstance(rv, int) else 0)


def _one_line_warning(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings as one line on stderr (``deqcert: warning: ...``), without the source line."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"deqcert: warning: {text}\n")


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        kind = "unknown key" if err.get("type") == "extra_forbidden" else err.get("msg")
        parts.append(f"{loc}: {kind}")
    return f"{exc.title}: " + "; ".join(parts)


app = typer.Typer(
    cls=OneLineErrors,
    name="deqcert",
    help="Certify Deep Equilibrium Models with (serialized) randomized smoothing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stdout = Console()
stderr = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deqcert {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Certify Deep Equilibrium Models with (serialized) randomized smoothing."""


# -- options shared by several commands ---------------------------------------
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML or YAML config file (flags win).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set solver.max_iter=2 (repeatable)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables.")]
