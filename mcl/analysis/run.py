"""The `mcl analyse` stage: representation analyses and the H1-H4 decision table.

For every arm and seed in ``train.seeds`` the trained model (``models/<arm>-seed<k>/best.pt``,
loaded safely on the CPU) is run on the probe split, on the first
``analysis.probe_train_episodes`` train episodes plus val, and on test; every layer of
``ModelOutput.acts`` (``enc.i``, ``h``, ``z``) is kept. From these, and from the per-run
files of the earlier stages, each hypothesis of ``docs/hypotheses.md`` gets an entry

``effect`` (share - baseline, paired by seed), ``ci_low``/``ci_high`` (bootstrap, central
``1 - analysis.alpha``), ``n_seeds``, ``n_episodes``/``n_tasks``/``n_pairs``, ``p_value``
(paired t-test over seeds, where defined), ``method`` and ``verdict``

in ``metrics/hypotheses.json``; the matrices behind the figures go to ``out_dir``
(``analysis.json`` and ``matrices.npz``, read by :mod:`mcl.analysis.report`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mcl.analysis.cka import cka_matrix, pick_estimator
from mcl.analysis.features import monosemanticity, most_selective_units, selectivity, top_activating
from mcl.analysis.grassmann import distance_matrix, pca_basis
from mcl.analysis.probes import probe_primitives
from mcl.analysis.stats import paired_bootstrap_ci, paired_t_test, spearman, verdict
from mcl import io
from mcl.config import Params

__all__ = ["analyse", "hypothesis_entry", "collect", "jaccard_matrix", "upper", "HYPOTHESIS_KEYS", "write_json"]

# key -> (hypothesis, claim, direction of share - baseline the claim predicts)
HYPOTHESIS_KEYS: dict[str, tuple[str, str, int]] = {
    "H1_exact_match": ("H1", "share has higher zero-shot test exact match (primary)", 1),
    "H1_iou": ("H1", "share has higher zero-shot test IoU (secondary)", 1),
    "H2_steps_to_threshold": ("H2", "share needs fewer adapted fine-tuning steps to reach the IoU threshold", -1),
    "H2_final_iou": ("H2", "share reaches a higher final IoU after adapted fine-tuning", 1),
    "H3_cka": ("H3", "Spearman(label Jaccard, CKA of h) across probe task pairs is higher in share", 1),
    "H3_subspace": ("H3", "Spearman(label Jaccard, subspace similarity of h) across probe task pairs is higher in share", 1),
    "H4_probe_h": ("H4", "linear-probe macro AUROC on h for unseen length-3 test tasks is higher in share", 1),
    "H4_probe_z": ("H4", "linear-probe macro AUROC on z for unseen length-3 test tasks is higher in share", 1),
    "H4_monosemanticity": ("H4", "monosemanticity of z (mean best single-unit AUROC) on test is higher in share", 1),
    "cost_step_time_ms": ("cost", "share costs more training time per step (reported, not a hypothesis)", 1),
}


def _finite_or_none(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _clean(obj):
    """JSON-safe copy: NaN/inf -> None, numpy scalars/arrays -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite_or_none(obj)
    return obj


def write_json(path: Path, obj) -> None:
    """``obj`` as strict JSON (NaN and infinities become null), written atomically."""
    io.write_json(path, _clean(obj), allow_nan=False)


# ---------------------------------------------------------------------------
# decision rule

