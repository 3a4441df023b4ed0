"""Per-run values of `mcl analyse`: one *record* per trained model (:func:`analyse_run`).

The model is run (:func:`collect`, on :func:`mcl.evaluation.forward.forward_split`) on val, test,
the probe split and the first ``analysis.probe_train_episodes`` train episodes plus val (``fit``)
for its representations: every layer of ``ModelOutput.acts`` (``enc.i``, ``h``, ``z``) and the
auxiliary head's logits. The per-episode zero-shot scores are not recomputed: they are the
evaluate stage's ``metrics/eval/<arm>/seed<k>.episodes.npz`` (:func:`episode_scores`), and the
few-shot values come from ``metrics/finetune/<arm>/seed<k>.json`` (:func:`finetune_values`).

Analysis constants (documented here and in ``docs/hypotheses.md``)
------------------------------------------------------------------
* Manipulation check: per seed, :func:`mcl.measures.geometry.subspace_geometry` on h of *all* val
  episodes grouped by label set, with the share loss's own ``loss.share.k`` and
  ``loss.share.eps`` (the check measures the geometry the loss acts on).
* H3: :data:`SHARED_COMPONENTS` pooled within-task principal directions are removed from the
  probe h before the per-task PCA (:func:`mcl.measures.grassmann.remove_shared_components`).
  One: the probe episodes ``j`` of every program share their input grids, which gives every task
  one common input-driven direction; a larger count starts removing label-driven directions
  used by many tasks. The pooled scree (fraction of variance of the leading pooled directions)
  and the count its largest log-gap would suggest are recorded per run (``h3_scree``,
  ``h3_scree_elbow``) so that the choice can be checked, but the count is fixed so that both arms
  and every seed are analysed identically. Subspaces keep ``analysis.subspace_k`` directions
  (at most ``probe_episodes - 1``). Task CKA is the debiased estimator on the raw probe h (rows
  aligned by episode: the same inputs), NaN below 4 episodes per task.
* H3 references: an untrained model per arm (:func:`mcl.models.build.build_model` with the
  arm's params after ``torch.manual_seed(0)``), :data:`LABEL_PERMUTATIONS` permutations of the
  Jaccard matrix's task order, and the debiased-CKA null from :data:`CKA_NULL_PERMUTATIONS`
  independent row permutations of every task's h (its standard deviation at the current
  ``data.probe_episodes``).
* H4: :func:`mcl.measures.features.heldout_monosemanticity` (units chosen on train subset + val,
  scored on test) with :data:`MONO_PERMUTATIONS` label permutations; the effect uses
  ``mean_excess`` (held-out AUROC minus its permutation-null mean, averaged over primitives).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mcl.config import Params
from mcl.evaluation.summary import ZERO_SHOT_SPLITS
from mcl.measures.grassmann import task_reps

__all__ = ["collect", "jaccard_matrix", "upper", "task_cka", "h3_statistics", "AnalysisData", "load_analysis_data",
           "episode_scores", "analyse_run", "finetune_values", "top_units", "SCORE_METRICS", "SHARED_COMPONENTS",
           "LABEL_PERMUTATIONS", "CKA_NULL_PERMUTATIONS", "MONO_PERMUTATIONS", "SCREE_LENGTH"]

#: Pooled within-task principal directions removed from the probe h before the H3 subspaces.
SHARED_COMPONENTS = 1
#: Permutations of the Jaccard matrix's task order (shuffled-label reference of H3).
LABEL_PERMUTATIONS = 20
#: Independent row permutations of every task's h for the debiased-CKA null.
CKA_NULL_PERMUTATIONS = 10
#: Label permutations of the held-out monosemanticity null (H4).
MONO_PERMUTATIONS = 1000
#: Leading pooled singular values recorded for the H3 scree.
SCREE_LENGTH = 10
#: Per-episode zero-shot scores a record holds per split (``<split>_<metric>`` and ``..._items``).
SCORE_METRICS = ("exact_match", "iou")
#: Splits the model is run on for their representations.
REP_SPLITS = ("val", "test", "fit", "probe")


# ---------------------------------------------------------------------------
# representations


def collect(model, episodes, batch_size: int) -> dict[str, Any]:
    """One forward pass over the episodes ``episodes`` (:class:`mcl.data.generator.Episodes`) on the CPU.

    Returns ``reps`` (layer name -> float32 ``[N, width]`` in acts order) and ``aux`` (float32
    ``[N, P]`` auxiliary-head logits).
    """
    from mcl.data.dataset import DeviceSplit
    from mcl.evaluation.forward import forward_split

    parts: dict[str, list] = {}
    aux = []
    for _, out in forward_split(model, DeviceSplit(episodes, "cpu"), np.arange(len(episodes)), batch_size):
        for name, a in out.acts.items():
            parts.setdefault(name, []).append(a.float().cpu().numpy())
        aux.append(out.aux_logits.float().cpu().numpy())
    return {"reps": {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()},
            "aux": np.concatenate(aux).astype(np.float32)}


def jaccard_matrix(labels: np.ndarray) -> np.ndarray:
    """Jaccard overlap of multi-hot label rows ``[T, P]`` -> ``[T, T]`` float64 (:func:`mcl.losses.share.jaccard`)."""
    import torch

    from mcl.losses.share import jaccard

    L = torch.from_numpy(np.asarray(labels).astype(bool))
    return jaccard(L, L, torch.float64).numpy()


def upper(M: np.ndarray) -> np.ndarray:
    """Strict upper triangle of a square matrix, row-major."""
    i, j = np.triu_indices(M.shape[0], k=1)
    return M[i, j]


def task_cka(reps: list[np.ndarray]) -> np.ndarray:
    """Debiased task x task CKA (NaN with fewer than 4 episodes per task)."""
    from mcl.measures.cka import cka_matrix

    T, E = len(reps), reps[0].shape[0]
    if E < 4:
        return np.full((T, T), np.nan)
    return cka_matrix(reps, debiased=True)


def _scree(reps: list[np.ndarray]) -> tuple[list[float], int]:
    """Fractions of variance of the leading pooled within-task directions, and the largest-log-gap count."""
    pooled = np.vstack([R - R.mean(axis=0, keepdims=True) for R in reps])
    s2 = np.linalg.svd(pooled, compute_uv=False) ** 2
    total = float(s2.sum())
    if not total > 0:
        return [], 0
    frac = (s2 / total)[:SCREE_LENGTH]
    pos = frac[frac > 0]
    elbow = int(np.argmax(np.log(pos[:-1]) - np.log(pos[1:])) + 1) if pos.size >= 2 else 0
    return frac.tolist(), elbow


def h3_statistics(h: np.ndarray, T: int, E: int, J: np.ndarray, types: np.ndarray, k: int,
                  n_shared: int = SHARED_COMPONENTS) -> dict[str, Any]:
    """H3 on the probe h ``[T * E, d]`` (program-major): subspace and CKA matrices and their
    Spearman association with label overlap, overall and within pair types."""
    from mcl.measures.grassmann import remove_shared_components, stratified_spearman, subspace_similarity

    reps = task_reps(h, T, E)
    d = reps[0].shape[1]
    c = max(0, min(n_shared, d - 1, T * E))
    S = subspace_similarity(remove_shared_components(reps, c), k)
    S_raw = subspace_similarity(remove_shared_components(reps, 0), k)  # per-task PCA of the raw (centred) h
    C = task_cka(reps)
    st, sc = stratified_spearman(S, J, types), stratified_spearman(C, J, types)
    scree, elbow = _scree(reps)
    off = ~np.eye(len(S), dtype=bool)
    return {"subspace": S, "cka": C, "shared_removed": c, "scree": scree, "scree_elbow": elbow,
            "similarity_mean": float(S[off].mean()), "similarity_mean_raw": float(S_raw[off].mean()),
            **{f"rho{k_[3:]}": v for k_, v in st.items() if k_.startswith("rho")},
            **{f"cka_rho{k_[3:]}": v for k_, v in sc.items() if k_.startswith("rho")},
            **{k_: v for k_, v in st.items() if k_.startswith("n_")}}


def _shuffled_reference(S: np.ndarray, J: np.ndarray, types: np.ndarray, n_perm: int, seed: int) -> dict[str, list]:
    """The H3 statistics of ``S`` against ``n_perm`` permutations of the Jaccard matrix's task order."""
    from mcl.measures.grassmann import stratified_spearman

    rng = np.random.default_rng(seed)
    tt, rho = [], []
    for _ in range(n_perm):
        p = rng.permutation(J.shape[0])
        st = stratified_spearman(S, J[np.ix_(p, p)], types)
        tt.append(st["rho_test_test"])
        rho.append(st["rho"])
    return {"rho_test_test": tt, "rho": rho}


