"""Linear centred kernel alignment (CKA) between two representations of the same samples.

Conventions
-----------
A representation is a matrix ``X`` of shape ``[n, p]``: one row per sample, one column per
feature (unit, dimension). Two representations are compared on the *same* ``n`` samples in
the same row order; their widths ``p`` and ``q`` may differ. A 1-D array of length ``n`` is
treated as ``[n, 1]``. Everything is computed in float64.

Two estimators of ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels
``K = X X^T`` and ``L = Y Y^T`` are provided:

- **biased** (Kornblith et al. 2019): plug-in HSIC on centred Grams. Computed in feature
  space as ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with ``X_c``, ``Y_c`` the
  column-centred matrices, in ``O(n (p^2 + q^2 + p q))`` time and ``O(p^2 + q^2 + p q)``
  extra memory -- the ``n x n`` Gram is never formed. It is biased upwards when ``n`` is not
  large relative to the width: two *independent* 128-d Gaussian samples score about 0.88 at
  ``n = 16`` and about 0.34 at ``n = 256``.
- **debiased** (Song et al. 2012 unbiased HSIC, as used for CKA by Nguyen, Raghu & Kornblith
  2021): with ``K~``, ``L~`` the Grams with zeroed diagonals,

  ``HSIC_u(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3))``

  and ``CKA_u = HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L))``. Needs ``n >= 4``. It is
  approximately 0 for independent data at any ``n`` (it can be slightly negative). It is
  also evaluated in feature space here, in ``O(n (p^2 + q^2 + p q))``: every term of the
  formula is a product of ``X^T X``, ``Y^T Y``, ``X^T Y``, row norms and column sums. The
  ``n x n`` form is kept as a reference in :func:`gram_linear_cka`.

Both estimators are invariant to orthogonal transforms and isotropic scaling of either
representation and to adding a constant vector to every row; neither is invariant to a
general invertible linear map. A representation with zero variance (all rows equal) has no
defined CKA: the functions return NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mcl.measures.arrays import as_matrix

__all__ = ["linear_cka", "gram_linear_cka", "cka_matrix", "pick_estimator"]


def _as_rep(X: np.ndarray, name: str) -> np.ndarray:
    """``X`` as a float64 ``[n, p]`` array (1-D becomes one column); rejects non-finite values."""
    return as_matrix(X, name, "2-D [n, p]", column=True)


def _check_pair(X: np.ndarray, Y: np.ndarray, debiased: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 representations with matching rows and enough samples for the estimator."""
    X = _as_rep(X, "X")
    Y = _as_rep(Y, "Y")
    n = X.shape[0]
    if n != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows, got {n} and {Y.shape[0]}")
    if debiased and n < 4:
        raise ValueError(f"the debiased estimator needs n >= 4 samples, got n={n}")
    if n < 2:
        raise ValueError(f"CKA needs n >= 2 samples, got n={n}")
    return X, Y


def _centre(X: np.ndarray) -> np.ndarray:
    return X - X.mean(axis=0, keepdims=True)


def _ratio(num: float, a: float, b: float) -> float:
    """``num / sqrt(a b)``; NaN unless both self terms ``a`` and ``b`` are positive and finite.

    Checking each term, not the product: two negative (debiased) self-HSIC estimates have a
    positive product but no defined CKA.
    """
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0.0 or b <= 0.0:
        return float("nan")
    return float(num / np.sqrt(a * b))


