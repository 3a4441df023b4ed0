"""The `mcl analyse` stage: representation analyses and the pre-registered decisions.

For every arm in :data:`mcl.config.ARMS` and every seed in ``train.seeds`` the trained model
(``models/<arm>/seed<k>/best.pt``, loaded safely on the CPU) is run for its representations and
gives one *record* of per-seed scalars and per-item arrays (:func:`mcl.analysis.records.analyse_run`,
where the analysis constants are documented). The per-episode zero-shot scores come from the
evaluate stage (``metrics/eval/<arm>/seed<k>.episodes.npz``), the few-shot values from
``metrics/finetune/<arm>/seed<k>.json``.

Which value feeds which hypothesis is data: :data:`mcl.analysis.decide.SOURCES` maps each key of
the pre-registered table :data:`mcl.stats.hypotheses.HYPOTHESES` to the name of its per-seed
scalar and, for a ``crossed`` design, of its per-item array and item groups.
:func:`mcl.analysis.decide.effect_entries` walks the table, hands the paired arrays to
:func:`mcl.stats.intervals.seed_effect_ci` (with ``groups`` for crossed designs), and
:func:`mcl.stats.hypotheses.decide` applies the decision rule (Holm across the primaries,
TOST against each delta, MDE, verdict).

Outputs
-------
``metrics/hypotheses.json`` (a DVC metric, kept small): top-level ``n_seeds`` and per key only
``effect`` and ``verdict``, with ``ci_low``/``ci_high`` for the primaries and the dev metric
(:func:`mcl.analysis.decide.compact`). Everything else -- the full decided entries (method
text, delta, TOST, df), per-seed values, references, effective ranks, unit counts -- goes to
``<out_dir>/analysis.json`` and the matrices behind the figures to ``<out_dir>/matrices.npz``
(read by :mod:`mcl.report`). NaN and infinities are written as null.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mcl import io
from mcl.analysis.decide import compact, effect_entries, h2_precondition
from mcl.analysis.records import (CKA_NULL_PERMUTATIONS, LABEL_PERMUTATIONS, MONO_PERMUTATIONS, SHARED_COMPONENTS,
                                  AnalysisData, analyse_run, collect, episode_scores, finetune_values, h3_statistics,
                                  load_analysis_data, task_cka, top_units, upper)
from mcl.config import Params
from mcl.evaluation.summary import ZERO_SHOT_SPLITS
from mcl.measures.grassmann import task_reps

#: The verdict of every H2 key in metrics/hypotheses.json when adaptation does not measurably help the
#: baseline (the decided verdict stays in analysis.json).
H2_UNTESTABLE = "untestable at this scale"

SCALAR_KEYS = ("val_gap", "val_jaccard_spearman", "val_overlap_dist", "val_disjoint_dist", "val_n_overlap",
               "val_n_disjoint", "val_effective_rank", "val_label_r2",
               *(f"{s}_{m}" for s in ZERO_SHOT_SPLITS for m in ("exact_match", "iou")),
               "fewshot_gain_iou", "fewshot_rmst_to_target",
               "h3_rho_test_test", "h3_rho_train_train", "h3_rho_train_test", "h3_rho", "h3_rho_pooled",
               "h3_cka_rho_test_test", "h3_cka_rho", "h3_cka_rho_pooled", "h3_scree_elbow", "h3_shared_removed",
               "h3_similarity_mean", "h3_similarity_mean_raw",
               "h4_monosemanticity", "h4_monosemanticity_raw", "h4_monosemanticity_p", "h4_probe_z", "h4_probe_h",
               "h4_aux_auroc", "h4_units_used", "h4_units_shared", "h4_live_units", "h4_dead_units", "h4_units",
               "h4_live_units_test", "h4_dead_units_test")
LIST_KEYS = ("h3_scree", "h4_monosemanticity_per_primitive", "h4_probe_h_per_primitive", "h4_probe_z_per_primitive",
             "h4_aux_auroc_per_primitive")


def analysis_constants_markdown() -> str:
    """How ``mcl analyse`` implements the table (constants of this module), as Markdown (no results)."""
    k, eps, sub = "`loss.share.k`", "`loss.share.eps`", "`analysis.subspace_k`"
    lines = [
        "## How the analysis computes the metrics (`mcl/analysis/run.py`)",
        "",
        f"- Manipulation check (`M_gap`, `M_spearman`): `mcl.losses.share.subspace_geometry` on h of every val "
        f"episode, label-set groups from the labels, k = {k}, eps = {eps}; beside it, per arm, the effective rank "
        "(participation ratio) of h and the fraction of its variance explained by label-set identity.",
        "- H1: per-episode exact match / IoU of the trained models, as the evaluate stage saved them "
        "(`metrics/eval/<arm>/seed<k>.episodes.npz`); groups of the crossed interval are the episodes' label sets.",
        "- H2: per (seed, task) `gain_iou` of `finetune.method` and `steps_to_target` from "
        "`metrics/finetune/<arm>/seed<k>.json`, groups = tasks. H2 is testable only when adaptation measurably "
        "helps the baseline (its mean gain interval lies above 0); otherwise the report says so in place of a verdict.",
        f"- H3: {SHARED_COMPONENTS} pooled within-task principal direction(s) removed from the probe h "
        "(the input-driven component shared by all probe programs), then per-task subspaces of "
        f"{sub} directions; test-test pairs are probe programs whose label sets are test label sets. "
        f"References: an untrained model, {LABEL_PERMUTATIONS} permutations of the Jaccard matrix's task order, and "
        f"the debiased-CKA null from {CKA_NULL_PERMUTATIONS} row permutations.",
        f"- H4: held-out monosemanticity, `mean_excess` (held-out AUROC minus the mean of a {MONO_PERMUTATIONS}-"
        "permutation null), units chosen on the train subset + val and scored on test; linear probes fit on "
        "train subset + val, scored on test; the auxiliary head's own test macro AUROC is reported beside them.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# every run


@dataclass
class Runs:
    """What the loop over arms and seeds gathers: per-arm records, the matrices for matrices.npz,
    seed 0's figures and test representations, the H3 references, the layer names and subspace k."""

    records: dict[str, list[dict]]
    npz: dict[str, np.ndarray]
    seed0: dict[str, Any] = field(default_factory=lambda: {"top_units": {}})
    test_reps0: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    references: dict[str, dict] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    k_sub: int | None = None


