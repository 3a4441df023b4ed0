"""docs/results_summary.md: the first page (four questions, one section each), then the headline numbers."""

from __future__ import annotations

import math

import numpy as np

from mcl.config import ARMS, Params
from mcl.data.primitives import NAMES
from mcl.evaluation.summary import ZERO_SHOT_SPLITS
from mcl.report.artifacts import Artifacts
from mcl.report.figures import image
from mcl.report.phrases import (H2_UNTESTABLE_CLAIM, REPORT_CMD, arm_mean, ci_text, h2_testable, mean_ci_text,
                                ordered_keys, p_text, verdict_cell)
from mcl.stats.intervals import mean_interval
from mcl.text import fmt

#: The plain sentence for a hypothesis whose minimum detectable effect exceeds its delta.
MDE_SENTENCE = "this run cannot detect an effect of the size that matters"


def _pct(params: Params) -> str:
    return f"{100 * (1 - params.analysis.alpha):g}%"


def manipulation_lead(hyp: dict) -> tuple[bool, str]:
    """Whether ``M_gap`` shows the geometry moved as intended, and the page's first sentence saying so."""
    e = hyp.get("M_gap") or {}
    v = e.get("verdict")
    stats = (f"`M_gap` = {fmt(e.get('effect'), signed=True)}, 95% CI {ci_text(e.get('ci_low'), e.get('ci_high'))}, "
             f"{p_text(e)}, verdict *{v}*")
    if v == "supported":
        return True, (f"**Manipulation check passed: the share loss moved the geometry of h in the intended direction** "
                      f"({stats}). H1-H4 below test whether that change helps.")
    if e.get("effect") is None:
        return False, ("**Manipulation check not computed** (`M_gap` has no usable values, e.g. fewer than 2 seeds "
                       "or too few val episodes per label set), so it is not shown that the share loss moved the "
                       "geometry of h in the intended direction. H1-H4 below therefore do not test the hypothesis.")
    how = ("moved the geometry of h in the opposite direction" if v == "refuted"
           else "did not measurably move the geometry of h in the intended direction")
    return False, (f"**Manipulation check failed: the share loss {how}** ({stats}). H1-H4 below therefore do not "
                   "test the hypothesis: the two arms are not shown to differ in the representation property the "
                   "hypothesis is about, so their verdicts say nothing about whether a shared subspace helps.")


def manipulation_check_section(params: Params, a: Artifacts) -> list[str]:
    """Section 1: did the treatment do what it claims (``M_gap``, ``M_spearman``, effective rank, label R^2)."""
    art, hyp, pct = a.analysis, a.hypotheses, _pct(params)
    man = art["design"]["manipulation"]
    lines = ["## 1. Did the treatment do what it claims? (manipulation check)", "",
             f"On h of the {man['n_episodes']} val episodes, grouped by label set (k = {man['k']} directions per group): "
             f"share and baseline are means over {hyp.get('n_seeds')} seeds with a {pct} t interval over seeds.", "",
             f"| check | share | baseline | share - baseline, {pct} CI | p | verdict |", "|---|---|---|---|---|---|"]
    for key, label, rec in (("M_gap", "`M_gap` (primary): disjoint minus overlapping group subspace distance", "val_gap"),
                            ("M_spearman", "`M_spearman` (secondary): Spearman(label Jaccard, subspace similarity)",
                             "val_jaccard_spearman")):
        e = hyp.get(key) or {}
        lines.append(f"| {label} | {mean_ci_text(art, 'share', rec)} | {mean_ci_text(art, 'baseline', rec)} | "
                     f"{fmt(e.get('effect'), signed=True)} {ci_text(e.get('ci_low'), e.get('ci_high'))} | {p_text(e)} | "
                     f"**{e.get('verdict')}** |")
    lines += [f"| effective rank of h (participation ratio, at most {params.model.h_dim}) | "
              f"{mean_ci_text(art, 'share', 'val_effective_rank', 2)} | "
              f"{mean_ci_text(art, 'baseline', 'val_effective_rank', 2)} | | | descriptive |",
              f"| label-set R^2 of h (variance explained by label-set identity) | "
              f"{mean_ci_text(art, 'share', 'val_label_r2')} | {mean_ci_text(art, 'baseline', 'val_label_r2')} | | | "
              "descriptive |", ""]
    ranks = {arm: arm_mean(art, arm, "val_effective_rank") for arm in ARMS}
    low = [arm for arm, r in ranks.items() if r is not None and math.isfinite(r) and r < 2]
    if low:
        lines += [f"Effective rank below 2 in {', '.join(low)}: h has collapsed to about one direction.", ""]
    return lines