def _cka_null(h: np.ndarray, T: int, E: int, n_perm: int, seed: int) -> list[float]:
    """Off-diagonal debiased CKA values after independent row permutations of every task's h."""
    if E < 4 or T < 2:
        return []
    rng = np.random.default_rng(seed)
    reps = task_reps(h, T, E)
    vals: list[float] = []
    for _ in range(n_perm):
        C = task_cka([R[rng.permutation(E)] for R in reps])
        vals.extend(upper(C).tolist())
    return vals


def _aux_auroc(aux: np.ndarray, Y: np.ndarray) -> tuple[float, list[float]]:
    """Macro (over primitives with both classes) and per-primitive test AUROC of the auxiliary logits."""
    from mcl.measures.rank import auroc

    per = [auroc(aux[:, p], Y[:, p]) for p in range(Y.shape[1])]
    ok = [v for v in per if math.isfinite(v)]
    return (float(np.mean(ok)) if ok else float("nan")), per


# ---------------------------------------------------------------------------
# the data


@dataclass
class AnalysisData:
    """The store splits the analysis reads, loaded once."""

    names: list[str]
    splits: dict[str, Any]           # val, test, dev, novel2 (those present), probe, fit
    T: int
    E: int
    probe_labels: np.ndarray         # [T, P]
    is_test: np.ndarray              # [T] bool
    J: np.ndarray                    # [T, T]
    types: np.ndarray                # [T, T]
    label_sets: dict[str, np.ndarray]  # split -> label-set id per episode
    checksums: dict

    @property
    def zero_shot_sizes(self) -> dict[str, int]:
        """Episodes per zero-shot split present (the per-episode scores of a run must match)."""
        return {s: len(self.splits[s]) for s in ZERO_SHOT_SPLITS if s in self.splits}


