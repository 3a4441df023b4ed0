"""Tests for mcl.measures.cka (linear CKA, biased and debiased)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mcl.measures import cka
from mcl.measures.cka import cka_matrix, gram_linear_cka, linear_cka, pick_estimator


def _random_orthogonal(rng: np.random.Generator, p: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((p, p)))
    return q * np.sign(np.diag(r))


def _related_pair(rng: np.random.Generator, n: int = 120, p: int = 10, q: int = 6):
    X = rng.standard_normal((n, p))
    Y = X[:, :5] @ rng.standard_normal((5, q)) + 0.5 * rng.standard_normal((n, q))
    return X, Y


@pytest.mark.parametrize("debiased", [False, True])
def test_self_similarity_is_one(debiased):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 7)) + 3.0
    assert linear_cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("n, expected", [(16, 0.88), (256, 0.34)])
def test_biased_known_values_independent_gaussians(n, expected):
    rng = np.random.default_rng(1)
    vals = [linear_cka(rng.standard_normal((n, 128)), rng.standard_normal((n, 128))) for _ in range(8)]
    assert np.mean(vals) == pytest.approx(expected, abs=0.03)


def test_debiased_near_zero_for_independent_gaussians():
    rng = np.random.default_rng(2)
    vals = [linear_cka(rng.standard_normal((64, 128)), rng.standard_normal((64, 128)), debiased=True) for _ in range(20)]
    assert abs(np.mean(vals)) < 0.05
    # ... while the biased estimator is far from 0 on the same kind of data
    biased = linear_cka(rng.standard_normal((64, 128)), rng.standard_normal((64, 128)))
    assert biased > 0.5


def test_near_zero_for_independent_data_with_many_samples():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5000, 8))
    Y = rng.standard_normal((5000, 8))
    assert linear_cka(X, Y) < 0.01


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_transform_scaling_and_translation(debiased):
    rng = np.random.default_rng(4)
    X, Y = _related_pair(rng)
    ref = linear_cka(X, Y, debiased=debiased)
    Q = _random_orthogonal(rng, X.shape[1])
    assert linear_cka(X @ Q, Y, debiased=debiased) == pytest.approx(ref, abs=1e-10)
    assert linear_cka(3.7 * X, 0.01 * Y, debiased=debiased) == pytest.approx(ref, abs=1e-10)
    assert linear_cka(X + 5.0, Y - 2.0, debiased=debiased) == pytest.approx(ref, abs=1e-10)
    assert linear_cka(Y, X, debiased=debiased) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_not_invariant_to_general_invertible_map(debiased):
    rng = np.random.default_rng(5)
    X, Y = _related_pair(rng)  # Y depends on X's first 5 features only
    ref = linear_cka(X, Y, debiased=debiased)
    M = np.eye(X.shape[1])
    M[5:, 5:] *= 10.0  # blow up the features Y does not depend on; M is invertible
    M[0, 1] = 0.3
    assert abs(np.linalg.det(M)) > 1e-3
    changed = linear_cka(X @ M, Y, debiased=debiased)
    assert ref - changed > 0.2


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_space_form_agrees_with_gram_form(debiased):
    rng = np.random.default_rng(6)
    for n, p, q in [(30, 5, 9), (40, 60, 3), (12, 128, 128)]:
        X = rng.standard_normal((n, p)) + rng.standard_normal(p)
        Y = np.tanh(X[:, : min(p, q)].sum(axis=1, keepdims=True)) + rng.standard_normal((n, q))
        assert linear_cka(X, Y, debiased=debiased) == pytest.approx(gram_linear_cka(X, Y, debiased=debiased), abs=1e-10)


def test_debiased_differs_from_biased():
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((20, 30)), rng.standard_normal((20, 30))
    assert linear_cka(X, Y) - linear_cka(X, Y, debiased=True) > 0.3


def test_degenerate_inputs():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((10, 3))
    assert np.isnan(linear_cka(X, np.ones((10, 2))))
    assert np.isnan(linear_cka(X, np.ones((10, 2)), debiased=True))
    with pytest.raises(ValueError):
        linear_cka(X[:3], X[:3], debiased=True)
    with pytest.raises(ValueError):
        linear_cka(X, X[:5])
    # 1-D input is one feature
    assert linear_cka(X[:, 0], X[:, :1]) == pytest.approx(1.0)


def _debiased_self_hsic(X: np.ndarray) -> float:
    Xc = X - X.mean(axis=0)
    stats = cka._u_stats(Xc)
    return cka._hsic_u_feature(float(np.sum((Xc.T @ Xc) ** 2)), *stats, *stats, X.shape[0])


def _negative_self_hsic(rng: np.random.Generator, width: int) -> np.ndarray:
    """A representation whose debiased self-HSIC estimate comes out negative.

    One sample differs from n - 1 identical ones: the unbiased HSIC(K, K) is then exactly 0 and
    its floating-point value is +-rounding; draw until it is negative.
    """
    for _ in range(200):
        X = np.zeros((6, width))
        X[0] = 3.0 * rng.standard_normal(width)
        if _debiased_self_hsic(X) < 0.0:
            return X
    raise AssertionError("no representation with a negative self-HSIC estimate found")


def test_debiased_two_negative_self_hsic_is_nan():
    assert np.isnan(cka._ratio(0.5, -1.0, -2.0))  # positive product, undefined CKA
    assert np.isnan(cka._ratio(0.5, -1.0, 2.0)) and np.isnan(cka._ratio(0.5, 0.0, 2.0))
    assert cka._ratio(0.5, 1.0, 4.0) == pytest.approx(0.25)
    rng = np.random.default_rng(14)
    X, Y = _negative_self_hsic(rng, 3), _negative_self_hsic(rng, 2)
    assert _debiased_self_hsic(X) < 0.0 and _debiased_self_hsic(Y) < 0.0
    assert np.isnan(linear_cka(X, Y, debiased=True))
    M = cka_matrix([X, Y], debiased=True)
    assert np.all(np.isnan(M))  # the diagonal too: it would be -1 from a negative self term squared


def test_pick_estimator_rule():
    assert pick_estimator(16, 128) is True
    assert pick_estimator(1279, 128) is True
    assert pick_estimator(1280, 128) is False
    assert pick_estimator(10_000, 128) is False


@pytest.mark.parametrize("debiased", [False, True, None])
def test_cka_matrix_matches_pairwise(debiased):
    rng = np.random.default_rng(9)
    X, Y = _related_pair(rng, n=60)
    reps = [X, Y, X[:, :3] + 0.1 * rng.standard_normal((60, 3)), rng.standard_normal((60, 4))]
    M = cka_matrix(reps, debiased=debiased)
    use = pick_estimator(60, 10) if debiased is None else debiased
    assert M.shape == (4, 4)
    np.testing.assert_allclose(M, M.T)
    np.testing.assert_allclose(np.diag(M), 1.0, atol=1e-12)
    for i in range(4):
        for j in range(4):
            assert M[i, j] == pytest.approx(linear_cka(reps[i], reps[j], debiased=use), abs=1e-12)


def test_speed_large_n():
    rng = np.random.default_rng(10)
    X = rng.standard_normal((10_000, 128))
    Y = rng.standard_normal((10_000, 128))
    linear_cka(X, Y)
    t0 = time.perf_counter()
    linear_cka(X, Y)
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s on 2 cores; generous bound against noisy machines


def test_as_matrix_checks_shared_by_the_analyses():
    from mcl.measures.arrays import as_matrix
    from mcl.measures.grassmann import pca_basis
    from mcl.stats.intervals import seed_effect_ci

    assert as_matrix([1, 2, 3], "v", "2-D [n, p]", column=True).shape == (3, 1)
    assert as_matrix([[1, 2]], "m", "2-D [n, p]").dtype == np.float64
    with pytest.raises(ValueError, match=r"v must be 2-D \[n, p\], got shape \(3,\)"):
        as_matrix([1, 2, 3], "v", "2-D [n, p]")
    with pytest.raises(ValueError, match="m must be 2-D"):
        as_matrix(np.zeros((2, 2, 2)), "m", "2-D [n, p]", column=True)
    bad = np.ones((6, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="Y contains non-finite values"):
        linear_cka(np.ones((6, 3)), bad)
    with pytest.raises(ValueError, match="X contains non-finite values"):
        pca_basis(bad, 1)
    with pytest.raises(ValueError, match="share contains non-finite values"):
        seed_effect_ci(bad[:, 1], np.ones(6))
