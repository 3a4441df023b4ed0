"""Numbers as text for the generated markdown."""

from __future__ import annotations

import math


def fmt(x, digits: int = 4, signed: bool = False, general: bool = False) -> str:
    """``x`` with ``digits`` decimals (``general``: significant digits), a sign with ``signed``;
    None and non-finite values are 'n/a', anything that is not a number its ``str``."""
    if x is None:
        return "n/a"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "n/a"
    spec = f"{'+' if signed else ''}.{digits}{'g' if general else 'f'}"
    return format(x, spec)
