"""Subspaces on the Grassmann manifold: PCA bases, principal angles and distances.

Conventions
-----------
A subspace of ``R^d`` is given by a basis matrix ``[d, k]`` whose columns span it; the columns
need not be orthonormal (they are orthonormalised with :func:`scipy.linalg.orth`, which also
drops numerically dependent columns, so the dimension used is the numerical rank).
Principal angles ``0 <= theta_1 <= ... <= theta_m <= pi/2``, ``m = min(k_a, k_b)``, are
returned in *descending* order, as :func:`scipy.linalg.subspace_angles` does. All distances
are functions of the principal angles; for subspaces of different dimensions only the ``m``
angles are used (the extra dimensions of the larger subspace are ignored).

Several normalisations are in use in the literature; the ones here are

=====================  ==============================  ==========================================
function               value                           range (``m`` angles)
=====================  ==============================  ==========================================
geodesic_distance      ``sqrt(sum theta_i^2)``         ``[0, sqrt(m) pi / 2]`` (radians)
chordal_distance       ``sqrt(sum sin^2 theta_i)``     ``[0, sqrt(m)]``; ``= ||P_A - P_B||_F / sqrt 2``
                                                       for equal dimensions
projection_distance    ``mean sin^2 theta_i``          ``[0, 1]``; ``= 1 - ||U_A^T U_B||_F^2 / k``
                                                       for equal dimensions ``k``
=====================  ==============================  ==========================================

with ``P = U U^T`` the orthogonal projector and ``U`` an orthonormal basis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg

from mcl.analysis.arrays import as_matrix

__all__ = [
    "pca_basis",
    "orthonormal_basis",
    "principal_angles",
    "geodesic_distance",
    "chordal_distance",
    "projection_distance",
    "distance_matrix",
    "DISTANCES",
]


def pca_basis(X: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` principal directions of the samples ``X``.

    Parameters
    ----------
    X : array ``[n, d]``, one sample per row; columns are centred here.
    k : number of directions, ``1 <= k <= min(n, d)``.

    Returns
    -------
    ndarray ``[d, k]``, float64
        Orthonormal columns: the right singular vectors of the centred ``X`` for the ``k``
        largest singular values, in decreasing order of explained variance. Signs are fixed
        deterministically: in each column the entry of largest absolute value (first one on
        ties) is positive. Directions beyond the rank of the centred data (at most
        ``n - 1``) span the null space in an arbitrary but deterministic way.
    """
    X = as_matrix(X, "X", "2-D [n, d]")
    n, d = X.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(f"k must be in [1, min(n, d)] = [1, {min(n, d)}], got {k}")
    Xc = X - X.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    U = vt[:k].T.copy()
    idx = np.argmax(np.abs(U), axis=0)
    signs = np.sign(U[idx, np.arange(k)])
    signs[signs == 0] = 1.0
    return U * signs


