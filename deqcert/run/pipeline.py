"""A built run: the objects a :class:`~deqcert.run.config.CertifyConfig` describes, validated.

:func:`build_pipeline` opens the checkpoint once (model, metadata and SHA-256
together), builds each component once, and checks the index selection and
every selected input before anything is written; :meth:`CertifyPipeline.run`
certifies the inputs not yet in the results file with an executor, appending
each record as it completes.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import specs
from ..certify.base import check_input
from ..checkpoint import OpenedCheckpoint, open_checkpoint
from ..data.selection import select_indices
from ..errors import DataError, DeqcertError, DeqcertWarning
from ..models.check import check_model as check_protocol
from ..notes import unconverged_warning
from ..protocols import ModelCheckingCertifier
from ..results import ResultsWriter, infer_format, to_jsonable
from . import guards, roles
from .resolve import resolve_device, run_notes
from .sharding import Shard

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
    href_source: str | None = None
    untrusted: dict[str, list[str]] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return torch.device(self.config.device)

    # -- validation ----------------------------------------------------------
    def validate_inputs(self, indices: Sequence[int] | None = None) -> None:
        """Check every input (:func:`~deqcert.certify.base.check_input`), then the model.

        Each input must be a finite ``(C, H, W)`` float tensor of the model's
        shape with a label the model knows; a certifier that can check a model
        (:class:`~deqcert.protocols.ModelCheckingCertifier`, e.g. ``verified``)
        then checks it, and one clean forward pass must succeed.
        """
        indices = self.indices if indices is None else indices
        for index in indices:
            x, label = self.dataset[index]
            where = f"input {index} of dataset '{self.config.dataset.name}'"
            check_input(self.model, x, label=label, where=where, ndim=3)
        if isinstance(self.certifier, ModelCheckingCertifier):
            self.certifier.check_model(self.model)
        if indices:
            self._probe(indices[0])
            self.guard_solvers(indices)

    def guard_solvers(self, indices: Sequence[int]) -> None:
        """Probe user-supplied h_ref/warm-up solvers (:mod:`.guards`); refuse or mark failures."""
        inputs = torch.stack([self.dataset[i][0] for i in list(indices)[:8]]).to(self.device)
        failures = guards.guard_solvers(self.model, self.solvers, inputs)
        if not failures:
            return
        message = guards.failure_message(failures, self.solvers)
        if not self.config.trust_solver:
            raise guards.SolverGuardError(message)
        import warnings

        warnings.warn(f"trusting the solver anyway (--trust-solver): {message}", stacklevel=2)
        self.untrusted = failures

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
                "checkpoint": {
                    "path": config.weights if config.model else config.checkpoint,
                    "sha256": self.checkpoint_sha256,
                },
                "seed": config.seed,
                "shard": (
                    {"index": self.shard.index, "count": self.shard.count} if self.shard else None
                ),
                "model": self._model_header(),
                "h_ref": self._href_header(),
                "solver_guard": {"trusted": self.untrusted} if self.untrusted else None,
                "dataset": {"name": config.dataset.name, "length": len(self.dataset)},
                "selected": len(self.selected),
                "certifier": _describe(self.certifier),
            }
        )

    def _model_header(self) -> dict[str, Any]:
        meta = self.metadata
        if self.config.model is None:
            return {"name": meta.get("model"), "options": meta.get("model_options")}
        keys = ("factory", "weights", "weights_sha256", "state_sha256", "model_class")
        adapter = _describe(self.model) if hasattr(self.model, "describe") else None
        return {"name": self.config.model, "options": None, **{k: meta.get(k) for k in keys},
                "adapter": adapter}

    def _href_header(self) -> dict[str, Any] | None:
        role = guards.href_role(list(self.solvers))
        if role is None:
            return None
        solver = _describe(self.solvers[role])
        source = self.href_source or "the certifier's " + (
            f"{role} (set by the run)" if self.config.role_given(role) else f"default {role}"
        )
        return {"role": role, "solver": solver, "source": source}

    def default_out(self) -> Path:
        """``results/<mode>-<local time>[-shard-i-of-n].<format>``."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        shard = f"-shard-{self.shard.tag}" if self.shard else ""
        fmt = self.config.format or "jsonl"
        return Path("results") / f"{self.config.mode}-{stamp}{shard}.{fmt}"

    # -- running -----------------------------------------------------------------
    def prepare_output(self, out: str | Path | None = None) -> ResultsWriter:
        """Check the output (writable; same run if it exists) without touching it.

        ``{shard}`` in the path becomes the shard's tag (``1-of-4``, or ``all``).
        """
        target = out if out is not None else self.config.out
        if target is not None:
            target = str(target).replace("{shard}", self.shard.tag if self.shard else "all")
        path = Path(target) if target is not None else self.default_out()
        fmt = infer_format(path, self.config.format)
        return ResultsWriter(path, self.header(), fmt, create_parent=target is None)

    def records(self, indices: Sequence[int] | None = None) -> Iterator[dict[str, Any]]:
        """Records for ``indices`` (default: this shard's), without writing anything."""
        records = self.executor.run(self, self.indices if indices is None else list(indices))
        if not self.untrusted:
            return records
        return (guards.mark_untrusted(record, self.untrusted) for record in records)

    def run(
        self,
        out: str | Path | None = None,
        *,
        writer: ResultsWriter | None = None,
        on_record: RecordCallback | None = None,
    ) -> RunSummary:
        """Certify the inputs not yet in the results file and append their records.

        Warns (:class:`~deqcert.errors.DeqcertWarning`) before starting when the
        noise level is not the checkpoint's or PREDICT is heuristic (see
        :func:`~deqcert.run.resolve.run_notes`), and once at the end when more than
        1 % of the reference solves of the new records stopped at ``max_iter``.
        """
        writer = writer if writer is not None else self.prepare_output(out)
        for note in run_notes(self.config, self.metadata, self.certifier):
            warnings.warn(note, DeqcertWarning, stacklevel=2)
        todo = [i for i in self.indices if i not in writer.done]
        summary = RunSummary(writer.path, len(self.indices), len(self.indices) - len(todo))
        with writer:
            for record in self.records(todo) if todo else iter(()):
                writer.write(record)
                summary.records.append(record)
                if on_record is not None:
                    on_record(record)
        warning = unconverged_warning(summary.records)
        if warning is not None:
            warnings.warn(warning, DeqcertWarning, stacklevel=2)
        return summary


