"""Numbers as text for the Markdown report and the terminal table."""

from __future__ import annotations

import math
from typing import Any


def fmt(x: Any, digits: int = 4) -> str:
    """A value for a report cell: None (or a NaN) is 'n/a', booleans yes/no, ints as they are, floats to
    `digits` significant digits (3 in scientific notation when tiny or huge)."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.{digits}g}"


def format_pvalue(log10_p: float | None) -> str:
    """A p-value from its log10, so it stays readable below float underflow (e.g. 3.2e-412)."""
    if log10_p is None or not math.isfinite(log10_p):
        return "n/a"
    if log10_p > -3:
        return f"{10.0**log10_p:.3g}"
    e = math.floor(log10_p)
    mantissa = 10.0 ** (log10_p - e)
    if round(mantissa, 1) >= 10:
        mantissa, e = mantissa / 10, e + 1
    return f"{mantissa:.1f}e{e}"


def byte_size(n: Any) -> str:
    """A byte count as B, kB, MB or GB (decimal units)."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return fmt(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


def metric(name: str, v: Any) -> str:
    """An evaluation metric: scores to 3 decimals, errors and counts as `fmt` gives them."""
    if v is None or isinstance(v, int) or "error" in name:
        return fmt(v)
    return f"{v:.3f}"


def md(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def optional_int(x: float) -> int | None:
    """A whole number stored as a float (NaN: None)."""
    return None if not math.isfinite(x) else int(x)
