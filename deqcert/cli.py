"""The ``deqcert`` command line: flags -> config -> the Python API.

Every command turns its flags into a config (:class:`~deqcert.config.CertifyConfig`
or :class:`~deqcert.config.TrainConfig`) and calls the same API a script
would.  Every user mistake ends the command with one line on stderr and exit
code 2, before any output file is created or changed.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from . import __version__
from .errors import DeqcertError, OptionError

EXIT_USAGE = 2
SHARD_PLACEHOLDER = "{shard}"


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with ``code``."""
    text = " ".join(str(message).split()) or "unknown error"
    sys.stderr.write(f"deqcert: error: {text}\n")
    sys.stderr.flush()
    raise SystemExit(code)


class OneLineErrors(TyperGroup):
    """The ``deqcert`` group: user mistakes become one line on stderr and exit code 2."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
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
        except KeyboardInterrupt:
            fail("interrupted; run the same command again to resume", 130)
        except OSError as exc:
            name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{name}")
        if not standalone_mode:
            return rv
        raise SystemExit(rv if isinstance(rv, int) else 0)


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


# -- certify / predict --------------------------------------------------------
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML or YAML config file (flags win).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set solver.max_iter=2 (repeatable)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables.")]


def _run_command(mode: str) -> Callable[..., None]:
    """The ``certify`` or ``predict`` command (identical flags, different mode)."""

    def command(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        checkpoint: Annotated[
            str | None, typer.Option(help="Checkpoint (.safetensors) or 'default'.")
        ] = None,
        dataset: Annotated[
            str | None, typer.Option(help="Dataset name (see 'deqcert list datasets').")
        ] = None,
        indices: Annotated[str | None, typer.Option(help="Indices, e.g. 0-99,200.")] = None,
        skip: Annotated[int | None, typer.Option(help="Keep every SKIP-th index.")] = None,
        max_: Annotated[
            str | None,
            typer.Option("--max", help="At most MAX inputs or 'all' (default 5; all --indices)."),
        ] = None,
        certifier: Annotated[str | None, typer.Option(help="vanilla | serialized | ...")] = None,
        solver: Annotated[str | None, typer.Option(help="Per-sample solver name.")] = None,
        warmup_solver: Annotated[str | None, typer.Option(help="Warm-up solver name.")] = None,
        reference_solver: Annotated[
            str | None, typer.Option(help="Solver defining h_ref (serialized).")
        ] = None,
        noise: Annotated[str | None, typer.Option(help="gaussian | laplace | uniform.")] = None,
        sigma: Annotated[
            float | None, typer.Option(help="Gaussian noise level (default: checkpoint's).")
        ] = None,
        n0: Annotated[int | None, typer.Option(help="Selection samples.")] = None,
        n: Annotated[int | None, typer.Option("--n", help="Estimation samples.")] = None,
        alpha: Annotated[float | None, typer.Option(help="Failure probability.")] = None,
        batch: Annotated[int | None, typer.Option(help="Noisy samples per batch.")] = None,
        device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N.")] = None,
        seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
        out: Annotated[
            str | None,
            typer.Option(help="Results file (resumed if it exists); '{shard}' becomes i-of-n."),
        ] = None,
        format_: Annotated[
            str | None, typer.Option("--format", help="jsonl | tsv (default: from --out).")
        ] = None,
        shard: Annotated[
            str | None,
            typer.Option(
                help="i/n: certify every n-th selected input from position i "
                "(default from RANK/WORLD_SIZE or SLURM_ARRAY_TASK_ID/COUNT)."
            ),
        ] = None,
        executor: Annotated[str | None, typer.Option(help="local | ray.")] = None,
        address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
        quiet: QuietOpt = False,
    ) -> None:
        values = _flag_values(locals())
        values["mode"] = mode
        _certify(config, set_ or [], values, shard_flag=shard, quiet=quiet)

    command.__doc__ = (
        "Certify inputs: prediction and certified radius for each."
        if mode == "certify"
        else "Predict inputs with the smoothed classifier (abstaining when unsure)."
    ) + (
        "\n\nSettings: defaults < --config file < flags < --set. An existing --out is "
        "resumed: its header must match, done inputs are skipped."
    )
    return command


app.command("certify")(_run_command("certify"))
app.command("predict")(_run_command("predict"))

_COMPONENT_FLAGS = (
    "dataset",
    "certifier",
    "solver",
    "warmup_solver",
    "reference_solver",
    "noise",
    "executor",
)
_PLAIN_FLAGS = (
    "checkpoint",
    "indices",
    "skip",
    "n0",
    "n",
    "alpha",
    "batch",
    "device",
    "seed",
    "out",
    "shard",
)


def _flag_values(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags that were given, as a config layer."""
    values: dict[str, Any] = {k: flags[k] for k in _PLAIN_FLAGS if flags.get(k) is not None}
    for key in _COMPONENT_FLAGS:
        if flags.get(key) is not None:
            values[key] = {"name": flags[key]}
    if flags.get("max_") is not None:
        values["max"] = flags["max_"]
    if flags.get("format_") is not None:
        values["format"] = flags["format_"]
    if flags.get("sigma") is not None:
        values.setdefault("noise", {})["sigma"] = flags["sigma"]
    if flags.get("address") is not None:
        values.setdefault("executor", {})["address"] = flags["address"]
    return values


