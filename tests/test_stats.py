"""Tests for mcl.stats.intervals: the seed x item interval, TOST, Holm, verdicts, power, and the
bootstrap / t-test / Spearman helpers kept from before.

The calibration tests simulate null studies (no true effect) and studies with a planted effect
for three designs, at 3, 5 and 10 seeds:

* ``seeds``: per-seed scalars, ``d_s ~ N(mu, 0.03^2)``;
* ``items``: per-item values ``D[s, j] = mu + a_s + e_sj`` (seed sd 0.02, item noise sd 0.3,
  1000 items, no item or group effect), analysed with ``groups=None``;
* ``crossed``: ``D[s, j] = mu + a_s + b_g(j) + ab_s,g(j) + e_sj`` with 50 label sets of
  unequal size (~20 items each), label-set sd 0.06, seed sd 0.02, seed x label-set sd 0.02,
  item noise sd 0.3, analysed with ``groups``.

Every study is drawn afresh (seed, label-set and item effects); the label-set sizes are fixed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from mcl.measures.rank import spearman
from mcl.stats.intervals import (
    VERDICTS,
    crossed_reference_df,
    decide_effect,
    holm,
    minimum_detectable_effect,
    planned_se,
    seed_effect_ci,
    seeds_for_power,
    t_interval,
    t_test_power,
    tost,
    verdict,
)

# ---------------------------------------------------------------------------
# simulation designs

SEED_COUNTS = (3, 5, 10)
N_GROUPS, N_ITEMS = 50, 1000
SEED_SD, GROUP_SD, INTER_SD, ITEM_SD, SCALAR_SD = 0.02, 0.06, 0.02, 0.3, 0.03
N_NULL = {"seeds": 4000, "items": 2000, "crossed": 2000}
N_POWER = 800
CHUNK = 200

_SIZES = np.random.default_rng(11).multinomial(N_ITEMS, np.full(N_GROUPS, 1.0 / N_GROUPS))
GROUPS = np.repeat(np.arange(N_GROUPS), _SIZES)


def expected_mean_squares(design: str, n_seeds: int) -> tuple[float, float, float, int]:
    """``(E[MS_seed], E[MS_group], E[MS_res], n_groups)`` of a design (``items``: a group per item)."""
    if design == "items":
        return ITEM_SD**2 + N_ITEMS * SEED_SD**2, ITEM_SD**2, ITEM_SD**2, N_ITEMS
    tau2 = INTER_SD**2 + ITEM_SD**2 * float(np.mean(1.0 / _SIZES))
    return tau2 + N_GROUPS * SEED_SD**2, tau2 + n_seeds * GROUP_SD**2, tau2, N_GROUPS


def design_se_df(design: str, n_seeds: int) -> tuple[float, float]:
    """True standard error of the effect estimate and the design's reference df."""
    if design == "seeds":
        return SCALAR_SD / math.sqrt(n_seeds), float(n_seeds - 1)
    ms_a, ms_b, ms_ab, g = expected_mean_squares(design, n_seeds)
    return math.sqrt((ms_a + ms_b - ms_ab) / (n_seeds * g)), crossed_reference_df(ms_a, ms_b, ms_ab, n_seeds, g)


def simulate(design: str, n_seeds: int, n_studies: int, mu: float, rng: np.random.Generator):
    """Yield chunks ``[n, S]`` (``seeds``) or ``[n, S, N_ITEMS]`` of paired differences."""
    for lo in range(0, n_studies, CHUNK):
        n = min(CHUNK, n_studies - lo)
        if design == "seeds":
            yield mu + SCALAR_SD * rng.standard_normal((n, n_seeds))
            continue
        d = mu + SEED_SD * rng.standard_normal((n, n_seeds, 1)) + ITEM_SD * rng.standard_normal((n, n_seeds, N_ITEMS))
        if design == "crossed":
            label = (GROUP_SD * rng.standard_normal((n, 1, N_GROUPS))
                     + INTER_SD * rng.standard_normal((n, n_seeds, N_GROUPS)))
            d += label[:, :, GROUPS]
        yield d


