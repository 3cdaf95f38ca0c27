"""``deqcert report`` and ``deqcert merge``: reading and joining results files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import OptionError
from .app import app, stderr, stdout


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="Results files (.jsonl or .tsv).")],
    radii: Annotated[
        str | None, typer.Option(help="Radii, e.g. 0,0.25,0.5 (default 0 to 2 sigma).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="table | markdown | tsv.")] = "table",
    plot: Annotated[
        Path | None,
        typer.Option(help="Also draw certified accuracy, a panel per norm (.png, .svg or .pdf)."),
    ] = None,
) -> None:
    """Certified accuracy at radii, ACR, abstain rate, NFE and time, files side by side."""
    from .. import report as reporting

    if format_ not in ("table", "markdown", "tsv"):
        raise OptionError(f"unknown report format {format_!r}; accepted: table, markdown, tsv")
    if plot is not None:
        from ..plotting import check_plot_path

        check_plot_path(plot)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise OptionError(reporting.PLOT_HINT) from None
    built = reporting.build_report(results, reporting.parse_radii(radii) if radii else None)
    if format_ == "markdown":
        typer.echo(reporting.to_markdown(built), nl=False)
    elif format_ == "tsv":
        typer.echo(reporting.to_tsv(built), nl=False)
    else:
        stdout.print(reporting.to_rich(built))
    for line in reporting.notes(built):
        stderr.print(line, highlight=False, soft_wrap=True)
    if any(run.mark == "UNSOUND" for run in built.runs):
        stderr.print(
            "note: UNSOUND marks results made with the repro bound, which is not a "
            "valid certificate (reproduction only)",
            style="yellow",
            highlight=False,
        )
    if plot is not None:
        typer.echo(f"plot written to {reporting.plot(built, plot)}")


@app.command()
def merge(
    out: Annotated[Path, typer.Argument(help="Merged results file to write.")],
    parts: Annotated[list[Path], typer.Argument(help="Shard results files.")],
) -> None:
    """Merge shard results: headers must agree and every index must appear exactly once."""
    from ..results import merge_results

    summary = merge_results(out, parts)
    typer.echo(f"merged {summary.parts} files, {summary.records} records -> {summary.out}")


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="PyTorch state dict (.pt/.pth).")],
    target: Annotated[Path, typer.Argument(help="Safetensors file to write.")],
) -> None:
    """Convert a PyTorch state dict (read with weights_only=True) to safetensors, for --weights."""
    from ..adapters.factory import convert as convert_state

    typer.echo(f"wrote {convert_state(source, target)}")

