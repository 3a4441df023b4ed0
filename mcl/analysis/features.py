"""Sparse-feature analysis of a code matrix against multi-hot primitive labels.

Conventions
-----------
``z`` is a code matrix ``[N, s]`` (one row per sample, one column per unit, e.g. SAE codes);
a unit is *active* on a sample when its value exceeds ``threshold`` (default 0, for ReLU /
top-k codes). ``Y`` is a multi-hot label matrix ``[N, P]`` (one column per primitive).
Selectivity is the AUROC of a unit's raw activation as a score for a primitive's presence
(1: the unit fires more whenever the primitive is present; 0.5: unrelated; below 0.5:
anti-selective).
"""

from __future__ import annotations

import numpy as np
import scipy.stats

__all__ = [
    "activation_frequency",
    "dead_units",
    "selectivity",
    "monosemanticity",
    "top_activating",
    "most_selective_units",
]


def _as_codes(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"z must be 2-D [N, s], got shape {z.shape}")
    if np.isnan(z).any():
        raise ValueError("z contains NaN")
    return z


def activation_frequency(z: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Fraction of samples on which each unit is active (``z > threshold``), float64 ``[s]``."""
    z = _as_codes(z)
    if z.shape[0] == 0:
        return np.full(z.shape[1], np.nan)
    return (z > threshold).mean(axis=0)


def dead_units(z: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Boolean ``[s]``: True for units never active (``z <= threshold`` on every sample)."""
    z = _as_codes(z)
    return ~(z > threshold).any(axis=0)


def selectivity(z: np.ndarray, Y: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """AUROC of each unit's activation for each primitive.

    Parameters
    ----------
    z : codes ``[N, s]``
    Y : multi-hot labels ``[N, P]`` (0/1 or bool)
    threshold : activity threshold defining dead units (see :func:`dead_units`)

    Returns
    -------
    ndarray ``[s, P]``, float64
        ``sel[u, p]`` = probability that unit ``u`` is more active on a random sample with
        primitive ``p`` than on a random sample without it (ties count 1/2): the rank
        (Mann-Whitney) AUROC with average ranks, as :func:`mcl.analysis.probes.auroc`. NaN for
        dead units and for primitives whose column has a single class.

    Notes
    -----
    Each unit's column is ranked once; all ``s x P`` AUROCs then come from one product of
    the rank matrix with ``Y`` (``O(N s log N + N s P)``).
    """
    z = _as_codes(z)
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != z.shape[0]:
        raise ValueError(f"Y must be [N, P] with N = {z.shape[0]}, got shape {Y.shape}")
    if Y.dtype != bool and not np.all(np.isin(Y, (0, 1))):
        raise ValueError("Y must be multi-hot (0/1 or bool)")
    Yb = Y.astype(np.float64)
    s, P = z.shape[1], Y.shape[1]
    if z.shape[0] == 0:
        return np.full((s, P), np.nan)
    ranks = scipy.stats.rankdata(z, method="average", axis=0)  # [N, s]
    n_pos = Yb.sum(axis=0)  # [P]
    n_neg = Yb.shape[0] - n_pos
    rank_sum = ranks.T @ Yb  # [s, P]
    with np.errstate(divide="ignore", invalid="ignore"):
        sel = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    sel[:, (n_pos == 0) | (n_neg == 0)] = np.nan
    sel[dead_units(z, threshold), :] = np.nan
    return sel


def monosemanticity(sel: np.ndarray) -> np.ndarray:
    """Best single-unit AUROC per primitive: ``nanmax`` over units of ``sel [s, P]`` -> ``[P]``.

    Measures whether *some* unit alone detects the primitive (1: a perfectly selective
    unit exists). NaN for a primitive whose column is all NaN.
    """
    sel = np.asarray(sel, dtype=np.float64)
    if sel.ndim != 2:
        raise ValueError(f"sel must be 2-D [s, P], got shape {sel.shape}")
    out = np.full(sel.shape[1], np.nan)
    ok = ~np.all(np.isnan(sel), axis=0)
    if ok.any():
        out[ok] = np.nanmax(sel[:, ok], axis=0)
    return out


def top_activating(z: np.ndarray, unit: int, n: int) -> np.ndarray:
    """Indices of the ``n`` samples with the largest activation of ``unit``.

    Returns an int64 array ``[min(n, N)]`` ordered by decreasing activation; equal
    activations are ordered by increasing sample index (deterministic).
    """
    z = _as_codes(z)
    if not -z.shape[1] <= unit < z.shape[1]:
        raise IndexError(f"unit {unit} out of range for {z.shape[1]} units")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    order = np.argsort(-z[:, unit], kind="stable")
    return order[:n].astype(np.int64)


def most_selective_units(sel: np.ndarray, per_primitive: int = 1) -> list[tuple[int, int, float]]:
    """The most selective units of each primitive.

    Parameters
    ----------
    sel : ``[s, P]`` selectivity matrix from :func:`selectivity`
    per_primitive : how many units to report per primitive

    Returns
    -------
    list of ``(primitive index, unit index, auroc)``
        Grouped by primitive in column order; within a primitive by decreasing AUROC, ties
        by increasing unit index. NaN entries are skipped, so a primitive may contribute
        fewer than ``per_primitive`` tuples (none when its column is all NaN). A unit can
        appear for several primitives.
    """
    sel = np.asarray(sel, dtype=np.float64)
    if sel.ndim != 2:
        raise ValueError(f"sel must be 2-D [s, P], got shape {sel.shape}")
    if per_primitive < 0:
        raise ValueError(f"per_primitive must be >= 0, got {per_primitive}")
    out: list[tuple[int, int, float]] = []
    for p in range(sel.shape[1]):
        col = sel[:, p]
        valid = np.flatnonzero(~np.isnan(col))
        order = valid[np.argsort(-col[valid], kind="stable")]
        out.extend((p, int(u), float(col[u])) for u in order[:per_primitive])
    return out