def hypothesis_entry(share, baseline, direction: int, *, n_boot: int = 10000, alpha: float = 0.05, seed: int = 0,
                     count_key: str = "n_episodes", claim: str = "", t_test: bool = True) -> dict[str, Any]:
    """One row of ``hypotheses.json`` from paired arrays of the two arms.

    ``share``, ``baseline``: ``[n_seeds]`` per-seed scalars or ``[n_seeds, n]`` per-episode
    (per-task) values, row ``i`` = seed ``i`` in both. Non-finite values are dropped first:
    a seed (1-D) or a column (2-D) with a non-finite value in either arm. The effect and CI
    come from :func:`paired_bootstrap_ci`, the verdict from :func:`verdict` with
    ``direction``; ``p_value`` is the two-sided paired t-test over per-seed means (None
    when undefined, e.g. fewer than 2 seeds). With nothing left the entry is inconclusive
    with null statistics.
    """
    s = np.asarray(share, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if s.shape != b.shape or s.ndim not in (1, 2):
        raise ValueError(f"share and baseline must have the same [n_seeds] or [n_seeds, n] shape, got {s.shape} and {b.shape}")
    ok = np.isfinite(s) & np.isfinite(b)
    if s.ndim == 1:
        s, b = s[ok], b[ok]
        n_units = 1 if s.size else 0
        n_seeds = int(s.size)
    else:
        keep = ok.all(axis=0)
        s, b = s[:, keep], b[:, keep]
        n_units = int(s.shape[1])
        n_seeds = int(s.shape[0]) if n_units else 0
    entry: dict[str, Any] = {"claim": claim, "direction": int(direction)}
    if n_seeds == 0 or n_units == 0:
        entry.update(effect=None, ci_low=None, ci_high=None, n_seeds=n_seeds, **{count_key: n_units},
                     share_mean=None, baseline_mean=None, p_value=None,
                     method="no finite paired values", verdict="inconclusive")
        return entry
    ci = paired_bootstrap_ci(s, b, n_boot=n_boot, alpha=alpha, seed=seed)
    p = float("nan")
    if t_test:
        _, p = paired_t_test(s, b)
    entry.update(
        effect=ci["effect"], ci_low=ci["ci_low"], ci_high=ci["ci_high"], n_seeds=ci["n_seeds"],
        **{count_key: n_units},
        share_mean=float(s.mean()), baseline_mean=float(b.mean()),
        p_value=_finite_or_none(p),
        method=ci["method"] + ("; p_value: two-sided paired t-test over per-seed means" if t_test else ""),
        verdict=verdict(ci["ci_low"], ci["ci_high"], direction),
    )
    return entry


# ---------------------------------------------------------------------------
# representations

def collect(model, inputs: np.ndarray, outputs: np.ndarray, batch_size: int, metrics: bool = False):
    """Every layer of ``acts`` for the episodes ``inputs``/``outputs`` (uint8 [N, S, 8, 8]).

    Returns ``(reps, values)``: ``reps`` layer name -> float32 ``[N, width]`` in acts order;
    ``values`` (when ``metrics``) ``exact_match``/``iou`` float64 ``[N]`` of the argmax
    prediction of the query output, else None.
    """
    import torch

    from mcl.evaluation.metrics import per_episode

    parts: dict[str, list] = {}
    vals: dict[str, list] = {"exact_match": [], "iou": []}
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(inputs), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(inputs[lo:lo + batch_size]))
            y = torch.from_numpy(np.ascontiguousarray(outputs[lo:lo + batch_size]))
            if metrics:
                out = model(x, y)
                acts = out.acts
            else:  # representations only: encoder + SAE, no executor
                h, acts = model.encode(x[:, :-1], y[:, :-1])
                acts = dict(acts)
                acts["z"] = model.sae(h)[0]
            for name, a in acts.items():
                parts.setdefault(name, []).append(a.float().cpu().numpy())
            if metrics:
                v = per_episode(out.logits.argmax(dim=1), y[:, -1].long())
                for k in vals:
                    vals[k].append(v[k].double().numpy())
    reps = {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}
    return reps, ({k: np.concatenate(v) for k, v in vals.items()} if metrics else None)


def jaccard_matrix(labels: np.ndarray) -> np.ndarray:
    """Jaccard overlap of multi-hot label rows ``[T, P]`` -> ``[T, T]`` (1 on the diagonal)."""
    L = np.asarray(labels).astype(bool)
    inter = (L[:, None, :] & L[None, :, :]).sum(-1)
    union = (L[:, None, :] | L[None, :, :]).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        J = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return J.astype(np.float64)


def upper(M: np.ndarray) -> np.ndarray:
    """Strict upper triangle of a square matrix, row-major."""
    i, j = np.triu_indices(M.shape[0], k=1)
    return M[i, j]


def _task_reps(X: np.ndarray, T: int, E: int) -> list[np.ndarray]:
    return [X[i * E:(i + 1) * E] for i in range(T)]


