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

Task subspaces (H3)
-------------------
On the probe split every task (program) has ``E`` episodes and episode ``j`` has the same
inputs in every task, so the representations of all tasks share an input-driven component.
When it dominates the within-task variance, every task's top-``k`` principal directions are
that shared component and :func:`subspace_similarity` is about 1 for every pair, whatever
the labels. :func:`remove_shared_components` projects it out before the per-task PCA.
:func:`pair_types` and :func:`stratified_spearman` then relate a task x task similarity
(subspace or CKA) to label overlap within each kind of pair (train-train, train-test,
test-test), so that a difference between kinds of pairs is not read as a dependence on
overlap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg

from mcl.measures.arrays import as_matrix
from mcl.measures.rank import spearman

__all__ = [
    "pca_basis",
    "orthonormal_basis",
    "principal_angles",
    "geodesic_distance",
    "chordal_distance",
    "projection_distance",
    "distance_matrix",
    "DISTANCES",
    "task_reps",
    "remove_shared_components",
    "subspace_similarity",
    "PAIR_TYPES",
    "pair_types",
    "stratified_spearman",
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


# ---------------------------------------------------------------------------
# task subspaces: shared components, similarity, pair strata


def task_reps(reps: Sequence[np.ndarray] | np.ndarray, T: int | None = None, E: int | None = None) -> list[np.ndarray]:
    """Validated float64 ``[E_t, d]`` matrices with one common width ``d`` (at least one task).

    ``reps``: one array ``[E_t, d]`` per task; or, with ``T`` and ``E``, one program-major array
    (rows ``t * E ... (t + 1) * E - 1`` are task ``t``'s episodes, as in the probe split) cut into
    ``T`` tasks of ``E`` rows.
    """
    if T is not None:
        reps = [reps[i * E:(i + 1) * E] for i in range(T)]
    mats = [as_matrix(R, f"reps[{i}]", "2-D [E, d]") for i, R in enumerate(reps)]
    if not mats:
        raise ValueError("reps is empty")
    d = mats[0].shape[1]
    for i, R in enumerate(mats):
        if R.shape[1] != d:
            raise ValueError(f"all representations need the same width; reps[0] has {d}, reps[{i}] has {R.shape[1]}")
    return mats


def remove_shared_components(reps: Sequence[np.ndarray], n_components: int) -> list[np.ndarray]:
    """Project the top principal directions shared by all tasks out of every task's representation.

    Parameters
    ----------
    reps : sequence of ``T`` arrays ``[E_t, d]``, one per task (rows: that task's episodes)
    n_components : number ``c`` of pooled principal directions to remove,
        ``0 <= c < d`` and ``c <= sum_t E_t``

    Returns
    -------
    list of ``T`` arrays ``[E_t, d]``, float64
        ``(R_t - mean_t) (I - V V^T)``: each task centred on its own mean, then projected onto
        the orthogonal complement of ``V [d, c]``, the top-``c`` principal directions
        (:func:`pca_basis`) of the centred representations of all tasks stacked. ``c = 0``
        only centres.

    Notes
    -----
    Each task is centred before pooling, so ``V`` describes *within-task* variation: the
    pooled covariance is the sum of the task covariances, in which a component present in
    every task (the input-driven one: the same inputs in every task) carries ``T`` times the
    weight of a direction specific to one task. Differences between task means are kept
    (they are task-specific, and :func:`pca_basis` centres each task anyway). A direction
    used by *many* tasks -- e.g. one per primitive -- is also pooled variance: choose ``c``
    as the number of leading pooled directions that stand out (a scree of the pooled
    singular values), not larger, or the label-driven signal is removed as well.

    A whitening variant (rescale the pooled covariance to the identity instead of removing
    ``c`` directions) was tried on synthetic probe-like data (``T = 24``, ``E = 16``,
    ``d = 128``): with ``E << d`` it makes every task's sample covariance nearly isotropic, so
    the per-task top directions follow sampling noise and a planted dependence on label
    overlap is detected about half as strongly. It is not provided.
    """
    mats = task_reps(reps)
    d = mats[0].shape[1]
    n = sum(R.shape[0] for R in mats)
    if not 0 <= n_components < d or n_components > n:
        raise ValueError(f"n_components must be in [0, min(d - 1, total rows)] = [0, {min(d - 1, n)}], "
                         f"got {n_components}")
    centred = [R - R.mean(axis=0, keepdims=True) for R in mats]
    if n_components == 0:
        return centred
    V = pca_basis(np.vstack(centred), n_components)  # [d, c]
    return [C - (C @ V) @ V.T for C in centred]


def subspace_similarity(reps: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Task x task similarity of top-``k`` PCA subspaces: ``1 - projection distance``.

    ``reps``: ``T`` arrays ``[E_t, d]``. Returns ``[T, T]`` with 1 on the diagonal;
    ``S[i, j] = mean cos^2`` of the principal angles between :func:`pca_basis` ``(reps[i], k)``
    and ``(reps[j], k)`` (1: same subspace, about ``k / d`` for random ones).
    """
    mats = task_reps(reps)
    return 1.0 - distance_matrix([pca_basis(R, k) for R in mats], "projection")


PAIR_TYPES = ("train_train", "train_test", "test_test")


def pair_types(is_test: np.ndarray) -> np.ndarray:
    """Kind of each task pair from whether each task's label set is a test label set.

    Parameters
    ----------
    is_test : bool ``[T]``

    Returns
    -------
    int64 ``[T, T]``, symmetric
        0 for two train tasks, 1 for a train and a test task, 2 for two test tasks (the
        index into :data:`PAIR_TYPES`); -1 on the diagonal.
    """
    t = np.asarray(is_test)
    if t.ndim != 1 or (t.dtype != bool and not np.all(np.isin(t, (0, 1)))):
        raise ValueError(f"is_test must be a 1-D boolean array, got shape {t.shape} and dtype {t.dtype}")
    t = t.astype(np.int64)
    types = t[:, None] + t[None, :]
    np.fill_diagonal(types, -1)
    return types


def stratified_spearman(sim: np.ndarray, jac: np.ndarray, types: np.ndarray) -> dict:
    """Spearman correlation of a task-pair similarity with label overlap, within each kind of pair.

    Parameters
    ----------
    sim : ``[T, T]`` similarity of tasks (e.g. :func:`subspace_similarity` or CKA); NaN allowed
    jac : ``[T, T]`` label Jaccard overlap of the tasks
    types : ``[T, T]`` int pair kinds from :func:`pair_types`

    Returns
    -------
    dict
        For each ``name`` of :data:`PAIR_TYPES`: ``rho_<name>``, the Spearman correlation
        (:func:`mcl.stats.intervals.spearman`) of ``jac`` and ``sim`` over the pairs
        ``i < j`` of that kind (NaN with fewer than 3 pairs or a constant variable), and
        ``n_<name>``, the number of those pairs with a finite similarity. ``rho``: the
        stratified statistic, the mean of the defined within-kind correlations weighted by
        their ``n``, NaN when none is defined. ``rho_pooled``: Spearman over all pairs
        ignoring kinds (for comparison only: a difference in both overlap and similarity
        between kinds of pairs enters it).
    """
    sim = np.asarray(sim, dtype=np.float64)  # NaN allowed (pairs dropped), not inf
    if np.isinf(sim).any():
        raise ValueError("sim contains infinite values")
    jac = as_matrix(jac, "jac", "[T, T]")
    types = np.asarray(types)
    T = jac.shape[0]
    if jac.shape != (T, T) or sim.shape != (T, T) or types.shape != (T, T):
        raise ValueError(f"sim, jac and types must be square of one shape, got {sim.shape}, {jac.shape}, {types.shape}")
    i, j = np.triu_indices(T, k=1)
    s, J, ty = sim[i, j], jac[i, j], types[i, j]
    if not np.all(np.isin(ty, (0, 1, 2))):
        raise ValueError("types off the diagonal must be 0, 1 or 2 (see pair_types)")
    out: dict = {}
    rhos, weights = [], []
    for code, name in enumerate(PAIR_TYPES):
        keep = ty == code
        rho = spearman(J[keep], s[keep])
        n = int(np.sum(keep & np.isfinite(s)))
        out[f"rho_{name}"] = rho
        out[f"n_{name}"] = n
        if np.isfinite(rho):
            rhos.append(rho)
            weights.append(n)
    out["rho"] = float(np.average(rhos, weights=weights)) if rhos else float("nan")
    out["rho_pooled"] = spearman(J, s)
    return out
