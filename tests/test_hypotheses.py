"""Tests for mcl.stats.hypotheses: the pre-registered table, decide() and the pre-registration text."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.stats

from mcl.stats.hypotheses import (
    HYPOTHESES,
    Hypothesis,
    absolute_delta,
    by_key,
    decide,
    primaries,
    render_preregistration,
)
from mcl.stats.intervals import VERDICTS, holm, seed_effect_ci, t_interval

PRIMARIES = ["M_gap", "H1_exact_match", "H2_gain", "H3_test_spearman", "H4_monosemanticity"]
ROLES = {
    "M_gap": "primary", "M_spearman": "secondary",
    "H1_exact_match": "primary", "H1b_novel2_exact_match": "secondary", "H1_iou": "exploratory",
    "dev_exact_match": "exploratory",
    "H2_gain": "primary", "H2_rmst": "secondary",
    "H3_test_spearman": "primary", "H3_stratified": "secondary", "H3_cka_test": "exploratory",
    "H4_monosemanticity": "primary", "H4_probe_z": "secondary", "H4_probe_h": "exploratory",
}


def entry(effect: float, se: float, df: float = 10.0, **extra) -> dict:
    """A seed_effect_ci-like entry with a consistent p-value and 95% interval."""
    lo, hi = t_interval(effect, se, df)
    return {"effect": effect, "se": se, "df": df, "ci_low": lo, "ci_high": hi,
            "p_value": float(2 * scipy.stats.t.sf(abs(effect) / se, df)), **extra}


def test_table_holds_the_fixed_keys_and_roles():
    table = by_key()
    assert {k: h.role for k, h in table.items()} == ROLES
    assert primaries() == PRIMARIES
    assert table["H2_rmst"].direction == -1 and all(h.direction == 1 for k, h in table.items() if k != "H2_rmst")
    assert {k: h.delta for k, h in table.items() if h.role == "primary"} == {
        "M_gap": 0.02, "H1_exact_match": 0.02, "H2_gain": 0.02, "H3_test_spearman": 0.1, "H4_monosemanticity": 0.02}
    crossed = {k for k, h in table.items() if h.design == "crossed"}
    assert crossed == {"H1_exact_match", "H1b_novel2_exact_match", "H1_iou", "dev_exact_match", "H2_gain", "H2_rmst"}
    assert table["dev_exact_match"].split == "dev" and table["H1_exact_match"].split == "test"
    assert table["H2_rmst"].delta_scale == "censor_limit"
    with pytest.raises(dataclasses.FrozenInstanceError):
        table["M_gap"].delta = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("bad", [dict(direction=0), dict(role="main"), dict(design="nested"), dict(delta=0.0),
                                 dict(design="crossed"), dict(delta_scale="x")])
def test_hypothesis_validation(bad):
    base = dict(key="k", family="H1", claim="c", metric="m", source="s", direction=1, role="primary", delta=0.1,
                unit="u", design="seeds", split="test")
    with pytest.raises(ValueError):
        Hypothesis(**{**base, **bad})
    with pytest.raises(ValueError, match="duplicated"):
        by_key([Hypothesis(**base), Hypothesis(**base)])


def test_decide_applies_holm_to_primaries_only():
    # four primaries with raw p ~ 0.004, 0.02, 0.03, 0.3; H2_gain missing -> enters Holm with p = 1
    entries = {
        "M_gap": entry(0.09, 0.025),
        "H1_exact_match": entry(0.03, 0.011),
        "H3_test_spearman": entry(0.25, 0.1),
        "H4_monosemanticity": entry(0.01, 0.009),
        "H1b_novel2_exact_match": entry(0.03, 0.011),  # same numbers as H1_exact_match, secondary
        "H1_iou": entry(-0.05, 0.01),
        "cost_step_time_ms": {"effect": 3.0, "verdict": "supported"},
    }
    out = decide(entries)
    raw = {k: entries[k]["p_value"] if k in entries else 1.0 for k in PRIMARIES}
    expected = holm(raw)
    for k in PRIMARIES:
        assert out[k]["p_holm"] == pytest.approx(expected[k])
        assert out[k]["role"] == "primary" and out[k]["verdict"] in VERDICTS
    assert out["M_gap"]["verdict"] == "supported"  # 0.004 * 5 < 0.05
    assert entries["H1_exact_match"]["p_value"] < 0.05 <= out["H1_exact_match"]["p_holm"]
    assert out["H1_exact_match"]["verdict"] == "inconclusive"
    assert out["H1b_novel2_exact_match"]["verdict"] == "supported"  # unadjusted
    assert out["H1b_novel2_exact_match"]["role"] == "secondary" and out["H1b_novel2_exact_match"]["p_holm"] is None
    assert out["H1_iou"]["role"] == "exploratory" and out["H1_iou"]["verdict"] == "refuted"
    assert out["H2_gain"]["computed"] is False and out["H2_gain"]["verdict"] == "inconclusive"
    assert out["H2_gain"]["effect"] is None and out["H2_gain"]["p_holm"] == 1.0
    assert "M_spearman" not in out  # absent non-primaries are not invented
    assert out["cost_step_time_ms"] == {"effect": 3.0, "verdict": "supported", "role": "unregistered"}
    for k in PRIMARIES:
        assert "Holm across 5 primaries" in out[k]["decision"]
    assert out["M_gap"]["mde"] > 0 and out["M_gap"]["delta"] == 0.02
    assert out["M_gap"]["mde_holm"] > out["M_gap"]["mde"] and out["H1b_novel2_exact_match"]["mde_holm"] is None
    json.dumps(out, allow_nan=False)  # strict JSON


def test_decide_equivalence_and_trivial_effects():
    entries = {k: entry(0.0005, 0.002, df=40) for k in PRIMARIES}  # precise nulls inside +-0.02 (0.1 for H3)
    entries["H4_probe_z"] = entry(0.004, 0.001, df=40)  # tiny but significant, inside +-0.02
    out = decide(entries)
    for k in PRIMARIES:
        assert out[k]["verdict"] == "no meaningful effect" and out[k]["equivalent"]
        assert out[k]["p_tost_holm"] >= out[k]["p_tost"]
    assert out["H4_probe_z"]["verdict"] == "supported" and out["H4_probe_z"]["trivial"]
    noisy = decide({"M_gap": entry(0.0, 0.05)})["M_gap"]
    assert noisy["verdict"] == "inconclusive" and not noisy["equivalent"]


def test_decide_scaled_delta():
    e = entry(-12.0, 3.0, df=8, censor_limit=61)
    out = decide({"H2_rmst": e})["H2_rmst"]
    assert out["delta"] == pytest.approx(6.1) and out["verdict"] == "supported"  # direction -1
    scaled = decide({"H2_rmst": entry(-12.0, 3.0, df=8)}, scales={"censor_limit": 31})
    assert scaled["H2_rmst"]["delta"] == pytest.approx(3.1)
    with pytest.raises(KeyError, match="censor_limit"):
        decide({"H2_rmst": entry(-12.0, 3.0, df=8)})
    assert absolute_delta(by_key()["H1_exact_match"]) == 0.02


def test_decide_accepts_seed_effect_ci_output_and_infinite_df():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), 8)
    share = 0.5 + 0.05 + 0.01 * rng.standard_normal((3, 80))
    base = 0.5 + 0.01 * rng.standard_normal((3, 80))
    ci = seed_effect_ci(share, base, groups=groups)
    out = decide({"H1_exact_match": ci, "M_gap": {**entry(0.1, 0.01), "df": float("inf")}})
    assert out["H1_exact_match"]["n_groups"] == 10 and out["H1_exact_match"]["computed"]
    assert out["M_gap"]["computed"] and out["M_gap"]["df"] is None  # inf is not JSON
    json.dumps(out, allow_nan=False)


def test_render_preregistration():
    text = render_preregistration()
    assert text == render_preregistration()  # deterministic
    assert text.startswith("# Hypotheses and decision rule (pre-registration)")
    for h in HYPOTHESES:
        assert f"### `{h.key}` ({h.role})" in text
        assert h.claim in text and h.metric in text
    assert "0.1 x the censoring limit (finetune.steps + 1 adaptation steps)" in text
    for word in ("Holm", "TOST", "no meaningful effect", "generalized pivotal", "trivial", "dev split only"):
        assert word in text
    assert "the 5 primaries (`M_gap`, `H1_exact_match`, `H2_gain`, `H3_test_spearman`, `H4_monosemanticity`)" in text
    summary = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(summary) == len(HYPOTHESES)
    sub = render_preregistration(HYPOTHESES[:2], alpha=0.01)
    assert "`M_gap`" in sub and "H1_exact_match" not in sub and "0.01" in sub
