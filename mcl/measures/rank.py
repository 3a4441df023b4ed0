"""Rank statistics: Spearman correlation and the rank (Mann-Whitney) AUROC."""

from __future__ import annotations

import numpy as np
import scipy.stats

from mcl.measures.arrays import as_binary

__all__ = ["spearman", "auroc", "auroc_from_ranks"]


def auroc_from_ranks(ranks: np.ndarray, Yb: np.ndarray) -> np.ndarray:
    """Rank (Mann-Whitney) AUROC ``[s, P]`` from column ranks ``[N, s]`` and 0/1 labels ``[N, P]``.

    NaN for a primitive whose column has a single class.
    """
    n_pos = Yb.sum(axis=0)  # [P]
    n_neg = Yb.shape[0] - n_pos
    rank_sum = ranks.T @ Yb  # [s, P]
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    auc[:, (n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def auroc(scores: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve by the rank (Mann-Whitney U) formula.

    ``AUROC = (R_+ - n_+ (n_+ + 1) / 2) / (n_+ n_-)`` with ``R_+`` the sum of the (1-based,
    ties averaged) ranks of the positive samples' scores: the probability that a random
    positive scores higher than a random negative, ties counting 1/2.

    Parameters
    ----------
    scores : array ``[n]``, higher means more positive
    y : array ``[n]`` of 0/1 labels

    Returns
    -------
    float in ``[0, 1]``; NaN when ``y`` has a single class (or any score is NaN).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = as_binary(y)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and y must be 1-D of the same length, got {s.shape} and {y.shape}")
    if np.isnan(s).any():
        return float("nan")
    ranks = scipy.stats.rankdata(s, method="average")
    return float(auroc_from_ranks(ranks[:, None], y[:, None].astype(np.float64))[0, 0])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (:func:`scipy.stats.spearmanr`), NaN-safe.

    Pairs where either value is NaN are dropped. Returns NaN when fewer than 3 pairs remain
    or either variable is constant.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(scipy.stats.spearmanr(x, y).statistic)
