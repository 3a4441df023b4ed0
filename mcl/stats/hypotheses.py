"""The pre-registered hypotheses as data, and the decision rule applied to them.

:data:`HYPOTHESES` is the single table from which both the analysis (which effects to compute,
with which design and which smallest effect of interest) and ``docs/hypotheses.md``
(:func:`render_preregistration`) are generated. :func:`decide` turns the intervals of
:func:`mcl.stats.intervals.seed_effect_ci` into verdicts: Holm across the primaries,
unadjusted tests for the secondaries, exploratory results labelled as such, and a TOST
against each hypothesis' ``delta`` everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mcl.stats.intervals import decide_effect, holm, minimum_detectable_effect
from mcl.io import finite_or_none, json_safe

__all__ = ["Hypothesis", "HYPOTHESES", "ROLES", "DESIGNS", "by_key", "primaries", "absolute_delta", "decide",
           "render_preregistration"]

ROLES = ("primary", "secondary", "exploratory")
DESIGNS = ("seeds", "crossed")
FAMILY_TITLES = {
    "manipulation": "Manipulation check: does the share loss shape h as intended?",
    "H1": "H1 - zero-shot composition",
    "H2": "H2 - few-shot efficiency",
    "H3": "H3 - shared subspace on held-out tasks",
    "H4": "H4 - concept-aligned sparse features",
}


@dataclass(frozen=True)
class Hypothesis:
    """One pre-registered effect ``share - baseline``.

    Attributes
    ----------
    key : name of the effect in ``metrics/hypotheses.json``
    family : ``"manipulation"``, ``"H1"`` ... ``"H4"``
    claim : the claim in words
    metric : what is measured per seed (``design="seeds"``) or per seed and item (``"crossed"``)
    source : where the values come from (split, artefact, how they are scored)
    direction : ``+1`` (share higher) or ``-1`` (share lower) is the predicted sign
    role : ``"primary"`` (Holm across all primaries), ``"secondary"`` (own unadjusted test) or
        ``"exploratory"`` (reported, not a claim)
    delta : smallest effect of interest (> 0), in ``unit``; with ``delta_scale`` a fraction of it
    unit : unit of the metric and of ``delta``
    design : ``"seeds"`` (per-seed scalars: Student t over seeds) or ``"crossed"`` (per-item
        values crossed with seeds: :func:`mcl.stats.intervals.seed_effect_ci` with ``groups``)
    split : data split the metric is scored on (``val``, ``test``, ``novel2``, ``dev``,
        ``fewshot``, ``probe``); ``select_beta`` only accepts ``dev``
    items : for ``crossed``, what the items and the groups passed to ``seed_effect_ci`` are
    delta_scale : when set, the name of a quantity (a key of the ``scales`` passed to
        :func:`decide`, or of the effect's entry) and ``delta`` is a fraction of it
    delta_scale_text : what that quantity is, for the pre-registration
    """

    key: str
    family: str
    claim: str
    metric: str
    source: str
    direction: int
    role: str
    delta: float
    unit: str
    design: str
    split: str
    items: str = ""
    delta_scale: str = ""
    delta_scale_text: str = ""

    def __post_init__(self):
        if self.direction not in (1, -1):
            raise ValueError(f"{self.key}: direction must be +1 or -1, got {self.direction!r}")
        if self.role not in ROLES:
            raise ValueError(f"{self.key}: role must be one of {ROLES}, got {self.role!r}")
        if self.design not in DESIGNS:
            raise ValueError(f"{self.key}: design must be one of {DESIGNS}, got {self.design!r}")
        if not self.delta > 0:
            raise ValueError(f"{self.key}: delta must be > 0, got {self.delta!r}")
        if self.design == "crossed" and not self.items:
            raise ValueError(f"{self.key}: a crossed design must say what its items and groups are")
        if bool(self.delta_scale) != bool(self.delta_scale_text):
            raise ValueError(f"{self.key}: delta_scale and delta_scale_text go together")


_SPEARMAN = "Spearman rho"
_AUROC = "AUROC"

#: The pre-registered table (keys are fixed: the analysis and report rely on them).
HYPOTHESES: tuple[Hypothesis, ...] = (
    Hypothesis(
        key="M_gap", family="manipulation", role="primary", direction=1, delta=0.02,
        unit="projection distance (dimensionless, 0-1)",
        design="seeds", split="val",
        claim="share separates label-set groups by primitive overlap in h more than baseline",
        metric="overlap gap: mean subspace projection distance of h between val label-set groups that share no "
               "primitive minus that between groups that share at least one",
        source="val split, per-group PCA bases of h (loss.share.k directions), one value per seed"),
    Hypothesis(
        key="M_spearman", family="manipulation", role="secondary", direction=1, delta=0.1, unit=_SPEARMAN,
        design="seeds", split="val",
        claim="subspace similarity of h tracks label overlap more closely in share",
        metric="Spearman correlation between label Jaccard and subspace similarity (1 - projection distance) over "
               "val group pairs",
        source="val split, the group bases of M_gap, one value per seed"),
    Hypothesis(
        key="H1_exact_match", family="H1", role="primary", direction=1, delta=0.02,
        unit="exact-match rate (fraction of episodes)",
        design="crossed", split="test",
        claim="share generalises better than baseline to unseen length-3 compositions",
        metric="zero-shot exact match of the query output grid (argmax prediction), per test episode",
        source="test split (label sets of length 3 never seen in training), recomputed from the trained models",
        items="items: test episodes; groups: their test label sets"),
    Hypothesis(
        key="H1b_novel2_exact_match", family="H1", role="secondary", direction=1, delta=0.02,
        unit="exact-match rate (fraction of episodes)", design="crossed", split="novel2",
        claim="share generalises better to held-out combinations of two primitives",
        metric="zero-shot exact match per novel2 episode",
        source="novel2 split (length-2 label sets held out of training)",
        items="items: novel2 episodes; groups: their label sets"),
    Hypothesis(
        key="H1_iou", family="H1", role="exploratory", direction=1, delta=0.02, unit="IoU",
        design="crossed", split="test",
        claim="share has higher zero-shot test IoU",
        metric="hard IoU of the query prediction, per test episode",
        source="test split, as H1_exact_match",
        items="items: test episodes; groups: their test label sets"),
    Hypothesis(
        key="dev_exact_match", family="H1", role="exploratory", direction=1, delta=0.02,
        unit="exact-match rate (fraction of episodes)", design="crossed", split="dev",
        claim="share has higher zero-shot exact match on the dev split (used only to choose loss.beta)",
        metric="zero-shot exact match per dev episode",
        source="dev split (length-3 label sets disjoint from test and fewshot); selects beta, never test",
        items="items: dev episodes; groups: their label sets"),
    Hypothesis(
        key="H2_gain", family="H2", role="primary", direction=1, delta=0.02, unit="IoU",
        design="crossed", split="fewshot",
        claim="parameter-efficient adaptation gains more over no adaptation in share than in baseline",
        metric="LoRA final query IoU minus the no-adaptation query IoU at the same budget, per few-shot task",
        source="fewshot split: finetune.num_tasks label sets, the same tasks for both arms",
        items="items and groups: few-shot tasks (one value per task, or per query episode grouped by task)"),
    Hypothesis(
        key="H2_rmst", family="H2", role="secondary", direction=-1, delta=0.1, unit="adaptation steps",
        design="crossed", split="fewshot",
        claim="share reaches an IoU target relative to its starting point in fewer steps",
        metric="restricted mean steps to reach a target relative to each task's step-0 query IoU (censored runs "
               "count as the censoring limit)",
        source="fewshot split, the tasks of H2_gain",
        items="items and groups: few-shot tasks (one value per task, or per query episode grouped by task)",
        delta_scale="censor_limit",
        delta_scale_text="the censoring limit (finetune.steps + 1 adaptation steps)"),
    Hypothesis(
        key="H3_test_spearman", family="H3", role="primary", direction=1, delta=0.1, unit=_SPEARMAN,
        design="seeds", split="probe",
        claim="in share, held-out tasks that share primitives share representation subspaces more",
        metric="Spearman correlation between label Jaccard and subspace similarity of h, after removing the "
               "components shared by all probe tasks, among test-test probe task pairs",
        source="probe split (programs with aligned input grids), test-label-set programs only; one value per seed"),
    Hypothesis(
        key="H3_stratified", family="H3", role="secondary", direction=1, delta=0.1, unit=_SPEARMAN,
        design="seeds", split="probe",
        claim="the overlap-similarity association is higher in share within every pair type",
        metric="combined within-type Spearman statistic over train-train, train-test and test-test probe pairs",
        source="probe split, all programs; one value per seed"),
    Hypothesis(
        key="H3_cka_test", family="H3", role="exploratory", direction=1, delta=0.1, unit=_SPEARMAN,
        design="seeds", split="probe",
        claim="CKA of h tracks label overlap among held-out tasks more closely in share",
        metric="Spearman correlation between label Jaccard and linear CKA of h among test-test probe pairs",
        source="probe split, test-label-set programs; one value per seed"),
    Hypothesis(
        key="H4_monosemanticity", family="H4", role="primary", direction=1, delta=0.02, unit=_AUROC,
        design="seeds", split="test",
        claim="share's sparse units are more selective for single primitives on unseen compositions",
        metric="held-out monosemanticity of z: per primitive, the unit chosen on train+val, its AUROC scored on "
               "test, normalised against a permutation null, averaged over primitives",
        source="SAE codes z; unit selection on train+val, scoring on the test split; one value per seed"),
    Hypothesis(
        key="H4_probe_z", family="H4", role="secondary", direction=1, delta=0.02, unit=_AUROC,
        design="seeds", split="test",
        claim="share's z encodes the primitives of unseen compositions more linearly",
        metric="linear-probe macro AUROC over primitives on z for test tasks (the auxiliary head reads h, so z is "
               "not trained on the labels)",
        source="probes fit on train+val z, scored on test; one value per seed"),
    Hypothesis(
        key="H4_probe_h", family="H4", role="exploratory", direction=1, delta=0.02, unit=_AUROC,
        design="seeds", split="test",
        claim="share's h encodes the primitives of unseen compositions more linearly",
        metric="linear-probe macro AUROC over primitives on h for test tasks (h is read by the auxiliary head)",
        source="probes fit on train+val h, scored on test; one value per seed"),
)


def by_key(table: Iterable[Hypothesis] = HYPOTHESES) -> dict[str, Hypothesis]:
    """``key -> Hypothesis``; raises ``ValueError`` on a duplicated key."""
    out: dict[str, Hypothesis] = {}
    for h in table:
        if h.key in out:
            raise ValueError(f"duplicated hypothesis key {h.key!r}")
        out[h.key] = h
    return out


def primaries(table: Iterable[Hypothesis] = HYPOTHESES) -> list[str]:
    """Keys of the primary hypotheses, in table order (the Holm family)."""
    return [h.key for h in table if h.role == "primary"]


def absolute_delta(h: Hypothesis, entry: Mapping[str, Any] | None = None,
                   scales: Mapping[str, float] | None = None) -> float:
    """``h.delta`` in the metric's unit: times ``scales[h.delta_scale]`` (or ``entry[h.delta_scale]``) when set.

    Raises ``KeyError`` when the scale is needed but given nowhere.
    """
    if not h.delta_scale:
        return float(h.delta)
    for src in (scales or {}, entry or {}):
        if src.get(h.delta_scale) is not None:
            return float(h.delta) * float(src[h.delta_scale])
    raise KeyError(f"{h.key}: delta is a fraction of {h.delta_scale!r} ({h.delta_scale_text}); "
                   f"pass it in scales or in the entry")


# ---------------------------------------------------------------------------
# decisions


def _usable(entry: Mapping[str, Any] | None) -> bool:
    """Whether ``entry`` has finite ``effect``, ``se``, ``p_value``, a positive ``se`` and a positive ``df``
    (``inf`` allowed). A zero standard error (every seed and item identical, e.g. all models at 0 exact match)
    allows no test: such an entry is not computed, hence inconclusive, never "no meaningful effect"."""
    if entry is None or any(finite_or_none(entry.get(k)) is None for k in ("effect", "se", "p_value")):
        return False
    if float(entry["se"]) <= 0:
        return False
    df = entry.get("df")
    return df is not None and float(df) > 0


def _delta_or_none(h: Hypothesis, entry: Mapping[str, Any], scales: Mapping[str, float] | None,
                   required: bool) -> float | None:
    """:func:`absolute_delta`; a missing scale raises only where the entry is tested (``required``)."""
    try:
        return absolute_delta(h, entry, scales)
    except KeyError:
        if required:
            raise
        return None


def decide(entries: Mapping[str, Mapping[str, Any]], table: Iterable[Hypothesis] = HYPOTHESES, alpha: float = 0.05,
           power: float = 0.8, scales: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Verdicts for every effect, by the pre-registered rule.

    Parameters
    ----------
    entries : ``key -> dict`` with at least the :func:`mcl.stats.intervals.seed_effect_ci` fields
        ``effect``, ``ci_low``, ``ci_high``, ``se``, ``df``, ``p_value`` (other fields are kept);
        an entry whose statistics are missing or not finite counts as not computed
    table : the hypotheses (default :data:`HYPOTHESES`)
    alpha : family-wise level of the primaries, and the level of every other test
    power : power at which the minimum detectable effect ``mde`` is reported
    scales : values of the ``delta_scale`` quantities (e.g. ``{"censor_limit": 61}``)

    Returns
    -------
    dict ``key -> entry``: a JSON-friendly copy of the input entry (non-finite floats as
    ``None``) plus ``family``, ``role``, ``claim``, ``direction``, ``delta`` (absolute, in
    ``unit``), ``unit``, ``design``, ``p_holm`` (primaries: Holm-adjusted over *all* primaries of
    the table, a primary without usable statistics entering with p = 1; ``None`` otherwise),
    ``p_tost``, ``p_tost_holm`` (primaries), ``equivalent``, ``trivial``, ``mde`` (minimum
    detectable effect at ``alpha`` and ``power``), ``mde_holm`` (primaries: at ``alpha / m``, the
    strictest Holm step), ``verdict``
    (one of :data:`mcl.stats.intervals.VERDICTS`) and ``decision`` (the rule in words). Every
    primary of the table appears, ``verdict`` ``"inconclusive"`` and ``computed`` False when
    it was not computed. Keys not in the table pass through with ``role`` ``"unregistered"``.

    Notes
    -----
    Primaries: significance is Holm-adjusted p < alpha, equivalence is Holm-adjusted TOST p <
    alpha (equivalence claims are family-wise too). Secondaries: the same tests unadjusted,
    labelled ``secondary``. Exploratory: unadjusted, labelled ``exploratory`` (descriptive; not a
    claim). Precedence of :func:`mcl.stats.intervals.verdict`: a significant effect is
    ``supported``/``refuted`` even inside +-delta (then ``trivial`` is True), otherwise an
    equivalent one is ``no meaningful effect``, otherwise ``inconclusive``.
    """
    hyps = by_key(table)
    prim = primaries(hyps.values())
    # the effects to decide: every primary, and the other registered keys that were given
    keys = [k for k, h in hyps.items() if h.role == "primary" or k in entries]
    given = {k: dict(entries.get(k) or {}) for k in keys}
    usable = {k: _usable(given[k]) for k in keys}
    delta = {k: _delta_or_none(hyps[k], given[k], scales, required=usable[k]) for k in keys}
    first = {k: decide_effect(given[k], hyps[k].direction, delta[k], alpha, power=power) for k in keys if usable[k]}
    p_holm = holm({k: first[k]["p"] if k in first else 1.0 for k in prim})
    p_tost_holm = holm({k: first[k]["tost"]["p"] if k in first else 1.0 for k in prim})

    decided: dict[str, dict[str, Any]] = {}
    for key in keys:
        h, entry, primary = hyps[key], given[key], hyps[key].role == "primary"
        r = first.get(key)
        if r is not None and primary:
            r = decide_effect(entry, h.direction, delta[key], alpha, p_adjusted=p_holm[key],
                              tost_p_adjusted=p_tost_holm[key], power=power)
        rule = (f"Holm across {len(prim)} primaries at alpha={alpha:g}" if primary
                else f"unadjusted at alpha={alpha:g} ({h.role})")
        tost_text = f"TOST +-{delta[key]:g} {h.unit}" if delta[key] is not None else f"TOST +-{_delta_text(h)}"
        entry.update(
            family=h.family, role=h.role, claim=entry.get("claim") or h.claim, direction=h.direction,
            delta=delta[key], unit=h.unit, design=h.design, computed=r is not None,
            p_holm=p_holm[key] if primary else None,
            p_tost=r["tost"]["p"] if r else None,
            p_tost_holm=p_tost_holm[key] if primary else None,
            equivalent=bool(r and r["equivalent"]), trivial=bool(r and r["trivial"]),
            mde=r["mde"] if r else None,
            mde_holm=minimum_detectable_effect(entry["se"], entry["df"], alpha / len(prim), power)
            if r and primary else None,
            verdict=r["verdict"] if r else "inconclusive",
            decision=f"{rule}; {tost_text}" + ("" if r else "; not computed"),
        )
        for k in ("effect", "ci_low", "ci_high", "p_value"):
            entry.setdefault(k, None)
        decided[key] = json_safe(entry)
    for key, entry in entries.items():
        if key not in hyps:
            decided[key] = json_safe({**dict(entry), "role": "unregistered"})
    return decided


# ---------------------------------------------------------------------------
# pre-registration document


def _delta_text(h: Hypothesis) -> str:
    if h.delta_scale:
        return f"{h.delta:g} x {h.delta_scale_text}"
    return f"{h.delta:g} {h.unit}"


def _design_text(h: Hypothesis) -> str:
    if h.design == "seeds":
        return "per-seed scalars; Student t over the paired per-seed differences (df = n_seeds - 1)"
    return (f"per-item values crossed with seeds ({h.items}); two-way crossed random-effects (seed x group) "
            "decomposition of the seed x group cell means, groups weighing equally, effective df from the "
            "generalized pivotal quantity")


def _rule_text(h: Hypothesis, n_primaries: int, alpha: float) -> str:
    sign = "> 0" if h.direction == 1 else "< 0"
    if h.role == "primary":
        test = (f"supported when the Holm-adjusted p (across the {n_primaries} primaries) is < {alpha:g} "
                f"and effect {sign}")
    elif h.role == "secondary":
        test = f"secondary: supported when the unadjusted p is < {alpha:g} and effect {sign}"
    else:
        test = "exploratory: the same reading, reported without a claim"
    return (f"{test}; refuted when significant with the other sign; otherwise 'no meaningful effect' when "
            f"the TOST against +-{_delta_text(h)} rejects both sides"
            + (" (Holm-adjusted)" if h.role == "primary" else "") + ", else inconclusive")


def render_preregistration(table: Iterable[Hypothesis] = HYPOTHESES, alpha: float = 0.05, power: float = 0.8) -> str:
    """The pre-registration (``docs/hypotheses.md``) as Markdown, generated from ``table``.

    For each hypothesis: claim, metric, source, direction, role, smallest effect of interest,
    design and decision rule; before them the decision rule common to all (interval method,
    TOST, Holm across the primaries, verdict precedence, power reporting, beta selection). It
    holds no results.
    """
    hyps = list(table)
    by_key(hyps)  # duplicate check
    prim = primaries(hyps)
    pct = f"{100 * (1 - alpha):g}%"
    lines = [
        "# Hypotheses and decision rule (pre-registration)",
        "",
        "Written before any results; this file holds no result numbers. It is generated from the table",
        "`HYPOTHESES` in `mcl/stats/hypotheses.py` (`render_preregistration`); edit the table, not this file.",
        "The numbers and verdicts are written by the pipeline to `metrics/hypotheses.json`.",
        "",
        "Two arms are trained with identical data, initialisation streams and budgets for each seed in",
        "`train.seeds`: **share** (the full objective, including the shared-subspace loss `loss.beta`) and",
        "**baseline** (the same with `loss.beta` forced to 0). Every effect is **share - baseline**, paired by",
        "seed; every seed is scored on the same evaluation items (fixed data seed), so items are crossed",
        "with seeds.",
        "",
        "## Decision rule (all hypotheses)",
        "",
        "- **Interval** (`mcl.stats.intervals.seed_effect_ci`), by design:",
        "  - `seeds`: per-seed scalars; Student t over the per-seed paired differences, df = n_seeds - 1.",
        "  - `crossed`: per-item values `[n_seeds, n_items]`, items nested in groups (label sets or tasks),",
        "    groups crossed with seeds. The paired differences are averaged into seed x group cell means;",
        "    the estimand is the mean over seeds and groups (each group weighs equally). Its variance is the",
        "    two-way crossed random-effects decomposition `(MS_seed + max(MS_group - MS_res, 0)) / (S G)`",
        "    (method of moments), with effective degrees of freedom from the generalized pivotal",
        "    quantity (calibrated in `tests/test_stats.py`: at most nominal false-positive rate at 3, 5",
        "    and 10 seeds). The interval generalises to new seeds and new groups.",
        f"  - The reported interval is the central {pct} t interval; `p_value` is two-sided.",
        f"- **Multiplicity**: the {len(prim)} primaries ({', '.join(f'`{k}`' for k in prim)}) form one family;",
        f"  their p-values are Holm-adjusted (`p_holm`) and a primary is significant when `p_holm < {alpha:g}`",
        "  (family-wise error rate controlled at alpha). A primary that could not be computed enters with",
        "  p = 1. Secondaries are tested unadjusted and labelled secondary; exploratory effects are",
        "  reported and labelled exploratory, without a claim.",
        "- **Equivalence**: each hypothesis has a smallest effect of interest `delta` (in the metric's unit).",
        f"  Two one-sided t tests (TOST) at level {alpha:g} test `-delta < effect < delta`; for the primaries",
        "  the TOST p-values are Holm-adjusted across the primaries as well.",
        "- **Verdict** (`mcl.stats.intervals.verdict`), by precedence:",
        "  1. *supported* when the effect is significant with the predicted sign; *refuted* when it is",
        "     significant with the other sign. A significant effect inside +-delta keeps this verdict and",
        "     is flagged `trivial` (detectable, but smaller than the smallest effect of interest);",
        "  2. *no meaningful effect* when not significant and the TOST rejects both sides;",
        "  3. *inconclusive* otherwise (including effects that were not computed).",
        f"- **Power**: every effect reports `mde`, the smallest true effect its test detects with {power:.0%}",
        "  power (noncentral t at the observed standard error and df). The seed count `train.seeds` is",
        "  sized by `uv run mcl power` (docs/power.md): for each primary, `mcl.stats.intervals.seeds_for_power`",
        "  on the variance components of a default run, at 80% power against delta at the Holm worst-case",
        "  level alpha / m; the most demanding primary sets the count, capped by the compute budget.",
        "- **Choice of beta**: `loss.beta` is chosen on the dev split only (`dev_exact_match`, the best",
        "  dev effect of the sweep), never on test.",
        "",
        "## Summary",
        "",
        "| key | family | role | predicted sign | delta | design | split |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in hyps:
        lines.append(f"| `{h.key}` | {h.family} | {h.role} | {'+' if h.direction == 1 else '-'} | "
                     f"{_delta_text(h)} | {h.design} | {h.split} |")
    for fam in dict.fromkeys(h.family for h in hyps):
        lines += ["", f"## {FAMILY_TITLES.get(fam, fam)}", ""]
        for h in (h for h in hyps if h.family == fam):
            lines += _hypothesis_section(h, len(prim), alpha)
    return "\n".join(lines).rstrip() + "\n"


def _hypothesis_section(h: Hypothesis, n_primaries: int, alpha: float) -> list[str]:
    """The pre-registration's lines for one hypothesis: claim, metric, prediction, delta, design, rule."""
    return [
        f"### `{h.key}` ({h.role})",
        "",
        f"- Claim: {h.claim}.",
        f"- Metric: {h.metric}; unit: {h.unit}.",
        f"- Source: {h.source}.",
        f"- Prediction: share - baseline {'> 0' if h.direction == 1 else '< 0'} (direction {h.direction:+d}).",
        f"- Smallest effect of interest: delta = {_delta_text(h)}.",
        f"- Design: {_design_text(h)}.",
        f"- Decision: {_rule_text(h, n_primaries, alpha)}.",
        "",
    ]