def _keep_seed0(runs: Runs, arm: str, extra: dict, data: AnalysisData, cfg) -> None:
    """Seed 0's matrices, selective units and test representations of ``arm`` into ``runs``."""
    T, E, npz = data.T, data.E, runs.npz
    runs.layers = list(extra["reps_probe"])
    runs.k_sub = extra["k"]
    npz[f"{arm}_task_cka"] = np.stack([task_cka(task_reps(extra["reps_probe"][l], T, E)) for l in runs.layers])
    npz[f"{arm}_task_subspace"] = extra["subspace"]
    npz[f"{arm}_h3_pairs_subspace"] = upper(extra["subspace"])
    npz[f"{arm}_h3_pairs_cka"] = upper(extra["cka"])
    npz[f"{arm}_selectivity"] = extra["selectivity"]
    z_test = extra["reps_test"]["z"]
    units, idx = top_units(extra["selectivity"], z_test, cfg.top_units, cfg.top_examples)
    test = data.splits["test"]
    empty = np.zeros((0, 0) + test.inputs.shape[1:], np.uint8)
    npz[f"{arm}_top_index"] = idx
    npz[f"{arm}_top_inputs"] = test.inputs[idx] if idx.size else empty
    npz[f"{arm}_top_outputs"] = test.outputs[idx] if idx.size else empty
    runs.seed0["top_units"][arm] = [{"unit": u, "primitive": data.names[p], "auroc": a,
                                     "activations": [float(z_test[i, u]) for i in idx[r]]}
                                    for r, (p, u, a) in enumerate(units)]
    runs.test_reps0[arm] = extra["reps_test"]


def _untrained_reference(p_arm: Params, data: AnalysisData, batch_size: int, k_sub: int) -> dict[str, Any]:
    """H3 of an untrained model of the arm (built after ``torch.manual_seed(0)``) on the probe split."""
    import torch

    from mcl.models.build import build_model

    torch.manual_seed(0)
    untrained = build_model(p_arm, "cpu")
    h_probe = collect(untrained, data.splits["probe"], batch_size)["reps"]["h"]
    ref = h3_statistics(h_probe, data.T, data.E, data.J, data.types, k_sub)
    return {k: ref[k] for k in ("rho_test_test", "rho", "cka_rho_test_test", "cka_rho")}


