"""How a rate reads in indvision's console lines, gate messages and reports: one format, so
the evaluate line, the calibration warning and the report page agree to the digit."""

from __future__ import annotations


def percent(value: float | None) -> str:
    """0.9944 → '99.4 %'; None → '—'."""
    return "—" if value is None else f"{100 * value:.1f} %"