def orthonormal_basis(A: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``[d, r]`` of the column span of ``A [d, k]`` (``r`` = numerical rank).

    Uses :func:`scipy.linalg.orth` (SVD with the default rank tolerance), as
    :func:`scipy.linalg.subspace_angles` does. A 1-D ``A`` is one column.
    """
    return scipy.linalg.orth(as_matrix(A, "a basis", "2-D [d, k]", column=True))


def principal_angles(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Principal angles between the column spans of ``A [d, k_a]`` and ``B [d, k_b]``.

    Both inputs are orthonormalised first (:func:`orthonormal_basis`). With ``Q_A``, ``Q_B``
    the orthonormal bases and ``k_a >= k_b`` (else the roles are swapped), the cosines are
    the singular values of ``Q_A^T Q_B`` and the sines are the singular values of
    ``Q_B - Q_A Q_A^T Q_B``; the angle is ``arctan2(sin, cos)``, accurate for small and for
    near-right angles alike.

    Returns
    -------
    ndarray ``[min(r_a, r_b)]``
        Angles in radians in ``[0, pi/2]``, in **descending** order (as
        :func:`scipy.linalg.subspace_angles`), ``r`` being the numerical ranks (``= k`` for
        full-rank inputs). Empty when either input has rank 0.
    """
    QA = orthonormal_basis(A)
    QB = orthonormal_basis(B)
    if QA.shape[0] != QB.shape[0]:
        raise ValueError(f"A and B must have the same number of rows, got {QA.shape[0]} and {QB.shape[0]}")
    if QA.shape[1] < QB.shape[1]:
        QA, QB = QB, QA
    m = QB.shape[1]
    if m == 0:
        return np.zeros(0)
    M = QA.T @ QB  # [k_a, k_b]
    cos = np.linalg.svd(M, compute_uv=False)[:m]  # descending cosines = ascending angles
    sin = np.linalg.svd(QB - QA @ M, compute_uv=False)[:m]  # descending sines = descending angles
    cos = np.clip(cos[::-1], 0.0, 1.0)  # ascending cosines = descending angles
    sin = np.clip(sin, 0.0, 1.0)
    return np.arctan2(sin, cos)


def geodesic_distance(A: np.ndarray, B: np.ndarray) -> float:
    """Arc-length (geodesic) Grassmann distance ``sqrt(sum_i theta_i^2)`` in radians.

    Not normalised: ranges over ``[0, sqrt(m) pi/2]`` for ``m = min(k_a, k_b)`` angles.
    """
    theta = principal_angles(A, B)
    return float(np.sqrt(np.sum(theta**2)))


def chordal_distance(A: np.ndarray, B: np.ndarray) -> float:
    """Chordal (projection-Frobenius) distance ``sqrt(sum_i sin^2 theta_i)``.

    Equals ``||P_A - P_B||_F / sqrt(2)`` for subspaces of equal dimension (``P`` the
    orthogonal projectors). Not normalised: ranges over ``[0, sqrt(m)]``.
    """
    theta = principal_angles(A, B)
    return float(np.sqrt(np.sum(np.sin(theta) ** 2)))


def projection_distance(A: np.ndarray, B: np.ndarray) -> float:
    """Normalised projection distance ``mean_i sin^2 theta_i`` in ``[0, 1]``.

    0 for identical subspaces, 1 for orthogonal ones. For equal dimension ``k`` it equals
    ``1 - ||U_A^T U_B||_F^2 / k`` (``U`` orthonormal bases), i.e. the squared chordal
    distance divided by ``k``. NaN when there are no angles (a rank-0 input).
    """
    theta = principal_angles(A, B)
    if theta.size == 0:
        return float("nan")
    return float(np.mean(np.sin(theta) ** 2))


DISTANCES = {
    "geodesic": geodesic_distance,
    "chordal": chordal_distance,
    "projection": projection_distance,
}


def distance_matrix(bases: Sequence[np.ndarray], kind: str = "geodesic") -> np.ndarray:
    """Pairwise subspace distances.

    Parameters
    ----------
    bases : sequence of ``T`` basis matrices ``[d, k_t]`` (same ``d``)
    kind : ``"geodesic"``, ``"chordal"`` or ``"projection"`` (see the module docstring)

    Returns
    -------
    ndarray ``[T, T]``
        Symmetric with zero diagonal; ``D[i, j]`` is the distance between ``bases[i]`` and
        ``bases[j]``.
    """
    try:
        fn = DISTANCES[kind]
    except KeyError:
        raise ValueError(f"unknown distance kind {kind!r}; expected one of {sorted(DISTANCES)}") from None
    Qs = [orthonormal_basis(B) for B in bases]  # orthonormalise once; orth of orthonormal is a no-op in span
    T = len(Qs)
    D = np.zeros((T, T))
    for i in range(T):
        for j in range(i + 1, T):
            D[i, j] = D[j, i] = fn(Qs[i], Qs[j])
    return D