def _describe(component: Any) -> Any:
    describe = getattr(component, "describe", None)
    return describe() if callable(describe) else type(component).__name__


def build_pipeline(config: CertifyConfig, *, validate_inputs: bool = True) -> CertifyPipeline:
    """Resolve ``config`` and build every component once, validating as early as possible."""
    opened = _open_model(config)
    resolved = config.resolve(opened.metadata)
    noise = specs.build("noise", resolved.noise, where="noise")
    slots = roles.solver_roles(resolved.certifier.name)
    solvers: dict[str, Any] = {}
    for role, spec in resolved.solver_specs().items():
        if spec is not None:
            solvers[role] = specs.build("solver", spec, where=role)
        elif slots[role].optional and role in resolved.model_fields_set:
            solvers[role] = None  # an optional role switched off
    resolved, href_source = _model_reference(resolved, opened.model, solvers)
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
        href_source=href_source,
    )
    if validate_inputs:
        pipeline.validate_inputs()
    return pipeline


def _open_model(config: CertifyConfig) -> OpenedCheckpoint:
    """The run's model: a checkpoint, or the user's ``--model`` factory with ``--weights``."""
    device = resolve_device(config.device)
    if config.model is not None:
        from ..adapters.factory import open_factory

        return open_factory(config.model, config.weights, device)
    path = config.checkpoint_path()
    assert path is not None
    opened = open_checkpoint(path, device=device)
    check_protocol(opened.model, purpose="serve")
    return opened


def _model_reference(
    config: CertifyConfig, model: Any, solvers: dict[str, Any]
) -> tuple[CertifyConfig, str | None]:
    """Use the model's own reference solver for ``h_ref`` unless the run names one.

    A model offering ``reference_solver_spec()`` (e.g. a TorchDEQ adapter: its own
    solver settings) defines ``h_ref`` when the ``h_ref`` role was left at the
    certifier's default, or is set to that same spec; the effective config then
    records the model's solver (so resuming compares it) and the header its source.
    """
    role = guards.href_role(list(solvers))
    spec_of = getattr(model, "reference_solver_spec", None)
    own = spec_of() if callable(spec_of) else None
    if role is None or solvers.get(role) is None or not own:
        return config, None
    own = {k: v for k, v in own.items() if k != "source"}
    spec = specs.parse_spec(own, role)
    current = config.solver_specs().get(role)
    same = current is not None and current.name == spec.name and current.options == spec.options
    if config.role_given(role) and not same:
        return config, None
    solvers[role] = model.reference_solver()
    extras = dict(config.__pydantic_extra__ or {})
    extras[role] = spec
    updated = config.model_copy()
    updated.__pydantic_extra__ = extras
    return updated, str(getattr(model, "reference_source", "the model's own reference solver"))


def _certifier_arguments(
    config: CertifyConfig, noise: Any, solvers: dict[str, Any]
) -> dict[str, Any]:
    """The certifier's constructor arguments the config fills in, those it accepts only."""
    arguments: dict[str, Any] = {"noise": noise, **solvers}
    for key, option in roles.SHARED_ARGUMENTS.items():
        arguments[option] = getattr(config, key)
    accepted = roles.certifier_arguments(config.certifier.name)
    return arguments if accepted is None else {k: v for k, v in arguments.items() if k in accepted}
