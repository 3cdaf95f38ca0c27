"""``deqcert certify`` and ``deqcert predict``: flags -> :class:`~deqcert.run.CertifyConfig` -> run.

Both commands take the same flags (the table in :mod:`deqcert.cli.flags`
plus one flag per solver role), build the config with the same layering as
the Python API (defaults < ``--config`` < flags < ``--set``), then run the
pipeline with a progress bar and print the records.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .app import ConfigOpt, QuietOpt, SetOpt, lazy_command, stderr, stdout, typer_command
from .flags import CERTIFY_FLAGS, Flag, flag_layer, parameters, role_flags

SHARD_PLACEHOLDER = "{shard}"
_DOCS = {
    "certify": "Certify inputs: prediction and certified radius for each.",
    "predict": "Predict inputs with the smoothed classifier (abstaining when unsure).",
}


class RunCommand:
    """The ``certify`` or ``predict`` command; its flags are read when the CLI is built.

    Reading them late (``__signature__`` is a property) means a certifier
    registered at run time, with roles of its own, gets its flags too.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.__name__ = mode
        self.__annotations__: dict[str, Any] = {}  # the flags are in __signature__
        self.__doc__ = _DOCS[mode] + (
            "\n\nSettings: defaults < --config file < flags < --set. An existing --out is "
            "resumed: its header must match, done inputs are skipped."
        )

    def flags(self) -> list[Flag]:
        """The table's flags with the solver-role flags after ``--certifier``."""
        at = next(i for i, flag in enumerate(CERTIFY_FLAGS) if flag.flag == "--certifier") + 1
        return [*CERTIFY_FLAGS[:at], *role_flags(), *CERTIFY_FLAGS[at:]]

    @property
    def __signature__(self) -> inspect.Signature:
        from ..run.config import CertifyConfig

        fixed = [
            inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=ConfigOpt),
            inspect.Parameter("set_", inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=SetOpt),
        ]
        quiet = inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False,
                                  annotation=QuietOpt)
        return inspect.Signature([*fixed, *parameters(self.flags(), CertifyConfig), quiet])

    def __call__(
        self, *, config: Path | None = None, set_: list[str] | None = None, quiet: bool = False,
        **values: Any,
    ) -> None:
        layer = flag_layer(self.flags(), values)
        layer["mode"] = self.mode
        certify(config, set_ or [], layer, shard_flag=values.get("shard"), quiet=quiet)


def command(name: str) -> Any:
    """The ``certify`` or ``predict`` click command (built on first use, see ``lazy_command``)."""
    return typer_command(name, RunCommand(name))


lazy_command("certify", __name__, _DOCS["certify"])
lazy_command("predict", __name__, _DOCS["predict"])


def _launcher_out(out: str) -> str:
    """``run.jsonl`` -> ``run.shard-i-of-n.jsonl``: every launched rank shares one command line."""
    if SHARD_PLACEHOLDER in out:
        return out
    path = Path(out)
    return str(path.with_name(f"{path.stem}.shard-{SHARD_PLACEHOLDER}{path.suffix}"))


