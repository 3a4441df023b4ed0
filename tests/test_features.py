"""Tests for mcl.measures.features (activation statistics and unit selectivity)."""

from __future__ import annotations

import numpy as np
import pytest

from mcl.measures.features import (
    activation_frequency,
    best_units,
    dead_units,
    heldout_monosemanticity,
    monosemanticity,
    most_selective_units,
    selectivity,
    top_activating,
    unit_counts,
)
from mcl.measures.rank import auroc

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


# ---------------------------------------------------------------------------
# live units, best units, held-out monosemanticity


def test_unit_counts_and_best_units():
    assert unit_counts(Z_HAND) == {"units": 4, "live": 2, "dead": 2}
    assert unit_counts(Z_HAND, threshold=2.5) == {"units": 4, "live": 1, "dead": 3}
    sel = np.array([[0.7, np.nan, np.nan], [0.9, np.nan, 0.2], [0.9, 0.6, np.nan]])
    np.testing.assert_array_equal(best_units(sel), [1, 2, 1])  # ties: lowest index
    np.testing.assert_array_equal(best_units(np.full((2, 2), np.nan)), [-1, -1])


def _noise_codes(rng, n: int, s: int, live: int) -> np.ndarray:
    """Sparse ReLU codes: ``live`` noise units, the other ``s - live`` dead."""
    z = np.zeros((n, s))
    z[:, :live] = np.maximum(rng.standard_normal((n, live)) - 0.5, 0.0)
    return z


def _labels(rng, n: int, P: int) -> np.ndarray:
    return (rng.random((n, P)) < 0.3).astype(np.int8)


def test_heldout_hand_made_choice_score_and_shared_units():
    rng = np.random.default_rng(20)
    N = 300
    Ys, Ye = _labels(rng, N, 3), _labels(rng, N, 3)

    def codes(Y):
        z = np.empty((N, 4))
        z[:, 0] = Y[:, 0] + Y[:, 1] + 0.1 * rng.random(N)  # polysemantic: primitives 0 and 1
        z[:, 1] = rng.random(N)  # noise
        z[:, 2] = Y[:, 2] + 0.5 * rng.random(N)
        z[:, 3] = 0.0  # dead on both
        return z

    zs, ze = codes(Ys), codes(Ye)
    ze_dead2 = ze.copy()
    ze_dead2[:, 2] = 0.0  # live where chosen, never active where scored
    r = heldout_monosemanticity(zs, Ys, ze, Ye, n_perm=99, seed=1)
    np.testing.assert_array_equal(r["unit"], [0, 0, 2])
    assert (r["n_units_used"], r["n_shared"]) == (2, 2)
    assert (r["live_units"], r["dead_units"], r["units"], r["n_perm"]) == (3, 1, 4, 99)
    for p, u in enumerate(r["unit"]):
        assert r["score"][p] == pytest.approx(auroc(ze[:, u], Ye[:, p]), abs=1e-12)
        assert r["selection_auroc"][p] == pytest.approx(auroc(zs[:, u], Ys[:, p]), abs=1e-12)
        assert r["p_value"][p] == pytest.approx(1 / 100)  # no permutation reaches a real detector
    assert r["mean"] == pytest.approx(np.mean(r["score"]))
    np.testing.assert_allclose(r["null_mean"], 0.5, atol=0.03)
    np.testing.assert_allclose(r["excess"], r["score"] - r["null_mean"])
    assert r["mean_excess"] == pytest.approx(np.mean(r["excess"])) and r["p_value_mean"] == pytest.approx(1 / 100)
    again = heldout_monosemanticity(zs, Ys, ze, Ye, n_perm=99, seed=1)
    np.testing.assert_array_equal(again["null_mean"], r["null_mean"])
    dead_eval = heldout_monosemanticity(zs, Ys, ze_dead2, Ye, n_perm=9)
    assert dead_eval["unit"][2] == 2 and dead_eval["score"][2] == 0.5  # constant on eval: chance
    with pytest.raises(ValueError):
        heldout_monosemanticity(zs, Ys, ze[:, :3], Ye)
    with pytest.raises(ValueError):
        heldout_monosemanticity(zs, Ys, ze, Ye[:, :2])
    with pytest.raises(ValueError):
        heldout_monosemanticity(zs, Ys, ze, Ye, n_perm=0)


def test_heldout_selection_finds_planted_unit_among_many_noise_units():
    rng = np.random.default_rng(21)
    s, P, planted, prim = 256, 6, 230, 2  # the planted unit is one of the otherwise dead ones

    def split(n):
        Y = _labels(rng, n, P)
        z = _noise_codes(rng, n, s, 200)  # 200 live noise units
        z[:, planted] = np.maximum(rng.standard_normal(n) - 1.0 + 1.0 * Y[:, prim], 0.0)  # moderately selective
        return z, Y

    (zs, Ys), (ze, Ye) = split(1000), split(500)
    r = heldout_monosemanticity(zs, Ys, ze, Ye, n_perm=200, seed=0)
    assert r["unit"][prim] == planted
    assert r["score"][prim] == pytest.approx(auroc(ze[:, planted], Ye[:, prim]), abs=1e-12)
    assert r["score"][prim] > 0.65 and r["p_value"][prim] < 0.01
    others = np.delete(np.arange(P), prim)
    assert np.all(np.abs(r["score"][others] - 0.5) < 0.1)  # chosen noise units score at chance on held-out data
    assert np.all(r["selection_auroc"][others] > r["score"][others])  # ... though they looked selective where chosen
    assert r["live_units"] == 201


def test_unit_count_advantage_of_test_set_selection_disappears_when_held_out():
    """Two arms without any signal, 24 vs 86 live noise units of 128: the test-set max grows with the
    number of units, the held-out score (and its excess over the permutation null) does not."""
    old, new, excess = {24: [], 86: []}, {24: [], 86: []}, {24: [], 86: []}
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        for live in (24, 86):
            zs, Ys = _noise_codes(rng, 600, 128, live), _labels(rng, 600, 8)
            ze, Ye = _noise_codes(rng, 300, 128, live), _labels(rng, 300, 8)
            old[live].append(np.mean(monosemanticity(selectivity(ze, Ye))))
            r = heldout_monosemanticity(zs, Ys, ze, Ye, n_perm=50, seed=seed)
            assert r["live_units"] == live
            new[live].append(r["mean"])
            excess[live].append(r["mean_excess"])
    assert np.mean(old[86]) - np.mean(old[24]) > 0.01  # about 0.015: more units, higher maximum
    assert np.mean(old[24]) > 0.54  # both well above chance
    assert abs(np.mean(new[86]) - np.mean(new[24])) < 0.008
    for live in (24, 86):
        assert abs(np.mean(new[live]) - 0.5) < 0.006
        assert abs(np.mean(excess[live])) < 0.006