def _test_against_controls(summary: dict) -> list[str]:
    """The arms' test exact match against the best trivial control and the oracle, and whether either beats it."""
    test_ctrl = {c: (summary.get(c) or {}).get("test_exact_match") for c in ("copy", "majority")}
    test_ctrl = {c: v for c, v in test_ctrl.items() if v is not None}
    if not test_ctrl:
        return []
    best_c = max(test_ctrl, key=test_ctrl.get)
    arm_test = {arm: (summary.get(arm) or {}).get("test_exact_match") for arm in ARMS}
    oracle_test = (summary.get("oracle") or {}).get("test_exact_match")
    lines = ["On test: " + ", ".join(f"{a} {fmt(v)}" for a, v in arm_test.items())
             + f" against {fmt(test_ctrl[best_c])} for the best trivial control ({best_c}) and "
             f"{fmt(oracle_test)} for the oracle-task executor."]
    if not [a for a, v in arm_test.items() if v is not None and v > test_ctrl[best_c]]:
        lines.append("**Neither arm beats a trivial control on test: the models have not learned the task at "
                     "this scale, and the comparisons below are between models that do not solve it.**")
    return lines


def learned_task_section(params: Params, a: Artifacts, per_primitive: list[str] | None = None) -> list[str]:
    """Section 2: did the models learn the task (zero-shot exact match next to the controls)."""
    summary = a.summary
    rows = [(arm, f"{arm} ({summary.get('seeds', a.hypotheses.get('n_seeds'))} seeds)") for arm in ARMS]
    rows += [("oracle", f"control: oracle-task executor (true program, {len(params.train.oracle_seeds)} seed(s))"),
             ("copy", "control: copy the query"), ("majority", "control: majority colour")]
    splits = [s for s in ZERO_SHOT_SPLITS if any(f"{s}_exact_match" in (summary.get(r) or {}) for r, _ in rows)]
    lines = ["## 2. Did the models learn the task?", "",
             "Zero-shot exact match (fraction of episodes whose whole query output grid is right), means over seeds "
             "from `metrics/summary.json`. val: train label sets; test: unseen length-3 label sets; dev: other "
             "unseen length-3 label sets; novel2: held-out length-2 combinations.", "",
             "| run | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for r, label in rows:
        vals = summary.get(r) or {}
        lines.append(f"| {label} | " + " | ".join(fmt(vals.get(f"{s}_exact_match")) for s in splits) + " |")
    lines += ["", *_test_against_controls(summary), "", *(per_primitive or [])]
    lines += ["Dev is used only to choose hyperparameters (`loss.beta`); its numbers are not evidence for or "
              "against any hypothesis. Learning curves of this recipe and of the ablations that explain it, with "
              "the oracle-task control: `docs/learnability.md` (`uv run mcl learnability`).", ""]
    return lines


def _detects_delta(e: dict, f: dict) -> str:
    """Whether the test of a hypothesis detects its delta: 'yes', '**no**', 'not computed' or 'degenerate ...'."""
    delta, mde = f.get("delta"), e.get("mde")
    if mde is None or delta is None:
        return "not computed"
    if f.get("se") == 0:
        return "degenerate (no variation)"
    return "**no**" if mde > delta else "yes"


def _method_paragraph(params: Params, n_seeds, primaries: list[str]) -> str:
    """How the intervals, the Holm family, the TOST and the MDE are computed, and how they were calibrated."""
    return (f"{n_seeds} seeds per arm, paired by seed. Per-seed values (manipulation check, H3, H4): Student t over "
            "the seeds. Per-item values (H1: episodes grouped by label set; H2: few-shot tasks): crossed seed x "
            "group random-effects intervals, so the interval generalises to new seeds and new label sets / tasks. "
            f"The {len(primaries)} primaries ({', '.join(f'`{k}`' for k in primaries)}) are Holm-adjusted as one "
            f"family at alpha = {params.analysis.alpha:g}; secondaries are tested unadjusted, exploratory rows are "
            "descriptive. Each effect also has a TOST against its pre-registered smallest effect of interest delta "
            "(*no meaningful effect* when both one-sided tests reject). MDE: the smallest true effect the test detects "
            "with 80% power at the observed standard error (primaries also at the strictest Holm level, alpha / "
            f"{len(primaries)}). Calibration: `tests/test_stats.py` simulates null and planted-effect studies at 3, 5 "
            "and 10 seeds for each design (per-seed scalars, independent items, crossed seeds x label sets) and "
            "requires a false-positive rate of at most 5% plus Monte Carlo error and the nominal power. The seed count "
            "comes from the power analysis in docs/power.md (`uv run mcl power`).")


def detectability_section(params: Params, a: Artifacts) -> list[str]:
    """Section 3: would the statistics call noise an effect (method, seeds, each MDE against its delta)."""
    hyp, decided = a.hypotheses, a.decided
    keys = ordered_keys(hyp)
    lines = ["## 3. Would the statistics call noise an effect?", "",
             _method_paragraph(params, hyp.get("n_seeds"), [k for k in keys if hyp[k].get("role") == "primary"]), "",
             "| key | role | delta | MDE (80% power) | MDE at alpha / m (primaries) | detects delta? |",
             "|---|---|---|---|---|---|"]
    detects = {k: _detects_delta(hyp[k], decided.get(k, {})) for k in keys}
    for k in keys:
        e, f = hyp[k], decided.get(k, {})
        lines.append(f"| `{k}` | {e.get('role')} | {fmt(f.get('delta'))} ({f.get('unit', '')}) | {fmt(e.get('mde'))} | "
                     f"{fmt(f.get('mde_holm'))} | {detects[k]} |")
    lines.append("")
    for k in (k for k in keys if detects[k] == "**no**"):
        lines.append(f"- `{k}`: {MDE_SENTENCE} (MDE {fmt(hyp[k]['mde'])} > delta {fmt(decided[k]['delta'])}).")
    for k in (k for k in keys if detects[k] == "not computed"):
        reason = (a.analysis.get("entries_method") or {}).get(k) or "no usable statistics"
        lines.append(f"- `{k}`: not computed ({reason}); no power statement is possible.")
    for k in (k for k in keys if detects[k].startswith("degenerate")):
        lines.append(f"- `{k}`: every seed and item gives the same paired difference (standard error 0, e.g. both arms "
                     "at the floor); the test carries no information and its MDE of 0 is not a power statement.")
    if all(v == "yes" for v in detects.values()):
        lines.append("Every computed MDE is at or below its delta: an effect of the pre-registered size would "
                     "usually be detected.")
    lines.append("")
    return lines


def hypothesis_table_section(params: Params, a: Artifacts, moved: bool) -> list[str]:
    """Section 4: the H1-H4 table, primaries first, then the H2 precondition (``moved``: the manipulation passed)."""
    art, hyp, decided, pct = a.analysis, a.hypotheses, a.decided, _pct(params)
    lines = ["## 4. Hypotheses H1-H4 (primaries first)", ""]
    if not moved:
        lines += ["The manipulation check failed (section 1): these verdicts compare the arms, they do not test "
                  "whether a shared subspace helps.", ""]
    lines += [f"| key | role | claim | effect (share - baseline) | {pct} CI | p | MDE | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for k in ordered_keys(hyp):
        e, f = hyp[k], decided.get(k, {})
        lines.append(f"| {k} | {e.get('role')} | {f.get('claim', '')} | {fmt(e.get('effect'), signed=True)} | "
                     f"{ci_text(e.get('ci_low'), e.get('ci_high'))} | {p_text(e)} | {fmt(e.get('mde'))} | "
                     f"{verdict_cell(k, e, decided, art)} |")
    pre = art.get("h2_precondition") or {}
    lines += ["", f"H2 precondition ({pre.get('rule', '')}): baseline gain {fmt(pre.get('effect'), signed=True)}, "
                  f"{pct} CI {ci_text(pre.get('ci_low'), pre.get('ci_high'))}, so "
              + ("H2 is testable." if h2_testable(art) else f"**{H2_UNTESTABLE_CLAIM}**: adaptation does not "
                 "measurably help the baseline, so a difference in gains cannot be attributed to the representation "
                 "(the numbers are kept above)."), ""]
    return lines


def first_page(params: Params, a: Artifacts, per_primitive: list[str] | None = None) -> list[str]:
    """The first page of results_summary.md, as lines.

    The first lines say whether the manipulation check passed (and, if not, that H1-H4 then do not
    test the hypothesis); then (1) the manipulation check, (2) whether the models learned the task,
    next to the controls and ``per_primitive`` (Markdown of :func:`per_primitive_section`), (3)
    whether the statistics can tell (each MDE against its delta) and (4) the H1-H4 table.
    """
    moved, lead = manipulation_lead(a.hypotheses)
    return ["# Results summary", "", lead, "",
            f"Generated by {REPORT_CMD} from `metrics/summary.json`, `metrics/hypotheses.json` and "
            "`metrics/analysis/analysis.json`; do not edit by hand. Pre-registration and decision rule: "
            "`docs/hypotheses.md`.", "",
            *manipulation_check_section(params, a), *learned_task_section(params, a, per_primitive),
            *detectability_section(params, a), *hypothesis_table_section(params, a, moved)]


def primitive_means(evals: list[dict], split: str, section: str, primitives, reference: str | None = None
                    ) -> dict[str, float]:
    """Mean over evaluate files of exact match per primitive in ``ev[split][section]`` (or in a
    reference row of the first file, ``ev["reference"][split][reference][section]``); NaN where absent."""
    def one(ev: dict) -> dict:
        return (ev["reference"][split][reference] if reference else ev[split]).get(section, {})

    rows = [one(ev) for ev in (evals[:1] if reference else evals)]
    return {p: float(np.mean([r[p]["exact_match"] for r in rows])) if all(p in r for r in rows) else float("nan")
            for p in primitives}


def per_primitive_tables(rows: dict[str, dict[str, dict[str, float]]], primitives: list[str]) -> list[str]:
    """Markdown: exact match per primitive, one table for val (the primitive alone) and one for test
    (episodes containing it). ``rows``: row label -> {"val": {primitive: value}, "test": {...}}."""
    lines = []
    for split, what in (("val", "val, episodes of the primitive alone (length 1)"),
                        ("test", "test, length-3 episodes that contain the primitive")):
        lines += [f"Exact match per primitive, {what}:", "",
                  "| run | " + " | ".join(primitives) + " |", "|---|" + "---|" * len(primitives)]
        lines += [f"| {label} | " + " | ".join(fmt(v[split].get(p), 3) for p in primitives) + " |"
                  for label, v in rows.items()]
        lines.append("")
    return lines


def per_primitive_section(a: Artifacts, example_figures: list[tuple[str, str, str]]) -> list[str]:
    """Exact match per primitive for the arms, the oracle and copying, then the example-episode figures."""
    oracle_evals = list(a.oracle_evals.values())
    by_run = {**{f"{arm} ({len(a.seeds)} seeds)": list(a.evals[arm].values()) for arm in ARMS},
              f"oracle control ({len(a.oracle_runs)} seed(s))": oracle_evals}
    rows = {label: {"val": primitive_means(evs, "val", "by_primitive_alone", NAMES),
                    "test": primitive_means(evs, "test", "by_primitive", NAMES)} for label, evs in by_run.items()}
    rows["copy the query"] = {"val": primitive_means(oracle_evals, "val", "by_primitive_alone", NAMES, "copy"),
                              "test": primitive_means(oracle_evals, "test", "by_primitive", NAMES, "copy")}
    return per_primitive_tables(rows, list(NAMES)) + [
        "Predicted grids, one episode per primitive (val: the primitive alone; test: a length-3 "
        "episode containing it), for the first seed of each arm and the oracle:", "",
        " ".join(image(f"{run} {split}", name) for run, split, name in example_figures), ""]


def _run_values(a: Artifacts, arm: str, key: str) -> list[float]:
    """Per-run values of a headline key: ``<split>_<metric>`` from the eval files, ``fewshot_<how>_<metric>``
    from the finetune files."""
    out = []
    for r in a.runs[arm]:
        if key.startswith("fewshot_"):
            how, _, metric = key[len("fewshot_"):].partition("_")
            out.append(a.finetune[arm][r][how].get(metric, float("nan")))
        else:
            split, _, metric = key.partition("_")
            out.append(a.evals[arm][r][split][metric])
    return out


def headline_numbers_section(params: Params, a: Artifacts) -> list[str]:
    """Every headline metric per arm: mean over seeds with the t interval over the per-run values."""
    summary = a.summary
    lines = ["## Headline numbers per arm", "",
             f"Mean over seeds (from `metrics/summary.json`) with the {_pct(params)} t interval over the per-run "
             "values of `metrics/eval` and `metrics/finetune` (n/a with fewer than 2 seeds).", "",
             "| metric | " + " | ".join(f"{arm} (n={summary.get('seeds', len(a.seeds))})" for arm in ARMS) + " |",
             "|---|" + "---|" * len(ARMS)]
    for key in (k for k in summary.get(ARMS[0], {}) if k != "seeds"):
        cells = []
        for arm in ARMS:
            try:
                s = mean_interval(_run_values(a, arm, key), params.analysis.alpha)
                lo, hi = s["ci_low"], s["ci_high"]
            except (KeyError, TypeError, ValueError):
                lo = hi = float("nan")
            ci = "" if math.isnan(lo) else f" [{fmt(lo)}, {fmt(hi)}]"
            cells.append(f"{fmt(summary[arm].get(key))}{ci}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def results_summary(params: Params, a: Artifacts, example_figures: list[tuple[str, str, str]]) -> list[str]:
    """The lines of results_summary.md: :func:`first_page`, then :func:`headline_numbers_section`."""
    return first_page(params, a, per_primitive_section(a, example_figures)) + headline_numbers_section(params, a)