def _task_matrices(X: np.ndarray, T: int, E: int, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(CKA [T, T], subspace similarity 1 - projection distance [T, T], debiased?) of per-task reps."""
    reps = _task_reps(X, T, E)
    debiased = pick_estimator(E, X.shape[1]) and E >= 4
    C = cka_matrix(reps, debiased=debiased)
    bases = [pca_basis(R, k) for R in reps]
    S = 1.0 - distance_matrix(bases, "projection")
    return C, S, bool(debiased)


# ---------------------------------------------------------------------------
# the stage

def analyse(params: Params, models_dir, metrics_dir, out_dir, store=None,
            progress: Callable[[str], None] | None = None) -> dict:
    """Run every analysis; write ``<metrics_dir>/hypotheses.json`` and ``<out_dir>/{analysis.json,matrices.npz}``.

    ``metrics_dir`` is the metrics root holding ``eval/``, ``finetune/`` and ``train/``.
    Returns the hypotheses dict (as written, before NaN -> null).
    """
    from mcl.data.generator import Episodes
    from mcl.data.store import open_store
    from mcl.evaluation.summary import mean_step_time_ms
    from mcl.training.trainer import ARMS, arm_params, load_trained, run_name

    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    models_dir, metrics_dir, out_dir = Path(models_dir), Path(metrics_dir), Path(out_dir)
    cfg = params.analysis
    seeds = list(params.train.seeds)
    store = store or open_store(params.data.store)
    names = store.primitives
    probe = store.load("probe")
    T = int(store.attrs["probe"]["programs"])
    E = int(store.attrs["probe"]["episodes_per_program"])
    train_all = store.load("train")
    fit_eps = Episodes.concat([train_all.take(np.arange(min(cfg.probe_train_episodes, len(train_all)))), store.load("val")])
    del train_all
    test = store.load("test")
    Y_fit = fit_eps.labels.astype(np.int64)
    Y_test = test.labels.astype(np.int64)
    probe_labels = probe.labels[::E][:T]
    J = jaccard_matrix(probe_labels)
    J_up = upper(J)
    k = max(1, min(cfg.subspace_k, E - 1 if E > 1 else 1, params.model.h_dim))

    per: dict[str, dict[str, list]] = {arm: {} for arm in ARMS}
    art: dict[str, Any] = {"layers": None, "seed0": {}}
    npz: dict[str, np.ndarray] = {"jaccard": J}
    test_reps0: dict[str, dict[str, np.ndarray]] = {}
    est_task = None
    for arm in ARMS:
        p_arm = arm_params(params, arm)
        for si, seed in enumerate(seeds):
            name = run_name(arm, seed)
            say(f"{name}: representations")
            model = load_trained(models_dir / name, p_arm, "cpu")
            reps_probe, _ = collect(model, probe.inputs, probe.outputs, cfg.batch_size)
            reps_fit, _ = collect(model, fit_eps.inputs, fit_eps.outputs, cfg.batch_size)
            reps_test, vals = collect(model, test.inputs, test.outputs, cfg.batch_size, metrics=True)
            layers = list(reps_probe)
            art["layers"] = layers
            rec = per[arm]
            rec.setdefault("exact_match", []).append(vals["exact_match"])
            rec.setdefault("iou", []).append(vals["iou"])
            # H3: task x task similarity of h on the probe split
            C, S, est_task = _task_matrices(reps_probe["h"].astype(np.float64), T, E, k)
            rec.setdefault("rho_cka", []).append(spearman(J_up, upper(C)))
            rec.setdefault("rho_subspace", []).append(spearman(J_up, upper(S)))
            # H4: probes (fit on train subset + val, scored on test) and SAE selectivity on test z
            say(f"{name}: probes")
            ph = probe_primitives(reps_fit["h"], Y_fit, reps_test["h"], Y_test, names, max_iter=cfg.probe_max_iter)
            pz = probe_primitives(reps_fit["z"], Y_fit, reps_test["z"], Y_test, names, max_iter=cfg.probe_max_iter)
            rec.setdefault("probe_h", []).append(ph["macro_auroc"])
            rec.setdefault("probe_z", []).append(pz["macro_auroc"])
            rec.setdefault("probe_h_per_primitive", []).append([ph["per_primitive"][n]["auroc"] for n in names])
            rec.setdefault("probe_z_per_primitive", []).append([pz["per_primitive"][n]["auroc"] for n in names])
            sel = selectivity(reps_test["z"], Y_test)
            mono = monosemanticity(sel)
            rec.setdefault("monosemanticity", []).append(float(np.nanmean(mono)) if np.isfinite(mono).any() else float("nan"))
            rec.setdefault("monosemanticity_per_primitive", []).append(mono.tolist())
            if si == 0:
                cka_layers, est_layers = [], []
                for layer in layers:
                    Cl, Sl, dl = _task_matrices(reps_probe[layer].astype(np.float64), T, E, k)
                    cka_layers.append(Cl)
                    est_layers.append(dl)
                npz[f"{arm}_task_cka"] = np.stack(cka_layers)
                npz[f"{arm}_task_subspace"] = S
                npz[f"{arm}_selectivity"] = sel
                art["seed0"].setdefault("task_cka_debiased", {})[arm] = est_layers
                # most selective units and their top-activating test episodes
                best = sorted(most_selective_units(sel, 1), key=lambda t: -t[2])
                units, seen = [], set()
                for prim, unit, auc in best:
                    if unit not in seen:
                        seen.add(unit)
                        units.append((prim, unit, auc))
                    if len(units) == cfg.top_units:
                        break
                idx = np.array([top_activating(reps_test["z"], u, cfg.top_examples) for _, u, _ in units],
                               dtype=np.int64).reshape(len(units), -1)
                npz[f"{arm}_top_index"] = idx
                npz[f"{arm}_top_inputs"] = test.inputs[idx] if idx.size else np.zeros((0, 0) + test.inputs.shape[1:], np.uint8)
                npz[f"{arm}_top_outputs"] = test.outputs[idx] if idx.size else np.zeros((0, 0) + test.outputs.shape[1:], np.uint8)
                art["seed0"].setdefault("top_units", {})[arm] = [
                    {"unit": u, "primitive": names[p], "auroc": a,
                     "activations": [float(reps_test["z"][i, u]) for i in idx[r]]}
                    for r, (p, u, a) in enumerate(units)]
                test_reps0[arm] = reps_test
            del model

    # layer x layer CKA between the arms (seed 0, test)
    layers = art["layers"]
    n_test = len(test)
    widths = [test_reps0[a][l].shape[1] for a in ARMS for l in layers]
    deb_ll = pick_estimator(n_test, max(widths)) and n_test >= 4
    reps_all = [test_reps0["share"][l].astype(np.float64) for l in layers] + \
               [test_reps0["baseline"][l].astype(np.float64) for l in layers]
    M = cka_matrix(reps_all, debiased=deb_ll)
    L = len(layers)
    npz["layer_cka_share_vs_baseline"] = M[:L, L:]

    # H2: few-shot, per task per seed
    ft = {arm: [json.loads((metrics_dir / "finetune" / f"{run_name(arm, s)}.json").read_text()) for s in seeds]
          for arm in ARMS}
    method = params.finetune.method
    task_names = sorted(set.intersection(*[set(r["tasks"]) for arm in ARMS for r in ft[arm]]))
    for arm in ARMS:
        for key in ("steps_to_threshold", "final_iou"):
            per[arm][f"ft_{key}"] = [[r["tasks"][t][method][key] for t in task_names] for r in ft[arm]]
    # cost
    for arm in ARMS:
        per[arm]["step_time_ms"] = [mean_step_time_ms(metrics_dir / "train" / run_name(arm, s) / "metrics.csv")
                                    for s in seeds]

    kw = dict(n_boot=cfg.n_boot, alpha=cfg.alpha, seed=0)
    sh, ba = per["share"], per["baseline"]
    est_word = "debiased" if est_task else "biased"
    hyp: dict[str, Any] = {}

    def add(key, s, b, count_key, t_test=True, note=""):
        group, claim, direction = HYPOTHESIS_KEYS[key]
        e = hypothesis_entry(np.asarray(s, dtype=np.float64), np.asarray(b, dtype=np.float64), direction,
                             count_key=count_key, claim=claim, t_test=t_test, **kw)
        e["hypothesis"] = group
        if note:
            e["method"] = f"{e['method']}; {note}"
        hyp[key] = e

    add("H1_exact_match", sh["exact_match"], ba["exact_match"], "n_episodes",
        note="per-episode exact match of the argmax query prediction on test, recomputed from the models")
    add("H1_iou", sh["iou"], ba["iou"], "n_episodes", note="per-episode hard IoU on test, recomputed from the models")
    add("H2_steps_to_threshold", sh["ft_steps_to_threshold"], ba["ft_steps_to_threshold"], "n_tasks",
        note=f"per-task steps to finetune.threshold={params.finetune.threshold} IoU with {method} "
             f"(censored at finetune.steps + 1 = {params.finetune.steps + 1}); tasks paired across arms")
    add("H2_final_iou", sh["ft_final_iou"], ba["ft_final_iou"], "n_tasks", note=f"per-task final query IoU after {method}")
    pairs_note = (f"effect on Spearman rho over {len(J_up)} probe task pairs (T={T} programs x E={E} episodes) "
                  f"between label Jaccard and")
    add("H3_cka", sh["rho_cka"], ba["rho_cka"], "n_seeds_used", note=f"{pairs_note} {est_word} linear CKA of h")
    add("H3_subspace", sh["rho_subspace"], ba["rho_subspace"], "n_seeds_used",
        note=f"{pairs_note} 1 - projection distance of per-task PCA bases of h (k={k})")
    for key in ("H3_cka", "H3_subspace"):
        hyp[key]["n_pairs"] = int(len(J_up))
        hyp[key].pop("n_seeds_used", None)
    add("H4_probe_h", sh["probe_h"], ba["probe_h"], "n_seeds_used",
        note=f"macro AUROC of per-primitive logistic probes on h fit on {len(fit_eps)} train+val episodes, "
             f"scored on {n_test} test episodes")
    add("H4_probe_z", sh["probe_z"], ba["probe_z"], "n_seeds_used",
        note="as H4_probe_h on the SAE codes z")
    add("H4_monosemanticity", sh["monosemanticity"], ba["monosemanticity"], "n_seeds_used",
        note=f"mean over primitives of the best single-unit AUROC of z on {n_test} test episodes")
    add("cost_step_time_ms", sh["step_time_ms"], ba["step_time_ms"], "n_seeds_used",
        note="mean logged training step_time_ms per run")
    for key in ("H4_probe_h", "H4_probe_z", "H4_monosemanticity", "cost_step_time_ms"):
        hyp[key]["n_episodes"] = n_test if key != "cost_step_time_ms" else None
        hyp[key].pop("n_seeds_used", None)
    if hyp["cost_step_time_ms"]["n_episodes"] is None:
        hyp["cost_step_time_ms"].pop("n_episodes")

    # artefacts for the report
    art.update({
        "arms": list(ARMS), "seeds": seeds, "primitives": names,
        "probe": {"programs": T, "episodes_per_program": E, "n_pairs": int(len(J_up)),
                  "labels": [[names[j] for j in np.flatnonzero(r)] for r in probe_labels]},
        "task_cka_estimator": est_word,
        "layer_cka_estimator": "debiased" if deb_ll else "biased",
        "subspace_k": k,
        "finetune": {"method": method, "tasks": task_names, "threshold": params.finetune.threshold},
        "n_fit": len(fit_eps), "n_test": n_test,
        "dataset_checksums": store.attrs.get("checksums", {}),
        "per_seed": {arm: {key: per[arm][key] for key in
                           ("rho_cka", "rho_subspace", "probe_h", "probe_z", "monosemanticity", "step_time_ms",
                            "probe_h_per_primitive", "probe_z_per_primitive", "monosemanticity_per_primitive")}
                     for arm in ARMS},
        "per_seed_test_means": {arm: {"exact_match": [float(np.mean(v)) for v in per[arm]["exact_match"]],
                                      "iou": [float(np.mean(v)) for v in per[arm]["iou"]]} for arm in ARMS},
        "wall_time_s": time.perf_counter() - t0,
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    npz["h3_pairs_jaccard"] = J_up
    for arm in ARMS:
        C0 = npz[f"{arm}_task_cka"][layers.index("h")]
        npz[f"{arm}_h3_pairs_cka"] = upper(C0)
        npz[f"{arm}_h3_pairs_subspace"] = upper(npz[f"{arm}_task_subspace"])
    with io.atomic_path(out_dir / "matrices.npz", ".npz") as tmp:
        np.savez_compressed(tmp, **npz)
    write_json(out_dir / "analysis.json", art)
    write_json(metrics_dir / "hypotheses.json", hyp)
    return hyp
