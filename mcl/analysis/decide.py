"""From per-run records to effects and decisions: which record value feeds which hypothesis.

:data:`SOURCES` maps each key of the pre-registered table :data:`mcl.stats.hypotheses.HYPOTHESES`
to the name of its per-seed scalar and, for a ``crossed`` design, of its per-item array and item
groups. :func:`effect_entries` walks the table and hands the paired arrays to
:func:`mcl.stats.intervals.seed_effect_ci` (with ``groups`` for crossed designs);
:func:`mcl.stats.hypotheses.decide` then applies the decision rule and :func:`compact` keeps
the fields of the DVC metric ``metrics/hypotheses.json``. :func:`h2_precondition` says whether
H2 is testable at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["Source", "SOURCES", "COMPACT_FIELDS", "WITH_INTERVAL", "stack", "effect_entries", "compact",
           "h2_precondition"]

#: Fields of each key in metrics/hypotheses.json, a DVC metric: one `dvc exp show` column each, so the
#: interval only for the primaries and the dev metric that selects beta (the rest is in analysis.json).
COMPACT_FIELDS = {"primary": ("effect", "ci_low", "ci_high", "verdict"),
                  "other": ("effect", "verdict")}
WITH_INTERVAL = ("dev_exact_match",)


@dataclass(frozen=True)
class Source:
    """Where the values of one hypothesis come from in the per-run records.

    ``per_seed``: name of the per-seed scalar (``design="seeds"``); ``per_item``: name of the
    per-item array ``[n_items]`` (``design="crossed"``), the same items in every seed;
    ``groups``: name of the item group ids (``None``: every item its own group).
    """

    per_seed: str
    per_item: str | None = None
    groups: str | None = None


#: key of the pre-registered table -> its values (see :func:`mcl.analysis.records.analyse_run` for the record fields).
SOURCES: dict[str, Source] = {
    "M_gap": Source("val_gap"),
    "M_spearman": Source("val_jaccard_spearman"),
    "H1_exact_match": Source("test_exact_match", "test_exact_match_items", "test_label_sets"),
    "H1b_novel2_exact_match": Source("novel2_exact_match", "novel2_exact_match_items", "novel2_label_sets"),
    "H1_iou": Source("test_iou", "test_iou_items", "test_label_sets"),
    "dev_exact_match": Source("dev_exact_match", "dev_exact_match_items", "dev_label_sets"),
    "H2_gain": Source("fewshot_gain_iou", "fewshot_gain_iou_items", "fewshot_tasks"),
    # per task, the Kaplan-Meier RMST of one run censored at the limit is its steps_to_target;
    # their mean over tasks is the per-seed rmst_to_target of the finetune file
    "H2_rmst": Source("fewshot_rmst_to_target", "fewshot_steps_to_target_items", "fewshot_tasks"),
    "H3_test_spearman": Source("h3_rho_test_test"),
    "H3_stratified": Source("h3_rho"),
    "H3_cka_test": Source("h3_cka_rho_test_test"),
    "H4_monosemanticity": Source("h4_monosemanticity"),
    "H4_probe_z": Source("h4_probe_z"),
    "H4_probe_h": Source("h4_probe_h"),
}


def stack(records: list[dict], name: str) -> np.ndarray | None:
    """Values ``name`` of every record (seed) stacked, or None when a record lacks it."""
    if not records or any(name not in r for r in records):
        return None
    return np.asarray([np.asarray(r[name], dtype=np.float64) for r in records])


def _crossed_effect(s: np.ndarray, b: np.ndarray, g: np.ndarray | None, alpha: float):
    """``(entry or None, dropped, s, b)`` of a crossed design: items non-finite in any seed of either arm dropped."""
    from mcl.stats.intervals import seed_effect_ci

    keep = np.isfinite(s).all(axis=0) & np.isfinite(b).all(axis=0)
    dropped = int((~keep).sum())
    s, b = s[:, keep], b[:, keep]
    g = None if g is None else g[keep]
    if s.shape[0] < 2 or s.shape[1] == 0:
        return {"reason": f"{s.shape[0]} seeds x {s.shape[1]} finite items: nothing to test"}, dropped, s, b
    return seed_effect_ci(s, b, alpha=alpha, groups=g), dropped, s, b


def _seeds_effect(s: np.ndarray, b: np.ndarray, alpha: float):
    """``(entry, dropped, s, b)`` of per-seed scalars: seeds non-finite in either arm dropped."""
    from mcl.stats.intervals import seed_effect_ci

    keep = np.isfinite(s) & np.isfinite(b)
    dropped = int((~keep).sum())
    s, b = s[keep], b[keep]
    if s.size < 2:
        return {"reason": f"{s.size} seeds with finite values in both arms: nothing to test"}, dropped, s, b
    return seed_effect_ci(s, b, alpha=alpha), dropped, s, b


def effect_entries(table: Iterable, records: Mapping[str, list[dict]], groups: Mapping[str, np.ndarray],
                   alpha: float = 0.05, sources: Mapping[str, Source] = SOURCES) -> dict[str, dict]:
    """:func:`mcl.stats.intervals.seed_effect_ci` of ``share - baseline`` for every hypothesis in ``table``.

    Parameters
    ----------
    table : the hypotheses (:class:`mcl.stats.hypotheses.Hypothesis`)
    records : ``{"share": [record per seed], "baseline": [...]}``, seeds in the same order
    groups : item-group ids by name (see :class:`Source`)
    alpha : level of the intervals
    sources : key -> :class:`Source`; a table key without a source raises ``KeyError``

    Returns
    -------
    ``key -> entry``: the ``seed_effect_ci`` dict plus ``n_dropped`` (seeds or items dropped for a
    non-finite value in either arm), or ``{"reason": ...}`` when the effect cannot be computed
    (values missing, fewer than 2 seeds or no item left). :func:`mcl.stats.hypotheses.decide`
    treats the latter as not computed.
    """
    out: dict[str, dict] = {}
    for h in table:
        if h.key not in sources:
            raise KeyError(f"hypothesis {h.key!r} has no value source in mcl.analysis.decide.SOURCES")
        src = sources[h.key]
        crossed = h.design == "crossed"
        if crossed and not src.per_item:
            raise ValueError(f"{h.key}: the table asks for a crossed design but its source has no per-item values")
        name = src.per_item if crossed else src.per_seed
        s, b = stack(records["share"], name), stack(records["baseline"], name)
        if s is None or b is None:
            out[h.key] = {"reason": f"no values {name!r} (split or file missing)"}
            continue
        if s.shape != b.shape:
            raise ValueError(f"{h.key}: share values {s.shape} and baseline values {b.shape} are not paired")
        if crossed:
            g = None if src.groups is None else np.asarray(groups[src.groups])
            e, dropped, s, b = _crossed_effect(s, b, g, alpha)
        else:
            e, dropped, s, b = _seeds_effect(s, b, alpha)
        if "reason" in e:
            out[h.key] = e
            continue
        e["n_dropped"] = dropped
        e["share_mean"] = float(s.mean())
        e["baseline_mean"] = float(b.mean())
        out[h.key] = e
    return out


def compact(decided: Mapping[str, Mapping[str, Any]], n_seeds: int) -> dict[str, Any]:
    """The small ``metrics/hypotheses.json``: ``n_seeds`` and per key ``effect`` and ``verdict``, plus
    ``ci_low`` and ``ci_high`` for the primaries and :data:`WITH_INTERVAL`."""
    out: dict[str, Any] = {"n_seeds": int(n_seeds)}
    for key, e in decided.items():
        fields = COMPACT_FIELDS["primary" if e.get("role") == "primary" or key in WITH_INTERVAL else "other"]
        out[key] = {k: e.get(k) for k in fields}
    return out


def h2_precondition(baseline: list[dict], tasks_groups: np.ndarray, alpha: float, method: str) -> dict[str, Any]:
    """Does adaptation measurably help the baseline? Its mean ``method`` gain over no adaptation, crossed
    seeds x tasks (``tasks_groups``: item groups), with ``testable`` when the interval lies above 0."""
    from mcl.stats.intervals import seed_effect_ci

    base_gain = stack(baseline, "fewshot_gain_iou_items")
    if base_gain is not None and base_gain.shape[0] >= 2 and base_gain.shape[1] and np.isfinite(base_gain).all():
        pre = seed_effect_ci(base_gain, np.zeros_like(base_gain), alpha=alpha, groups=tasks_groups)
        h2 = {"effect": pre["effect"], "ci_low": pre["ci_low"], "ci_high": pre["ci_high"], "method": pre["method"],
              "testable": bool(pre["ci_low"] > 0)}
    else:
        h2 = {"effect": None, "ci_low": None, "ci_high": None, "method": "fewer than 2 seeds or no finite gain",
              "testable": False}
    h2["rule"] = (f"H2 is tested only when the baseline's mean {method} gain over no adaptation has a "
                  f"{100 * (1 - alpha):g}% interval above 0 (crossed seeds x tasks)")
    return h2
