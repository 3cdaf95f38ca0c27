"""A built run: the objects a :class:`~deqcert.run.config.CertifyConfig` describes, validated.

:func:`build_pipeline` opens the checkpoint once (model, metadata and SHA-256
together), builds each component once, and checks the index selection and
every selected input before anything is written; :meth:`CertifyPipeline.run`
certifies the inputs not yet in the results file with an executor, appending
each record as it completes.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import specs
from ..checkpoint import open_checkpoint
from ..data.selection import select_indices
from ..errors import DataError, DeqcertError
from ..results import ResultsWriter, infer_format, to_jsonable
from . import roles
from .resolve import resolve_device
from .sharding import Shard
from .validate import check_memory

if TYPE_CHECKING:
    from .config import CertifyConfig
    from .executors import Executor

RecordCallback = Callable[[dict[str, Any]], None]


@dataclass
class RunSummary:
    """What :meth:`CertifyPipeline.run` did."""

    path: Path
    selected: int
    skipped: int
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CertifyPipeline:
    """Everything one run needs, built and validated.

    Attributes:
        config: the effective config (checkpoint path, device and noise level filled in).
        selected: the run's indices before sharding; ``indices``: this shard's.
    """

    config: CertifyConfig
    dataset: Any
    model: Any
    noise: Any
    solvers: dict[str, Any]
    certifier: Any
    executor: Executor
    selected: list[int]
    indices: list[int]
    shard: Shard | None
    checkpoint_sha256: str
    metadata: dict[str, Any]

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device)

    # -- validation ----------------------------------------------------------
    def validate_inputs(self, indices: Sequence[int] | None = None) -> None:
        """Check every input: a finite ``(C, H, W)`` tensor the model accepts, a known label."""
        indices = self.indices if indices is None else indices
        expected = getattr(self.model, "input_shape", None)
        expected = tuple(expected) if expected is not None else None
        num_classes = getattr(self.model, "num_classes", None)
        for index in indices:
            x, label = self.dataset[index]
            where = f"input {index} of dataset '{self.config.dataset.name}'"
            if not isinstance(x, torch.Tensor) or x.ndim != 3:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise DataError(f"{where} is {shape}; expected a (C, H, W) image tensor")
            if not bool(torch.isfinite(x).all()):
                raise DataError(f"{where} contains NaN or infinite values; inputs must be finite")
            if expected is not None and tuple(x.shape) != expected:
                raise DataError(
                    f"{where} has shape {tuple(x.shape)} but the model expects {expected}"
                )
            if isinstance(num_classes, int) and not 0 <= int(label) < num_classes:
                raise DataError(f"{where} has label {label}; the model has {num_classes} classes")
        check_model = getattr(self.certifier, "check_model", None)
        if callable(check_model):  # e.g. `verified` refuses a model with no contraction bound
            check_model(self.model)
        if indices:
            self._probe(indices[0])

    def _probe(self, index: int) -> None:
        """One clean forward pass, so a model/input mismatch fails before any file is written."""
        x, _ = self.dataset[index]
        solver = self.solvers.get("reference_solver") or self.solvers.get("solver")
        try:
            with torch.no_grad():
                self.model(x.unsqueeze(0).to(self.device), solver=solver)
        except DeqcertError as exc:
            raise DataError(f"input {index} does not fit the model: {exc}") from None
        except (RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"input {index} of shape {tuple(x.shape)} does not fit the model: {first}"
            ) from None

    # -- provenance ------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """The header record of this run's results file."""
        from .. import __version__

        config = self.config
        return to_jsonable(
            {
                "type": "header",
                "format_version": 1,
                "deqcert_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "config": config.effective(),
                "checkpoint": {"path": config.checkpoint, "sha256": self.checkpoint_sha256},
                "seed": config.seed,
                "shard": (
                    {"index": self.shard.index, "count": self.shard.count} if self.shard else None
                ),
                "model": {
                    "name": self.metadata.get("model"),
                    "options": self.metadata.get("model_options"),
                },
                "dataset": {"name": config.dataset.name, "length": len(self.dataset)},
                "selected": len(self.selected),
                "certifier": _describe(self.certifier),
            }
        )

    def default_out(self) -> Path:
        """``results/<mode>-<local time>[-shard-i-of-n].<format>``."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        shard = f"-shard-{self.shard.tag}" if self.shard else ""
        fmt = self.config.format or "jsonl"
        return Path("results") / f"{self.config.mode}-{stamp}{shard}.{fmt}"

    # -- running -----------------------------------------------------------------
    def prepare_output(self, out: str | Path | None = None) -> ResultsWriter:
        """Check the output (writable; same run if it exists) without changing it.

        An existing file is locked first and stays locked until the writer is
        closed (at the end of :meth:`run`), so no other process can write it
        in between.

        ``{shard}`` in the path becomes the shard's tag (``1-of-4``, or ``all``).
        """
        target = out if out is not None else self.config.out
        if target is not None:
            target = str(target).replace("{shard}", self.shard.tag if self.shard else "all")
        path = Path(target) if target is not None else self.default_out()
        fmt = infer_format(path, self.config.format)
        return ResultsWriter(
            path, self.header(), fmt, create_parent=target is None, expected=self.indices
        )

    def records(self, indices: Sequence[int] | None = None) -> Iterator[dict[str, Any]]:
        """Records for ``indices`` (default: this shard's), without writing anything."""
        return self.executor.run(self, self.indices if indices is None else list(indices))

    def run(
        self,
        out: str | Path | None = None,
        *,
        writer: ResultsWriter | None = None,
        on_record: RecordCallback | None = None,
    ) -> RunSummary:
        """Certify the inputs not yet in the results file and append their records."""
        writer = writer if writer is not None else self.prepare_output(out)
        start = getattr(self.executor, "start", None)
        if callable(start) and any(i not in writer.done for i in self.indices):
            start()  # e.g. join a Ray cluster: a wrong address fails before the header is written
        with writer:  # done is final once the file is open and locked
            todo = [i for i in self.indices if i not in writer.done]
            summary = RunSummary(writer.path, len(self.indices), len(self.indices) - len(todo))
            for record in self.records(todo) if todo else iter(()):
                writer.write(record)
                summary.records.append(record)
                if on_record is not None:
                    on_record(record)
        return summary


def _describe(component: Any) -> Any:
    describe = getattr(component, "describe", None)
    return describe() if callable(describe) else type(component).__name__


def build_pipeline(config: CertifyConfig, *, validate_inputs: bool = True) -> CertifyPipeline:
    """Resolve ``config`` and build every component once, validating as early as possible."""
    opened = open_checkpoint(config.checkpoint_path(), device=resolve_device(config.device))
    resolved = config.resolve(opened.metadata)
    noise = specs.build("noise", resolved.noise, where="noise")
    slots = roles.solver_roles(resolved.certifier.name)
    solvers: dict[str, Any] = {}
    for role, spec in resolved.solver_specs().items():
        if spec is not None:
            solvers[role] = specs.build("solver", spec, where=role)
        elif slots[role].optional and role in resolved.model_fields_set:
            solvers[role] = None  # an optional role switched off
    arguments = _certifier_arguments(resolved, noise, solvers)
    certifier = specs.build("certifier", resolved.certifier, where="certifier", **arguments)
    executor = specs.build("executor", resolved.executor, where="executor")
    dataset = specs.build("dataset", resolved.dataset, where="dataset")
    selected = select_indices(resolved.indices, resolved.skip, resolved.max, len(dataset))
    shard = Shard.parse(resolved.shard) if resolved.shard else None
    pipeline = CertifyPipeline(
        config=resolved,
        dataset=dataset,
        model=opened.model,
        noise=noise,
        solvers={role: solver for role, solver in solvers.items() if solver is not None},
        certifier=certifier,
        executor=executor,
        selected=selected,
        indices=shard.select(selected) if shard else list(selected),
        shard=shard,
        checkpoint_sha256=opened.sha256,
        metadata=opened.metadata,
    )
    check_memory(pipeline)
    if validate_inputs:
        pipeline.validate_inputs()
    return pipeline


def _certifier_arguments(
    config: CertifyConfig, noise: Any, solvers: dict[str, Any]
) -> dict[str, Any]:
    """The certifier's constructor arguments the config fills in, those it accepts only."""
    arguments: dict[str, Any] = {"noise": noise, **solvers}
    for key, option in roles.SHARED_ARGUMENTS.items():
        arguments[option] = getattr(config, key)
    accepted = roles.certifier_arguments(config.certifier.name)
    return arguments if accepted is None else {k: v for k, v in arguments.items() if k in accepted}
