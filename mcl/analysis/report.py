"""The `mcl report` stage: docs/results_summary.md and docs/analysis_report.md from the metrics files.

Every number in the two documents is formatted from a file written by an earlier stage
(``metrics/summary.json``, ``metrics/eval/*.json``, ``metrics/finetune/*``,
``metrics/train/*/metrics.csv``, ``metrics/hypotheses.json``, ``metrics/analysis/*``) or
from each run's ``models/<run>/config.yaml``; nothing is typed by hand. Figures are PNGs
under ``docs/figures/report/``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import yaml

from mcl.config import ARMS, Params, run_name, to_dict
from mcl.io import write_text

__all__ = ["write_report", "code_version", "fmt", "FIGURES"]

ARM_COLOURS = {"share": "#0074D9", "baseline": "#FF851B"}
FIGURES = ("learning_curves.png", "zero_shot.png", "fewshot_curves.png", "task_cka.png", "layer_cka.png",
           "subspace_vs_overlap.png", "probe_auroc.png", "selectivity.png", "top_activating_share.png",
           "top_activating_baseline.png")
HEADLINE = ("val_exact_match", "val_iou", "test_exact_match", "test_iou", "test_copy_exact_match")
REPORT_CMD = "`uv run dvc repro` (stage `report`, i.e. `uv run mcl report`)"


def fmt(x, digits: int = 4, signed: bool = False) -> str:
    """A number as text; None/NaN -> 'n/a'."""
    if x is None:
        return "n/a"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run its stage first)") from None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _col(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(step, value) of the rows where ``key`` is filled."""
    pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "", "nan")]
    if not pts:
        return np.zeros(0), np.zeros(0)
    a = np.array(pts)
    return a[:, 0], a[:, 1]


