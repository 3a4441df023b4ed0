"""Tests for mcl.measures.grassmann (PCA bases, principal angles, subspace distances)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from mcl.measures.grassmann import (
    PAIR_TYPES,
    chordal_distance,
    distance_matrix,
    geodesic_distance,
    pair_types,
    pca_basis,
    principal_angles,
    projection_distance,
    remove_shared_components,
    stratified_spearman,
    subspace_similarity,
)


def _e(d: int, i: int) -> np.ndarray:
    v = np.zeros(d)
    v[i] = 1.0
    return v


def _tilted_pair(t: float, d: int = 5):
    """span{e1, e2} and span{cos t e1 + sin t e3, e2}: principal angles (t, 0)."""
    A = np.stack([_e(d, 0), _e(d, 1)], axis=1)
    B = np.stack([np.cos(t) * _e(d, 0) + np.sin(t) * _e(d, 2), _e(d, 1)], axis=1)
    return A, B


@pytest.mark.parametrize("t", [0.3, 1.2, np.pi / 2])
def test_known_angles(t):
    A, B = _tilted_pair(t)
    np.testing.assert_allclose(principal_angles(A, B), [t, 0.0], atol=1e-12)
    # non-orthonormal bases of the same spans give the same angles
    G = np.array([[2.0, 1.0], [0.5, -3.0]])
    np.testing.assert_allclose(principal_angles(A @ G, 7.0 * B @ G.T), [t, 0.0], atol=1e-12)


def test_tiny_angle_is_resolved():
    t = 1e-9
    A, B = _tilted_pair(t)
    theta = principal_angles(A, B)
    assert theta[0] == pytest.approx(t, rel=1e-6)
    assert theta[1] == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("ka, kb", [(4, 4), (5, 3), (2, 6), (1, 1)])
def test_agrees_with_scipy_on_random_subspaces(ka, kb):
    rng = np.random.default_rng(ka * 10 + kb)
    for _ in range(5):
        A = rng.standard_normal((12, ka)) @ rng.standard_normal((ka, ka))  # non-orthonormal
        B = rng.standard_normal((12, kb)) * rng.uniform(0.1, 10.0, size=kb)
        ours = principal_angles(A, B)
        ref = scipy.linalg.subspace_angles(A, B)
        assert ours.shape == (min(ka, kb),)
        assert np.all(np.diff(ours) <= 1e-15)  # descending
        np.testing.assert_allclose(ours, ref, atol=1e-8)


def test_distance_conventions_known_case():
    t = 0.4
    A, B = _tilted_pair(t)
    assert geodesic_distance(A, B) == pytest.approx(t)
    assert chordal_distance(A, B) == pytest.approx(np.sin(t))
    assert projection_distance(A, B) == pytest.approx(np.sin(t) ** 2 / 2)
    # identical and orthogonal subspaces
    assert geodesic_distance(A, A @ np.array([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(0.0, abs=1e-7)
    C = np.stack([_e(5, 2), _e(5, 3)], axis=1)
    assert projection_distance(A, C) == pytest.approx(1.0)
    assert geodesic_distance(A, C) == pytest.approx(np.sqrt(2) * np.pi / 2)
    assert chordal_distance(A, C) == pytest.approx(np.sqrt(2))


def test_distance_identities_on_random_equal_dim_subspaces():
    rng = np.random.default_rng(11)
    k = 3
    UA = np.linalg.qr(rng.standard_normal((10, k)))[0]
    UB = np.linalg.qr(rng.standard_normal((10, k)))[0]
    PA, PB = UA @ UA.T, UB @ UB.T
    assert chordal_distance(UA, UB) == pytest.approx(np.linalg.norm(PA - PB) / np.sqrt(2))
    assert projection_distance(UA, UB) == pytest.approx(1 - np.linalg.norm(UA.T @ UB) ** 2 / k)
    theta = scipy.linalg.subspace_angles(UA, UB)
    assert geodesic_distance(UA, UB) == pytest.approx(np.linalg.norm(theta))


def test_pca_basis_recovers_planted_subspace():
    rng = np.random.default_rng(12)
    d, n = 20, 500
    basis = np.linalg.qr(rng.standard_normal((d, 2)))[0]
    latent = rng.standard_normal((n, 2)) * np.array([5.0, 2.0])
    X = latent @ basis.T + 0.05 * rng.standard_normal((n, d)) + 10.0
    U = pca_basis(X, 2)
    assert U.shape == (d, 2)
    np.testing.assert_allclose(U.T @ U, np.eye(2), atol=1e-12)
    assert np.max(principal_angles(U, basis)) < 0.05
    # ordered by variance: the first direction is the high-variance latent one
    assert abs(U[:, 0] @ basis[:, 0]) > 0.99
    # deterministic signs: the largest-magnitude entry of each column is positive
    assert np.all(U[np.argmax(np.abs(U), axis=0), [0, 1]] > 0)
    np.testing.assert_allclose(pca_basis(-X, 2), U, atol=1e-10)
    with pytest.raises(ValueError):
        pca_basis(X, 21)


@pytest.mark.parametrize("kind", ["geodesic", "chordal", "projection"])
def test_distance_matrix(kind):
    rng = np.random.default_rng(13)
    bases = [rng.standard_normal((8, k)) for k in (2, 3, 2, 4)]
    D = distance_matrix(bases, kind)
    fn = {"geodesic": geodesic_distance, "chordal": chordal_distance, "projection": projection_distance}[kind]
    assert D.shape == (4, 4)
    np.testing.assert_allclose(D, D.T)
    np.testing.assert_allclose(np.diag(D), 0.0)
    for i in range(4):
        for j in range(i + 1, 4):
            assert D[i, j] == pytest.approx(fn(bases[i], bases[j]), abs=1e-12)
            assert D[i, j] > 0


def test_distance_matrix_rejects_unknown_kind():
    with pytest.raises(ValueError):
        distance_matrix([np.eye(3)[:, :1]], "cosine")


# ---------------------------------------------------------------------------
# task subspaces on probe-like synthetic data


def _jaccard(L: np.ndarray) -> np.ndarray:
    L = L.astype(bool)
    return (L[:, None] & L[None]).sum(-1) / np.maximum((L[:, None] | L[None]).sum(-1), 1)


def _probe_like(seed: int, planted: bool, T: int = 24, E: int = 16, d: int = 128, P: int = 8, m: int = 4,
                shared: float = 10.0):
    """Probe-split-like task representations.

    T tasks (the first half train label sets of 2 primitives, the rest test sets of 3), E episodes
    each; episode j has the same inputs in every task, which drive an m-dimensional shared
    component of scale ``shared``. On top, a task-specific part: for a test task with ``planted``,
    random coefficients on one direction per primitive of its label set (so tasks sharing
    primitives share directions); otherwise on two directions of the task's own.
    Returns (reps, labels [T, P], is_test [T]).
    """
    rng = np.random.default_rng(seed)
    is_test = np.arange(T) >= T // 2
    labels = np.zeros((T, P), dtype=np.int64)
    for t in range(T):
        labels[t, rng.choice(P, 3 if is_test[t] else 2, replace=False)] = 1
    U = np.linalg.qr(rng.standard_normal((d, P + m + 2 * T)))[0]
    prim, inputs_dirs, own = U[:, :P], U[:, P:P + m], U[:, P + m:]
    inputs = shared * rng.standard_normal((E, m))
    reps = []
    for t in range(T):
        D = prim[:, labels[t].astype(bool)] if planted and is_test[t] else own[:, 2 * t:2 * t + 2]
        specific = rng.standard_normal((E, D.shape[1])) @ D.T
        reps.append(inputs @ inputs_dirs.T + specific + 0.3 * rng.standard_normal((E, d)))
    return reps, labels, is_test


def test_remove_shared_components_projects_out_pooled_directions():
    reps, _, _ = _probe_like(0, planted=True)
    out = remove_shared_components(reps, 4)
    assert len(out) == len(reps) and all(o.shape == r.shape for o, r in zip(out, reps))
    centred = [r - r.mean(axis=0) for r in reps]
    V = pca_basis(np.vstack(centred), 4)
    for o, c in zip(out, centred):
        np.testing.assert_allclose(o.mean(axis=0), 0.0, atol=1e-10)  # each task centred on its own mean
        np.testing.assert_allclose(o @ V, 0.0, atol=1e-9)  # orthogonal to the removed directions
        np.testing.assert_allclose(o, c - c @ V @ V.T, atol=1e-10)
    # the removed directions are the planted shared inputs' span
    U = np.linalg.svd(np.vstack(centred), full_matrices=False)[2][:4].T
    assert np.max(principal_angles(U, V)) < 1e-8
    zero = remove_shared_components(reps, 0)
    for z, c in zip(zero, centred):
        np.testing.assert_allclose(z, c, atol=1e-12)
    # a task mean is not a shared component: offsets between tasks are kept out of the pooled PCA
    shifted = [r + 100.0 * (t % 2) for t, r in enumerate(reps)]
    for a, b in zip(remove_shared_components(shifted, 4), out):
        np.testing.assert_allclose(a, b, atol=1e-8)
    with pytest.raises(ValueError):
        remove_shared_components(reps, 128)
    with pytest.raises(ValueError):
        remove_shared_components([reps[0], reps[1][:, :5]], 1)
    with pytest.raises(ValueError):
        remove_shared_components([], 1)


def test_shared_input_component_no_longer_saturates_subspace_similarity():
    reps, _, _ = _probe_like(1, planted=True)
    iu = np.triu_indices(len(reps), k=1)
    before = subspace_similarity(reps, 2)
    after = subspace_similarity(remove_shared_components(reps, 4), 2)
    assert before[iu].mean() > 0.98  # every task's top-2 PCs are the shared input component
    assert after[iu].mean() < 0.3
    np.testing.assert_allclose(np.diag(after), 1.0, atol=1e-12)
    np.testing.assert_allclose(before, 1.0 - distance_matrix([pca_basis(r, 2) for r in reps], "projection"))


def _test_test_rho(seed: int, planted: bool, n_components: int = 4) -> dict:
    reps, labels, is_test = _probe_like(seed, planted)
    if n_components:
        reps = remove_shared_components(reps, n_components)
    return stratified_spearman(subspace_similarity(reps, 2), _jaccard(labels), pair_types(is_test))


def test_planted_test_test_dependence_on_overlap_is_detected():
    res = [_test_test_rho(seed, planted=True) for seed in range(4)]
    tt = np.array([r["rho_test_test"] for r in res])
    assert tt.mean() > 0.5 and tt.min() > 0.3
    assert all(r["n_test_test"] == 66 and r["n_train_test"] == 144 and r["n_train_train"] == 66 for r in res)
    assert abs(np.mean([r["rho_train_train"] for r in res])) < 0.2  # nothing planted among train tasks
    # without removing the shared component the dependence is invisible (every pair ~ 1)
    raw = np.array([_test_test_rho(seed, planted=True, n_components=0)["rho_test_test"] for seed in range(4)])
    assert raw.mean() < 0.3


def test_without_planted_dependence_stays_near_null():
    res = [_test_test_rho(seed, planted=False) for seed in range(8)]
    for key in ("rho_test_test", "rho_train_train", "rho", "rho_pooled"):
        assert abs(np.mean([r[key] for r in res])) < 0.12, key


def test_pair_types():
    types = pair_types(np.array([False, True, False, True]))
    np.testing.assert_array_equal(types, [[-1, 1, 0, 1],
                                          [1, -1, 1, 2],
                                          [0, 1, -1, 1],
                                          [1, 2, 1, -1]])
    assert PAIR_TYPES[types[0, 2]] == "train_train" and PAIR_TYPES[types[1, 3]] == "test_test"
    np.testing.assert_array_equal(pair_types([0, 1]), [[-1, 1], [1, -1]])
    with pytest.raises(ValueError):
        pair_types(np.array([0, 2]))
    with pytest.raises(ValueError):
        pair_types(np.zeros((2, 2), dtype=bool))


def test_stratified_spearman_hand_made():
    # 3 train tasks, 3 test: 3 train-train, 9 train-test, 3 test-test pairs
    rng = np.random.default_rng(5)
    types = pair_types(np.array([False, False, False, True, True, True]))
    A = rng.random((6, 6))
    jac = (A + A.T) / 2
    np.fill_diagonal(jac, 1.0)
    sim = np.where(types == 0, jac, -jac)  # +1 within train-train, -1 within train-test
    sim = np.where(types == 2, 0.5, sim)  # constant within test-test: undefined
    np.fill_diagonal(sim, 1.0)
    r = stratified_spearman(sim, jac, types)
    assert r["rho_train_train"] == pytest.approx(1.0) and r["rho_train_test"] == pytest.approx(-1.0)
    assert np.isnan(r["rho_test_test"])
    assert (r["n_train_train"], r["n_train_test"], r["n_test_test"]) == (3, 9, 3)
    assert r["rho"] == pytest.approx((3 * 1.0 + 9 * -1.0) / 12)  # pairs-weighted mean of the defined strata
    # offsets between strata drive the pooled correlation, not the stratified one
    shifted = sim + np.where(types == 1, 10.0, 0.0)  # lift every train-test pair above the rest
    r2 = stratified_spearman(shifted, jac, types)
    assert r2["rho"] == pytest.approx(r["rho"]) and r2["rho_pooled"] != pytest.approx(r["rho_pooled"])
    # a NaN similarity drops its pair
    sim_nan = sim.copy()
    sim_nan[0, 1] = sim_nan[1, 0] = np.nan
    r3 = stratified_spearman(sim_nan, jac, types)
    assert r3["n_train_train"] == 2 and np.isnan(r3["rho_train_train"])  # 2 pairs: undefined
    assert r3["rho"] == pytest.approx(-1.0)
    assert set(r) == {"rho", "rho_pooled"} | {f"{k}_{n}" for k in ("rho", "n") for n in PAIR_TYPES}
    with pytest.raises(ValueError):
        stratified_spearman(sim[:5, :5], jac, types)