def _launcher_out(out: str) -> str:
    """``run.jsonl`` -> ``run.shard-i-of-n.jsonl``: every launched rank shares one command line."""
    if SHARD_PLACEHOLDER in out:
        return out
    path = Path(out)
    return str(path.with_name(f"{path.stem}.shard-{SHARD_PLACEHOLDER}{path.suffix}"))


def _certify(
    config_file: Path | None,
    sets: list[str],
    values: dict[str, Any],
    *,
    shard_flag: str | None,
    quiet: bool,
) -> None:
    from .config import CertifyConfig
    from .executors.sharding import shard_from_env
    from .report import summarize
    from .results import read_results

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
    stats = summarize(read_results(summary.path), [0.0])
    line = f"{stats.inputs} inputs in {summary.path}: accuracy {stats.accuracy:.3f}"
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
        f"{config.mode}: {len(pipeline.indices)} inputs of {config.dataset.name}{shard}; "
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


def _records_table(records: list[dict[str, Any]], mode: str) -> Table:
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
            cells += [f"{r.get('radius') or 0.0:.3f}", f"{r.get('p_lower') or 0.0:.4f}"]
        else:
            cells += [f"{r.get('p_value') or 0.0:.2e}"]
        cells += [str(r.get("nfe")), f"{r.get('seconds') or 0.0:.2f}"]
        table.add_row(*cells)
    if len(records) > len(shown):
        table.caption = f"last {len(shown)} of {len(records)} records"
    return table


# -- train ----------------------------------------------------------------------
@app.command()
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (see 'deqcert list models').")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Training dataset name.")] = None,
    sigma: Annotated[float | None, typer.Option(help="Gaussian noise for augmentation.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Checkpoint to write (default checkpoints/<model>-...).")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a DEQ with Gaussian noise augmentation and save a checkpoint."""
    from .config import load_config_file, merge_layer, parse_assignments, validate_config
    from .results import check_writable
    from .train import TrainConfig
    from .train import train as run_training

    flags = {
        "model": model,
        "dataset": dataset,
        "sigma": sigma,
        "epochs": epochs,
        "device": device,
        "seed": seed,
    }
    layer: dict[str, Any] = load_config_file(config) if config is not None else {}
    layer = merge_layer(layer, {k: v for k, v in flags.items() if v is not None}, components=False)
    layer = merge_layer(layer, parse_assignments(set_ or []), components=False)
    train_config = validate_config(TrainConfig, layer)
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{train_config.model}-sigma{train_config.sigma:g}-{stamp}.safetensors"
        out = Path("checkpoints") / name
        check_writable(out, create_parent=True)
    else:
        if out.suffix != ".safetensors":
            raise OptionError(f"--out {out}: checkpoints are .safetensors files")
        check_writable(out)
    result = run_training(train_config, out=out, progress=not quiet)
    if quiet:
        typer.echo(str(result.checkpoint))
        return
    table = Table(title="training metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    stdout.print(table)
    typer.echo(f"checkpoint written to {result.checkpoint}")


# -- report, merge ----------------------------------------------------------------
@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="Results files (.jsonl or .tsv).")],
    radii: Annotated[
        str | None, typer.Option(help="Radii, e.g. 0,0.25,0.5 (default 0 to 2 sigma).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="table | markdown | tsv.")] = "table",
    plot: Annotated[
        Path | None, typer.Option(help="Also draw certified accuracy to a PNG.")
    ] = None,
) -> None:
    """Certified accuracy at radii, ACR, abstain rate, NFE and time, files side by side."""
    from . import report as reporting

    if format_ not in ("table", "markdown", "tsv"):
        raise OptionError(f"unknown report format {format_!r}; accepted: table, markdown, tsv")
    if plot is not None:
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
    from .results import merge_results

    summary = merge_results(out, parts)
    typer.echo(f"merged {summary.parts} files, {summary.records} records -> {summary.out}")


# -- list, info ---------------------------------------------------------------------
@app.command("list")
def list_components(
    kind: Annotated[
        str | None,
        typer.Argument(help="solvers | certifiers | noise | models | datasets | executors."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Registered components: name, group, origin package and load errors."""
    from .executors import EXECUTORS
    from .registry import REGISTRIES

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
        {"name": e.name, "group": e.group, "origin": e.origin, "target": e.target, "error": e.error}
        for registry in registries.values()
        for e in registry.entries(load=True)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="deqcert components")
    for column in ("group", "name", "origin", "status"):
        table.add_column(column)
    for row in rows:
        status = "ok" if row["error"] is None else f"[red]error: {row['error']}[/red]"
        table.add_row(str(row["group"]), str(row["name"]), str(row["origin"]), status)
    stdout.print(table)


@app.command()
def info(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint file, or 'default'.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A checkpoint's model, options, training data, noise level and metrics."""
    from .checkpoint import checkpoint_metadata, default_checkpoint
    from .executors.pipeline import file_sha256

    path = default_checkpoint() if checkpoint == "default" else Path(checkpoint)
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
    table = Table(title=f"checkpoint {path.name}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key in (
        "path",
        "size_bytes",
        "sha256",
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
