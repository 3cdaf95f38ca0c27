"""The ``deqcert`` Typer app: the command group, one-line errors, shared options.

The commands live in their own modules (:mod:`.run`, :mod:`.train`,
:mod:`.files`, :mod:`.inspect`) and register themselves on :data:`app`.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.main
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

LAZY_COMMANDS: dict[str, tuple[str, str]] = {}
"""Commands whose flags need torch-importing modules: name -> (module, one-line help).

Their module's ``command(name)`` builds the real command only when it is
run (or its own ``--help`` asked for), so ``deqcert --help``, ``--version``,
``list``, ``report`` and errors in the group's own arguments start without
importing torch.
"""


def lazy_command(name: str, module: str, short_help: str) -> None:
    """Register ``name``, built on first use by ``module.command(name)``."""
    LAZY_COMMANDS[name] = (module, short_help)


def typer_command(name: str, callback: Any) -> Any:
    """The (click) command typer makes of ``callback`` under ``name``."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name)(callback)
    command = typer.main.get_command(single)
    command.name = name
    return command


def _help_only(short_help: str) -> Any:
    def listed() -> None:
        """Placeholder: the real command is built when it runs."""

    listed.__doc__ = short_help
    return listed


class OneLineErrors(TyperGroup):
    """The ``deqcert`` group: user mistakes become one line on stderr and exit code 2."""

    _resolving = False

    def list_commands(self, ctx: Any) -> list[str]:
        names = sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in LAZY_COMMANDS:
            return command
        module, short_help = LAZY_COMMANDS[cmd_name]
        if not self._resolving:  # listed in the group's help: the one-line help is enough
            return typer_command(cmd_name, _help_only(short_help))
        built = importlib.import_module(module).command(cmd_name)
        self.add_command(built, cmd_name)
        return built

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        self._resolving = True
        try:
            return super().resolve_command(ctx, args)
        finally:
            self._resolving = False

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
        except typer.Abort:
            fail("aborted", 1)
        except signals.Interrupted as exc:
            fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            fail(signals.Interrupted(2).message, 130)
        except OSError as exc:
            name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{name}")
        except Exception as exc:  # pydantic's ValidationError, not imported up front
            if type(exc).__name__ != "ValidationError" or not hasattr(exc, "errors"):
                raise
            fail(_validation_message(exc))
        if not standalone_mode:
            return rv
        raise SystemExit(rv if isinstance(rv, int) else 0)


def _one_line_warning(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings as one line on stderr (``deqcert: warning: ...``), without the source line."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"deqcert: warning: {text}\n")


def _validation_message(exc: Any) -> str:
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