def _analyse_runs(params: Params, data: AnalysisData, models_dir: Path, metrics_dir: Path,
                  say: Callable[[str], None]) -> Runs:
    """Every arm and seed: its record (with the evaluate and finetune stages' values), seed 0's
    figures, and per arm the untrained reference."""
    from mcl.config import ARMS, arm_params, run_name
    from mcl.models.build import load_trained

    cfg = params.analysis
    runs = Runs(records={arm: [] for arm in ARMS},
                npz={"jaccard": data.J, "pair_types": data.types,
                     "h3_pairs_jaccard": upper(data.J), "h3_pairs_types": upper(data.types)})
    # the evaluate stage's per-episode scores, all read first: a missing file fails before any model runs
    scores = {(arm, seed): episode_scores(metrics_dir, arm, seed, data.zero_shot_sizes)
              for arm in ARMS for seed in params.train.seeds}
    for arm in ARMS:
        p_arm = arm_params(params, arm)
        for si, seed in enumerate(params.train.seeds):
            name = run_name(arm, seed)
            say(f"{name}: representations, probes, features")
            model = load_trained(models_dir / name, p_arm, "cpu")
            rec, extra = analyse_run(model, data, params, scores[arm, seed], keep=si == 0)
            rec.update(finetune_values(metrics_dir / "finetune" / f"{name}.json", params.finetune.method))
            runs.records[arm].append(rec)
            if si == 0:
                _keep_seed0(runs, arm, extra, data, cfg)
            del model
        say(f"{arm}: untrained reference")
        runs.references[arm] = {"untrained": _untrained_reference(p_arm, data, cfg.batch_size, runs.k_sub)}
    return runs


# ---------------------------------------------------------------------------
# across runs


def _layer_cka(runs: Runs, n_test: int) -> tuple[np.ndarray, bool]:
    """Layer x layer CKA between the arms (seed 0, test): share layers x baseline layers, and whether debiased."""
    from mcl.config import ARMS
    from mcl.measures.cka import cka_matrix, pick_estimator

    widths = [runs.test_reps0[a][l].shape[1] for a in ARMS for l in runs.layers]
    deb_ll = pick_estimator(n_test, max(widths)) and n_test >= 4
    reps_all = [runs.test_reps0[a][l].astype(np.float64) for a in ARMS for l in runs.layers]
    M = cka_matrix(reps_all, debiased=deb_ll)
    L = len(runs.layers)
    return M[:L, L:], deb_ll


def _fewshot_items(records: dict[str, list[dict]]) -> list[str]:
    """The few-shot tasks of every run; adds the per-task arrays ``fewshot_*_items`` in that order to each record."""
    tasks = sorted(set.intersection(*[set(r["tasks"]) for arm in records for r in records[arm]]))
    for arm in records:
        for r in records[arm]:
            r["fewshot_gain_iou_items"] = np.array([r["fewshot_gain_iou_by_task"][t] for t in tasks], dtype=np.float64)
            r["fewshot_steps_to_target_items"] = np.array([r["fewshot_steps_to_target_by_task"][t] for t in tasks],
                                                          dtype=np.float64)
    return tasks


def _nanmean(v) -> float:
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _nansd(v) -> float:
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.std(ddof=1)) if a.size > 1 else float("nan")


def _references(reference: dict, records: list[dict], per_seed: dict[str, list], alpha: float, n_seeds: int,
                E: int) -> None:
    """Complete one arm's H3 references: the trained means, the shuffled-label reference and the CKA null."""
    from mcl.stats.intervals import mean_interval

    trained = {k: mean_interval(per_seed[f"h3_{k}"], alpha)["mean"]
               for k in ("rho_test_test", "rho", "cka_rho_test_test", "cka_rho")}
    shuf_tt = [v for r in records for v in r["h3_shuffled_rho_test_test"]]
    shuf_rho = [v for r in records for v in r["h3_shuffled_rho"]]
    null = np.asarray([v for r in records for v in r["h3_cka_null"]], dtype=np.float64)
    null = null[np.isfinite(null)]
    reference.update(
        trained=trained,
        shuffled={"rho_test_test_mean": _nanmean(shuf_tt), "rho_test_test_sd": _nansd(shuf_tt),
                  "rho_mean": _nanmean(shuf_rho), "rho_sd": _nansd(shuf_rho),
                  "permutations": LABEL_PERMUTATIONS * n_seeds},
        cka_null={"mean": float(null.mean()) if null.size else float("nan"),
                  "sd": float(null.std(ddof=1)) if null.size > 1 else float("nan"),
                  "n": int(null.size), "probe_episodes": E})


