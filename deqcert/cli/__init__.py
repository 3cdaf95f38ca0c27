"""The ``deqcert`` command line: flags -> config -> the Python API.

Every command turns its flags into a config (:class:`~deqcert.run.CertifyConfig`
or :class:`~deqcert.train.TrainConfig`) and calls the same API a script
would.  Every user mistake ends the command with one line on stderr and exit
code 2, before any output file is created or changed.

Modules: :mod:`.app` (the Typer app, one-line errors), :mod:`.flags` (the flag
table), :mod:`.run` (certify, predict), :mod:`.train`, :mod:`.files` (report,
merge), :mod:`.inspect` (list, info).
"""

from __future__ import annotations

from .signals import starting

with starting():  # Ctrl-C while the CLI loads: one line, exit 130, no traceback
    from . import files, inspect, run, train
    from .app import app, fail


def main() -> None:
    """Console-script entry point."""
    with starting():  # typer builds the commands (importing torch) before they run
        app()


__all__ = ["app", "fail", "files", "inspect", "main", "run", "train"]
