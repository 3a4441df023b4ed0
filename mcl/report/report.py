"""The `mcl report` stage: docs/results_summary.md, docs/analysis_report.md and docs/hypotheses.md.

Every number in the documents is formatted from a file written by an earlier stage
(``metrics/summary.json``, ``metrics/hypotheses.json``, ``metrics/analysis/{analysis.json,
matrices.npz}``, ``metrics/eval/<arm>/seed<k>.json``, ``metrics/finetune/<arm>/seed<k>.*``,
``metrics/train/<arm>/seed<k>/metrics.csv``) or from each run's ``models/<arm>/seed<k>/config.yaml``;
nothing is typed by hand. Figures are PNGs under ``docs/figures/report/``.

The first page of ``results_summary.md`` answers, in this order:

1. did the treatment do what it claims (the manipulation check ``M_gap`` / ``M_spearman`` and
   the effective rank of h per arm; when the geometry did not move in the intended direction the
   first lines say so, and that H1-H4 then do not test the hypothesis);
2. did the models learn the task (exact match per split next to the copy, majority and
   oracle-task controls);
3. would the statistics call noise an effect (the method, the seed count and every
   hypothesis' minimum detectable effect against its pre-registered delta);

then the H1-H4 table, primaries first. ``docs/hypotheses.md`` (the pre-registration) is
rendered from the table :data:`mcl.stats.hypotheses.HYPOTHESES` by
:func:`write_preregistration`.
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

from mcl.config import ARMS, CONTROLS, Params, run_name, to_dict
from mcl.data.primitives import NAMES
from mcl.evaluation.summary import ZERO_SHOT_SPLITS  # the zero-shot splits, in report order
from mcl.io import write_text

__all__ = ["write_report", "write_preregistration", "code_version", "fmt", "FIGURES", "H2_UNTESTABLE",
           "MDE_SENTENCE", "first_page"]

ARM_COLOURS = {"share": "#0074D9", "baseline": "#FF851B", "oracle": "#2ECC40", "copy": "#AAAAAA",
               "majority": "#666666"}
FIGURES = ("learning_curves.png", "manipulation_curves.png", "zero_shot.png", "fewshot_curves.png", "task_cka.png",
           "layer_cka.png", "subspace_vs_overlap.png", "probe_auroc.png", "selectivity.png",
           "top_activating_share.png", "top_activating_baseline.png")
REPORT_CMD = "`uv run dvc repro` (stage `report`, i.e. `uv run mcl report`)"
#: Shown in place of the H2 verdicts when adaptation does not measurably help the baseline.
H2_UNTESTABLE = "H2 cannot be tested at this scale"
#: The plain sentence for a hypothesis whose minimum detectable effect exceeds its delta.
MDE_SENTENCE = "this run cannot detect an effect of the size that matters"
ROLE_ORDER = {"primary": 0, "secondary": 1, "exploratory": 2}


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


def _ci(lo, hi, signed: bool = True) -> str:
    return "n/a" if lo is None or hi is None else f"[{fmt(lo, signed=signed)}, {fmt(hi, signed=signed)}]"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run its stage first)") from None


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run its stage first)") from None


def _col(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(step, value) of the rows where ``key`` is filled."""
    pts = []
    for r in rows:
        v = r.get(key)
        if v in (None, "", "nan"):
            continue
        try:
            pts.append((float(r["step"]), float(v)))
        except ValueError:
            continue
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


def seed_t_ci(values, alpha: float) -> tuple[float, float]:
    """Central ``1 - alpha`` t interval of the mean over seeds (NaN with fewer than 2 finite values)."""
    from mcl.stats.intervals import t_interval

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size < 2:
        return float("nan"), float("nan")
    return t_interval(float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)), v.size - 1, alpha)


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
# the pre-registration


def write_preregistration(path: Path, table=None, alpha: float = 0.05, power: float = 0.8) -> Path:
    """Write ``docs/hypotheses.md``: :func:`mcl.stats.hypotheses.render_preregistration` of ``table``
    (default :data:`~mcl.stats.hypotheses.HYPOTHESES`), then how the analysis computes each metric
    (:func:`mcl.analysis.run.analysis_constants_markdown`). No results."""
    from mcl.stats.hypotheses import HYPOTHESES, render_preregistration
    from mcl.analysis.run import analysis_constants_markdown

    text = render_preregistration(HYPOTHESES if table is None else table, alpha=alpha, power=power)
    text = text.rstrip() + "\n\n" + analysis_constants_markdown()
    write_text(Path(path), text)
    return Path(path)


# ---------------------------------------------------------------------------
# figures

def _plt():
    from mcl import plots  # noqa: F401  (sets the Agg backend)
    import matplotlib.pyplot as plt

    return plt


def _fig_learning(train: dict, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key in zip(axes, ("val/iou", "val/exact_match")):
        for arm, runs in train.items():
            x, y = _mean_curves([_col(rows, key) for rows in runs.values()])
            if len(x):
                ax.plot(x, y, marker="o", ms=3, label=f"{arm} (mean of {len(runs)} seeds)",
                        color=ARM_COLOURS.get(arm))
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"Learning curves ({key})", fontsize=9)
        if ax.lines:
            ax.legend(fontsize=7)
    save_figure(fig, path)


def _fig_manipulation(train: dict, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    keys = ("manip/gap", "manip/jaccard_spearman", "manip/effective_rank", "manip/label_r2")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.0))
    for ax, key in zip(axes, keys):
        for arm in ARMS:
            x, y = _mean_curves([_col(rows, key) for rows in train.get(arm, {}).values()])
            if len(x):
                ax.plot(x, y, label=arm, color=ARM_COLOURS[arm])
        ax.set_title(key + " (training batches)", fontsize=8)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    save_figure(fig, path)


