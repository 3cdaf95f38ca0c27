"""Certified-accuracy reports: several results files side by side.

For each file: certified accuracy at a list of radii (the share of inputs
that are classified correctly *and* certified at least that radius, as in
Cohen et al.), the average certified radius (ACR: the mean of the radius of
correct inputs, 0 for the others), the abstain rate, and the mean NFE and
seconds per input, and how many radii are at their bound's cap.  Results
whose certificates say they are not sound are marked wherever they appear:
``UNSOUND`` for the ``repro`` bound (not a valid lower bound), ``not proven
sound`` for the others (e.g. the ``paper`` bound).

Runs are grouped by norm (:meth:`Report.groups`): a table (and a plot panel,
see :mod:`deqcert.plotting`) per norm, so an L1 radius never sits in a row of
L2 radii.  Each column names its certifier, noise and level, and norm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OptionError, ResultsError
from .notes import CAP_MARK, cap_hint, is_at_cap, number
from .plotting import PLOT_HINT as PLOT_HINT
from .protocols import ABSTAIN
from .results import ResultsFile, read_results


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
    noise: str | None = None
    """The noise and its level, e.g. ``gaussian sigma=0.25`` (None when not recorded)."""
    certifier: str | None = None
    n: int | None = None
    reference_samples: int | None = None
    capped: int | None = None
    """Records whose radius is at the bound's cap (None when the records do not say)."""
    radius_cap: float | None = None
    cap_hint: str | None = None

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

    @property
    def description(self) -> str:
        """Certifier, bound, sample sizes and noise level: ``serialized (sound), n=2000, K=200,
        sigma=0.5`` (what is not recorded is left out)."""
        head = self.certifier or "results"
        if self.bound:
            head += f" ({self.bound}{', ' + self.mark if self.mark else ''})"
        parts = [head]
        if self.n is not None:
            parts.append(f"n={self.n}")
        if self.reference_samples is not None:
            parts.append(f"K={self.reference_samples}")
        if self.noise:
            parts.append(self.noise.partition(" ")[2] or self.noise)
        return ", ".join(parts)