def rejection_rate(design: str, n_seeds: int, n_studies: int, mu: float, seed: int, seed_only: bool = False) -> float:
    """Share of simulated studies whose ``seed_effect_ci`` p-value is < 0.05.

    ``seed_only``: analyse the per-seed means with the plain Student t instead (ignores items).
    """
    rng = np.random.default_rng(seed)
    groups = GROUPS if design == "crossed" else None
    hits = 0
    for chunk in simulate(design, n_seeds, n_studies, mu, rng):
        for d in chunk:
            if seed_only and d.ndim == 2:
                d = d.mean(axis=1)
            zero = np.zeros_like(d)
            res = seed_effect_ci(d, zero) if d.ndim == 1 else seed_effect_ci(d, zero, groups=groups)
            hits += res["p_value"] < 0.05
    return hits / n_studies


def binomial_bound(rate: float, n: int, k: float = 3.0) -> float:
    return k * math.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize("n_seeds", SEED_COUNTS)
@pytest.mark.parametrize("design", ["seeds", "items", "crossed"])
def test_false_positive_rate_is_at_most_nominal(design, n_seeds):
    n = N_NULL[design]
    rate = rejection_rate(design, n_seeds, n, 0.0, seed=100 + n_seeds)
    print(f"false-positive rate, {design}, {n_seeds} seeds: {rate:.4f} ({n} studies)")
    assert rate <= 0.05 + binomial_bound(0.05, n)


@pytest.mark.parametrize("n_seeds", SEED_COUNTS)
@pytest.mark.parametrize("design", ["seeds", "items", "crossed"])
def test_planted_effect_has_the_predicted_power(design, n_seeds):
    se, df = design_se_df(design, n_seeds)
    mu = minimum_detectable_effect(se, df, alpha=0.05, power=0.8)
    expected = t_test_power(mu, se, df, alpha=0.05)
    assert expected == pytest.approx(0.8, abs=1e-6)
    rate = rejection_rate(design, n_seeds, N_POWER, mu, seed=200 + n_seeds)
    print(f"power, {design}, {n_seeds} seeds, effect {mu:.4f}: {rate:.3f} (noncentral t: {expected:.3f})")
    assert abs(rate - expected) <= binomial_bound(expected, N_POWER)


def test_seed_only_t_is_anticonservative_in_the_crossed_design():
    """The failure the crossed interval fixes: per-seed means ignore the shared label-set effects."""
    rate = rejection_rate("crossed", 10, 1000, 0.0, seed=300, seed_only=True)
    print(f"false-positive rate of the seed-only t, crossed, 10 seeds: {rate:.3f}")
    assert rate > 0.10


def test_design_df_lies_between_the_seed_df_and_infinity():
    # the design df lies between the seed df and infinity, and grows with the number of seeds
    dfs = [design_se_df("crossed", s)[1] for s in SEED_COUNTS]
    assert all(s - 1 <= d for s, d in zip(SEED_COUNTS, dfs)) and dfs == sorted(dfs)


# ---------------------------------------------------------------------------
# seed_effect_ci


def test_per_seed_scalars_are_the_paired_t():
    rng = np.random.default_rng(6)
    base = rng.standard_normal(6)
    share = base + 0.5 + 0.3 * rng.standard_normal(6)
    res = seed_effect_ci(share, base, alpha=0.1)
    ref = scipy.stats.ttest_rel(share, base)
    ci = ref.confidence_interval(0.9)
    assert res["effect"] == pytest.approx(np.mean(share - base))
    assert res["t"] == pytest.approx(ref.statistic) and res["p_value"] == pytest.approx(ref.pvalue)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert res["df"] == 5 and res["n_seeds"] == 6 and res["n_items"] == 1 and res["n_groups"] == 1
    assert res["se"] == pytest.approx(np.std(share - base, ddof=1) / math.sqrt(6))
    assert res["seed_sd"] == pytest.approx(np.std(share - base, ddof=1))
    assert "Student t" in res["method"]


