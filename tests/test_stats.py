"""Tests for mcl.analysis.stats (paired bootstrap, t-test, verdicts, Spearman)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from mcl.analysis.stats import paired_bootstrap_ci, paired_t_test, spearman, verdict


def _arms(effect: float, seed: int = 0, n_seeds: int = 5, n_episodes: int = 40):
    rng = np.random.default_rng(seed)
    baseline = 0.6 + 0.05 * rng.standard_normal((n_seeds, 1)) + 0.1 * rng.standard_normal((n_seeds, n_episodes))
    share = baseline + effect + 0.05 * rng.standard_normal((n_seeds, n_episodes))
    return share, baseline


def test_clear_positive_effect_is_supported():
    share, baseline = _arms(0.2)
    res = paired_bootstrap_ci(share, baseline, n_boot=2000)
    assert res["effect"] == pytest.approx(np.mean(share - baseline))
    assert 0 < res["ci_low"] < res["effect"] < res["ci_high"]
    assert res["n_seeds"] == 5 and res["n_episodes"] == 40
    assert "hierarchical" in res["method"]
    assert verdict(res["ci_low"], res["ci_high"], +1) == "supported"


def test_clear_negative_effect_is_refuted():
    share, baseline = _arms(-0.2, seed=1)
    res = paired_bootstrap_ci(share, baseline, n_boot=2000)
    assert res["ci_high"] < 0
    assert verdict(res["ci_low"], res["ci_high"], +1) == "refuted"
    assert verdict(res["ci_low"], res["ci_high"], -1) == "supported"


def test_zero_mean_noise_is_inconclusive():
    rng = np.random.default_rng(2)
    baseline = rng.standard_normal((5, 40))
    noise = rng.standard_normal((5, 40))
    noise -= noise.mean()  # exactly zero mean effect
    res = paired_bootstrap_ci(baseline + noise, baseline, n_boot=2000)
    assert res["effect"] == pytest.approx(0.0, abs=1e-12)
    assert res["ci_low"] < 0 < res["ci_high"]
    assert verdict(res["ci_low"], res["ci_high"], +1) == "inconclusive"
    assert verdict(res["ci_low"], res["ci_high"], -1) == "inconclusive"


def test_ci_covers_true_mean_at_nominal_rate():
    rng = np.random.default_rng(3)
    covered = 0
    reps = 200
    for r in range(reps):
        base = rng.standard_normal(20)
        share = base + 1.0 + rng.standard_normal(20)  # per-seed scalars, true effect 1
        res = paired_bootstrap_ci(share, base, n_boot=1000, seed=r)
        covered += res["ci_low"] <= 1.0 <= res["ci_high"]
    assert 0.85 <= covered / reps <= 0.99


def test_seed_level_variance_widens_the_interval():
    rng = np.random.default_rng(4)
    eps = 0.1 * rng.standard_normal((6, 50))
    base = np.zeros((6, 50))
    tight = paired_bootstrap_ci(base + 0.5 + eps, base, n_boot=2000)
    offsets = np.array([[-0.6], [0.4], [0.3], [-0.2], [0.5], [-0.4]])  # per-seed effect spread
    wide = paired_bootstrap_ci(base + 0.5 + offsets + eps, base, n_boot=2000)
    assert (wide["ci_high"] - wide["ci_low"]) > 5 * (tight["ci_high"] - tight["ci_low"])


def test_bootstrap_deterministic_and_shapes():
    share, baseline = _arms(0.1, seed=5)
    a = paired_bootstrap_ci(share, baseline, n_boot=500, seed=7)
    b = paired_bootstrap_ci(share, baseline, n_boot=500, seed=7)
    assert a == b
    # per-seed scalars
    s = paired_bootstrap_ci(share.mean(axis=1), baseline.mean(axis=1), n_boot=500)
    assert s["n_episodes"] == 1 and "over seeds" in s["method"]
    assert s["effect"] == pytest.approx(a["effect"])
    # different episodes per arm: paired by seed only
    u = paired_bootstrap_ci(share, baseline[:, :30], n_boot=500)
    assert u["n_episodes"] == (40, 30)
    assert u["effect"] == pytest.approx(share.mean() - baseline[:, :30].mean())
    assert u["ci_low"] < u["effect"] < u["ci_high"]
    with pytest.raises(ValueError):
        paired_bootstrap_ci(share, baseline[:4])
    with pytest.raises(ValueError):
        paired_bootstrap_ci(share, baseline[:, :30], paired_episodes=True)


def test_paired_t_test():
    rng = np.random.default_rng(6)
    base = rng.standard_normal(6)
    share = base + 0.5 + 0.3 * rng.standard_normal(6)
    t, p = paired_t_test(share, base)
    ref = scipy.stats.ttest_rel(share, base)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    t2, _ = paired_t_test(np.tile(share[:, None], (1, 3)), base)  # 2-D averaged over episodes
    assert t2 == pytest.approx(t)
    assert all(np.isnan(paired_t_test(share[:1], base[:1])))
    assert all(np.isnan(paired_t_test(base + 1.0, base)))  # zero-variance differences


@pytest.mark.parametrize(
    "lo, hi, direction, expected",
    [
        (0.1, 0.3, +1, "supported"),
        (0.1, 0.3, -1, "refuted"),
        (-0.3, -0.1, +1, "refuted"),
        (-0.3, -0.1, -1, "supported"),
        (-0.1, 0.3, +1, "inconclusive"),
        (-0.1, 0.3, -1, "inconclusive"),
        (0.0, 0.3, +1, "inconclusive"),
        (-0.3, 0.0, -1, "inconclusive"),
        (float("nan"), 0.3, +1, "inconclusive"),
    ],
)
def test_verdict_table(lo, hi, direction, expected):
    assert verdict(lo, hi, direction) == expected


def test_verdict_rejects_bad_direction():
    with pytest.raises(ValueError):
        verdict(0.1, 0.2, 0)


def test_spearman():
    x = np.arange(10.0)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -x**3) == pytest.approx(-1.0)
    y = np.exp(x)
    y[[2, 5]] = np.nan
    x2 = x.copy()
    x2[7] = np.nan
    keep = ~(np.isnan(x2) | np.isnan(y))
    assert spearman(x2, y) == pytest.approx(scipy.stats.spearmanr(x2[keep], y[keep]).statistic)
    assert np.isnan(spearman(x, np.ones(10)))
    assert np.isnan(spearman([1.0, np.nan], [2.0, 3.0]))
