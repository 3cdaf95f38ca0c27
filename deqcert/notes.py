"""One-line notes on a run's records: radii at their bound's cap, unconverged ``h_ref`` solves.

Torch-free on purpose: the CLI, ``report`` and the run pipeline read plain
record dicts (as written to results files) and say what a table alone leaves
out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

UNCONVERGED_WARNING_SHARE = 0.01
"""Warn when more than this share of the reference (``h_ref``) solves hit ``max_iter``."""

CAP_MARK = "*"
"""Appended to a radius that is at its bound's cap in tables."""

_SERIALIZED_BOUNDS = ("sound", "paper", "repro")


def is_at_cap(record: Mapping[str, Any]) -> bool:
    """True when the record says its radius is the largest its bound can give."""
    return record.get("at_cap") is True


def cap_hint(records: Iterable[Mapping[str, Any]]) -> str | None:
    """The line explaining capped radii, or None when no record is at its cap.

    Names the cap and what raises it: ``K`` (reference samples, serialized
    bounds), ``n`` and ``alpha``.
    """
    capped = [r for r in records if is_at_cap(r)]
    if not capped:
        return None
    first = capped[0]
    cert = first.get("certificate") or {}
    bound = str(first.get("bound") or cert.get("bound") or "its")
    n, alpha = cert.get("n"), cert.get("alpha")
    k = (first.get("counts") or {}).get("K")
    serialized = bound in _SERIALIZED_BOUNDS and k is not None
    sizes = ", ".join(
        part
        for part in (f"n={n}" if n is not None else "", f"K={k}" if serialized else "",
                     f"alpha={alpha}" if alpha is not None else "")
        if part
    )
    cap = number(first.get("radius_cap"))
    at = f" r={cap:.3f}" if cap is not None else ""
    raise_ = (
        "a larger K (--set certifier.reference_samples=...), n (--n) or alpha (--alpha)"
        if serialized
        else "a larger n (--n) or alpha (--alpha)"
    )
    return (
        f"{CAP_MARK} {len(capped)} radi{'us is' if len(capped) == 1 else 'i are'} at the cap of "
        f"the {bound} bound ({at.strip() or 'its maximum'} with {sizes}): every vote agreed, so "
        f"only {raise_} certifies a larger radius"
    )


def reference_unconverged_share(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean share of ``h_ref`` solves that hit ``max_iter`` (None if no record says)."""
    shares = [v for r in records if (v := number(r.get("reference_unconverged"))) is not None]
    return sum(shares) / len(shares) if shares else None


def unconverged_warning(
    records: Sequence[Mapping[str, Any]], threshold: float = UNCONVERGED_WARNING_SHARE
) -> str | None:
    """The warning line when more than ``threshold`` of the reference solves did not converge."""
    share = reference_unconverged_share(records)
    if share is None or share <= threshold:
        return None
    return (
        f"{share:.1%} of the reference solves (h_ref) stopped at max_iter without reaching "
        f"the tolerance (more than {threshold:.0%}); for those samples h_ref is the truncated "
        "solve, which is what was certified. Raise the reference solver's max_iter or "
        "tolerance for the classifier you trained"
    )


def number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