def load_analysis_data(store, probe_train_episodes: int) -> AnalysisData:
    """Splits, probe layout and pair types from a store (see :func:`mcl.data.store.open_store`)."""
    from mcl.measures.grassmann import pair_types
    from mcl.data.dataset import label_set_bitmask
    from mcl.data.generator import Episodes

    splits = {s: store.load(s) for s in ZERO_SHOT_SPLITS if s in store.splits}
    probe = store.load("probe")
    T = int(store.attrs["probe"]["programs"])
    E = int(store.attrs["probe"]["episodes_per_program"])
    train = store.load("train")
    splits["fit"] = Episodes.concat([train.take(np.arange(min(probe_train_episodes, len(train)))), splits["val"]])
    splits["probe"] = probe
    del train
    probe_labels = probe.labels[::E][:T]
    masks = label_set_bitmask(probe_labels)
    test_sets = (store.attrs.get("label_sets") or {}).get("test")
    if test_sets:
        is_test = np.isin(masks, np.asarray(test_sets, dtype=np.int64))
    else:  # by construction (mcl.data.generator.generate_probe): first half train label sets, then test
        is_test = np.arange(T) >= T // 2
    J = jaccard_matrix(probe_labels)
    return AnalysisData(names=list(store.primitives), splits=splits, T=T, E=E, probe_labels=probe_labels,
                        is_test=is_test, J=J, types=pair_types(is_test),
                        label_sets={s: label_set_bitmask(splits[s].labels) for s in ZERO_SHOT_SPLITS if s in splits},
                        checksums=store.attrs.get("checksums", {}))


# ---------------------------------------------------------------------------
# values of one run read from the earlier stages


