"""Tests for mcl.studies.power (`mcl power`): the seed-count rule, the cost model and the report."""

from __future__ import annotations

import json

import pytest

from mcl.stats.hypotheses import primaries
from mcl.studies.power import (
    affordable_seeds,
    choose_seeds,
    pipeline_minutes,
    plan_primaries,
    power_study,
    seed_minutes,
    pool_minutes,
    training_minutes,
)
from mcl.stats.intervals import seeds_for_power
from mcl.config import load_params
from mcl.training.pool import pool_workers

TWO = lambda n: min(2, n)  # noqa: E731  (two workers, at most one per seed)


def test_pool_minutes_starts_each_job_on_the_first_free_process():
    assert pool_minutes([4.0] * 5, 2) == 12.0
    assert pool_minutes([4.0, 1.0, 1.0, 1.0], 2) == 4.0        # the short jobs share the second process
    assert pool_minutes([1.0, 4.0, 4.0], 2) == 5.0
    assert pool_minutes([3.0] * 4, 1) == 12.0
    assert pool_minutes([], 2) == 0.0


def test_training_rounds():
    assert training_minutes(6, 4.0, TWO) == 2 * 3 * 4.0
    assert training_minutes(7, 4.0, TWO) == training_minutes(8, 4.0, TWO) == 2 * 4 * 4.0  # an odd seed costs a round
    assert training_minutes(1, 4.0, TWO) == 2 * 4.0
    # the oracle control fills the core the baseline's last round leaves free, or costs a round of its own
    assert training_minutes(5, 4.0, TWO, oracle_runs=2, oracle_min=1.0) == 12.0 + 12.0
    assert training_minutes(6, 4.0, TWO, oracle_runs=2, oracle_min=1.0) == 12.0 + 13.0


def test_pipeline_projection_scales_the_rest_with_seeds():
    # pilot: 6 seeds in 31.5 min, of which training 24 min: 7.5 min of the rest, 1.25 per seed
    assert pipeline_minutes(6, 6, 31.5, 4.0, TWO) == pytest.approx(31.5)
    assert pipeline_minutes(8, 6, 31.5, 4.0, TWO) == pytest.approx(32.0 + 10.0)
    assert pipeline_minutes(3, 6, 31.5, 4.0, TWO) == pytest.approx(16.0 + 3.75)
    # a pilot faster than its own training estimate leaves nothing for the rest (not negative)
    assert pipeline_minutes(6, 6, 20.0, 4.0, TWO) == pytest.approx(24.0)


def test_affordable_seeds():
    cost = lambda n: pipeline_minutes(n, 6, 31.5, 4.0, TWO)  # noqa: E731
    assert affordable_seeds(cost, 45.0) == 8  # 9 seeds: 5 rounds, 51 min
    assert affordable_seeds(cost, 41.0) == 7
    assert affordable_seeds(cost, 31.5) == 6
    assert affordable_seeds(cost, 5.0) == 0


def test_choose_seeds():
    assert choose_seeds([3, 5], 10) == 5  # every primary powered: the most demanding one
    assert choose_seeds([3, 12], 8) == 8  # one needs more than the budget: the budget
    assert choose_seeds([3, None], 8) == 8  # None: beyond any count considered
    assert isinstance(choose_seeds([None], 8), int)
    with pytest.raises(ValueError, match="fewer than 2"):
        choose_seeds([3], 1)


def entry(seed_var: float, delta: float, groups: int = 1, group_var=None, res_var=None, n_seeds: int = 6) -> dict:
    comps = {"seed": seed_var, "group": group_var, "residual": res_var}
    return {"components": comps, "n_groups": groups, "delta": delta, "n_seeds": n_seeds, "unit": "u"}


def test_plan_primaries():
    entries = {"a": entry(0.02**2, 0.03), "b": entry(2e-6, 0.02, groups=37, group_var=2.3e-5, res_var=3.3e-4),
               "c": entry(0.05**2, 0.01)}
    plans = {p["key"]: p for p in plan_primaries(entries, ["a", "b", "c"], max_seeds=30)}
    assert plans["a"]["seeds"] == 6 == seeds_for_power({"seed": 0.02**2}, 0.03)
    assert plans["a"]["seeds_holm"] == seeds_for_power({"seed": 0.02**2}, 0.03, alpha=0.05 / 3) > 6
    assert plans["c"]["seeds"] is None and plans["c"]["seeds_holm"] is None
    b = plans["b"]
    assert b["seeds"] == seeds_for_power(entries["b"]["components"], 0.02, 37)
    mde = b["mde"]
    assert list(mde) == sorted(mde) and all(mde[m] > mde[n] for m, n in zip(list(mde), list(mde)[1:]))


