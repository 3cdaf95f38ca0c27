"""Certified-accuracy curves of a report: one panel per norm, one labelled curve per run.

Each curve is ``r -> share of inputs correct and certified at radius >= r``
from 0 to a little past the largest radius, so it visibly drops to 0.  Runs
are told apart by line style and marker (identical curves stay visible), the
legend (under the panel) names certifier, bound, ``n``, ``K`` and the noise
level, and a dotted line marks the bound's cap when radii reached it.  Torch-free; matplotlib is
imported only when drawing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import OptionError, ResultsError

if TYPE_CHECKING:
    from .report import RunStats

PLOT_HINT = "--plot needs matplotlib: pip install 'deqcert[plot]'"
PLOT_FORMATS = (".png", ".svg", ".pdf")
STYLES = (("-", "o"), ("--", "s"), ("-.", "^"), (":", "D"), ("-", "v"), ("--", "x"), ("-.", "P"))
"""(line style, marker) per run, in order; cycled beyond seven runs."""
GRID_POINTS = 801


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OptionError(PLOT_HINT) from None
    return plt


def legend_labels(runs: Sequence[RunStats]) -> list[str]:
    """Each run's description; runs that describe alike get their file name too."""
    texts = [run.description for run in runs]
    return [
        f"{text} [{run.label}]" if texts.count(text) > 1 or not run.certifier else text
        for text, run in zip(texts, runs, strict=True)
    ]


def curve(run: RunStats, grid: Sequence[float]) -> list[float]:
    """Certified accuracy of ``run`` at each radius of ``grid``."""
    return [sum(1 for r in run.radii if r >= g) / run.inputs for g in grid]


def figure(runs: Sequence[RunStats], radii: Sequence[float] = ()) -> Any:
    """The matplotlib figure (not saved): one panel per norm among the certify runs."""
    plt = _pyplot()
    runs = [run for run in runs if run.acr is not None]
    if not runs:
        raise ResultsError("nothing to plot: no certify results among the files")
    groups: dict[str | None, list[RunStats]] = {}
    for run in runs:
        groups.setdefault(run.norm, []).append(run)
    labels = dict(zip(map(id, runs), legend_labels(runs), strict=True))
    rows = max(len(group) for group in groups.values())
    fig, axes = plt.subplots(
        1, len(groups), figsize=(7.0 * len(groups), 4.2 + 0.22 * rows), squeeze=False
    )
    order = 0
    for ax, (norm, group) in zip(axes[0], groups.items(), strict=True):
        finite = [r for run in group for r in run.radii if math.isfinite(r)]
        top = max([*radii, *finite, 0.0]) or 1.0
        grid = [1.08 * top * k / (GRID_POINTS - 1) for k in range(GRID_POINTS)]
        for run in group:
            style, marker = STYLES[order % len(STYLES)]
            every = (GRID_POINTS - 1) // 8
            capped = bool(run.capped) and run.radius_cap is not None
            label = labels[id(run)] + ("" if run.sound else " (not sound)")
            if capped:
                label += f"; {run.capped} of {run.inputs} at the cap {run.radius_cap:.3f} (dotted)"
            (line,) = ax.step(
                grid, curve(run, grid), where="post", linestyle=style, marker=marker,
                markevery=(order * every // max(len(group), 1) % every, every), markersize=5,
                linewidth=1.6, label=label,
            )
            if capped:
                ax.axvline(run.radius_cap, color=line.get_color(), linestyle=":", linewidth=1,
                           alpha=0.7, label="_nolegend_")
            order += 1
        where = norm or "unrecorded norm"
        levels = {run.noise for run in group if run.noise}
        level = f" ({levels.pop()})" if len(levels) == 1 else ""
        ax.set_title(f"certified accuracy, {where} radius{level}")
        ax.set_xlabel(f"radius ({where})")
        ax.set_ylabel("certified accuracy")
        ax.set_xlim(0, grid[-1])
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    return fig


def check_plot_path(path: str | Path) -> Path:
    """``path`` if its suffix names a format :func:`draw` writes, else :class:`OptionError`."""
    path = Path(path)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise OptionError(
            f"cannot plot to {path}: unknown image format {path.suffix or '(none)'!r}; "
            f"accepted: {', '.join(PLOT_FORMATS)}"
        )
    return path


def draw(runs: Sequence[RunStats], radii: Sequence[float], path: str | Path) -> Path:
    """Save :func:`figure` to ``path`` (``.png``, ``.svg`` or ``.pdf``, from the suffix)."""
    path = check_plot_path(path)
    if not path.parent.is_dir():
        raise ResultsError(f"cannot write {path}: directory {path.parent} does not exist")
    plt = _pyplot()
    fig = figure(runs, radii)
    try:
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path