def _mean_curves(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over runs at the steps every run logged."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return np.zeros(0), np.zeros(0)
    steps = sorted(set.intersection(*[set(c[0].tolist()) for c in curves]))
    vals = [np.mean([c[1][list(c[0]).index(s)] for c in curves]) for s in steps]
    return np.array(steps), np.array(vals)


def seed_ci(values, n_boot: int, alpha: float, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (NaN with fewer than 2 finite values)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boot = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def code_version(repo: Path | None = None) -> str:
    """``git rev-parse HEAD`` (plus ', work tree dirty' when ``git status`` lists changes), else 'unknown'."""
    if os.environ.get("MCL_CODE_VERSION"):  # set by callers that must not run git (e.g. tests)
        return os.environ["MCL_CODE_VERSION"]
    cwd = str(repo or Path.cwd())
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        rev = head.stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=30)
        if status.returncode == 0 and status.stdout.strip():
            rev += " (work tree dirty)"
        return rev
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------------------
# figures

def _plt():
    from mcl import plots  # noqa: F401  (sets the Agg backend)
    import matplotlib.pyplot as plt

    return plt


def _fig_learning(train: dict, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for arm in ARMS:
        x, y = _mean_curves([_col(rows, "val/iou") for rows in train[arm].values()])
        ax.plot(x, y, marker="o", ms=3, label=f"{arm} (mean of {len(train[arm])} seeds)", color=ARM_COLOURS[arm])
    ax.set_xlabel("step")
    ax.set_ylabel("val IoU")
    ax.set_title("Learning curves (val IoU)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _fig_zero_shot(evals: dict, path: Path, n_boot: int, alpha: float) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    rows = [("share", lambda e, s, m: e[s][m]), ("baseline", lambda e, s, m: e[s][m]),
            ("copy", lambda e, s, m: e["reference"][s]["copy"][m])]
    for ax, metric in zip(axes, ("exact_match", "iou")):
        for i, (label, get) in enumerate(rows):
            src = evals["share"] if label == "copy" else evals[label]
            for j, split in enumerate(("val", "test")):
                vals = [get(e, split, metric) for e in src.values()]
                m = float(np.mean(vals))
                lo, hi = seed_ci(vals, n_boot, alpha)
                err = None if math.isnan(lo) else [[m - lo], [hi - m]]
                ax.bar(j * 4 + i, m, yerr=err, capsize=3, color=ARM_COLOURS.get(label, "#AAAAAA"),
                       label=label if j == 0 else None)
        ax.set_xticks([1, 5], ["val", "test"])
        ax.set_title(f"zero-shot {metric} (mean over seeds, {int(100 * (1 - alpha))}% CI)", fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def _fig_fewshot(curves: dict, method: str, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.2))
    styles = {"none": ":", "adapted": "-", "full": "--"}
    for arm in ARMS:
        for col, ls in styles.items():
            x, y = _mean_curves([_col(rows, f"iou_{col}") for rows in curves[arm].values()])
            name = method if col == "adapted" else col
            ax.plot(x, y, ls, color=ARM_COLOURS[arm], label=f"{arm} {name}")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("query IoU (mean over tasks and seeds)")
    ax.set_title("Few-shot adaptation")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _heat(ax, M, title, labels=None, vmin=None, vmax=None, cmap="viridis"):
    im = ax.imshow(M, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_title(title, fontsize=8)
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    return im


def _fig_task_cka(mats, art, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    layers = art["layers"]
    L = len(layers)
    fig, axes = plt.subplots(2, L, figsize=(2.6 * L, 5.2), squeeze=False)
    for r, arm in enumerate(ARMS):
        est = art["seed0"]["task_cka_debiased"][arm]
        for c, layer in enumerate(layers):
            im = _heat(axes[r, c], mats[f"{arm}_task_cka"][c],
                       f"{arm} seed0 {layer}\n({'debiased' if est[c] else 'biased'} CKA)", vmin=-0.2, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.6)
    fig.suptitle("Task x task CKA on the probe split (tasks = probe programs)", fontsize=9)
    save_figure(fig, path)


def _fig_layer_cka(mats, art, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    layers = art["layers"]
    fig, ax = plt.subplots(figsize=(4, 3.5))
    im = _heat(ax, mats["layer_cka_share_vs_baseline"],
               f"layer x layer {art['layer_cka_estimator']} CKA, test, seed 0", vmin=-0.2, vmax=1)
    ax.set_xticks(range(len(layers)), layers, fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_xlabel("baseline layer")
    ax.set_ylabel("share layer")
    fig.colorbar(im, ax=ax)
    save_figure(fig, path)


def _fig_subspace(mats, art, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.5))
    for i, arm in enumerate(ARMS):
        im = _heat(axes[i], mats[f"{arm}_task_subspace"],
                   f"{arm} seed0: 1 - projection distance of h (k={art['subspace_k']})", vmin=0, vmax=1)
        fig.colorbar(im, ax=axes[i])
    _heat(axes[2], mats["jaccard"], "label Jaccard overlap", vmin=0, vmax=1)
    J = mats["h3_pairs_jaccard"]
    for arm in ARMS:
        axes[3].scatter(J, mats[f"{arm}_h3_pairs_subspace"], s=10, alpha=0.6, color=ARM_COLOURS[arm],
                        label=f"{arm} subspace sim.")
        axes[3].scatter(J, mats[f"{arm}_h3_pairs_cka"], s=10, alpha=0.6, marker="x", color=ARM_COLOURS[arm],
                        label=f"{arm} {art['task_cka_estimator']} CKA")
    axes[3].set_xlabel("label Jaccard (task pair)")
    axes[3].set_ylabel("similarity of h")
    axes[3].legend(fontsize=6)
    axes[3].set_title("similarity vs label overlap (seed 0)", fontsize=8)
    save_figure(fig, path)


def _fig_probes(art, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    names = art["primitives"]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
    for ax, rep in zip(axes, ("h", "z")):
        for i, arm in enumerate(ARMS):
            a = np.array(art["per_seed"][arm][f"probe_{rep}_per_primitive"], dtype=np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: primitive never scored
                m = np.nanmean(a, axis=0) if a.size else np.full(len(names), np.nan)
            ax.bar(x + (i - 0.5) * 0.4, np.nan_to_num(m), width=0.4, color=ARM_COLOURS[arm], label=arm)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(x, names, rotation=90, fontsize=7)
        ax.set_title(f"linear-probe AUROC on test, representation {rep} (mean over seeds)", fontsize=8)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("AUROC")
    save_figure(fig, path)


def _fig_selectivity(mats, art, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    names = art["primitives"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, arm in zip(axes, ARMS):
        sel = mats[f"{arm}_selectivity"]
        im = ax.imshow(sel, aspect="auto", vmin=0, vmax=1, cmap="coolwarm", interpolation="nearest")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_ylabel("SAE unit")
        ax.set_title(f"{arm} seed0: unit x primitive AUROC on test z (blank: dead unit)", fontsize=8)
    fig.colorbar(im, ax=axes)
    save_figure(fig, path)


def _fig_top(mats, art, arm: str, path: Path) -> None:
    plt = _plt()
    from mcl.plots import draw_grid, save_figure

    ins, outs = mats[f"{arm}_top_inputs"], mats[f"{arm}_top_outputs"]
    units = art["seed0"]["top_units"][arm]
    U = ins.shape[0]
    X = ins.shape[1] if U else 0
    if U == 0 or X == 0:
        fig, ax = plt.subplots(figsize=(3, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no live selective units", ha="center")
        save_figure(fig, path)
        return
    fig, axes = plt.subplots(U, 2 * X, figsize=(1.3 * 2 * X, 1.5 * U), squeeze=False)
    for r in range(U):
        u = units[r]
        for c in range(X):
            draw_grid(axes[r, 2 * c], ins[r, c, -1], f"u{u['unit']} ({u['primitive']})\nquery in" if c == 0 else "query in")
            draw_grid(axes[r, 2 * c + 1], outs[r, c, -1], f"out, z={u['activations'][c]:.2f}")
    fig.suptitle(f"{arm} seed0: top-activating test episodes of the most selective SAE units", fontsize=9)
    save_figure(fig, path)


# ---------------------------------------------------------------------------
# documents

def _verdict_table(hyp: dict) -> list[str]:
    lines = ["| key | claim | effect (share - baseline) | 95% CI | n | p (paired t) | verdict |",
             "|---|---|---|---|---|---|---|"]
    for key, e in hyp.items():
        n = f"{e.get('n_seeds')} seeds"
        for extra in ("n_episodes", "n_tasks", "n_pairs"):
            if e.get(extra) is not None:
                n += f" x {e[extra]} {extra[2:]}"
        lines.append(f"| {key} | {e.get('claim', '')} | {fmt(e['effect'], signed=True)} | "
                     f"[{fmt(e['ci_low'], signed=True)}, {fmt(e['ci_high'], signed=True)}] | {n} | "
                     f"{fmt(e.get('p_value'))} | **{e['verdict']}** |")
    return lines


def _sentence(key: str, e: dict) -> str:
    if e["effect"] is None:
        return f"`{key}`: no finite paired values; verdict **{e['verdict']}**."
    side = "share minus baseline is"
    return (f"`{key}` ({e.get('claim', '')}): {side} {fmt(e['effect'], signed=True)} "
            f"(share {fmt(e.get('share_mean'))} vs baseline {fmt(e.get('baseline_mean'))}; "
            f"95% CI [{fmt(e['ci_low'], signed=True)}, {fmt(e['ci_high'], signed=True)}], {e['n_seeds']} seeds"
            + "".join(f", {e[k]} {k[2:]}" for k in ("n_episodes", "n_tasks", "n_pairs") if e.get(k) is not None)
            + f"), so the claim is **{e['verdict']}**.")


def write_report(params: Params, metrics_dir: Path, analysis_dir: Path, models_dir: Path, docs_dir: Path,
                 repo: Path | None = None) -> list[Path]:
    """Write ``docs_dir/{results_summary.md, analysis_report.md}`` and ``docs_dir/figures/report/*.png``."""
    metrics_dir, analysis_dir, models_dir, docs_dir = map(Path, (metrics_dir, analysis_dir, models_dir, docs_dir))
    fig_dir = docs_dir / "figures" / "report"
    seeds = list(params.train.seeds)
    method = params.finetune.method
    n_boot, alpha = params.analysis.n_boot, params.analysis.alpha
    runs = {arm: [run_name(arm, s) for s in seeds] for arm in ARMS}
    summary = _read_json(metrics_dir / "summary.json")
    hyp = _read_json(metrics_dir / "hypotheses.json")
    evals = {arm: {r: _read_json(metrics_dir / "eval" / f"{r}.json") for r in runs[arm]} for arm in ARMS}
    fts = {arm: {r: _read_json(metrics_dir / "finetune" / f"{r}.json") for r in runs[arm]} for arm in ARMS}
    curves = {arm: {r: _read_csv(metrics_dir / "finetune" / f"{r}.curve.csv") for r in runs[arm]} for arm in ARMS}
    train = {arm: {r: _read_csv(metrics_dir / "train" / r / "metrics.csv") for r in runs[arm]} for arm in ARMS}
    art = _read_json(analysis_dir / "analysis.json")
    with np.load(analysis_dir / "matrices.npz", allow_pickle=False) as z:
        mats = {k: z[k] for k in z.files}

    fig_dir.mkdir(parents=True, exist_ok=True)
    _fig_learning(train, fig_dir / "learning_curves.png")
    _fig_zero_shot(evals, fig_dir / "zero_shot.png", n_boot, alpha)
    _fig_fewshot(curves, method, fig_dir / "fewshot_curves.png")
    _fig_task_cka(mats, art, fig_dir / "task_cka.png")
    _fig_layer_cka(mats, art, fig_dir / "layer_cka.png")
    _fig_subspace(mats, art, fig_dir / "subspace_vs_overlap.png")
    _fig_probes(art, fig_dir / "probe_auroc.png")
    _fig_selectivity(mats, art, fig_dir / "selectivity.png")
    for arm in ARMS:
        _fig_top(mats, art, arm, fig_dir / f"top_activating_{arm}.png")

    rel = lambda name: f"figures/report/{name}"  # noqa: E731
    pct = int(round(100 * (1 - alpha)))

    # --- per-run values for the headline CIs
    def run_values(arm: str, key: str) -> list[float]:
        out = []
        for r in runs[arm]:
            ev, ft = evals[arm][r], fts[arm][r]
            if key.startswith("fewshot_"):
                how, _, metric = key[len("fewshot_"):].partition("_")
                out.append(ft[how][metric])
            elif key == "test_copy_exact_match":
                out.append(ev["reference"]["test"]["copy"]["exact_match"])
            elif key == "train_step_time_ms":
                from mcl.evaluation.summary import mean_step_time_ms

                out.append(mean_step_time_ms(metrics_dir / "train" / r / "metrics.csv"))
            else:
                split, _, metric = key.partition("_")
                out.append(ev[split][metric])
        return out

    head_keys = [k for k in summary[ARMS[0]] if k != "seeds"]
    summ = ["# Results summary", "",
            f"Generated by {REPORT_CMD} from `metrics/summary.json`, `metrics/eval/*.json`, "
            f"`metrics/finetune/*.json`, `metrics/train/*/metrics.csv` and `metrics/hypotheses.json`; "
            f"do not edit by hand.", "",
            "## Headline numbers", "",
            f"Mean over seeds (from `metrics/summary.json`) with a {pct}% percentile bootstrap interval over the "
            f"per-seed values ({n_boot} replicates; n/a with fewer than 2 seeds).", "",
            "| metric | " + " | ".join(f"{arm} (n={summary[arm].get('seeds', len(seeds))})" for arm in ARMS) + " |",
            "|---|" + "---|" * len(ARMS)]
    for key in head_keys:
        cells = []
        for arm in ARMS:
            try:
                lo, hi = seed_ci(run_values(arm, key), n_boot, alpha)
            except (KeyError, TypeError, ValueError, FileNotFoundError):
                lo = hi = float("nan")
            ci = "" if math.isnan(lo) else f" [{fmt(lo)}, {fmt(hi)}]"
            cells.append(f"{fmt(summary[arm].get(key))}{ci}")
        summ.append(f"| {key} | " + " | ".join(cells) + " |")
    summ += ["", "## Hypotheses H1-H4", "",
             "Effect = share - baseline, paired by seed (and by episode / task where the values are per episode / "
             "per task). Verdict: *supported* when the CI excludes 0 in the predicted direction, *refuted* when it "
             "excludes 0 in the other, *inconclusive* otherwise (see `docs/hypotheses.md`). `cost_step_time_ms` is "
             "reported against the claim that share costs more per step, not a hypothesis.", ""]
    summ += _verdict_table(hyp)
    summ += ["", f"Interval method per row: see `method` in `metrics/hypotheses.json` "
                 f"(e.g. H1: {hyp.get('H1_exact_match', {}).get('method', 'n/a')}).", ""]

    # --- analysis report
    H = lambda key: _sentence(key, hyp[key]) if key in hyp else f"`{key}`: missing."  # noqa: E731
    n_runs = sum(len(v) for v in runs.values())
    learn_lines = []
    for arm in ARMS:
        x, y = _mean_curves([_col(rows, "val/iou") for rows in train[arm].values()])
        if len(x):
            learn_lines.append(f"{arm}: mean val IoU {fmt(y[0])} at step {int(x[0])} -> {fmt(y[-1])} at step {int(x[-1])}.")
    fs_lines = []
    for arm in ARMS:
        parts = []
        for how in ("none", method, "full"):
            vals = [fts[arm][r][how]["final_iou"] for r in runs[arm]]
            steps = [fts[arm][r][how]["steps_to_threshold"] for r in runs[arm]]
            parts.append(f"{how} final IoU {fmt(np.mean(vals))}, steps to threshold {fmt(np.mean(steps), 1)}")
        fs_lines.append(f"{arm}: " + "; ".join(parts) + ".")
    zs_lines = []
    for arm in ARMS:
        zs_lines.append(f"{arm}: test exact match {fmt(summary[arm].get('test_exact_match'))}, test IoU "
                        f"{fmt(summary[arm].get('test_iou'))} (copy baseline exact match "
                        f"{fmt(summary[arm].get('test_copy_exact_match'))}).")
    L = mats["layer_cka_share_vs_baseline"]
    layers = art["layers"]
    diag = ", ".join(f"{l} {fmt(L[i, i])}" for i, l in enumerate(layers))
    probe_lines = []
    for arm in ARMS:
        ps = art["per_seed"][arm]
        probe_lines.append(f"{arm}: macro AUROC on h {fmt(np.nanmean(np.array(ps['probe_h'], dtype=float)))}, "
                           f"on z {fmt(np.nanmean(np.array(ps['probe_z'], dtype=float)))}, monosemanticity of z "
                           f"{fmt(np.nanmean(np.array(ps['monosemanticity'], dtype=float)))} (means over seeds).")
    top_lines = []
    for arm in ARMS:
        us = art["seed0"]["top_units"][arm]
        if us:
            top_lines.append(f"{arm}: " + ", ".join(f"unit {u['unit']} -> {u['primitive']} (AUROC {fmt(u['auroc'])})"
                                                    for u in us) + ".")
        else:
            top_lines.append(f"{arm}: no live selective unit.")

    rep = ["# Analysis report", "",
           f"Generated by {REPORT_CMD} from the metrics files and `metrics/analysis/` (written by `uv run mcl analyse`); "
           "every number below is formatted from those files. Hypotheses and the decision rule: `docs/hypotheses.md`; "
           "verdict table: `docs/results_summary.md`.", "",
           f"Runs: {', '.join(r for arm in ARMS for r in runs[arm])} ({n_runs} runs, seeds {seeds}).", "",
           "## Training", "", f"![learning curves]({rel('learning_curves.png')})", "", *learn_lines, "",
           "Cost: " + H("cost_step_time_ms"), "",
           "## H1: zero-shot composition", "", f"![zero-shot]({rel('zero_shot.png')})", "", *zs_lines, "",
           H("H1_exact_match"), "", H("H1_iou"), "",
           "## H2: few-shot efficiency", "", f"![few-shot]({rel('fewshot_curves.png')})", "",
           f"Method: {method}, threshold IoU {fmt(art['finetune']['threshold'], 2)}, tasks: "
           f"{', '.join(art['finetune']['tasks'])}.", "", *fs_lines, "",
           H("H2_steps_to_threshold"), "", H("H2_final_iou"), "",
           "## H3: shared subspace", "",
           f"Probe split: {art['probe']['programs']} programs x {art['probe']['episodes_per_program']} episodes "
           f"(episode j shares its inputs across programs), {art['probe']['n_pairs']} task pairs. Task x task CKA uses "
           f"the **{art['task_cka_estimator']}** estimator for h (chosen by `pick_estimator`: debiased when "
           f"n < 10 d); subspace similarity is 1 - projection distance of per-task PCA bases (k={art['subspace_k']}).", "",
           f"![task CKA]({rel('task_cka.png')})", "",
           f"![subspace vs overlap]({rel('subspace_vs_overlap.png')})", "",
           "Per-seed Spearman rho (label Jaccard vs CKA of h): " + "; ".join(
               f"{arm} " + ", ".join(fmt(v) for v in art["per_seed"][arm]["rho_cka"]) for arm in ARMS) + ".", "",
           "Per-seed Spearman rho (label Jaccard vs subspace similarity): " + "; ".join(
               f"{arm} " + ", ".join(fmt(v) for v in art["per_seed"][arm]["rho_subspace"]) for arm in ARMS) + ".", "",
           H("H3_cka"), "", H("H3_subspace"), "",
           "### Layer x layer CKA between the arms", "", f"![layer CKA]({rel('layer_cka.png')})", "",
           f"{art['layer_cka_estimator'].capitalize()} CKA on the test split, seed 0; same-layer values: {diag}.", "",
           "## H4: concept-aligned sparse features", "", f"![probe AUROC]({rel('probe_auroc.png')})", "",
           f"Probes fit on {art['n_fit']} train+val episodes (lengths 1-2), scored on {art['n_test']} test episodes "
           "(unseen length-3 compositions).", "", *probe_lines, "",
           H("H4_probe_h"), "", H("H4_probe_z"), "", H("H4_monosemanticity"), "",
           f"![selectivity]({rel('selectivity.png')})", "",
           "Most selective units (seed 0): " + " ".join(top_lines), "",
           f"![top share]({rel('top_activating_share.png')})", "", f"![top baseline]({rel('top_activating_baseline.png')})", ""]

    # --- experiment log
    checksums = art.get("dataset_checksums") or {}
    if not checksums:  # analysis.json keeps the store's checksums; fall back to the store itself
        try:
            from mcl.data.store import open_store

            checksums = open_store(params.data.store).attrs.get("checksums", {})
        except Exception:  # noqa: BLE001 -- the store is optional here
            checksums = {}
    version = code_version(repo)
    rep += ["## Experiment log (実験ログ)", "",
            f"Code version: `{version}`. Dataset: `{params.data.store}`, split checksums: "
            + (", ".join(f"{k} `{v}`" for k, v in checksums.items()) or "unavailable") + ".", ""]
    for arm in ARMS:
        for r in runs[arm]:
            cfg_path = models_dir / r / "config.yaml"
            if cfg_path.is_file():
                cfg = yaml.safe_load(cfg_path.read_text())
                source = f"`{cfg_path}`"
            else:
                from mcl.training.trainer import arm_params

                cfg = {"arm": arm, "seed": int(r.rsplit("seed", 1)[1]), **to_dict(arm_params(params, arm))}
                source = "params.yaml (no config.yaml found)"
            ev, ft = evals[arm][r], fts[arm][r]
            loss = cfg.get("loss", {})
            rep += [f"### {r}", "",
                    f"- config: {source}; loss.beta {loss.get('beta', 'n/a')}, train.steps "
                    f"{cfg.get('train', {}).get('steps', 'n/a')}, model.h_dim {cfg.get('model', {}).get('h_dim', 'n/a')}",
                    f"- headline: val exact match {fmt(ev['val']['exact_match'])}, val IoU {fmt(ev['val']['iou'])}, "
                    f"test exact match {fmt(ev['test']['exact_match'])}, test IoU {fmt(ev['test']['iou'])}, "
                    f"few-shot {method} final IoU {fmt(ft[method]['final_iou'])}, steps to threshold "
                    f"{fmt(ft[method]['steps_to_threshold'], 1)}",
                    "", "<details><summary>resolved config</summary>", "", "```yaml",
                    yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", "", "</details>", ""]

    out = []
    for name, lines in (("results_summary.md", summ), ("analysis_report.md", rep)):
        path = docs_dir / name
        write_text(path, "\n".join(lines) + "\n")
        out.append(path)
    return out + [fig_dir / f for f in FIGURES]