def episode_scores(metrics_dir, arm: str, seed: int, sizes: Mapping[str, int]) -> dict[str, dict[str, np.ndarray]]:
    """The evaluate stage's per-episode scores of one run: split -> metric -> float64 ``[n]``.

    Read from ``<metrics_dir>/eval/<arm>/seed<seed>.episodes.npz`` for every split in ``sizes``
    (split -> episodes in the store) and every metric of :data:`SCORE_METRICS`. A missing file
    raises ``FileNotFoundError``, a missing array or one of another length (a file from another
    store) :class:`mcl.errors.StoreError`, each naming the stage to run.
    """
    from mcl.config import run_name
    from mcl.errors import StoreError

    path = Path(metrics_dir) / "eval" / f"{run_name(arm, seed)}.episodes.npz"
    rerun = f"run the evaluate stage first: mcl evaluate --arm {arm} --seed {seed}"
    try:
        f = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing ({rerun})") from None
    out: dict[str, dict[str, np.ndarray]] = {}
    with f:
        for split, n in sizes.items():
            for m in SCORE_METRICS:
                key = f"{split}_{m}"
                if key not in f.files:
                    raise StoreError(f"{path}: no array {key!r} ({rerun})")
                v = f[key].astype(np.float64)
                if v.shape != (n,):
                    raise StoreError(f"{path}: {key} has shape {v.shape}, the store's {split} split has {n} "
                                     f"episodes ({rerun})")
                out.setdefault(split, {})[m] = v
    return out


def finetune_values(path: Path, method: str) -> dict[str, Any]:
    """Per-task gain and steps to target of ``method`` and its per-seed summaries from one finetune file."""
    ft = json.loads(Path(path).read_text())
    tasks = sorted(ft["tasks"])
    runs = [ft["tasks"][t][method] for t in tasks]
    return {"tasks": tasks,
            "fewshot_gain_iou_by_task": {t: r.get("gain_iou", float("nan")) for t, r in zip(tasks, runs)},
            "fewshot_steps_to_target_by_task": {t: r.get("steps_to_target", float("nan")) for t, r in zip(tasks, runs)},
            "fewshot_gain_iou": ft[method].get("gain_iou", float("nan")),
            "fewshot_rmst_to_target": ft[method].get("rmst_to_target", float("nan")),
            "fewshot_rmst_limit": ft[method].get("rmst_limit", float("nan"))}


# ---------------------------------------------------------------------------
# one run


def _manipulation(h_val: np.ndarray, val_labels: np.ndarray, params: Params) -> dict[str, float]:
    """The manipulation check on val: subspace geometry of h by label set, effective rank, label R^2."""
    import torch

    from mcl.measures.geometry import effective_rank, group_label_sets, label_variance_fraction, subspace_geometry

    h = torch.from_numpy(h_val.astype(np.float64))
    ids, sets = group_label_sets(torch.from_numpy(val_labels.astype(np.int64)))
    geo = subspace_geometry(h, ids, sets, params.loss.share.k, params.loss.share.eps)
    rec = {f"val_{k}": float(v) for k, v in geo.items()}
    rec["val_effective_rank"] = effective_rank(h)
    rec["val_label_r2"] = label_variance_fraction(h, ids)
    return rec


