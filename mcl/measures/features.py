"""Sparse-feature analysis of a code matrix against multi-hot primitive labels.

Conventions
-----------
``z`` is a code matrix ``[N, s]`` (one row per sample, one column per unit, e.g. SAE codes);
a unit is *active* on a sample when its value exceeds ``threshold`` (default 0, for ReLU /
top-k codes). ``Y`` is a multi-hot label matrix ``[N, P]`` (one column per primitive).
Selectivity is the AUROC of a unit's raw activation as a score for a primitive's presence
(1: the unit fires more whenever the primitive is present; 0.5: unrelated; below 0.5:
anti-selective).

Monosemanticity
---------------
:func:`monosemanticity` picks each primitive's best unit and scores it on the *same* samples:
a maximum over units, biased upwards by selection, and more so the more live units there are
(with no signal at all, 86 live noise units score higher than 24). :func:`heldout_monosemanticity`
is the measure to compare representations with: each primitive's unit is chosen on a
selection set (train + val) and scored on a disjoint evaluation set (test), so with no
signal its expected score is 0.5 whatever the number of units; a permutation of the
evaluation labels gives each held-out score's null distribution and p-value.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from mcl.measures.rank import auroc_from_ranks

__all__ = [
    "activation_frequency",
    "dead_units",
    "unit_counts",
    "selectivity",
    "best_units",
    "monosemanticity",
    "heldout_monosemanticity",
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


def unit_counts(z: np.ndarray, threshold: float = 0.0) -> dict[str, int]:
    """Live and dead units of one representation ``z [N, s]``.

    Returns ``{"units": s, "live": units active (z > threshold) on some sample, "dead": s - live}``.
    """
    dead = int(dead_units(z, threshold).sum())
    s = int(np.shape(z)[1])
    return {"units": s, "live": s - dead, "dead": dead}


def _as_labels(Y: np.ndarray, n: int) -> np.ndarray:
    """Multi-hot ``[n, P]`` labels as float64 0/1."""
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"Y must be [N, P] with N = {n}, got shape {Y.shape}")
    if Y.dtype != bool and not np.all(np.isin(Y, (0, 1))):
        raise ValueError("Y must be multi-hot (0/1 or bool)")
    return Y.astype(np.float64)


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
        (Mann-Whitney) AUROC with average ranks, as :func:`mcl.measures.probes.auroc`. NaN for
        dead units and for primitives whose column has a single class.

    Notes
    -----
    Each unit's column is ranked once; all ``s x P`` AUROCs then come from one product of
    the rank matrix with ``Y`` (``O(N s log N + N s P)``).
    """
    z = _as_codes(z)
    Yb = _as_labels(Y, z.shape[0])
    if z.shape[0] == 0:
        return np.full((z.shape[1], Yb.shape[1]), np.nan)
    sel = auroc_from_ranks(scipy.stats.rankdata(z, method="average", axis=0), Yb)
    sel[dead_units(z, threshold), :] = np.nan
    return sel


def best_units(sel: np.ndarray) -> np.ndarray:
    """Most selective unit of each primitive: ``nanargmax`` over units of ``sel [s, P]`` -> int64 ``[P]``.

    Ties go to the lowest unit index; -1 for a primitive whose column is all NaN.
    """
    sel = np.asarray(sel, dtype=np.float64)
    if sel.ndim != 2:
        raise ValueError(f"sel must be 2-D [s, P], got shape {sel.shape}")
    ok = ~np.all(np.isnan(sel), axis=0)
    out = np.full(sel.shape[1], -1, dtype=np.int64)
    if ok.any():
        out[ok] = np.argmax(np.where(np.isnan(sel[:, ok]), -np.inf, sel[:, ok]), axis=0)
    return out


def monosemanticity(sel: np.ndarray) -> np.ndarray:
    """Best single-unit AUROC per primitive: ``nanmax`` over units of ``sel [s, P]`` -> ``[P]``.

    Measures whether *some* unit alone detects the primitive (1: a perfectly selective
    unit exists). NaN for a primitive whose column is all NaN. When ``sel`` comes from the
    samples it is reported on, this is a maximum over units scored where they were chosen:
    biased upwards, more with more live units. Use :func:`heldout_monosemanticity` to compare
    representations.
    """
    sel = np.asarray(sel, dtype=np.float64)
    units = best_units(sel)
    out = np.full(sel.shape[1], np.nan)
    ok = units >= 0
    out[ok] = sel[units[ok], np.flatnonzero(ok)]
    return out