def write_run(root, seeds, wall_s=240.0, n_seeds=None, drop=(), oracle_seeds=(0, 1), oracle_wall_s=60.0):
    """A finished default run: analysis.json with every primary, timing.csv per share/baseline seed and per
    oracle seed."""
    root.mkdir(parents=True, exist_ok=True)
    keys = primaries()
    hyps = {k: entry(0.01**2, 0.02, n_seeds=n_seeds or len(seeds)) for k in keys if k not in drop}
    hyps["H1_exact_match"] = entry(2e-6, 0.02, groups=37, group_var=2.3e-5, res_var=3.3e-4, n_seeds=n_seeds or len(seeds))
    analysis = root / "analysis.json"
    analysis.write_text(json.dumps({"hypotheses": hyps}))
    for arm, arm_seeds, wall in (("share", seeds, wall_s), ("baseline", seeds, wall_s), ("oracle", oracle_seeds, oracle_wall_s)):
        for s in arm_seeds:
            d = root / "train" / arm / f"seed{s}"
            d.mkdir(parents=True)
            (d / "timing.csv").write_text(f"step,step_time_ms,wall_time_s\n50,60,3.0\n4000,59,{wall}\n")
    return analysis, root / "train"


def test_power_study(tmp_path):
    params = load_params("params.yaml")
    seeds = list(params.train.seeds)
    oracle_seeds = list(params.train.oracle_seeds)
    analysis, timing = write_run(tmp_path, seeds, oracle_seeds=oracle_seeds)
    assert seed_minutes(timing, seeds) == (4.0, 2 * len(seeds))
    assert seed_minutes(timing, oracle_seeds, ("oracle",)) == (1.0, len(oracle_seeds))
    workers = lambda n: pool_workers(params.train.workers, params.train.threads, n)  # noqa: E731
    # a pipeline measured at exactly its training time plus 1 min per seed
    pilot = training_minutes(len(seeds), 4.0, workers, len(oracle_seeds), 1.0) + len(seeds)
    study = power_study(params, analysis, timing, pilot, budget_min=45.0)
    text, r = study.markdown, study.data
    # seed sd 0.01 against delta 0.02 at alpha 0.05/5: the per-seed primaries need
    need = seeds_for_power({"seed": 0.01**2}, 0.02, alpha=params.analysis.alpha / len(primaries()))
    assert r["recommended"] == min(r["affordable"], need)
    assert f"**Recommended seeds: {r['recommended']}**" in text
    assert ("(they agree)" in text) == (r["recommended"] == len(seeds))
    for key in primaries():
        assert f"| `{key}` |" in text
    # a tight budget caps the recommendation
    tight = power_study(params, analysis, timing, pilot,
                        budget_min=training_minutes(2, 4.0, workers, len(oracle_seeds), 1.0) + 2.0).data
    assert tight["affordable"] == tight["recommended"] == 2
    with pytest.raises(ValueError, match="over the 5 min budget"):
        power_study(params, analysis, timing, pilot, budget_min=5.0)


def test_power_study_bad_inputs(tmp_path):
    params = load_params("params.yaml")
    seeds = list(params.train.seeds)
    analysis, timing = write_run(tmp_path / "a", seeds, n_seeds=len(seeds) + 1)
    with pytest.raises(ValueError, match=f"but train.seeds has {len(seeds)}"):
        power_study(params, analysis, timing, 30.0)
    analysis, timing = write_run(tmp_path / "b", seeds, drop=("M_gap",))
    with pytest.raises(ValueError, match="no variance components for M_gap"):
        power_study(params, analysis, timing, 30.0)
    with pytest.raises(FileNotFoundError, match="missing"):
        power_study(params, tmp_path / "none.json", timing, 30.0)
    (timing / "share" / f"seed{seeds[0]}" / "timing.csv").unlink()
    with pytest.raises(FileNotFoundError, match="timing.csv: missing"):
        seed_minutes(timing, seeds)


def test_mcl_power_command(tmp_path):
    from click.testing import CliRunner

    from mcl.cli import cli

    params = load_params("params.yaml")
    analysis, timing = write_run(tmp_path, list(params.train.seeds))
    out = tmp_path / "docs" / "power.md"
    res = CliRunner().invoke(cli, ["power", "--pipeline-min", "40", "--analysis", str(analysis),
                                   "--timing-dir", str(timing), "--out", str(out)], prog_name="mcl")
    assert res.exit_code == 0, res.output
    assert "seeds recommended" in res.output and out.read_text().startswith("# How many seeds")
    bad = CliRunner().invoke(cli, ["power", "--pipeline-min", "40", "--analysis", str(tmp_path / "no.json"),
                                   "--timing-dir", str(timing), "--out", str(tmp_path / "x.md")], prog_name="mcl")
    assert bad.exit_code == 2 and "no.json: missing" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.md").exists()