@dataclass
class Report:
    """Several runs and the radii they are compared at."""

    runs: list[RunStats]
    radii: list[float]

    def groups(self) -> list[tuple[str | None, list[RunStats]]]:
        """The runs by norm, in order of first appearance: radii in different norms never mix."""
        out: dict[str | None, list[RunStats]] = {}
        for run in self.runs:
            out.setdefault(run.norm, []).append(run)
        return list(out.items())


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _noise_settings(header: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return ((header or {}).get("config") or {}).get("noise") or {}


def run_sigma(header: Mapping[str, Any] | None) -> float | None:
    """The noise level recorded in a results header (Gaussian ``sigma`` or the noise's scale)."""
    noise = _noise_settings(header)
    for key in NOISE_LEVEL_KEYS:
        value = number(noise.get(key))
        if value is not None:
            return value
    return None


NOISE_LEVEL_KEYS = ("sigma", "scale", "half_width")


def run_noise(header: Mapping[str, Any] | None) -> str | None:
    """``gaussian sigma=0.25``: the noise's name and the option that sets its level."""
    noise = _noise_settings(header)
    level = next(
        (f"{key}={noise[key]:g}" for key in NOISE_LEVEL_KEYS if number(noise.get(key)) is not None),
        "",
    )
    text = " ".join(filter(None, [str(noise.get("name") or ""), level]))
    return text or None


def _norm(header: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> str | None:
    certifier = header.get("certifier") if isinstance(header.get("certifier"), Mapping) else {}
    norm = ((certifier or {}).get("noise") or {}).get("norm")
    if norm is None and records:
        norm = (records[0].get("certificate") or {}).get("norm")
    return str(norm) if norm is not None else None


def summarize(results: ResultsFile, radii: Sequence[float], label: str | None = None) -> RunStats:
    """Statistics of one results file at ``radii``."""
    records = results.records
    header = results.header or {}
    config = header.get("config") or {}
    mode = str(config.get("mode") or (records[0].get("mode") if records else None) or "certify")
    has_radius = mode == "certify" and any(number(r.get("radius")) is not None for r in records)
    correct_radii = (
        [number(r.get("radius")) or 0.0 for r in records if r.get("correct")] if has_radius else []
    )
    count = len(records)
    certified = (
        {r: sum(1 for rad in correct_radii if rad >= r) / count for r in radii}
        if has_radius and count
        else {}
    )
    bounds = {str(r.get("bound")) for r in records if r.get("bound") is not None}
    nfe = [v for r in records if (v := number(r.get("nfe"))) is not None]
    seconds = [v for r in records if (v := number(r.get("seconds"))) is not None]
    certifier = header.get("certifier") if isinstance(header.get("certifier"), Mapping) else {}
    certifier = certifier or {}
    said = [r for r in records if isinstance(r.get("at_cap"), bool)]
    caps = [v for r in said if (v := number(r.get("radius_cap"))) is not None]
    return RunStats(
        label=label or results.path.name,
        path=results.path,
        mode=mode,
        inputs=count,
        sigma=run_sigma(header),
        norm=_norm(header, records),
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
        noise=run_noise(header),
        certifier=str(certifier["name"]) if certifier.get("name") else None,
        n=_int(certifier.get("n", config.get("n"))),
        reference_samples=_int(certifier.get("reference_samples")),
        capped=sum(1 for r in said if is_at_cap(r)) if has_radius and said else None,
        radius_cap=max(caps) if caps else None,
        cap_hint=cap_hint(records) if has_radius else None,
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


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


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
    """Read ``paths`` and summarise each at ``radii`` (default from the largest noise level).

    Runs are ordered by norm (first appearance), so tables and plots keep
    radii in different norms apart.
    """
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
    runs = [summarize(f, radii, lab) for f, lab in zip(files, labels, strict=True)]
    grouped = Report(runs, list(radii)).groups()
    return Report([run for _, group in grouped for run in group], list(radii))


# -- rendering ---------------------------------------------------------------
def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _at_cap(run: RunStats) -> str:
    if run.capped is None:
        return "-"
    cap = f" (r={run.radius_cap:.3f})" if run.radius_cap is not None and run.capped else ""
    return f"{run.capped} of {run.inputs}{cap}"


def rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the report: one row per metric, one column per run."""
    header = ["metric", *[run.title for run in report.runs]]
    table: list[list[str]] = [
        ["inputs", *[str(run.inputs) for run in report.runs]],
        ["certifier", *[run.certifier or "-" for run in report.runs]],
        ["noise", *[run.noise or "-" for run in report.runs]],
        ["norm", *[run.norm or "-" for run in report.runs]],
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
        [f"radii at the cap {CAP_MARK}", *[_at_cap(run) for run in report.runs]],
        ["abstain rate", *[_fmt(run.abstain_rate) for run in report.runs]],
        ["mean NFE / input", *[_fmt(run.mean_nfe, 0) for run in report.runs]],
        ["mean seconds / input", *[_fmt(run.mean_seconds, 2) for run in report.runs]],
    ]
    return header, table


def _parts(report: Report) -> list[tuple[str | None, Report]]:
    """One sub-report per norm (radii in different norms are not comparable)."""
    return [(norm, Report(group, report.radii)) for norm, group in report.groups()]


def _norm_title(norm: str | None) -> str:
    return f"{norm} radius" if norm else "radius in an unrecorded norm"


def notes(report: Report) -> list[str]:
    """Lines to print under the table: which runs' radii are at their bound's cap, and why."""
    many = len(report.runs) > 1
    return [f"{run.label}: {run.cap_hint}" if many else run.cap_hint
            for run in report.runs if run.cap_hint]


def to_markdown(report: Report) -> str:
    """The report as GitHub-flavoured Markdown: one table per norm."""
    parts = _parts(report)
    out = []
    for norm, part in parts:
        header, table = rows(part)
        lines = [f"**{_norm_title(norm)}**", ""] if len(parts) > 1 else []
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in table]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def to_tsv(report: Report) -> str:
    """The report as tab-separated values (one table; the ``norm`` row tells the runs apart)."""
    header, table = rows(report)
    return "\n".join("\t".join(row) for row in [header, *table]) + "\n"


def to_rich(report: Report) -> Any:
    """The report as :class:`rich.table.Table` s, one per norm."""
    from rich.console import Group
    from rich.table import Table

    tables = []
    parts = _parts(report)
    for norm, part in parts:
        header, table = rows(part)
        title = "certified accuracy" + (f" ({_norm_title(norm)})" if len(parts) > 1 else "")
        out = Table(title=title)
        out.add_column(header[0])
        for run in part.runs:
            out.add_column(run.title, justify="right", style="red" if run.mark else None)
        for row in table:
            out.add_row(*row)
        tables.append(out)
    return tables[0] if len(tables) == 1 else Group(*tables)


def plot(report: Report, path: str | Path) -> Path:
    """Draw certified accuracy against radius, one panel per norm; save to ``path``.

    The format follows the suffix: ``.png``, ``.svg`` or ``.pdf``.
    """
    from .plotting import draw

    return draw(report.runs, report.radii, path)