def _h3(h_probe: np.ndarray, data: AnalysisData, k: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """H3 on the probe h: ``(record fields h3_*, the statistics with the subspace and CKA matrices)``."""
    h3 = h3_statistics(h_probe, data.T, data.E, data.J, data.types, k)
    rec = {f"h3_{name}": v for name, v in h3.items() if name not in ("subspace", "cka")}
    shuf = _shuffled_reference(h3["subspace"], data.J, data.types, LABEL_PERMUTATIONS, seed=0)
    rec["h3_shuffled_rho_test_test"] = shuf["rho_test_test"]
    rec["h3_shuffled_rho"] = shuf["rho"]
    rec["h3_cka_null"] = _cka_null(h_probe, data.T, data.E, CKA_NULL_PERMUTATIONS, seed=0)
    return rec, h3


def _h4(fit: dict[str, Any], test: dict[str, Any], data: AnalysisData, probe_max_iter: int) -> dict[str, Any]:
    """H4 on z (and h): units and probes fit / selected on train subset + val, scored on test."""
    from mcl.measures.features import heldout_monosemanticity, unit_counts
    from mcl.measures.probes import probe_primitives

    Y_fit = data.splits["fit"].labels.astype(np.int64)
    Y_test = data.splits["test"].labels.astype(np.int64)
    z_fit, z_test = fit["reps"]["z"], test["reps"]["z"]
    mono = heldout_monosemanticity(z_fit, Y_fit, z_test, Y_test, n_perm=MONO_PERMUTATIONS, seed=0)
    rec: dict[str, Any] = {}
    rec["h4_monosemanticity"] = mono["mean_excess"]
    rec["h4_monosemanticity_raw"] = mono["mean"]
    rec["h4_monosemanticity_p"] = mono["p_value_mean"]
    rec["h4_monosemanticity_per_primitive"] = mono["excess"].tolist()
    rec["h4_units_used"] = mono["n_units_used"]
    rec["h4_units_shared"] = mono["n_shared"]
    live_test = unit_counts(z_test)
    rec.update(h4_live_units=mono["live_units"], h4_dead_units=mono["dead_units"], h4_units=mono["units"],
               h4_live_units_test=live_test["live"], h4_dead_units_test=live_test["dead"])
    for rep in ("h", "z"):
        pr = probe_primitives(fit["reps"][rep], Y_fit, test["reps"][rep], Y_test, data.names, max_iter=probe_max_iter)
        rec[f"h4_probe_{rep}"] = pr["macro_auroc"]
        rec[f"h4_probe_{rep}_per_primitive"] = [pr["per_primitive"][n]["auroc"] for n in data.names]
    rec["h4_aux_auroc"], rec["h4_aux_auroc_per_primitive"] = _aux_auroc(test["aux"], Y_test)
    return rec


def analyse_run(model, data: AnalysisData, params: Params, scores: Mapping[str, Mapping[str, np.ndarray]],
                keep: bool = False) -> tuple[dict, dict]:
    """Every per-run value of one trained model.

    ``scores``: the run's per-episode zero-shot scores, split -> metric -> ``[n]`` (:func:`episode_scores`).
    Returns ``(record, extra)``. ``record`` holds per-seed scalars (``val_gap``,
    ``val_jaccard_spearman``, ``val_overlap_dist``, ``val_disjoint_dist``, ``val_effective_rank``,
    ``val_label_r2``, ``<split>_exact_match``/``_iou`` and the per-episode ``..._items`` arrays for
    val, test, dev, novel2, ``h3_*`` (subspace and CKA Spearman statistics), ``h4_monosemanticity``
    (``mean_excess``), ``h4_monosemanticity_raw`` (``mean``), ``h4_probe_z``, ``h4_probe_h``,
    ``h4_aux_auroc``, unit counts) and per-primitive lists. ``extra`` holds the matrices and
    representations the figures and references need (``subspace``, ``cka``, ``reps_probe``,
    ``reps_test``, ``selectivity``), filled only with ``keep``.
    """
    from mcl.measures.features import selectivity

    cfg = params.analysis
    sp = data.splits
    out = {s: collect(model, sp[s], cfg.batch_size) for s in REP_SPLITS}
    rec: dict[str, Any] = _manipulation(out["val"]["reps"]["h"], sp["val"].labels, params)
    for s in ZERO_SHOT_SPLITS:  # zero-shot per episode, from the evaluate stage
        if s in sp:
            for m in SCORE_METRICS:
                rec[f"{s}_{m}_items"] = scores[s][m]
                rec[f"{s}_{m}"] = float(np.mean(scores[s][m]))
    k = max(1, min(cfg.subspace_k, data.E - 1, params.model.h_dim - 1))
    h3_rec, h3 = _h3(out["probe"]["reps"]["h"], data, k)
    rec.update(h3_rec)
    rec.update(_h4(out["fit"], out["test"], data, cfg.probe_max_iter))
    extra: dict[str, Any] = {}
    if keep:
        z_test, Y_test = out["test"]["reps"]["z"], sp["test"].labels.astype(np.int64)
        extra = {"subspace": h3["subspace"], "cka": h3["cka"], "reps_probe": out["probe"]["reps"],
                 "reps_test": out["test"]["reps"], "selectivity": selectivity(z_test, Y_test), "k": k}
    return rec, extra


def top_units(sel: np.ndarray, z: np.ndarray, n_units: int, n_examples: int) -> tuple[list, np.ndarray]:
    """Most selective distinct units (primitive, unit, auroc) and their top-activating test episodes."""
    from mcl.measures.features import most_selective_units, top_activating

    best = sorted(most_selective_units(sel, 1), key=lambda t: -t[2])
    units, seen = [], set()
    for prim, unit, auc in best:
        if unit not in seen:
            seen.add(unit)
            units.append((prim, unit, auc))
        if len(units) == n_units:
            break
    idx = np.array([top_activating(z, u, n_examples) for _, u, _ in units], dtype=np.int64).reshape(len(units), -1)
    return units, idx