def _scores_with_null(z_chosen: np.ndarray, Yb: np.ndarray, prims: np.ndarray, P: int, n_perm: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """AUROC ``[P]`` of unit ``z_chosen[:, i]`` for primitive ``prims[i]`` on labels ``Yb`` [N, P], and the
    same under ``n_perm`` joint permutations of the rows of ``Yb`` ``[n_perm, P]``; NaN elsewhere."""
    ranks = scipy.stats.rankdata(z_chosen, method="average", axis=0)  # [N, m]
    Y_used = Yb[:, prims]

    def paired_auroc(Y: np.ndarray) -> np.ndarray:
        return np.diagonal(auroc_from_ranks(ranks, Y)).copy()

    score = np.full(P, np.nan)
    null = np.full((n_perm, P), np.nan)
    if z_chosen.shape[0] and prims.size:
        score[prims] = paired_auroc(Y_used)
        rng = np.random.default_rng(seed)
        for b in range(n_perm):
            null[b, prims] = paired_auroc(Y_used[rng.permutation(z_chosen.shape[0])])
    return score, null


def _compare_with_null(score: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """``(null_mean, excess, p_value [P], mean, p_value_mean)`` of scores ``[P]`` against their null
    ``[n_perm, P]``; p-values ``(1 + #{null >= observed}) / (1 + n_perm)``, NaN where a score is."""
    n_perm, P = null.shape
    defined = np.isfinite(score)
    null_mean = np.full(P, np.nan)
    p_value = np.full(P, np.nan)
    null_mean[defined] = null[:, defined].mean(axis=0)
    p_value[defined] = (1 + (null[:, defined] >= score[defined]).sum(axis=0)) / (1 + n_perm)
    mean = float(np.mean(score[defined])) if defined.any() else float("nan")
    if defined.any():
        p_value_mean = float((1 + (null[:, defined].mean(axis=1) >= mean).sum()) / (1 + n_perm))
    else:
        p_value_mean = float("nan")
    return null_mean, score - null_mean, p_value, mean, p_value_mean


def heldout_monosemanticity(
    z_sel: np.ndarray,
    Y_sel: np.ndarray,
    z_eval: np.ndarray,
    Y_eval: np.ndarray,
    threshold: float = 0.0,
    n_perm: int = 1000,
    seed: int = 0,
) -> dict:
    """Best single unit per primitive chosen on one set and scored on another, with a permutation null.

    Parameters
    ----------
    z_sel, Y_sel : codes ``[N_sel, s]`` and labels ``[N_sel, P]`` of the selection set (train + val)
    z_eval, Y_eval : codes ``[N_eval, s]`` and labels ``[N_eval, P]`` of the evaluation set (test),
        the same ``s`` units and ``P`` primitives
    threshold : activity threshold; candidate units are those live on the selection set
    n_perm : permutations of the evaluation labels for the null (``>= 1``)
    seed : seed of the permutation generator (the result is deterministic given it)

    Returns
    -------
    dict
        ``unit`` int64 ``[P]``: each primitive's unit, :func:`best_units` of
        :func:`selectivity` on the selection set (-1 when no live unit or a single-class
        selection column). ``selection_auroc`` ``[P]``: its AUROC there. ``score`` ``[P]``:
        its AUROC on the evaluation set (a unit never active there scores 0.5; NaN for
        ``unit == -1`` or a single-class evaluation column). ``mean``: ``nanmean(score)``,
        the headline. ``null_mean`` ``[P]``: the mean of the chosen unit's AUROC over
        ``n_perm`` joint permutations of the rows of ``Y_eval``; ``excess`` ``[P]`` =
        ``score - null_mean`` and ``mean_excess``: its ``nanmean``; ``p_value`` ``[P]`` and
        ``p_value_mean`` (for ``mean`` against the null of the mean over the same
        primitives): ``(1 + #{null >= observed}) / (1 + n_perm)``. ``n_units_used``: distinct
        units chosen; ``n_shared``: primitives whose unit is also chosen for another
        primitive. ``live_units``, ``dead_units``, ``units``: :func:`unit_counts` of
        ``z_sel``; ``n_perm``.

    Notes
    -----
    Choosing and scoring on independent samples removes the selection bias of
    :func:`monosemanticity`: without signal the chosen unit's evaluation AUROC has
    expectation 0.5 however many units were candidates, so ``mean`` does not reward a
    representation for having more live units (while a real detector is still found more
    easily among more units). The null permutes the evaluation labels, so it is the
    distribution of the chosen unit's score when it is unrelated to the primitives on the
    evaluation set; it accounts for ties (sparse units) and class balance, and its mean is
    about 0.5. The other null -- choosing on permuted *selection* labels -- was not used:
    its mean is the score of an uninformed choice among this representation's units, which
    falls towards 0.5 as pure-noise units are added, so ``score`` minus it would again grow
    with the number of live noise units.
    """
    z_sel, z_eval = _as_codes(z_sel), _as_codes(z_eval)
    if z_sel.shape[1] != z_eval.shape[1]:
        raise ValueError(f"z_sel and z_eval must have the same units, got {z_sel.shape[1]} and {z_eval.shape[1]}")
    Yb_eval = _as_labels(Y_eval, z_eval.shape[0])
    if np.shape(Y_sel)[1:] != Yb_eval.shape[1:]:
        raise ValueError(f"Y_sel and Y_eval must have the same primitives, got {np.shape(Y_sel)} and {Yb_eval.shape}")
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    sel = selectivity(z_sel, Y_sel, threshold)
    units = best_units(sel)
    P = len(units)
    prims = np.flatnonzero(units >= 0)
    chosen = units[prims]
    selection_auroc = np.full(P, np.nan)
    selection_auroc[prims] = sel[chosen, prims]

    score, null = _scores_with_null(z_eval[:, chosen], Yb_eval, prims, P, n_perm, seed)
    null_mean, excess, p_value, mean, p_value_mean = _compare_with_null(score, null)
    defined = np.isfinite(score)
    counts = np.bincount(chosen, minlength=z_sel.shape[1]) if chosen.size else np.zeros(0, dtype=np.int64)
    live = unit_counts(z_sel, threshold)
    return {
        "unit": units,
        "selection_auroc": selection_auroc,
        "score": score,
        "mean": mean,
        "null_mean": null_mean,
        "excess": excess,
        "mean_excess": float(np.mean(excess[defined])) if defined.any() else float("nan"),
        "p_value": p_value,
        "p_value_mean": p_value_mean,
        "n_units_used": int(np.count_nonzero(counts)),
        "n_shared": int(counts[counts > 1].sum()),
        "live_units": live["live"],
        "dead_units": live["dead"],
        "units": live["units"],
        "n_perm": int(n_perm),
    }


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