def test_one_group_reduces_to_the_t_over_seed_means():
    rng = np.random.default_rng(7)
    share, base = rng.standard_normal((4, 30)), rng.standard_normal((4, 30))
    one = seed_effect_ci(share, base, groups=np.zeros(30))
    means = seed_effect_ci(share.mean(axis=1), base.mean(axis=1))
    for key in ("effect", "ci_low", "ci_high", "se", "df", "p_value"):
        assert one[key] == pytest.approx(means[key])
    assert one["n_items"] == 30 and one["n_groups"] == 1 and "one group" in one["method"]


def test_crossed_variance_matches_the_anova_formula_and_weights_groups_equally():
    rng = np.random.default_rng(8)
    S, sizes = 4, np.array([1, 3, 5, 2, 9])
    groups = np.repeat(np.array(["e", "a", "c", "b", "d"]), sizes)  # any sortable ids
    D = rng.standard_normal((S, sizes.sum()))
    res = seed_effect_ci(D, np.zeros_like(D), groups=groups)
    # cell means by hand, groups in sorted id order
    ids = np.array(["a", "b", "c", "d", "e"])
    cells = np.stack([D[:, groups == g].mean(axis=1) for g in ids], axis=1)
    G = len(ids)
    row, col, grand = cells.mean(1), cells.mean(0), cells.mean()
    ms_a = G * np.sum((row - grand) ** 2) / (S - 1)
    ms_b = S * np.sum((col - grand) ** 2) / (G - 1)
    ms_ab = np.sum((cells - row[:, None] - col + grand) ** 2) / ((S - 1) * (G - 1))
    assert res["effect"] == pytest.approx(grand)  # mean of group means, not of items
    assert res["effect"] != pytest.approx(D.mean())
    assert res["se"] ** 2 == pytest.approx((ms_a + max(ms_b - ms_ab, 0.0)) / (S * G))
    assert res["df"] == pytest.approx(crossed_reference_df(ms_a, ms_b, ms_ab, S, G, 0.05))
    assert res["n_groups"] == 5 and res["n_items"] == 20 and "sizes 1-9" in res["method"]
    assert (res["ci_low"], res["ci_high"]) == pytest.approx(t_interval(res["effect"], res["se"], res["df"]))
    # permuting the items (with their group ids) changes nothing
    perm = rng.permutation(D.shape[1])
    again = seed_effect_ci(D[:, perm], np.zeros_like(D), groups=groups[perm])
    assert again["effect"] == pytest.approx(res["effect"]) and again["se"] == pytest.approx(res["se"])


def test_group_variability_widens_the_interval():
    rng = np.random.default_rng(9)
    S, G, per = 5, 20, 10
    groups = np.repeat(np.arange(G), per)
    noise = 0.1 * rng.standard_normal((S, G * per))
    label = np.repeat(0.3 * rng.standard_normal(G), per)[None, :]  # shared by every seed
    plain = seed_effect_ci(noise, np.zeros_like(noise), groups=groups)
    shared = seed_effect_ci(noise + label, np.zeros_like(noise), groups=groups)
    seed_only = seed_effect_ci((noise + label).mean(axis=1), np.zeros(S))
    assert shared["se"] > 3 * plain["se"]
    assert shared["se"] > 5 * seed_only["se"]  # a seed-only t cannot see label-set effects
    assert shared["components"]["group"] > 10 * shared["components"]["seed"]


def test_crossed_reference_df_limits():
    # only the seed mean square: exactly Student t on S - 1 df
    assert crossed_reference_df(1.0, 0.0, 0.0, 4, 50) == pytest.approx(3.0, rel=0.02)
    assert crossed_reference_df(1.0, 0.5, 0.5, 3, 20) == pytest.approx(2.0, rel=0.02)
    # a dominant group mean square with many groups: close to normal
    assert crossed_reference_df(1e-6, 1.0, 1e-6, 3, 400) > 100
    assert crossed_reference_df(0.0, 0.0, 0.0, 3, 10) != crossed_reference_df(0.0, 0.0, 0.0, 3, 10)  # NaN
    # deterministic
    assert crossed_reference_df(0.3, 0.2, 0.1, 3, 7) == crossed_reference_df(0.3, 0.2, 0.1, 3, 7)


