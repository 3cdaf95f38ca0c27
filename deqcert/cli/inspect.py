"""``deqcert list`` and ``deqcert info``: registered components and checkpoints."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ..errors import OptionError
from .app import app, stdout


@app.command("list")
def list_components(
    kind: Annotated[
        str | None,
        typer.Argument(help="solvers | certifiers | noise | models | datasets | executors."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Import every component to report load errors.")
    ] = False,
) -> None:
    """Registered components: name, group, origin package (and, with --check, load errors).

    Names come from the installed packages' entry-point metadata; nothing is
    imported unless ``--check`` asks, so listing is fast.
    """
    from ..registry import EXECUTORS, REGISTRIES

    registries = {**REGISTRIES, "executor": EXECUTORS}
    if kind is not None:
        wanted = kind.rstrip("s") if kind != "noise" else "noise"
        if wanted not in registries:
            raise OptionError(
                f"unknown kind {kind!r}; accepted: solvers, certifiers, noise, models, "
                "datasets, executors"
            )
        registries = {wanted: registries[wanted]}
    rows = [
        {"name": e.name, "group": e.group, "origin": e.origin, "target": e.target,
         "error": e.error, "checked": e.loaded or e.error is not None}
        for registry in registries.values()
        for e in registry.entries(load=check)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="deqcert components",
                  caption=None if check else "status: run 'deqcert list --check' to import each")
    for column in ("group", "name", "origin", "status"):
        table.add_column(column)
    for row in rows:
        if row["error"] is not None:
            status = f"[red]error: {row['error']}[/red]"
        else:
            status = "ok" if row["checked"] else "-"
        table.add_row(str(row["group"]), str(row["name"]), str(row["origin"]), status)
    stdout.print(table)


@app.command()
def info(
    checkpoint: Annotated[
        str, typer.Argument(help="Checkpoint file, 'default' or a bundled checkpoint's name.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A checkpoint's model, options, training data, noise level and metrics."""
    from ..checkpoint import checkpoint_metadata, file_sha256, resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    metadata = checkpoint_metadata(path)
    details = {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        **metadata,
    }
    if as_json:
        typer.echo(json.dumps(details, indent=2, default=str))
        return
    for key in ("path", "sha256"):  # whole, on lines of their own: never cut at the width
        typer.echo(f"{key}: {details[key]}")
    table = Table(title=f"checkpoint {path.name}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key in (
        "size_bytes",
        "model",
        "model_options",
        "dataset",
        "sigma",
        "metrics",
        "deqcert_version",
    ):
        if key in details:
            value = details[key]
            table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    stdout.print(table)


