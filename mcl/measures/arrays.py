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


def as_binary(y: np.ndarray, name: str = "y") -> np.ndarray:
    """0/1 (or bool) labels ``[n]`` as bool; ``ValueError`` for another shape or value."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.dtype != bool:
        if not np.all(np.isin(y, (0, 1))):
            raise ValueError(f"{name} must contain only 0/1 (or bool) values")
        y = y.astype(bool)
    return y