def test_seed_effect_ci_degenerate_and_invalid_inputs():
    base = np.arange(12.0).reshape(3, 4)
    const = seed_effect_ci(base + 0.25, base)
    assert const["effect"] == pytest.approx(0.25) and const["se"] == pytest.approx(0.0, abs=1e-12)
    assert const["ci_low"] == pytest.approx(0.25) and const["p_value"] < 1e-6
    zero = seed_effect_ci(base, base)
    assert zero["effect"] == 0 and zero["se"] == 0 and zero["p_value"] == 1.0 and zero["ci_low"] == zero["ci_high"] == 0
    with pytest.raises(ValueError, match="n_seeds >= 2"):
        seed_effect_ci(base[:1], base[:1])
    with pytest.raises(ValueError, match="n_seeds >= 2"):
        seed_effect_ci([0.3], [0.1])
    with pytest.raises(ValueError, match="same shape"):
        seed_effect_ci(base, base[:, :3])
    with pytest.raises(ValueError, match="groups"):
        seed_effect_ci(base, base, groups=[0, 1])
    with pytest.raises(ValueError, match="per-item"):
        seed_effect_ci(base[:, 0], base[:, 1], groups=[0, 1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        seed_effect_ci(base * np.nan, base)
    with pytest.raises(ValueError, match="alpha"):
        seed_effect_ci(base, base + 1, alpha=1.5)


# ---------------------------------------------------------------------------
# TOST, Holm, verdicts


def test_tost_equivalent_not_equivalent_and_too_noisy():
    eq = tost(0.003, 0.004, 20, delta=0.02)
    assert eq["equivalent"] and eq["p"] == max(eq["p_lower"], eq["p_upper"]) < 0.05
    assert eq["p_lower"] == pytest.approx(scipy.stats.t.sf((0.003 + 0.02) / 0.004, 20))
    assert eq["p_upper"] == pytest.approx(scipy.stats.t.cdf((0.003 - 0.02) / 0.004, 20))
    lo, hi = t_interval(0.003, 0.004, 20, alpha=0.10)  # the 1 - 2 alpha interval lies inside +-delta
    assert -0.02 < lo < hi < 0.02
    big = tost(0.05, 0.005, 20, delta=0.02)  # a clear effect larger than delta
    assert not big["equivalent"] and big["p_upper"] > 0.99
    noisy = tost(0.0, 0.05, 4, delta=0.02)  # centred on 0 but far too uncertain to tell
    assert not noisy["equivalent"] and noisy["p"] > 0.3
    assert noisy["p_lower"] == pytest.approx(noisy["p_upper"])  # symmetric
    assert tost(-0.003, 0.004, 20, 0.02)["p"] == pytest.approx(eq["p"])
    assert tost(0.01, 0.0, 5, 0.02)["equivalent"] and not tost(0.03, 0.0, 5, 0.02)["equivalent"]
    assert tost(0.0, 0.004, math.inf, 0.02)["equivalent"]
    assert not tost(0.0, float("nan"), 5, 0.02)["equivalent"]
    with pytest.raises(ValueError):
        tost(0.0, 0.01, 5, delta=0.0)


def test_holm_hand_worked_example():
    # sorted: 0.005*4 = 0.02; 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert holm([0.5, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])  # capped at 1, monotone
    assert holm([0.02, 0.02]) == pytest.approx([0.04, 0.04])
    assert holm([0.3]) == [0.3] and holm([]) == [] and holm({}) == {}
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])
    with pytest.raises(ValueError):
        holm([1.2])


def test_holm_is_monotone_and_dominates_raw():
    p = np.random.default_rng(10).uniform(size=12)
    adj = np.array(holm(list(p)))
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0) and np.all(adj >= p) and np.all(adj <= 1)


