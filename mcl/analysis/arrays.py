"""Input checks shared by the analysis functions."""

from __future__ import annotations

import numpy as np


def as_matrix(x, name: str, shape: str, column: bool = False) -> np.ndarray:
    """``x`` as a finite float64 2-D array; with ``column``, a 1-D ``x`` becomes one column.

    ``shape`` describes the expected shape in the error message, e.g. ``"2-D [n, p]"``.
    Raises ``ValueError`` for another number of dimensions or a non-finite value.
    """
    a = np.asarray(x, dtype=np.float64)
    if column and a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be {shape}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a