def _u_stats(Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-representation pieces of the unbiased HSIC: row norms ``diag(K)`` and ``K~ 1``.

    For column-centred ``Xc`` (so ``K 1 = 0``): ``K~ 1 = K 1 - diag(K) = -diag(K)``.
    """
    diag = np.einsum("ij,ij->i", Xc, Xc)
    return diag, -diag


def _hsic_u_feature(
    cross_fro2: float, diag_k: np.ndarray, k1: np.ndarray, diag_l: np.ndarray, l1: np.ndarray, n: int
) -> float:
    """Unbiased HSIC from feature-space pieces.

    ``tr(K~ L~) = tr(K L) - sum_i K_ii L_ii`` with ``tr(K L) = ||X^T Y||_F^2``;
    ``1^T K~ 1 = sum(K~ 1)``; ``1^T K~ L~ 1 = (K~ 1) . (L~ 1)`` (``K~`` is symmetric).
    """
    tr = cross_fro2 - float(diag_k @ diag_l)
    sk = float(k1.sum())
    sl = float(l1.sum())
    cross = float(k1 @ l1)
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def linear_cka(X: np.ndarray, Y: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same ``n`` samples.

    Parameters
    ----------
    X : array ``[n, p]``
    Y : array ``[n, q]`` (same samples, same row order as ``X``)
    debiased : use the unbiased HSIC estimator (needs ``n >= 4``); see the module docstring
        and :func:`pick_estimator` for when to use it.

    Returns
    -------
    float
        Biased CKA in ``[0, 1]``, or debiased CKA (about 0 for independent data; may be
        slightly negative, at most 1). NaN when either representation has zero variance
        (or, for the debiased estimator, when either self-HSIC estimate is not positive --
        also when both are negative).

    Notes
    -----
    Computed in feature space in ``O(n (p^2 + q^2 + p q))``: columns are centred, then
    ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` (biased), or the unbiased HSIC
    terms expressed with the same cross-products (debiased). Agrees with the Gram-matrix
    formulas of :func:`gram_linear_cka` to rounding error.
    """
    X, Y = _check_pair(X, Y, debiased)
    n = X.shape[0]
    Xc = _centre(X)
    Yc = _centre(Y)
    xy = float(np.sum((Yc.T @ Xc) ** 2))  # ||Y^T X||_F^2 = tr(K L)
    xx = float(np.sum((Xc.T @ Xc) ** 2))  # ||X^T X||_F^2 = tr(K K)
    yy = float(np.sum((Yc.T @ Yc) ** 2))
    if not debiased:
        return _ratio(xy, xx, yy)
    dk, k1 = _u_stats(Xc)
    dl, l1 = _u_stats(Yc)
    hxy = _hsic_u_feature(xy, dk, k1, dl, l1, n)
    hxx = _hsic_u_feature(xx, dk, k1, dk, k1, n)
    hyy = _hsic_u_feature(yy, dl, l1, dl, l1, n)
    return _ratio(hxy, hxx, hyy)


def _hsic_u_gram(K: np.ndarray, L: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012) of two ``n x n`` Grams, straight from the formula."""
    n = K.shape[0]
    Kt = K.copy()
    Lt = L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones(n)
    term1 = float(np.sum(Kt * Lt))  # tr(K~ L~), both symmetric
    term2 = float(one @ Kt @ one) * float(one @ Lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * float(one @ Kt @ (Lt @ one))
    return (term1 + term2 - term3) / (n * (n - 3))


def gram_linear_cka(X: np.ndarray, Y: np.ndarray, debiased: bool = False) -> float:
    """Reference ``n x n`` Gram-matrix implementation of linear CKA.

    Biased: ``HSIC(K, L) = tr(K H L H)`` with ``H = I - 11^T / n``, ``K = X X^T``, ``L = Y Y^T``,
    and ``CKA = tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))``. Debiased: the unbiased HSIC formula of
    the module docstring applied to the uncentred Grams. ``O(n^2 (p + q))`` time and
    ``O(n^2)`` memory -- for tests and small ``n`` only; use :func:`linear_cka` otherwise.

    Parameters and return value as :func:`linear_cka`.
    """
    X, Y = _check_pair(X, Y, debiased)
    n = X.shape[0]
    K = X @ X.T
    L = Y @ Y.T
    if debiased:
        return _ratio(_hsic_u_gram(K, L), _hsic_u_gram(K, K), _hsic_u_gram(L, L))
    H = np.eye(n) - 1.0 / n
    Kc = H @ K @ H
    Lc = H @ L @ H
    return _ratio(float(np.sum(Kc * Lc)), float(np.sum(Kc * Kc)), float(np.sum(Lc * Lc)))


def pick_estimator(n: int, d: int) -> bool:
    """Whether to use the debiased estimator for ``n`` samples of width ``d``.

    Rule: ``debiased = n < 10 d``. The biased estimator's upward bias for unrelated
    representations shrinks roughly like ``d / n`` (about 0.88 at ``n = d / 8``, 0.34 at
    ``n = 2 d`` for ``d = 128``), so below ten samples per dimension it would dominate the
    comparison; above, the biased estimator is accurate enough and has lower variance.
    For two representations of different widths pass the larger width.

    Returns
    -------
    bool
        ``True`` to use ``linear_cka(..., debiased=True)``.
    """
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be positive, got n={n}, d={d}")
    return bool(n < 10 * d)


def cka_matrix(reps: Sequence[np.ndarray], debiased: bool | None = False) -> np.ndarray:
    """Pairwise linear CKA between several representations of the same samples.

    Parameters
    ----------
    reps : sequence of ``T`` arrays ``[n, p_t]`` -- e.g. one per task or per layer -- all on
        the same ``n`` samples in the same row order (widths may differ).
    debiased : estimator (see :func:`linear_cka`); ``None`` picks it with
        :func:`pick_estimator` from ``n`` and the largest width.

    Returns
    -------
    ndarray ``[T, T]``
        Symmetric; ``M[i, j] = linear_cka(reps[i], reps[j])``. The diagonal is 1, or NaN for a
        zero-variance representation.

    Notes
    -----
    Each representation is centred and its ``||X^T X||_F`` (or self-HSIC) computed once,
    so the cost is ``T`` self terms plus ``T (T - 1) / 2`` cross terms, each ``O(n p q)``.
    """
    mats = [_as_rep(R, f"reps[{i}]") for i, R in enumerate(reps)]
    T = len(mats)
    if T == 0:
        return np.zeros((0, 0))
    n = mats[0].shape[0]
    for i, R in enumerate(mats):
        if R.shape[0] != n:
            raise ValueError(f"all representations need the same number of rows; reps[0] has {n}, reps[{i}] has {R.shape[0]}")
    if debiased is None:
        debiased = pick_estimator(n, max(R.shape[1] for R in mats))
    if debiased and n < 4:
        raise ValueError(f"the debiased estimator needs n >= 4 samples, got n={n}")
    if n < 2:
        raise ValueError(f"CKA needs n >= 2 samples, got n={n}")
    cs = [_centre(R) for R in mats]
    self_fro2 = [float(np.sum((C.T @ C) ** 2)) for C in cs]
    if debiased:
        ustats = [_u_stats(C) for C in cs]
        selfs = [_hsic_u_feature(self_fro2[i], *ustats[i], *ustats[i], n) for i in range(T)]
    else:
        selfs = self_fro2
    M = np.empty((T, T))
    for i in range(T):
        for j in range(i, T):
            if i == j:
                cross = self_fro2[i]
            else:
                cross = float(np.sum((cs[j].T @ cs[i]) ** 2))
            if debiased:
                cross = _hsic_u_feature(cross, *ustats[i], *ustats[j], n)
            M[i, j] = M[j, i] = _ratio(cross, selfs[i], selfs[j])
    return M