@pytest.mark.parametrize(
    "lo, hi, direction, equivalent, expected",
    [
        (0.1, 0.3, +1, False, "supported"),
        (0.1, 0.3, -1, False, "refuted"),
        (-0.3, -0.1, +1, False, "refuted"),
        (-0.3, -0.1, -1, False, "supported"),
        (-0.1, 0.3, +1, False, "inconclusive"),
        (-0.1, 0.3, -1, False, "inconclusive"),
        (0.0, 0.3, +1, False, "inconclusive"),
        (-0.3, 0.0, -1, False, "inconclusive"),
        (float("nan"), 0.3, +1, False, "inconclusive"),
        (-0.01, 0.01, +1, True, "no meaningful effect"),
        (-0.01, 0.01, -1, True, "no meaningful effect"),
        (0.001, 0.01, +1, True, "supported"),  # significant beats equivalent
        (-0.01, -0.001, +1, True, "refuted"),
    ],
)
def test_verdict_table(lo, hi, direction, equivalent, expected):
    assert verdict(lo, hi, direction, equivalent=equivalent) == expected
    assert expected in VERDICTS
    if not equivalent:
        assert verdict(lo, hi, direction) == expected  # the old three-way reading is unchanged


def test_verdict_rejects_bad_input():
    with pytest.raises(ValueError):
        verdict(0.1, 0.2, 0)
    with pytest.raises(ValueError):
        verdict(0.3, 0.2, 1)


def test_decide_effect_uses_the_adjusted_p_and_tost():
    ci = {"effect": 0.05, "se": 0.02, "df": 8.0, "p_value": 2 * scipy.stats.t.sf(2.5, 8)}  # p ~ 0.037
    raw = decide_effect(ci, +1, delta=0.02)
    assert raw["verdict"] == "supported" and raw["significant"] and raw["p"] == pytest.approx(ci["p_value"])
    assert raw["ci_low_adj"] > 0
    held = decide_effect(ci, +1, delta=0.02, p_adjusted=0.11)  # Holm pushes it over alpha
    assert held["verdict"] == "inconclusive" and not held["significant"]
    assert held["ci_low_adj"] < 0 < held["ci_high_adj"]
    assert decide_effect(ci, -1, delta=0.02)["verdict"] == "refuted"
    # a small, precise effect: significant and equivalent -> supported, flagged trivial
    tiny = {"effect": 0.004, "se": 0.001, "df": 30.0, "p_value": 2 * scipy.stats.t.sf(4.0, 30)}
    d = decide_effect(tiny, +1, delta=0.02)
    assert d["verdict"] == "supported" and d["equivalent"] and d["trivial"]
    # a precise null
    null = {"effect": 0.001, "se": 0.003, "df": 30.0, "p_value": 2 * scipy.stats.t.sf(1 / 3, 30)}
    n = decide_effect(null, +1, delta=0.02)
    assert n["verdict"] == "no meaningful effect" and not n["trivial"]
    assert decide_effect(null, +1, delta=0.02, tost_p_adjusted=0.2)["verdict"] == "inconclusive"
    # mde reported at alpha and 80% power
    assert n["mde"] == pytest.approx(minimum_detectable_effect(0.003, 30.0))
    missing = {"effect": float("nan"), "se": float("nan"), "df": float("nan"), "p_value": float("nan")}
    nan = decide_effect(missing, 1, 0.02)
    assert nan["verdict"] == "inconclusive"


# ---------------------------------------------------------------------------
# power


def test_minimum_detectable_effect():
    for df in (2.0, 5.0, 30.0):
        mde = minimum_detectable_effect(0.01, df)
        assert t_test_power(mde, 0.01, df) == pytest.approx(0.8, abs=1e-6)
        approx = (scipy.stats.t.ppf(0.975, df) + scipy.stats.t.ppf(0.8, df)) * 0.01
        assert mde == pytest.approx(approx, rel=0.06)  # the usual approximation; exact is 5% larger at df = 2
    z = (scipy.stats.norm.ppf(0.975) + scipy.stats.norm.ppf(0.8)) * 0.01
    assert minimum_detectable_effect(0.01, math.inf) == pytest.approx(z, rel=1e-3)
    assert minimum_detectable_effect(0.02, 5.0) == pytest.approx(2 * minimum_detectable_effect(0.01, 5.0))
    assert minimum_detectable_effect(0.01, 5.0, power=0.9) > minimum_detectable_effect(0.01, 5.0)
    assert math.isnan(minimum_detectable_effect(float("nan"), 5.0))
    assert minimum_detectable_effect(0.0, 5.0) == 0.0


