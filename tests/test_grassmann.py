"""Tests for mcl.analysis.grassmann (PCA bases, principal angles, subspace distances)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from mcl.analysis.grassmann import (
    chordal_distance,
    distance_matrix,
    geodesic_distance,
    pca_basis,
    principal_angles,
    projection_distance,
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