def _fig_zero_shot(summary: dict, art: dict, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    rows = [r for r in (*ARMS, *CONTROLS, "copy", "majority") if isinstance(summary.get(r), dict)]
    splits = [s for s in ZERO_SHOT_SPLITS if any(f"{s}_exact_match" in summary[r] for r in rows)]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / max(1, len(rows))
    for i, r in enumerate(rows):
        for j, split in enumerate(splits):
            m = summary[r].get(f"{split}_exact_match")
            if m is None:
                continue
            err = None
            if r in ARMS:
                s = art["summary"][r].get(f"{split}_exact_match", {})
                if s.get("ci_low") is not None and s.get("ci_high") is not None:
                    err = [[max(0.0, m - s["ci_low"])], [max(0.0, s["ci_high"] - m)]]
            ax.bar(j + (i - (len(rows) - 1) / 2) * width, m, width=width, yerr=err, capsize=2,
                   color=ARM_COLOURS.get(r, "#AAAAAA"), label=r if j == 0 else None)
    ax.set_xticks(range(len(splits)), splits)
    ax.set_ylabel("exact match")
    ax.set_title("Zero-shot exact match (arms: mean over seeds with t interval; controls)", fontsize=9)
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
    fig, axes = plt.subplots(len(ARMS), L, figsize=(2.6 * L, 2.6 * len(ARMS)), squeeze=False)
    im = None
    for r, arm in enumerate(ARMS):
        for c, layer in enumerate(layers):
            im = _heat(axes[r, c], mats[f"{arm}_task_cka"][c], f"{arm} seed0 {layer}", vmin=-0.2, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6)
    fig.suptitle(f"Task x task {art['task_cka_estimator']} CKA on the probe split (tasks = probe programs)", fontsize=9)
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

    d = art["design"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.5))
    for i, arm in enumerate(ARMS):
        im = _heat(axes[i], mats[f"{arm}_task_subspace"],
                   f"{arm} seed0: subspace similarity of h\n(k={d['subspace_k']}, {d['shared_components']} shared "
                   "component(s) removed)", vmin=0, vmax=1)
        fig.colorbar(im, ax=axes[i])
    _heat(axes[2], mats["jaccard"], "label Jaccard overlap", vmin=0, vmax=1)
    J, types = mats["h3_pairs_jaccard"], mats["h3_pairs_types"]
    tt = types == 2
    for arm in ARMS:
        S = mats[f"{arm}_h3_pairs_subspace"]
        axes[3].scatter(J[~tt], S[~tt], s=8, alpha=0.4, color=ARM_COLOURS[arm], label=f"{arm}: other pairs")
        axes[3].scatter(J[tt], S[tt], s=22, alpha=0.9, marker="D", color=ARM_COLOURS[arm], label=f"{arm}: test-test")
    axes[3].set_xlabel("label Jaccard (task pair)")
    axes[3].set_ylabel("subspace similarity of h")
    axes[3].legend(fontsize=6)
    axes[3].set_title("similarity vs label overlap (seed 0)", fontsize=8)
    save_figure(fig, path)


