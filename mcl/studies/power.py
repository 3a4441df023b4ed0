"""Seed-count planning behind `mcl power` (docs/power.md).

The pilot is a finished default run: its ``metrics/analysis/analysis.json`` holds, for every
pre-registered primary, the variance components of :func:`mcl.stats.intervals.seed_effect_ci`
(seed, and for a crossed design group and residual) and the smallest effect of interest
``delta``; its ``metrics/train/<arm>/seed<k>/timing.csv`` files hold what a seed costs. For
each primary :func:`plan_primaries` finds the seeds at which the test detects ``delta`` with
the target power, and :func:`choose_seeds` takes the most demanding of them, capped by the
seed count whose pipeline still fits the wall-clock budget (:func:`pipeline_minutes`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mcl.stats.hypotheses import HYPOTHESES, primaries
from mcl.stats.intervals import minimum_detectable_effect, planned_se, seeds_for_power
from mcl.config import Params, run_name
from mcl.io import read_csv
from mcl.studies.result import StudyResult
from mcl.text import fmt
from mcl.training.pool import pool_workers

__all__ = ["plan_primaries", "pool_minutes", "training_minutes", "pipeline_minutes", "affordable_seeds", "choose_seeds",
           "seed_minutes", "power_study"]

#: Trained arms whose runs scale with ``train.seeds`` (the oracle control has its own seeds).
SEED_ARMS = ("share", "baseline")
#: Seed counts shown in the MDE table.
SEED_GRID = (3, 4, 5, 6, 8, 10, 12, 16, 20, 30)


def plan_primaries(entries: Mapping[str, Mapping[str, Any]], keys: Sequence[str], alpha: float = 0.05,
                   power: float = 0.8, max_seeds: int = 30, grid: Sequence[int] = SEED_GRID) -> list[dict[str, Any]]:
    """Seeds needed by each primary, from a pilot's decided entries (``analysis.json`` ``hypotheses``).

    For each key: ``seeds`` (smallest seed count detecting ``delta`` with ``power`` at
    ``alpha``; None beyond ``max_seeds``), ``seeds_holm`` (the same at ``alpha / len(keys)``,
    the level the smallest of the Holm-adjusted p-values must beat: enough for a lone true
    effect among the primaries), ``mde`` ``{n: MDE}`` over ``grid`` at ``alpha`` and the
    pilot's ``delta``, ``unit``, ``n_groups``, ``n_seeds``, ``components``.
    """
    plans = []
    level_holm = alpha / len(keys)
    for key in keys:
        e = entries[key]
        comps, groups, delta = e["components"], int(e["n_groups"]), float(e["delta"])
        plans.append({
            "key": key, "delta": delta, "unit": e.get("unit", ""), "n_groups": groups,
            "n_seeds": int(e["n_seeds"]), "components": dict(comps),
            "seeds": seeds_for_power(comps, delta, groups, alpha, power, max_seeds),
            "seeds_holm": seeds_for_power(comps, delta, groups, level_holm, power, max_seeds),
            "mde": {n: minimum_detectable_effect(*planned_se(comps, n, groups, alpha), alpha, power) for n in grid},
        })
    return plans


def pool_minutes(durations: Sequence[float], workers: int) -> float:
    """Wall clock of jobs lasting ``durations`` (minutes) run in that order on ``workers`` processes, each job
    starting on the first process to come free (as the training pool schedules its runs)."""
    free = [0.0] * workers
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free, default=0.0)


def training_minutes(n_seeds: int, seed_min: float, workers: Callable[[int], int], oracle_runs: int = 0,
                     oracle_min: float = 0.0) -> float:
    """Wall clock of the training stages: the share arm's ``n_seeds`` runs in one pool, then the baseline's with
    the oracle control's ``oracle_runs`` runs (``oracle_min`` each) after them in the next, which fill the cores
    the baseline's last round leaves free; ``workers(n)`` is a pool's process count for n runs."""
    controls = [seed_min] * n_seeds + [oracle_min] * oracle_runs
    return pool_minutes([seed_min] * n_seeds, workers(n_seeds)) + pool_minutes(controls, workers(len(controls)))


def pipeline_minutes(n_seeds: int, pilot_seeds: int, pilot_min: float, seed_min: float,
                     workers: Callable[[int], int], oracle_runs: int = 0, oracle_min: float = 0.0) -> float:
    """Projected wall clock of the default pipeline at ``n_seeds``.

    Training from :func:`training_minutes`; everything else of the pilot's measured
    ``pilot_min`` (evaluate, finetune, analyse, report) is scaled in proportion to the
    seeds (conservative: part of it is fixed).
    """
    def training(n: int) -> float:
        return training_minutes(n, seed_min, workers, oracle_runs, oracle_min)

    other = max(pilot_min - training(pilot_seeds), 0.0)
    return training(n_seeds) + other * n_seeds / pilot_seeds


def affordable_seeds(cost: Callable[[int], float], budget_min: float, max_seeds: int = 30) -> int:
    """Largest seed count in ``[2, max_seeds]`` whose ``cost(n)`` (minutes) fits ``budget_min``; 0 if none."""
    return max((n for n in range(2, max_seeds + 1) if cost(n) <= budget_min), default=0)


def choose_seeds(needed: Sequence[int | None], affordable: int) -> int:
    """The most demanding primary's seed count, capped by the budget.

    ``needed``: per primary, its seed count (None: more than any count considered). A
    primary the budget cannot power still gains from every seed, so a cap is reached
    whenever one primary needs more than ``affordable``.
    """
    if affordable < 2:
        raise ValueError("the budget affords fewer than 2 seeds")
    return min(affordable, max((math.inf if n is None else n) for n in needed))


def seed_minutes(timing_dir: Path, seeds: Sequence[int], arms: Sequence[str] = SEED_ARMS) -> tuple[float, int]:
    """Median wall clock (minutes) of one seed's training, over the runs of ``arms`` (share and baseline).

    Read from the last row of each ``<timing_dir>/<arm>/seed<k>/timing.csv``; returns
    ``(minutes, number of runs)``.
    """
    walls = []
    for arm in arms:
        for seed in seeds:
            path = timing_dir / run_name(arm, seed) / "timing.csv"
            rows = read_csv(path)
            if not rows or "wall_time_s" not in rows[-1]:
                raise ValueError(f"{path}: no wall_time_s rows")
            walls.append(float(rows[-1]["wall_time_s"]) / 60.0)
    return statistics.median(walls), len(walls)


def _seeds_text(n: int | None, max_seeds: int) -> str:
    return f"> {max_seeds}" if n is None else str(n)


def power_study(params: Params, analysis_path: Path, timing_dir: Path, pipeline_min: float,
                budget_min: float = 45.0, power: float = 0.8, max_seeds: int = 30) -> StudyResult:
    """Plan the seed count from a finished default run: the page and ``result`` (its data).

    ``pipeline_min`` is the measured wall clock of the `dvc repro` that produced
    ``analysis_path`` and ``timing_dir``. ``result`` holds ``recommended``, ``affordable``,
    ``current`` (``len(train.seeds)``) and the per-primary ``plans``.
    """
    try:
        analysis = json.loads(Path(analysis_path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{analysis_path}: missing (run the default pipeline first: uv run dvc repro)") from None
    entries = analysis.get("hypotheses") or {}
    keys = primaries(HYPOTHESES)
    missing = [k for k in keys if not (entries.get(k) or {}).get("components")]
    if missing:
        raise ValueError(f"{analysis_path}: no variance components for {', '.join(missing)}")
    alpha = params.analysis.alpha
    seeds = list(params.train.seeds)
    pilot = {int(entries[k]["n_seeds"]) for k in keys}
    if pilot != {len(seeds)}:
        raise ValueError(f"{analysis_path}: computed at {sorted(pilot)} seeds, but train.seeds has {len(seeds)}")
    seed_min, n_runs = seed_minutes(timing_dir, seeds)
    oracle_seeds = list(params.train.oracle_seeds)
    oracle_min = seed_minutes(timing_dir, oracle_seeds, ("oracle",))[0] if oracle_seeds else 0.0
    workers = lambda n: pool_workers(params.train.workers, params.train.threads, n)  # noqa: E731
    cost = lambda n: pipeline_minutes(n, len(seeds), pipeline_min, seed_min, workers,  # noqa: E731
                                      len(oracle_seeds), oracle_min)
    plans = plan_primaries(entries, keys, alpha, power, max_seeds)
    afford = affordable_seeds(cost, budget_min, max_seeds)
    if afford < 2:
        raise ValueError(f"a 2-seed pipeline takes {cost(2):.1f} min, over the {budget_min:g} min budget")
    recommended = choose_seeds([p["seeds_holm"] for p in plans], afford)
    result = {"recommended": recommended, "affordable": afford, "current": len(seeds), "plans": plans,
              "seed_min": seed_min, "oracle_min": oracle_min, "pipeline_min": pipeline_min, "budget_min": budget_min}
    return StudyResult(_render(result, params, n_runs, power, max_seeds, workers, cost), result)


def _render(r: Mapping[str, Any], params: Params, n_runs: int, power: float, max_seeds: int,
            workers: Callable[[int], int], cost: Callable[[int], float]) -> str:
    alpha, plans, n_now = params.analysis.alpha, r["plans"], r["current"]
    m = len(plans)
    grid = list(plans[0]["mde"])
    under = [p for p in plans if p["seeds_holm"] is None or p["seeds_holm"] > r["recommended"]]
    lines = [
        "# How many seeds: power analysis",
        "",
        "Generated by `uv run mcl power --pipeline-min "
        f"{r['pipeline_min']:g} --budget-min {r['budget_min']:g}` (mcl/studies/power.py) from the committed",
        "default run: `metrics/analysis/analysis.json` (the variance components of each primary's interval)",
        "and `metrics/train/*/seed*/timing.csv` (what a seed costs). `--pipeline-min` is the measured wall",
        "clock of that run (`time uv run dvc repro --force`).",
        "",
        "## Result",
        "",
        f"- **Recommended seeds: {r['recommended']}**; `train.seeds` has {n_now}"
        + (" (they agree)." if r["recommended"] == n_now else f" (**they differ**: set {r['recommended']} seeds)."),
        f"- Rule: the most demanding primary's seed count, at {power:.0%} power against its smallest effect of",
        f"  interest delta and at the Holm worst-case level alpha / {m} = {alpha / m:g}, capped by the largest",
        f"  seed count whose pipeline fits {r['budget_min']:g} min: **{r['affordable']} seeds**.",
    ]
    if under:
        lines.append(f"- **Underpowered at the recommended count** (at alpha / {m}):")
        lines += [f"  - `{p['key']}` needs {_seeds_text(p['seeds_holm'], max_seeds)} seeds "
                  f"(MDE {fmt(p['mde'].get(r['recommended']), 3, general=True)} at {r['recommended']} seeds vs delta {p['delta']:g})."
                  for p in under]
    lines += [
        "",
        "## Seeds each primary needs",
        "",
        f"Pilot: the default run ({n_now} seeds). Variance components as `seed_effect_ci` estimates them",
        "(per-seed scalars: the variance of the per-seed differences; crossed: seed, label-set and residual",
        "variance of the seed x group cell means). The planned standard error is",
        "`mcl.stats.intervals.planned_se` (`tests/test_stats.py` simulates planned studies and checks the power).",
        "",
        f"| primary | delta | groups | seed var | group var | residual var | seeds at alpha {alpha:g} "
        f"| seeds at alpha/{m} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in plans:
        c = p["components"]
        comps = " | ".join(fmt(c.get(k), 3, general=True) for k in ("seed", "group", "residual"))
        lines.append(f"| `{p['key']}` | {p['delta']:g} | {p['n_groups']} | {comps} | {_seeds_text(p['seeds'], max_seeds)} | "
                     f"{_seeds_text(p['seeds_holm'], max_seeds)} |")
    lines += [
        "",
        f"## Minimum detectable effect against seeds ({power:.0%} power, alpha {alpha:g})",
        "",
        "| primary | delta | " + " | ".join(f"{n} seeds" for n in grid) + " |",
        "|---|---|" + "---|" * len(grid),
    ]
    for p in plans:
        lines.append(f"| `{p['key']}` | {p['delta']:g} | " + " | ".join(fmt(p["mde"][n], 3, general=True) for n in grid) + " |")
    lines += [
        "",
        "## Compute budget",
        "",
        f"- One seed's training (train.steps = {params.train.steps}): median {r['seed_min']:.2f} min over the "
        f"{n_runs} share and baseline runs, trained {workers(n_now)} side by side.",
        f"- The oracle control's {len(params.train.oracle_seeds)} runs: median {r['oracle_min']:.2f} min each.",
        "- Training: the share arm's seeds in one pool, then the baseline's with the oracle control's runs after "
        "them in the next, each run starting on the first free process (`pool_minutes`); the rest of the "
        f"measured {r['pipeline_min']:g} min (evaluate, finetune, analyse, report) is scaled in proportion to "
        "the seeds.",
        "",
        "| seeds | projected pipeline (min) | fits the budget |",
        "|---|---|---|",
    ]
    for n in sorted({*range(2, 11), 12, 16, n_now, r["recommended"]}):
        lines.append(f"| {n} | {cost(n):.1f} | {'yes' if cost(n) <= r['budget_min'] else 'no'} |")
    return "\n".join(lines) + "\n"
