"""Certified-accuracy reports: several results files side by side.

For each file: certified accuracy at a list of radii (the share of inputs
that are classified correctly *and* certified at least that radius, as in
Cohen et al.), the average certified radius (ACR: the mean of the radius of
correct inputs, 0 for the others), the abstain rate, and the mean NFE and
seconds per input.  Results whose certificates say they are not sound are
marked wherever they appear: ``UNSOUND`` for the ``repro`` bound (not a valid
lower bound), ``not proven sound`` for the others (e.g. the ``paper`` bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OptionError, ResultsError
from .protocols import ABSTAIN
from .results import ResultsFile, read_results

PLOT_HINT = "--plot needs matplotlib: pip install 'deqcert[plot]'"


@dataclass
class RunStats:
    """Summary of one results file."""

    label: str
    path: Path
    mode: str
    inputs: int
    sigma: float | None
    norm: str | None
    bound: str | None
    sound: bool
    accuracy: float
    certified: dict[float, float] = field(default_factory=dict)
    acr: float | None = None
    abstain_rate: float = 0.0
    mean_nfe: float | None = None
    mean_seconds: float | None = None
    radii: list[float] = field(default_factory=list)
    """Certified radii of the correctly classified inputs (for plots)."""

    @property
    def mark(self) -> str:
        """``""`` for sound results, else ``UNSOUND`` (repro) or ``not proven sound``."""
        if self.sound:
            return ""
        return "UNSOUND" if "repro" in (self.bound or "") else "not proven sound"

    @property
    def title(self) -> str:
        """The label with its soundness mark."""
        return f"{self.label} ({self.mark})" if self.mark else self.label


@dataclass
class Report:
    """Several runs and the radii they are compared at."""

    runs: list[RunStats]
    radii: list[float]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def run_sigma(header: Mapping[str, Any] | None) -> float | None:
    """The noise level recorded in a results header (Gaussian ``sigma`` or the noise's scale)."""
    noise = ((header or {}).get("config") or {}).get("noise") or {}
    for key in ("sigma", "scale", "half_width"):
        value = _number(noise.get(key))
        if value is not None:
            return value
    return None


def summarize(results: ResultsFile, radii: Sequence[float], label: str | None = None) -> RunStats:
    """Statistics of one results file at ``radii``."""
    records = results.records
    header = results.header or {}
    config = header.get("config") or {}
    mode = str(config.get("mode") or (records[0].get("mode") if records else "certify"))
    has_radius = mode == "certify" and any(_number(r.get("radius")) is not None for r in records)
    correct_radii = (
        [_number(r.get("radius")) or 0.0 for r in records if r.get("correct")] if has_radius else []
    )
    count = len(records)
    certified = (
        {r: sum(1 for rad in correct_radii if rad >= r) / count for r in radii}
        if has_radius and count
        else {}
    )
    bounds = {str(r.get("bound")) for r in records if r.get("bound") is not None}
    nfe = [v for r in records if (v := _number(r.get("nfe"))) is not None]
    seconds = [v for r in records if (v := _number(r.get("seconds"))) is not None]
    certifier = header.get("certifier") if isinstance(header.get("certifier"), Mapping) else {}
    return RunStats(
        label=label or results.path.name,
        path=results.path,
        mode=mode,
        inputs=count,
        sigma=run_sigma(header),
        norm=((certifier or {}).get("noise") or {}).get("norm"),
        bound=", ".join(sorted(bounds)) or None,
        sound=all(r.get("sound", True) is not False for r in records),
        accuracy=sum(1 for r in records if r.get("correct")) / count if count else 0.0,
        certified=certified,
        acr=(sum(correct_radii) / count if count else 0.0) if has_radius else None,
        abstain_rate=(
            sum(1 for r in records if r.get("prediction") == ABSTAIN) / count if count else 0.0
        ),
        mean_nfe=_mean(nfe),
        mean_seconds=_mean(seconds),
        radii=correct_radii,
    )


def with_bound(
    record: Mapping[str, Any],
    bound: str,
    noise: Any,
    *,
    n: int,
    alpha: float,
    alpha_split: float = 0.5,
) -> dict[str, Any]:
    """A serialized certificate record as the named ``bound`` certifies it from the same counts.

    The bound does not change the sampling, so the record's ``counts`` (``C_m``,
    ``d``, ``K``, ``N1``, ``N2``, ...) and its candidate class
    (``certificate.extra.candidate``) give every bound of
    :func:`~deqcert.certify.bounds.serialized_bound`; ``noise`` (the
    :class:`~deqcert.protocols.NoiseSampler` of the run) turns ``p_lower`` into
    the radius, with the certifiers' abstain rule.  ``n``, ``alpha`` and
    ``alpha_split`` must be the run's.  Returns a new record: ``prediction``,
    ``radius``, ``correct``, ``p_lower``, ``bound`` and ``sound`` replaced, the
    rest (counts, cost, certificate) kept.

    Raises:
        ResultsError: the record holds no serialized certificate (no candidate class).
        OptionError: an unknown bound name.
    """
    from .certify.base import decide
    from .certify.bounds import SOUND_BOUNDS, serialized_bound

    extra = (record.get("certificate") or {}).get("extra") or {}
    if "candidate" not in extra:
        raise ResultsError(
            f"record {record.get('index')}: no candidate class in its certificate; "
            "with_bound needs a serialized certificate record"
        )
    try:
        named = serialized_bound(bound, dict(record["counts"]), n, alpha, alpha_split)
    except KeyError as exc:
        raise ResultsError(
            f"record {record.get('index')}: its counts lack {exc}, needed by the {bound!r} bound"
        ) from None
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    prediction, radius = decide(int(extra["candidate"]), named.p_lower, noise)
    return {
        **record,
        "prediction": prediction,
        "radius": radius,
        "correct": prediction != ABSTAIN and prediction == record["label"],
        "p_lower": named.p_lower,
        "bound": bound,
        "sound": bound in SOUND_BOUNDS,
    }


def default_radii(sigma: float | None) -> list[float]:
    """0 to ``2 sigma`` in steps of ``sigma / 4`` (0 to 1 in steps of 0.125 without a sigma)."""
    step = (sigma if sigma else 0.5) / 4
    return [round(k * step, 10) for k in range(9)]


def parse_radii(text: str) -> list[float]:
    """``"0,0.25,0.5"`` -> ``[0.0, 0.25, 0.5]``."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError(f"invalid radii {text!r}: expected comma-separated numbers") from None
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise OptionError(f"invalid radii {text!r}: expected non-negative numbers, e.g. 0,0.25,0.5")
    return sorted(set(values))


def build_report(paths: Sequence[str | Path], radii: Sequence[float] | None = None) -> Report:
    """Read ``paths`` and summarise each at ``radii`` (default from the largest noise level)."""
    if not paths:
        raise ResultsError("report needs at least one results file")
    files = [read_results(p) for p in paths]
    for item in files:
        if not item.records:
            raise ResultsError(f"{item.path} holds no records")
    if radii is None:
        sigmas = [s for item in files if (s := run_sigma(item.header)) is not None]
        radii = default_radii(max(sigmas) if sigmas else None)
    names = [item.path.name for item in files]
    labels = names if len(set(names)) == len(names) else [str(item.path) for item in files]
    return Report(
        [summarize(f, radii, lab) for f, lab in zip(files, labels, strict=True)], list(radii)
    )


# -- rendering ---------------------------------------------------------------
def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the report: one row per metric, one column per run."""
    header = ["metric", *[run.title for run in report.runs]]
    table: list[list[str]] = [
        ["inputs", *[str(run.inputs) for run in report.runs]],
        ["noise level", *[_fmt(run.sigma) for run in report.runs]],
        ["bound", *[" ".join(filter(None, [run.bound or "-", run.mark])) for run in report.runs]],
        ["accuracy", *[_fmt(run.accuracy) for run in report.runs]],
    ]
    for radius in report.radii:
        table.append(
            [
                f"certified acc. @ r={radius:g}",
                *[_fmt(run.certified.get(radius)) for run in report.runs],
            ]
        )
    table += [
        ["ACR", *[_fmt(run.acr) for run in report.runs]],
        ["abstain rate", *[_fmt(run.abstain_rate) for run in report.runs]],
        ["mean NFE / input", *[_fmt(run.mean_nfe, 0) for run in report.runs]],
        ["mean seconds / input", *[_fmt(run.mean_seconds, 2) for run in report.runs]],
    ]
    return header, table


def to_markdown(report: Report) -> str:
    """The report as a GitHub-flavoured Markdown table."""
    header, table = rows(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def to_tsv(report: Report) -> str:
    """The report as tab-separated values."""
    header, table = rows(report)
    return "\n".join("\t".join(row) for row in [header, *table]) + "\n"


def to_rich(report: Report) -> Any:
    """The report as a :class:`rich.table.Table`."""
    from rich.table import Table

    header, table = rows(report)
    out = Table(title="certified accuracy")
    out.add_column(header[0])
    for run in report.runs:
        out.add_column(run.title, justify="right", style="red" if run.mark else None)
    for row in table:
        out.add_row(*row)
    return out


def plot(report: Report, path: str | Path) -> Path:
    """Draw certified accuracy against radius for every certify run; save to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OptionError(PLOT_HINT) from None
    path = Path(path)
    if not path.parent.is_dir():
        raise ResultsError(f"cannot write {path}: directory {path.parent} does not exist")
    runs = [run for run in report.runs if run.acr is not None]
    if not runs:
        raise ResultsError("nothing to plot: no certify results among the files")
    finite = [r for run in runs for r in run.radii if math.isfinite(r)]
    top = max([*report.radii, *finite]) or 1.0
    grid = [top * k / 400 for k in range(401)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        curve = [sum(1 for r in run.radii if r >= g) / run.inputs for g in grid]
        ax.step(grid, curve, where="post", label=run.title, linestyle="-" if run.sound else "--")
    ax.set_xlabel(f"radius ({runs[0].norm or 'l2'})")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path