def _fig_probes(art, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    names = art["primitives"]
    x = np.arange(len(names))
    panels = (("h4_probe_h_per_primitive", "linear probe on h"), ("h4_probe_z_per_primitive", "linear probe on z"),
              ("h4_aux_auroc_per_primitive", "auxiliary head (its own logits)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.4), sharey=True)
    for ax, (key, title) in zip(axes, panels):
        for i, arm in enumerate(ARMS):
            a = np.array([[np.nan if v is None else v for v in row] for row in art["per_seed"][arm][key]],
                         dtype=np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: primitive never scored
                m = np.nanmean(a, axis=0) if a.size else np.full(len(names), np.nan)
            ax.bar(x + (i - 0.5) * 0.4, np.nan_to_num(m), width=0.4, color=ARM_COLOURS[arm], label=arm)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(x, names, rotation=90, fontsize=7)
        ax.set_title(f"test AUROC per primitive: {title}", fontsize=8)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("AUROC (mean over seeds)")
    save_figure(fig, path)


def _fig_selectivity(mats, art, path: Path) -> None:
    plt = _plt()
    from mcl.plots import save_figure

    names = art["primitives"]
    fig, axes = plt.subplots(1, len(ARMS), figsize=(10, 4))
    im = None
    for ax, arm in zip(axes, ARMS):
        sel = mats[f"{arm}_selectivity"]
        im = ax.imshow(sel, aspect="auto", vmin=0, vmax=1, cmap="coolwarm", interpolation="nearest")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        ax.set_ylabel("SAE unit")
        ax.set_title(f"{arm} seed0: unit x primitive AUROC on test z (blank: dead unit)", fontsize=8)
    if im is not None:
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
# text pieces


def _ordered_keys(hyp: dict, full: dict) -> list[str]:
    """Hypothesis keys, primaries first, then secondaries and exploratory ones (table order within a role)."""
    keys = [k for k, v in hyp.items() if isinstance(v, dict)]
    return sorted(keys, key=lambda k: (ROLE_ORDER.get(hyp[k].get("role"), 3), keys.index(k)))


def _p(e: dict) -> str:
    if e.get("role") == "primary":
        return f"Holm p {fmt(e.get('p_holm'))}"
    return f"p {fmt(e.get('p_value'))}"


def _h2_testable(art: dict) -> bool:
    return bool((art.get("h2_precondition") or {}).get("testable"))


def _verdict_cell(key: str, e: dict, full: dict, art: dict) -> str:
    if full.get(key, {}).get("family") == "H2" and not _h2_testable(art):
        return f"**{H2_UNTESTABLE}** (computed: {full[key].get('verdict')})"
    v = f"**{e.get('verdict')}**"
    if full.get(key, {}).get("trivial"):
        v += " (trivial: inside +-delta)"
    return v


def _mean(art: dict, arm: str, key: str):
    return (art["summary"][arm].get(key) or {}).get("mean")


def _mean_ci_text(art: dict, arm: str, key: str, digits: int = 4) -> str:
    s = art["summary"][arm].get(key) or {}
    ci = "" if s.get("ci_low") is None or s.get("ci_high") is None else \
        f" [{fmt(s['ci_low'], digits)}, {fmt(s['ci_high'], digits)}]"
    return f"{fmt(s.get('mean'), digits)}{ci}"


def _manipulation_lead(hyp: dict, full: dict) -> tuple[bool, str]:
    """(moved as intended, the first-lines sentence) from M_gap."""
    e = hyp.get("M_gap") or {}
    v = e.get("verdict")
    stats = (f"`M_gap` = {fmt(e.get('effect'), signed=True)}, 95% CI {_ci(e.get('ci_low'), e.get('ci_high'))}, "
             f"{_p(e)}, verdict *{v}*")
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


def primitive_means(evals: list[dict], split: str, section: str, primitives: list[str],
                    reference: str | None = None) -> dict[str, float]:
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


def _fig_examples(examples: dict[str, np.ndarray], split: str, primitives: list[str], title: str, path: Path) -> None:
    """Demonstrations, query, prediction and target of one episode per primitive (a row each)."""
    from mcl.plots import draw_grid, save_figure

    prim = examples[f"{split}_primitive"]
    rows = [int(np.flatnonzero(prim == p)[0]) for p in range(len(primitives)) if (prim == p).any()]
    inputs, outputs, pred = (examples[f"{split}_{k}"] for k in ("inputs", "outputs", "prediction"))
    demos = inputs.shape[1] - 1
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 2 * demos + 3, figsize=(1.1 * (2 * demos + 3), 1.2 * len(rows)), squeeze=False)
    for r, i in enumerate(rows):
        grids = [g for d in range(demos) for g in (inputs[i, d], outputs[i, d])] + [inputs[i, -1], pred[i], outputs[i, -1]]
        heads = [f"demo {d + 1} {io}" for d in range(demos) for io in ("in", "out")] + ["query", "prediction", "target"]
        for c, (g, head) in enumerate(zip(grids, heads)):
            draw_grid(axes[r, c], g, head if r == 0 else None)
        right = "right" if np.array_equal(pred[i], outputs[i, -1]) else "wrong"
        axes[r, 0].set_ylabel(f"{primitives[prim[i]]}\n({right})", fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def first_page(params: Params, summary: dict, hyp: dict, art: dict,
               per_primitive: list[str] | None = None) -> list[str]:
    """The first page of results_summary.md: manipulation check, controls (with ``per_primitive``, the
    Markdown of :func:`per_primitive_tables`), detectability, H1-H4 table."""
    full = art.get("hypotheses", {})
    alpha = params.analysis.alpha
    pct = f"{100 * (1 - alpha):g}%"
    n_seeds = hyp.get("n_seeds")
    moved, lead = _manipulation_lead(hyp, full)
    man = art["design"]["manipulation"]
    lines = ["# Results summary", "", lead, "",
             f"Generated by {REPORT_CMD} from `metrics/summary.json`, `metrics/hypotheses.json` and "
             "`metrics/analysis/analysis.json`; do not edit by hand. Pre-registration and decision rule: "
             "`docs/hypotheses.md`.", "",
             "## 1. Did the treatment do what it claims? (manipulation check)", "",
             f"On h of the {man['n_episodes']} val episodes, grouped by label set (k = {man['k']} directions per group): "
             f"share and baseline are means over {n_seeds} seeds with a {pct} t interval over seeds.", "",
             f"| check | share | baseline | share - baseline, {pct} CI | p | verdict |", "|---|---|---|---|---|---|"]
    for key, label, rec in (("M_gap", "`M_gap` (primary): disjoint minus overlapping group subspace distance", "val_gap"),
                            ("M_spearman", "`M_spearman` (secondary): Spearman(label Jaccard, subspace similarity)",
                             "val_jaccard_spearman")):
        e = hyp.get(key) or {}
        lines.append(f"| {label} | {_mean_ci_text(art, 'share', rec)} | {_mean_ci_text(art, 'baseline', rec)} | "
                     f"{fmt(e.get('effect'), signed=True)} {_ci(e.get('ci_low'), e.get('ci_high'))} | {_p(e)} | "
                     f"**{e.get('verdict')}** |")
    h_dim = params.model.h_dim
    lines += [f"| effective rank of h (participation ratio, at most {h_dim}) | "
              f"{_mean_ci_text(art, 'share', 'val_effective_rank', 2)} | "
              f"{_mean_ci_text(art, 'baseline', 'val_effective_rank', 2)} | | | descriptive |",
              f"| label-set R^2 of h (variance explained by label-set identity) | "
              f"{_mean_ci_text(art, 'share', 'val_label_r2')} | {_mean_ci_text(art, 'baseline', 'val_label_r2')} | | | "
              "descriptive |", ""]
    ranks = {arm: _mean(art, arm, "val_effective_rank") for arm in ARMS}
    low = [arm for arm, r in ranks.items() if r is not None and math.isfinite(r) and r < 2]
    if low:
        lines += [f"Effective rank below 2 in {', '.join(low)}: h has collapsed to about one direction.", ""]

    # 2. learned the task
    rows = [(arm, f"{arm} ({summary.get('seeds', n_seeds)} seeds)") for arm in ARMS]
    rows += [("oracle", f"control: oracle-task executor (true program, {len(params.train.oracle_seeds)} seed(s))"),
             ("copy", "control: copy the query"), ("majority", "control: majority colour")]
    splits = [s for s in ZERO_SHOT_SPLITS if any(f"{s}_exact_match" in (summary.get(r) or {}) for r, _ in rows)]
    lines += ["## 2. Did the models learn the task?", "",
              "Zero-shot exact match (fraction of episodes whose whole query output grid is right), means over seeds "
              "from `metrics/summary.json`. val: train label sets; test: unseen length-3 label sets; dev: other "
              "unseen length-3 label sets; novel2: held-out length-2 combinations.", "",
              "| run | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for r, label in rows:
        vals = summary.get(r) or {}
        lines.append(f"| {label} | " + " | ".join(fmt(vals.get(f"{s}_exact_match")) for s in splits) + " |")
    test_ctrl = {c: (summary.get(c) or {}).get("test_exact_match") for c in ("copy", "majority")}
    test_ctrl = {c: v for c, v in test_ctrl.items() if v is not None}
    best_c = max(test_ctrl, key=test_ctrl.get) if test_ctrl else None
    arm_test = {arm: (summary.get(arm) or {}).get("test_exact_match") for arm in ARMS}
    oracle_test = (summary.get("oracle") or {}).get("test_exact_match")
    lines.append("")
    if best_c is not None:
        above = [a for a, v in arm_test.items() if v is not None and v > test_ctrl[best_c]]
        lines.append("On test: " + ", ".join(f"{a} {fmt(v)}" for a, v in arm_test.items())
                     + f" against {fmt(test_ctrl[best_c])} for the best trivial control ({best_c}) and "
                     f"{fmt(oracle_test)} for the oracle-task executor.")
        if not above:
            lines.append("**Neither arm beats a trivial control on test: the models have not learned the task at "
                         "this scale, and the comparisons below are between models that do not solve it.**")
    lines += [""] + (per_primitive or [])
    lines += ["Dev is used only to choose hyperparameters (`loss.beta`); its numbers are not evidence for or "
                  "against any hypothesis. Learning curves of this recipe and of the ablations that explain it, with "
                  "the oracle-task control: `docs/learnability.md` (`uv run mcl learnability`).", ""]

    # 3. detectability
    keys = _ordered_keys(hyp, full)
    prim = [k for k in keys if hyp[k].get("role") == "primary"]
    lines += ["## 3. Would the statistics call noise an effect?", "",
              f"{n_seeds} seeds per arm, paired by seed. Per-seed values (manipulation check, H3, H4): Student t over "
              "the seeds. Per-item values (H1: episodes grouped by label set; H2: few-shot tasks): crossed seed x "
              "group random-effects intervals, so the interval generalises to new seeds and new label sets / tasks. "
              f"The {len(prim)} primaries ({', '.join(f'`{k}`' for k in prim)}) are Holm-adjusted as one family at "
              f"alpha = {alpha:g}; secondaries are tested unadjusted, exploratory rows are descriptive. Each effect "
              "also has a TOST against its pre-registered smallest effect of interest delta (*no meaningful effect* "
              "when both one-sided tests reject). MDE: the smallest true effect the test detects with 80% power at "
              "the observed standard error (primaries also at the strictest Holm level, alpha / "
              f"{len(prim)}). Calibration: `tests/test_stats.py` simulates null and planted-effect studies at 3, 5 "
              "and 10 seeds for each design (per-seed scalars, independent items, crossed seeds x label sets) and "
              "requires a false-positive rate of at most 5% plus Monte Carlo error and the nominal power. The seed count "
              "comes from the power analysis in docs/power.md (`uv run mcl power`).", "",
              "| key | role | delta | MDE (80% power) | MDE at alpha / m (primaries) | detects delta? |",
              "|---|---|---|---|---|---|"]
    too_big, not_computed, degenerate = [], [], []
    for k in keys:
        e, f = hyp[k], full.get(k, {})
        delta, mde = f.get("delta"), e.get("mde")
        if mde is None or delta is None:
            ok = "not computed"
            not_computed.append(k)
        elif f.get("se") == 0:
            ok = "degenerate (no variation)"
            degenerate.append(k)
        elif mde > delta:
            ok = "**no**"
            too_big.append(k)
        else:
            ok = "yes"
        unit = f.get("unit", "")
        lines.append(f"| `{k}` | {e.get('role')} | {fmt(delta)} ({unit}) | {fmt(mde)} | {fmt(f.get('mde_holm'))} | {ok} |")
    lines.append("")
    for k in too_big:
        lines.append(f"- `{k}`: {MDE_SENTENCE} (MDE {fmt(hyp[k]['mde'])} > delta {fmt(full[k]['delta'])}).")
    for k in not_computed:
        reason = (art.get("entries_method") or {}).get(k) or "no usable statistics"
        lines.append(f"- `{k}`: not computed ({reason}); no power statement is possible.")
    for k in degenerate:
        lines.append(f"- `{k}`: every seed and item gives the same paired difference (standard error 0, e.g. both arms "
                     "at the floor); the test carries no information and its MDE of 0 is not a power statement.")
    if not too_big and not not_computed and not degenerate:
        lines.append("Every computed MDE is at or below its delta: an effect of the pre-registered size would "
                     "usually be detected.")
    lines.append("")

    # 4. the table
    lines += ["## 4. Hypotheses H1-H4 (primaries first)", ""]
    if not moved:
        lines += ["The manipulation check failed (section 1): these verdicts compare the arms, they do not test "
                  "whether a shared subspace helps.", ""]
    lines += [f"| key | role | claim | effect (share - baseline) | {pct} CI | p | MDE | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for k in keys:
        e, f = hyp[k], full.get(k, {})
        lines.append(f"| {k} | {e.get('role')} | {f.get('claim', '')} | {fmt(e.get('effect'), signed=True)} | "
                     f"{_ci(e.get('ci_low'), e.get('ci_high'))} | {_p(e)} | {fmt(e.get('mde'))} | "
                     f"{_verdict_cell(k, e, full, art)} |")
    pre = art.get("h2_precondition") or {}
    lines += ["", f"H2 precondition ({pre.get('rule', '')}): baseline gain {fmt(pre.get('effect'), signed=True)}, "
                  f"{pct} CI {_ci(pre.get('ci_low'), pre.get('ci_high'))}, so "
              + ("H2 is testable." if _h2_testable(art) else f"**{H2_UNTESTABLE}**: adaptation does not measurably "
                 "help the baseline, so a difference in gains cannot be attributed to the representation (the "
                 "numbers are kept above)."), ""]
    return lines


def _sentence(key: str, e: dict, f: dict, art: dict) -> str:
    if e.get("effect") is None:
        reason = (art.get("entries_method") or {}).get(key) or "no usable statistics"
        return f"`{key}` ({e.get('role')}): not computed ({reason}); verdict **{e.get('verdict')}**."
    verdict = H2_UNTESTABLE if f.get("family") == "H2" and not _h2_testable(art) else e.get("verdict")
    n = (f"{f.get('n_seeds', 'n/a')} seeds" if f.get("design") == "seeds" else
         f"{f.get('n_seeds', 'n/a')} seeds x {f.get('n_items', 'n/a')} items in {f.get('n_groups', 'n/a')} groups")
    return (f"`{key}` ({e.get('role')}; {f.get('claim', '')}): share - baseline = {fmt(e['effect'], signed=True)} "
            f"(share {fmt(f.get('share_mean'))} vs baseline {fmt(f.get('baseline_mean'))}; 95% CI "
            f"{_ci(e.get('ci_low'), e.get('ci_high'))}; {_p(e)}; MDE {fmt(e.get('mde'))} vs delta {fmt(f.get('delta'))}; "
            f"{n}), so: **{verdict}**.")


def _per_seed(art: dict, key: str, digits: int = 4) -> str:
    return "; ".join(f"{arm} " + ", ".join(fmt(v, digits) for v in art["per_seed"][arm].get(key, [])) for arm in ARMS)


# ---------------------------------------------------------------------------
# documents


def write_report(params: Params, metrics_dir: Path, analysis_dir: Path, models_dir: Path, docs_dir: Path,
                 repo: Path | None = None) -> list[Path]:
    """Write ``docs_dir/{results_summary.md, analysis_report.md}`` and ``docs_dir/figures/report/*.png``."""
    metrics_dir, analysis_dir, models_dir, docs_dir = map(Path, (metrics_dir, analysis_dir, models_dir, docs_dir))
    fig_dir = docs_dir / "figures" / "report"
    seeds = list(params.train.seeds)
    method = params.finetune.method
    alpha = params.analysis.alpha
    pct = f"{100 * (1 - alpha):g}%"
    runs = {arm: [run_name(arm, s) for s in seeds] for arm in ARMS}
    summary = _read_json(metrics_dir / "summary.json")
    art = _read_json(analysis_dir / "analysis.json")
    full = art.get("hypotheses", {})
    # the metric file holds the headline fields; the decided entries (p, MDE, role, ...) are in analysis.json
    hyp = {k: ({**full.get(k, {}), **v} if isinstance(v, dict) else v)
           for k, v in _read_json(metrics_dir / "hypotheses.json").items()}
    evals = {arm: {r: _read_json(metrics_dir / "eval" / f"{r}.json") for r in runs[arm]} for arm in ARMS}
    fts = {arm: {r: _read_json(metrics_dir / "finetune" / f"{r}.json") for r in runs[arm]} for arm in ARMS}
    curves = {arm: {r: _read_csv(metrics_dir / "finetune" / f"{r}.curve.csv") for r in runs[arm]} for arm in ARMS}
    train = {arm: {r: _read_csv(metrics_dir / "train" / r / "metrics.csv") for r in runs[arm]} for arm in ARMS}
    oracle_runs = [run_name("oracle", s) for s in params.train.oracle_seeds]
    oracle_train = {r: _read_csv(metrics_dir / "train" / r / "metrics.csv") for r in oracle_runs
                    if (metrics_dir / "train" / r / "metrics.csv").is_file()}
    if oracle_train:
        train_fig = {**train, "oracle": oracle_train}
    else:
        train_fig = train
    with np.load(analysis_dir / "matrices.npz", allow_pickle=False) as z:
        mats = {k: z[k] for k in z.files}

    fig_dir.mkdir(parents=True, exist_ok=True)
    _fig_learning(train_fig, fig_dir / "learning_curves.png")
    _fig_manipulation(train, fig_dir / "manipulation_curves.png")
    _fig_zero_shot(summary, art, fig_dir / "zero_shot.png")
    _fig_fewshot(curves, method, fig_dir / "fewshot_curves.png")
    _fig_task_cka(mats, art, fig_dir / "task_cka.png")
    _fig_layer_cka(mats, art, fig_dir / "layer_cka.png")
    _fig_subspace(mats, art, fig_dir / "subspace_vs_overlap.png")
    _fig_probes(art, fig_dir / "probe_auroc.png")
    _fig_selectivity(mats, art, fig_dir / "selectivity.png")
    for arm in ARMS:
        _fig_top(mats, art, arm, fig_dir / f"top_activating_{arm}.png")
    rel = lambda name: f"figures/report/{name}"  # noqa: E731

    # --- results summary: the first page, then the headline numbers
    oracle_evals = [_read_json(metrics_dir / "eval" / f"{r}.json") for r in oracle_runs]
    by_run = {**{f"{arm} ({len(seeds)} seeds)": list(evals[arm].values()) for arm in ARMS},
              f"oracle control ({len(oracle_runs)} seed(s))": oracle_evals}
    prim_rows = {label: {"val": primitive_means(evs, "val", "by_primitive_alone", NAMES),
                         "test": primitive_means(evs, "test", "by_primitive", NAMES)} for label, evs in by_run.items()}
    prim_rows["copy the query"] = {"val": primitive_means(oracle_evals, "val", "by_primitive_alone", NAMES, "copy"),
                                   "test": primitive_means(oracle_evals, "test", "by_primitive", NAMES, "copy")}
    example_runs = {arm: runs[arm][0] for arm in ARMS} | ({"oracle": oracle_runs[0]} if oracle_runs else {})
    example_figs = []
    for who, run in example_runs.items():
        with np.load(metrics_dir / "eval" / f"{run}.examples.npz", allow_pickle=False) as z:
            ex = {k: z[k] for k in z.files}
        for split in ("val", "test"):
            name = f"examples_{who}_{split}.png"
            _fig_examples(ex, split, NAMES, f"{run}, {split}: one episode per primitive", fig_dir / name)
            example_figs.append(f"![{run} {split}](figures/report/{name})")
    per_primitive = per_primitive_tables(prim_rows, list(NAMES))
    per_primitive += ["Predicted grids, one episode per primitive (val: the primitive alone; test: a length-3 "
                      "episode containing it), for the first seed of each arm and the oracle:", "",
                      " ".join(example_figs), ""]
    summ = first_page(params, summary, hyp, art, per_primitive)

    def run_values(arm: str, key: str) -> list[float]:
        out = []
        for r in runs[arm]:
            ev, ft = evals[arm][r], fts[arm][r]
            if key.startswith("fewshot_"):
                how, _, metric = key[len("fewshot_"):].partition("_")
                out.append(ft[how].get(metric, float("nan")))
            else:
                split, _, metric = key.partition("_")
                out.append(ev[split][metric])
        return out

    head_keys = [k for k in summary.get(ARMS[0], {}) if k != "seeds"]
    summ += ["## Headline numbers per arm", "",
             f"Mean over seeds (from `metrics/summary.json`) with the {pct} t interval over the per-run values of "
             "`metrics/eval` and `metrics/finetune` (n/a with fewer than 2 seeds).", "",
             "| metric | " + " | ".join(f"{arm} (n={summary.get('seeds', len(seeds))})" for arm in ARMS) + " |",
             "|---|" + "---|" * len(ARMS)]
    for key in head_keys:
        cells = []
        for arm in ARMS:
            try:
                lo, hi = seed_t_ci(run_values(arm, key), alpha)
            except (KeyError, TypeError, ValueError):
                lo = hi = float("nan")
            ci = "" if math.isnan(lo) else f" [{fmt(lo)}, {fmt(hi)}]"
            cells.append(f"{fmt(summary[arm].get(key))}{ci}")
        summ.append(f"| {key} | " + " | ".join(cells) + " |")
    summ.append("")

    # --- analysis report
    S = lambda key: _sentence(key, hyp[key], full.get(key, {}), art) if key in hyp else f"`{key}`: missing."  # noqa: E731
    d = art["design"]
    learn_lines = []
    for arm, arm_runs in train_fig.items():
        x, y = _mean_curves([_col(rows, "val/exact_match") for rows in arm_runs.values()])
        if len(x):
            learn_lines.append(f"{arm}: mean val exact match {fmt(y[0])} at step {int(x[0])} -> {fmt(y[-1])} at step "
                               f"{int(x[-1])}.")
    zs_lines = [f"{arm}: " + ", ".join(f"{s} exact match {_mean_ci_text(art, arm, f'{s}_exact_match')}"
                                       for s in ZERO_SHOT_SPLITS if f"{s}_exact_match" in art["summary"][arm]) + "."
                for arm in ARMS]
    fs_lines = []
    for arm in ARMS:
        parts = []
        for how in ("none", method, "full"):
            vals = [fts[arm][r][how]["final_iou"] for r in runs[arm]]
            gains = [fts[arm][r][how].get("gain_iou", float("nan")) for r in runs[arm]]
            rmst = [fts[arm][r][how].get("rmst_to_target", float("nan")) for r in runs[arm]]
            parts.append(f"{how} final IoU {fmt(np.mean(vals))}, gain {fmt(np.mean(gains), signed=True)}, "
                         f"RMST to target {fmt(np.mean(rmst), 1)}")
        fs_lines.append(f"{arm}: " + "; ".join(parts) + " (means over seeds).")
    pre = art.get("h2_precondition") or {}
    refs = art.get("h3_references", {})
    ref_rows = ["| arm | statistic | trained (mean over seeds) | untrained model | shuffled labels: mean (sd) |",
                "|---|---|---|---|---|"]
    for arm in ARMS:
        r = refs.get(arm, {})
        tr, un, sh = r.get("trained", {}), r.get("untrained", {}), r.get("shuffled", {})
        ref_rows.append(f"| {arm} | subspace rho, test-test pairs (`H3_test_spearman`) | {fmt(tr.get('rho_test_test'))} | "
                        f"{fmt(un.get('rho_test_test'))} | {fmt(sh.get('rho_test_test_mean'))} "
                        f"({fmt(sh.get('rho_test_test_sd'))}) |")
        ref_rows.append(f"| {arm} | subspace rho, stratified (`H3_stratified`) | {fmt(tr.get('rho'))} | "
                        f"{fmt(un.get('rho'))} | {fmt(sh.get('rho_mean'))} ({fmt(sh.get('rho_sd'))}) |")
        ref_rows.append(f"| {arm} | debiased CKA rho, test-test pairs (`H3_cka_test`) | "
                        f"{fmt(tr.get('cka_rho_test_test'))} | {fmt(un.get('cka_rho_test_test'))} | |")
    null_lines = [f"{arm}: mean {fmt(refs.get(arm, {}).get('cka_null', {}).get('mean'))}, sd "
                  f"{fmt(refs.get(arm, {}).get('cka_null', {}).get('sd'))} over "
                  f"{refs.get(arm, {}).get('cka_null', {}).get('n', 0)} null pairs" for arm in ARMS]
    seeds_of = lambda arm, key: ", ".join(fmt(v, 0) for v in art["per_seed"][arm].get(key, []))  # noqa: E731
    unit_lines = [f"{arm}, per seed: live units (train subset + val) {seeds_of(arm, 'h4_live_units')}, dead "
                  f"{seeds_of(arm, 'h4_dead_units')} of {fmt(_mean(art, arm, 'h4_units'), 0)}; live on test "
                  f"{seeds_of(arm, 'h4_live_units_test')}; distinct units chosen {seeds_of(arm, 'h4_units_used')}."
                  for arm in ARMS]
    probe_lines = [f"{arm}: held-out monosemanticity excess over the null {_mean_ci_text(art, arm, 'h4_monosemanticity')} "
                   f"(raw held-out AUROC {_mean_ci_text(art, arm, 'h4_monosemanticity_raw')}); linear-probe macro "
                   f"AUROC on z {_mean_ci_text(art, arm, 'h4_probe_z')}, on h {_mean_ci_text(art, arm, 'h4_probe_h')}; "
                   f"auxiliary head's own test macro AUROC {_mean_ci_text(art, arm, 'h4_aux_auroc')}." for arm in ARMS]
    top_lines = []
    for arm in ARMS:
        us = art["seed0"]["top_units"].get(arm) or []
        top_lines.append(f"{arm}: " + (", ".join(f"unit {u['unit']} -> {u['primitive']} (AUROC {fmt(u['auroc'])})"
                                                  for u in us) if us else "no live selective unit") + ".")
    L = mats["layer_cka_share_vs_baseline"]
    layers = art["layers"]
    diag = ", ".join(f"{l} {fmt(L[i, i])}" for i, l in enumerate(layers))
    probe = d["probe"]
    n_runs = sum(len(v) for v in runs.values())

    rep = ["# Analysis report", "",
           f"Generated by {REPORT_CMD} from the metrics files and `metrics/analysis/` (written by `uv run mcl "
           "analyse`); every number below is formatted from those files. Pre-registration: `docs/hypotheses.md`; "
           "first page and verdict table: `docs/results_summary.md`.", "",
           f"Runs: {', '.join(r for arm in ARMS for r in runs[arm])} ({n_runs} runs, seeds {seeds}); controls: "
           f"{', '.join(oracle_runs) or 'none'}.", "",
           "## Training", "", f"![learning curves]({rel('learning_curves.png')})", "", *learn_lines, "",
           f"![manipulation curves]({rel('manipulation_curves.png')})", "",
           "Manipulation-check columns of the training logs (`manip/*`, on training batches).", "",
           "## Manipulation check", "",
           f"Val split, {d['manipulation']['n_episodes']} episodes grouped by label set, k = {d['manipulation']['k']}, "
           f"eps = {d['manipulation']['eps']:g}.", "",
           f"Per-seed gap: {_per_seed(art, 'val_gap')}.", "",
           f"Per-seed overlapping-pair distance: {_per_seed(art, 'val_overlap_dist')}; disjoint-pair distance: "
           f"{_per_seed(art, 'val_disjoint_dist')}.", "",
           f"Per-seed effective rank of h: {_per_seed(art, 'val_effective_rank', 2)}; label-set R^2: "
           f"{_per_seed(art, 'val_label_r2')}.", "",
           S("M_gap"), "", S("M_spearman"), "",
           "## H1: zero-shot composition", "", f"![zero-shot]({rel('zero_shot.png')})", "", *zs_lines, "",
           S("H1_exact_match"), "", S("H1b_novel2_exact_match"), "", S("H1_iou"), "",
           S("dev_exact_match") + " Dev is for selection only (it chooses `loss.beta`); it is not evidence.", "",
           "## H2: few-shot efficiency", "", f"![few-shot]({rel('fewshot_curves.png')})", "",
           f"Method: {method}; tasks: {', '.join(d['finetune']['tasks'])}; target: step-0 IoU + "
           f"{d['finetune']['gap_fraction']:g} x its gap to 1; censoring limit {d['finetune']['censor_limit']} steps.",
           "", *fs_lines, "",
           f"Precondition: baseline gain {fmt(pre.get('effect'), signed=True)}, {pct} CI "
           f"{_ci(pre.get('ci_low'), pre.get('ci_high'))} ({pre.get('method', '')}): "
           + ("adaptation measurably helps the baseline, H2 is testable." if _h2_testable(art) else
              f"**{H2_UNTESTABLE}** (adaptation does not measurably help the baseline)."), "",
           S("H2_gain"), "", S("H2_rmst"), "",
           "## H3: shared subspace on held-out tasks", "",
           f"Probe split: {probe['programs']} programs x {probe['episodes_per_program']} episodes (episode j shares its "
           f"inputs across programs), {sum(probe['is_test'])} with test label sets; pairs: "
           + ", ".join(f"{t} {n}" for t, n in probe["n_pairs_by_type"].items()) + ". "
           f"{d['shared_components']} pooled within-task principal direction(s) removed before the per-task PCA "
           f"(k = {d['subspace_k']}); scree-suggested counts per seed: {_per_seed(art, 'h3_scree_elbow', 0)}. "
           f"Task CKA: {art['task_cka_estimator']} estimator on the raw h.", "",
           "Saturation check, mean subspace similarity over all probe task pairs (1 = identical top-k subspaces; "
           f"two random {d['subspace_k']}-planes in {params.model.h_dim} dimensions give about "
           f"{d['subspace_k'] / params.model.h_dim:.3f}): per-task PCA of the raw h "
           f"{_per_seed(art, 'h3_similarity_mean_raw')}; after removing the shared direction(s) "
           f"{_per_seed(art, 'h3_similarity_mean')}.", "",
           f"![task CKA]({rel('task_cka.png')})", "", f"![subspace vs overlap]({rel('subspace_vs_overlap.png')})", "",
           f"Per-seed test-test subspace rho: {_per_seed(art, 'h3_rho_test_test')}; stratified rho: "
           f"{_per_seed(art, 'h3_rho')}; test-test CKA rho: {_per_seed(art, 'h3_cka_rho_test_test')}.", "",
           "References (the same statistics for an untrained model and for permuted label overlap):", "", *ref_rows, "",
           f"Debiased-CKA null (independent row permutations of every task's h) at data.probe_episodes = "
           f"{probe['episodes_per_program']}: " + "; ".join(null_lines) + ". A task-pair CKA difference smaller than "
           "this spread is noise.", "",
           S("H3_test_spearman"), "", S("H3_stratified"), "", S("H3_cka_test"), "",
           "### Layer x layer CKA between the arms", "", f"![layer CKA]({rel('layer_cka.png')})", "",
           f"{art['layer_cka_estimator'].capitalize()} CKA on the test split, seed 0; same-layer values: {diag}.", "",
           "## H4: concept-aligned sparse features", "", f"![probe AUROC]({rel('probe_auroc.png')})", "",
           f"Units are chosen and probes fit on {d['n_fit']} train+val episodes (lengths 1-2) and scored on "
           f"{d['n_test']} test episodes (unseen length-3 compositions); the null permutes the test labels "
           f"{d['monosemanticity_permutations']} times.", "", *probe_lines, "", *unit_lines, "",
           S("H4_monosemanticity"), "", S("H4_probe_z"), "", S("H4_probe_h"), "",
           f"![selectivity]({rel('selectivity.png')})", "",
           "Most selective units (seed 0, test): " + " ".join(top_lines), "",
           f"![top share]({rel('top_activating_share.png')})", "", f"![top baseline]({rel('top_activating_baseline.png')})",
           ""]

    # --- experiment log
    checksums = art.get("dataset_checksums") or {}
    version = code_version(repo)
    rep += ["## Experiment log (実験ログ)", "",
            f"Code version: `{version}`. Dataset: `{params.data.store}`, split checksums: "
            + (", ".join(f"{k} `{v}`" for k, v in checksums.items()) or "unavailable") + ".", ""]
    from mcl.config import arm_params

    for arm, names in (*runs.items(), ("oracle", oracle_runs)):
        for r in names:
            cfg_path = models_dir / r / "config.yaml"
            if cfg_path.is_file():
                cfg = yaml.safe_load(cfg_path.read_text())
                source = f"`{cfg_path}`"
            else:
                cfg = {"arm": arm, "seed": int(r.rsplit("seed", 1)[1]), **to_dict(arm_params(params, arm))}
                source = "params.yaml (no config.yaml found)"
            loss = cfg.get("loss", {})
            head = []
            ev = evals.get(arm, {}).get(r)
            if ev is None and (metrics_dir / "eval" / f"{r}.json").is_file():
                ev = _read_json(metrics_dir / "eval" / f"{r}.json")
            if ev is not None:
                head += [f"{s} exact match {fmt(ev[s]['exact_match'])}" for s in ZERO_SHOT_SPLITS if s in ev]
                head.append(f"test IoU {fmt(ev['test']['iou'])}")
            ft = fts.get(arm, {}).get(r)
            if ft is not None:
                head.append(f"few-shot {method} final IoU {fmt(ft[method]['final_iou'])}, gain "
                            f"{fmt(ft[method].get('gain_iou'), signed=True)}")
            rep += [f"### {r}", "",
                    f"- config: {source}; loss.beta {loss.get('beta', 'n/a')}, train.steps "
                    f"{cfg.get('train', {}).get('steps', 'n/a')}, model.encoder "
                    f"{cfg.get('model', {}).get('encoder', 'n/a')}, model.h_dim {cfg.get('model', {}).get('h_dim', 'n/a')}",
                    f"- headline: {', '.join(head) or 'no metrics file'}",
                    "", "<details><summary>resolved config</summary>", "", "```yaml",
                    yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", "", "</details>", ""]

    out = []
    for name, lines in (("results_summary.md", summ), ("analysis_report.md", rep)):
        path = docs_dir / name
        write_text(path, "\n".join(lines) + "\n")
        out.append(path)
    return out + [fig_dir / f for f in FIGURES]
