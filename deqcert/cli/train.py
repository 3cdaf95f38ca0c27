"""``deqcert train``: noise-augmented training from a config, flags and ``--set`` overrides."""

from __future__ import annotations

import datetime
import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import OptionError
from .app import ConfigOpt, QuietOpt, SetOpt, lazy_command, stdout, typer_command
from .flags import Flag, flag_layer, parameters

TRAIN_FLAGS: tuple[Flag, ...] = (
    Flag("--model", "model"),
    Flag("--dataset", "dataset"),
    Flag("--sigma", "sigma", float),
    Flag("--epochs", "epochs", int),
    Flag("--device", "device"),
    Flag("--seed", "seed", int),
)
"""The flags of ``train`` that set config keys; help is each field's description in
:class:`~deqcert.train.TrainConfig`."""

SOLVER_KEYS = {"solver": "solver", "backward_solver": "solver"}
"""Train config keys holding a solver spec (merged with the carry-over rule of the layers)."""


class TrainCommand:
    """``deqcert train``; its flags come from :data:`TRAIN_FLAGS`."""

    def __init__(self) -> None:
        self.__name__ = "train"
        self.__doc__ = TRAIN_HELP
        self.__annotations__: dict[str, Any] = {}  # the flags are in __signature__

    @property
    def __signature__(self) -> inspect.Signature:
        from ..train import TrainConfig

        def keyword(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
            return inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )

        return inspect.Signature(
            [
                keyword("config", ConfigOpt),
                keyword("set_", SetOpt),
                *parameters(TRAIN_FLAGS, TrainConfig),
                keyword("out", OutOpt),
                keyword("quiet", QuietOpt, False),
            ]
        )

    def __call__(
        self,
        *,
        config: Path | None = None,
        set_: list[str] | None = None,
        out: Path | None = None,
        quiet: bool = False,
        **values: Any,
    ) -> None:
        run_train(config, set_ or [], flag_layer(TRAIN_FLAGS, values), out, quiet)


OutOpt = Annotated[
    Path | None, typer.Option(help="Checkpoint to write (default checkpoints/<model>-...).")
]
TRAIN_HELP = "Train a DEQ with Gaussian noise augmentation and save a checkpoint."


def command(name: str = "train") -> Any:
    """The ``train`` click command (built on first use, see ``lazy_command``)."""
    return typer_command(name, TrainCommand())


lazy_command("train", __name__, TRAIN_HELP)


def run_train(
    config: Path | None, sets: list[str], values: dict[str, Any], out: Path | None, quiet: bool
) -> None:
    """Build the training config from its layers, train, write the checkpoint, print metrics."""
    from ..results import check_writable
    from ..run.layers import merge_layers, source_layers, validate_config
    from ..train import TrainConfig
    from ..train import train as run_training

    layer = merge_layers(source_layers(config, values, sets), SOLVER_KEYS)
    train_config = validate_config(TrainConfig, layer)
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{train_config.model}-sigma{train_config.sigma:g}-{stamp}.safetensors"
        out = Path("checkpoints") / name
        check_writable(out, create_parent=True)
    else:
        if out.suffix != ".safetensors":
            raise OptionError(f"--out {out}: checkpoints are .safetensors files")
        check_writable(out, create_parent=True)  # a missing folder is created, as by default
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