def test_t_test_power_matches_a_simulated_paired_t():
    rng = np.random.default_rng(12)
    n, sd, eff = 5, 1.0, 1.2
    d = eff + sd * rng.standard_normal((20000, n))
    p = scipy.stats.ttest_1samp(d, 0.0, axis=1).pvalue
    expected = t_test_power(eff, sd / math.sqrt(n), n - 1)
    assert np.mean(p < 0.05) == pytest.approx(expected, abs=binomial_bound(expected, 20000))
    assert t_test_power(0.0, 1.0, 4) == pytest.approx(0.05)


def test_seeds_for_power():
    n = seeds_for_power({"seed": 0.02**2}, 0.03, alpha=0.05, power=0.8)
    assert t_test_power(0.03, 0.02 / math.sqrt(n), n - 1) >= 0.8
    assert t_test_power(0.03, 0.02 / math.sqrt(n - 1), n - 2) < 0.8
    assert n == 6
    assert seeds_for_power({"seed": 0.02**2}, 0.06) < n < seeds_for_power({"seed": 0.02**2}, 0.015)
    assert seeds_for_power({"seed": 0.0}, 0.01) == 2
    assert seeds_for_power({"seed": 0.05**2}, 0.01, max_seeds=30) is None


def true_components(n_seeds: int) -> dict[str, float]:
    """Variance components of the simulated crossed design, as seed_effect_ci estimates them."""
    ms_a, ms_b, ms_ab, g = expected_mean_squares("crossed", n_seeds)
    return {"seed": (ms_a - ms_ab) / g, "group": (ms_b - ms_ab) / n_seeds, "residual": ms_ab}


@pytest.mark.parametrize("n_seeds", SEED_COUNTS)
def test_planned_se_is_the_design_standard_error(n_seeds):
    # the components do not depend on the seed count; planning at any S gives that S's truth
    comps = true_components(3)
    assert true_components(n_seeds) == pytest.approx(comps)
    assert planned_se(comps, n_seeds, N_GROUPS) == pytest.approx(design_se_df("crossed", n_seeds))
    assert planned_se({"seed": SCALAR_SD**2}, n_seeds) == pytest.approx(design_se_df("seeds", n_seeds))


def test_planned_se_reproduces_the_pilot():
    rng = np.random.default_rng(12)
    S, G, per = 6, 15, 8
    groups = np.repeat(np.arange(G), per)
    d = (0.05 * rng.standard_normal((S, 1)) + 0.08 * rng.standard_normal((1, G))[:, groups]
         + 0.1 * rng.standard_normal((S, G * per)))
    pilot = seed_effect_ci(d, np.zeros_like(d), groups=groups)
    assert pilot["components"]["group"] > 0  # not truncated
    assert planned_se(pilot["components"], S, G) == pytest.approx((pilot["se"], pilot["df"]))
    scalar = seed_effect_ci(d.mean(axis=1), np.zeros(S))
    assert planned_se(scalar["components"], S) == pytest.approx((scalar["se"], scalar["df"]))


def test_planned_seed_count_has_the_planned_power():
    """Size a crossed study with seeds_for_power, then simulate it: the power is reached."""
    comps, delta = true_components(3), 0.04
    n = seeds_for_power(comps, delta, N_GROUPS)
    assert n == 7
    assert t_test_power(delta, *planned_se(comps, n - 1, N_GROUPS)) < 0.8 <= t_test_power(delta, *planned_se(comps, n, N_GROUPS))
    rate = rejection_rate("crossed", n, N_POWER, delta, seed=400)
    expected = t_test_power(delta, *planned_se(comps, n, N_GROUPS))
    print(f"planned {n} seeds for delta {delta}: power {rate:.3f} (planned {expected:.3f})")
    assert rate >= expected - binomial_bound(expected, N_POWER)


def test_group_variability_is_not_bought_down_with_seeds():
    # group sd 0.06 over 50 groups: se >= 0.0085 at any seed count, so delta 0.01 is out of reach
    comps = true_components(3)
    assert seeds_for_power(comps, 0.01, N_GROUPS, max_seeds=200) is None
    assert seeds_for_power(comps, 0.01, N_GROUPS * 10, max_seeds=200) is not None


# ---------------------------------------------------------------------------
# Spearman


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
