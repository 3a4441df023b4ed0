"""Tests for mcl.measures.probes (logistic probes, AUROC, F1)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

from mcl.measures.probes import f1_score, fit_logistic, predict_proba, probe_primitives
from mcl.measures.rank import auroc


def _planted(rng: np.random.Generator, n: int, d: int = 20, strength: float = 2.0):
    y = rng.random(n) < 0.4
    direction = np.zeros(d)
    direction[3] = 1.0
    X = rng.standard_normal((n, d)) + strength * np.outer(y, direction)
    return X, y


def _brute_auroc(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y.astype(bool)], s[~y.astype(bool)]
    diff = pos[:, None] - neg[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def test_probe_recovers_planted_signal():
    rng = np.random.default_rng(0)
    Xtr, ytr = _planted(rng, 400)
    Xte, yte = _planted(rng, 400)
    model = fit_logistic(Xtr, ytr)
    prob = predict_proba(model, Xte)
    assert prob.shape == (400,)
    assert np.all((prob > 0) & (prob < 1))
    assert auroc(prob, yte) > 0.9
    assert f1_score(prob >= 0.5, yte) > 0.7
    w, _ = model
    assert np.argmax(np.abs(w)) == 3


def test_probe_on_pure_noise_is_chance():
    rng = np.random.default_rng(1)
    aucs = []
    for _ in range(5):
        Xtr, Xte = rng.standard_normal((300, 20)), rng.standard_normal((300, 20))
        ytr, yte = rng.random(300) < 0.5, rng.random(300) < 0.5
        aucs.append(auroc(predict_proba(fit_logistic(Xtr, ytr), Xte), yte))
    assert abs(np.mean(aucs) - 0.5) < 0.06


def test_fit_reaches_the_regularised_optimum():
    rng = np.random.default_rng(2)
    X, y = _planted(rng, 200, d=6, strength=1.0)
    X = X * np.array([1.0, 100.0, 0.01, 1.0, 5.0, 1.0]) + 3.0
    l2 = 0.05
    w, b = fit_logistic(X, y, l2=l2)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    Z = (X - mean) / scale
    v, c = w * scale, b + mean @ w  # standardised-space parameters
    r = scipy.special.expit(Z @ v + c) - y
    grad_v = Z.T @ r / len(y) + l2 * v
    grad_c = r.mean()
    assert np.max(np.abs(grad_v)) < 1e-4
    assert abs(grad_c) < 1e-4


def test_fit_is_deterministic_and_scale_invariant():
    rng = np.random.default_rng(3)
    X, y = _planted(rng, 200)
    w1, b1 = fit_logistic(X, y)
    w2, b2 = fit_logistic(X, y)
    np.testing.assert_array_equal(w1, w2)
    assert b1 == b2
    # standardisation makes the probe's predictions invariant to per-feature rescaling
    s = np.linspace(0.001, 1000.0, X.shape[1])
    p1 = predict_proba((w1, b1), X)
    p2 = predict_proba(fit_logistic(X * s, y), X * s)
    np.testing.assert_allclose(p1, p2, atol=1e-4)


def test_fit_handles_constant_feature_and_rejects_single_class():
    rng = np.random.default_rng(4)
    X, y = _planted(rng, 100, d=4)
    X[:, 0] = 7.0
    w, b = fit_logistic(X, y)
    assert np.all(np.isfinite(w)) and np.isfinite(b)
    with pytest.raises(ValueError):
        fit_logistic(X, np.ones(100))


def test_auroc_matches_brute_force_with_ties():
    rng = np.random.default_rng(5)
    for _ in range(5):
        s = rng.integers(0, 4, size=60).astype(float)  # many ties
        y = rng.random(60) < 0.3
        assert auroc(s, y) == pytest.approx(_brute_auroc(s, y), abs=1e-12)


def test_auroc_edge_cases():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([1, 2, 3], [0, 1, 1]) == 1.0
    assert auroc([3, 2, 1], [0, 1, 1]) == 0.0
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert np.isnan(auroc([1, 2, 3], [1, 1, 1]))
    assert np.isnan(auroc([1, 2, 3], [0, 0, 0]))


def test_f1_score():
    pred = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    y = np.array([1, 0, 1, 0, 1, 0])
    # TP = 2, FP = 1, FN = 1
    assert f1_score(pred, y) == pytest.approx(4 / 6)
    assert f1_score(y, y) == 1.0
    assert f1_score(np.zeros(4), np.ones(4)) == 0.0
    assert np.isnan(f1_score(np.zeros(4), np.zeros(4)))


def test_probe_primitives():
    rng = np.random.default_rng(6)
    n, d = 300, 16
    Ytr = (rng.random((n, 3)) < 0.4).astype(np.float32)
    Yte = (rng.random((n, 3)) < 0.4).astype(np.float32)
    Yte[:, 2] = 0  # single class in test: not scored
    W = np.zeros((3, d))
    W[0, 0] = 3.0  # primitive "a" carried by feature 0; "b" by nothing
    W[2, 1] = 3.0
    Xtr = rng.standard_normal((n, d)) + Ytr @ W
    Xte = rng.standard_normal((n, d)) + Yte @ W
    out = probe_primitives(Xtr, Ytr, Xte, Yte, names=["a", "b", "c"])
    per = out["per_primitive"]
    assert list(per) == ["a", "b", "c"] == out["names"]
    assert per["a"]["auroc"] > 0.9 and per["a"]["f1"] > 0.8
    assert abs(per["b"]["auroc"] - 0.5) < 0.15
    assert per["c"]["fitted"] and not per["c"]["scored"] and np.isnan(per["c"]["auroc"])
    assert out["n_scored"] == 2
    assert out["macro_auroc"] == pytest.approx((per["a"]["auroc"] + per["b"]["auroc"]) / 2)
    assert out["macro_f1"] == pytest.approx((per["a"]["f1"] + per["b"]["f1"]) / 2)
    assert per["a"]["n_pos_test"] == int(Yte[:, 0].sum()) and per["a"]["n_test"] == n