def _design(params: Params, data: AnalysisData, runs: Runs, tasks: list[str]) -> dict[str, Any]:
    """The ``design`` section of analysis.json: what was analysed, with which constants."""
    T, E, names = data.T, data.E, data.names
    return {
        "manipulation": {"split": "val", "n_episodes": len(data.splits["val"]), "k": params.loss.share.k,
                         "eps": params.loss.share.eps},
        "probe": {"programs": T, "episodes_per_program": E, "n_pairs": int(T * (T - 1) // 2),
                  "is_test": data.is_test.tolist(),
                  "labels": [[names[j] for j in np.flatnonzero(r)] for r in data.probe_labels],
                  "n_pairs_by_type": {t: int(runs.records["share"][0].get(f"h3_n_{t}", 0))
                                      for t in ("train_train", "train_test", "test_test")}},
        "subspace_k": runs.k_sub, "shared_components": SHARED_COMPONENTS,
        "label_permutations": LABEL_PERMUTATIONS, "cka_null_permutations": CKA_NULL_PERMUTATIONS,
        "monosemanticity_permutations": MONO_PERMUTATIONS,
        "finetune": {"method": params.finetune.method, "tasks": tasks, "censor_limit": params.finetune.steps + 1,
                     "gap_fraction": params.finetune.gap_fraction},
        "n_fit": len(data.splits["fit"]), "n_test": len(data.splits["test"]),
        "splits": {s: len(data.splits[s]) for s in ZERO_SHOT_SPLITS if s in data.splits},
    }


# ---------------------------------------------------------------------------
# the stage


def analyse(params: Params, models_dir, metrics_dir, out_dir, store=None,
            progress: Callable[[str], None] | None = None, table=None) -> dict:
    """Run every analysis; write ``<metrics_dir>/hypotheses.json`` and ``<out_dir>/{analysis.json,matrices.npz}``.

    ``metrics_dir`` is the metrics root holding ``eval/`` (the per-episode scores of the evaluate
    stage) and ``finetune/``; ``table`` defaults to :data:`mcl.stats.hypotheses.HYPOTHESES`.
    Returns the compact hypotheses dict as written.
    """
    from mcl.config import ARMS
    from mcl.data.store import open_store
    from mcl.stats.hypotheses import HYPOTHESES, decide
    from mcl.stats.intervals import mean_interval

    t0 = time.perf_counter()
    table = tuple(HYPOTHESES if table is None else table)
    models_dir, metrics_dir, out_dir = Path(models_dir), Path(metrics_dir), Path(out_dir)
    cfg, seeds = params.analysis, list(params.train.seeds)
    data = load_analysis_data(store or open_store(params.data.store), cfg.probe_train_episodes)
    runs = _analyse_runs(params, data, models_dir, metrics_dir, progress or (lambda _msg: None))
    records = runs.records
    runs.npz["layer_cka_share_vs_baseline"], deb_ll = _layer_cka(runs, len(data.splits["test"]))
    tasks = _fewshot_items(records)  # the same in every run; per-item arrays in that order
    groups = {f"{s}_label_sets": ids for s, ids in data.label_sets.items()}
    groups["fewshot_tasks"] = np.arange(len(tasks))

    # the decisions
    entries = effect_entries(table, records, groups, alpha=cfg.alpha)
    decided = decide(entries, table, alpha=cfg.alpha, scales={"censor_limit": params.finetune.steps + 1})
    hyp = compact(decided, len(seeds))
    h2 = h2_precondition(records["baseline"], groups["fewshot_tasks"], cfg.alpha, params.finetune.method)
    if not h2["testable"]:  # the metric file (dvc exp show) must not show a verdict the report withholds
        for key in hyp:
            if decided.get(key, {}).get("family") == "H2":
                hyp[key]["verdict"] = H2_UNTESTABLE

    # references and summaries per arm
    per_seed = {arm: {k: [r.get(k) for r in records[arm]] for k in SCALAR_KEYS + LIST_KEYS} for arm in ARMS}
    for arm in ARMS:
        _references(runs.references[arm], records[arm], per_seed[arm], cfg.alpha, len(seeds), data.E)
    art = {
        "arms": list(ARMS), "seeds": seeds, "primitives": data.names, "layers": runs.layers,
        "hypotheses": decided,
        "entries_method": {k: e.get("method") or e.get("reason") for k, e in entries.items()},
        "per_seed": per_seed,
        "summary": {arm: {k: mean_interval(per_seed[arm][k], cfg.alpha) for k in SCALAR_KEYS} for arm in ARMS},
        "h2_precondition": h2,
        "h3_references": runs.references,
        "design": _design(params, data, runs, tasks),
        "seed0": runs.seed0,
        "task_cka_estimator": "debiased" if data.E >= 4 else "not computed (fewer than 4 episodes per task)",
        "layer_cka_estimator": "debiased" if deb_ll else "biased",
        "dataset_checksums": data.checksums,
        "wall_time_s": time.perf_counter() - t0,
    }
    io.write_npz(out_dir / "matrices.npz", runs.npz)
    io.write_json(out_dir / "analysis.json", io.json_safe(art), allow_nan=False)
    io.write_json(metrics_dir / "hypotheses.json", io.json_safe(hyp), allow_nan=False)
    return io.json_safe(hyp)
