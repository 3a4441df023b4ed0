"""Tests for mcl.analysis.features (activation statistics and unit selectivity)."""

from __future__ import annotations

import numpy as np
import pytest

from mcl.analysis.features import (
    activation_frequency,
    dead_units,
    monosemanticity,
    most_selective_units,
    selectivity,
    top_activating,
)
from mcl.analysis.probes import auroc

Z_HAND = np.array(
    [
        [0.0, 1.0, 0.0, 2.0],
        [0.0, 0.0, 0.0, 3.0],
        [0.0, 2.0, -1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def test_frequencies_and_dead_units_on_hand_made_codes():
    np.testing.assert_allclose(activation_frequency(Z_HAND), [0.0, 0.5, 0.0, 0.75])
    np.testing.assert_array_equal(dead_units(Z_HAND), [True, False, True, False])
    np.testing.assert_array_equal(dead_units(Z_HAND, threshold=2.5), [True, True, True, False])


def test_top_activating_order_and_ties():
    z = np.array([[1.0], [3.0], [3.0], [0.0], [2.0]])
    np.testing.assert_array_equal(top_activating(z, 0, 3), [1, 2, 4])
    np.testing.assert_array_equal(top_activating(z, 0, 10), [1, 2, 4, 0, 3])
    np.testing.assert_array_equal(top_activating(Z_HAND, 3, 2), [1, 0])


def _planted_codes(seed: int = 0):
    rng = np.random.default_rng(seed)
    N, s, P = 400, 32, 4
    Y = (rng.random((N, P)) < 0.3).astype(np.int8)
    z = np.maximum(rng.standard_normal((N, s)) - 0.5, 0.0)
    z[:, 7] = np.maximum(rng.standard_normal(N) - 1.0 + 3.0 * Y[:, 2], 0.0)  # unit 7 fires for primitive 2
    z[:, 11] = 0.0  # dead unit
    return z, Y


def test_selectivity_finds_planted_unit():
    z, Y = _planted_codes()
    sel = selectivity(z, Y)
    assert sel.shape == (32, 4)
    assert np.all(np.isnan(sel[11]))
    assert np.nanargmax(sel[:, 2]) == 7 and sel[7, 2] > 0.95
    others = np.delete(sel[:, 2], [7, 11])
    assert np.all(np.abs(others - 0.5) < 0.15)
    # agrees with the reference AUROC
    for u, p in [(7, 2), (0, 1), (5, 3)]:
        assert sel[u, p] == pytest.approx(auroc(z[:, u], Y[:, p]), abs=1e-12)
    mono = monosemanticity(sel)
    assert mono[2] == pytest.approx(sel[7, 2])
    assert np.all(mono[[0, 1, 3]] < 0.8)
    top = most_selective_units(sel, per_primitive=2)
    assert len(top) == 8
    assert top[4][:2] == (2, 7) and top[4][2] == pytest.approx(sel[7, 2])
    assert [t[0] for t in top] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert top[4][2] >= top[5][2]


def test_selectivity_single_class_column_is_nan():
    z, Y = _planted_codes(1)
    Y[:, 0] = 1
    sel = selectivity(z, Y)
    assert np.all(np.isnan(sel[:, 0]))
    assert np.isnan(monosemanticity(sel)[0])
    assert all(p != 0 for p, _, _ in most_selective_units(sel))


def test_most_selective_units_ties_and_nan():
    sel = np.array([[0.7, np.nan], [0.9, np.nan], [0.9, 0.6]])
    assert most_selective_units(sel, per_primitive=2) == [(0, 1, 0.9), (0, 2, 0.9), (1, 2, 0.6)]
    np.testing.assert_allclose(monosemanticity(sel), [0.9, 0.6])


def test_top_activating_many_ties_is_index_ordered():
    rng = np.random.default_rng(3)
    v = rng.integers(0, 4, size=300).astype(float)
    z = np.stack([rng.random(300), v], axis=1)
    expected = np.lexsort((np.arange(300), -v))  # by value descending, then index ascending
    np.testing.assert_array_equal(top_activating(z, 1, 120), expected[:120])