def certify(
    config_file: Path | None,
    sets: list[str],
    values: dict[str, Any],
    *,
    shard_flag: str | None,
    quiet: bool,
) -> None:
    """Build the run from its layers, certify what is not done yet, print the records."""
    from ..notes import cap_hint
    from ..report import summarize
    from ..results import read_results
    from ..run.config import CertifyConfig
    from ..run.sharding import shard_from_env

    env_shard = shard_from_env(os.environ) if shard_flag is None else None
    if env_shard is not None:
        values["shard"] = str(env_shard)
    config = CertifyConfig.from_sources(config_file, values, sets)
    if config.out is not None and env_shard is not None and config.shard is not None:
        config = config.model_copy(update={"out": _launcher_out(config.out)})
    pipeline = config.build()
    writer = pipeline.prepare_output()
    todo = [i for i in pipeline.indices if i not in writer.done]
    if not quiet:
        _describe_run(pipeline, writer, len(todo))
    with _progress(quiet, f"{config.mode}", len(todo)) as advance:
        summary = pipeline.run(writer=writer, on_record=advance)
    if quiet:
        typer.echo(str(summary.path))
        return
    if summary.records:
        stdout.print(_records_table(summary.records, config.mode))
    results = read_results(summary.path)
    hint = cap_hint(results.records)
    if hint is not None:
        typer.echo(hint)
    stats = summarize(results, [0.0])
    line = f"{plural(stats.inputs, 'input')} in {summary.path}: accuracy {stats.accuracy:.3f}"
    if stats.acr is not None:
        line += f", ACR {stats.acr:.3f}, abstained {stats.abstain_rate:.3f}"
    if stats.mark:
        line += f"  [{stats.mark}: {stats.bound} bound]"
    typer.echo(line)
    typer.echo(f"results written to {summary.path}")


def _describe_run(pipeline: Any, writer: Any, todo: int) -> None:
    config = pipeline.config
    shard = f", shard {pipeline.shard}" if pipeline.shard else ""
    done = len(pipeline.indices) - todo
    resume = f"resuming ({done} of {len(pipeline.indices)} done), " if writer.resuming else ""
    noise = ", ".join(f"{k}={v}" for k, v in config.noise.options.items())
    typer.echo(
        f"{config.mode}: {plural(len(pipeline.indices), 'input')} of {config.dataset.name}{shard}; "
        f"{config.certifier.name}, solver {config.solver.name if config.solver else '-'}, "
        f"{config.noise.name}({noise}), n0={config.n0}, n={config.n}, alpha={config.alpha}; "
        f"{resume}writing {writer.path}"
    )


class _progress:
    """Context manager yielding ``advance(record)``: a rich progress bar with ETA, or nothing."""

    def __init__(self, quiet: bool, label: str, total: int) -> None:
        self.bar = (
            None
            if quiet or total == 0
            else Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=stderr,
            )
        )
        self.label = label
        self.total = total
        self.task: Any = None

    def __enter__(self) -> Callable[[dict[str, Any]], None]:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total)
        return self.advance

    def advance(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(
                self.task, advance=1, description=f"{self.label} (input {record.get('index')})"
            )

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def plural(count: int, noun: str) -> str:
    """``1 input``, ``5 inputs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_p_value(value: Any) -> str:
    """A p-value in 3 significant digits; one too small for a float is ``<1e-300``."""
    p = float(value or 0.0)
    return "<1e-300" if p < 1e-300 else f"{p:.2e}"


def _records_table(records: list[dict[str, Any]], mode: str) -> Table:
    from ..notes import CAP_MARK, is_at_cap

    table = Table(title=f"{mode} results")
    columns = ["idx", "label", "prediction", "correct"]
    columns += ["radius", "p_lower"] if mode == "certify" else ["p_value"]
    columns += ["NFE", "seconds"]
    for name in columns:
        table.add_column(name, justify="right")
    shown = records if len(records) <= 50 else records[-50:]
    for r in shown:
        cells = [
            str(r.get("index")),
            str(r.get("label")),
            "abstain" if r.get("prediction") == -1 else str(r.get("prediction")),
            "yes" if r.get("correct") else "no",
        ]
        if mode == "certify":
            mark = CAP_MARK if is_at_cap(r) else ""
            cells += [f"{r.get('radius') or 0.0:.3f}{mark}", f"{r.get('p_lower') or 0.0:.4f}"]
        else:
            cells += [format_p_value(r.get("p_value"))]
        cells += [str(r.get("nfe")), f"{r.get('seconds') or 0.0:.2f}"]
        table.add_row(*cells)
    if len(records) > len(shown):
        table.caption = f"last {len(shown)} of {len(records)} records"
    return table


__all__ = ["RunCommand", "certify", "command"]
