"""The report's figures: PNGs under docs/figures/report/, one function each."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mcl import plots  # before pyplot: importing mcl.plots selects matplotlib's Agg backend (files only, no display)
import matplotlib.pyplot as plt

from mcl.config import ARMS, CONTROLS
from mcl.data.primitives import NAMES
from mcl.evaluation.summary import ZERO_SHOT_SPLITS
from mcl.report.artifacts import Artifacts, logged_curve, mean_logged_curve

#: The figures folder, relative to the docs folder (the documents link into it).
FIGURE_DIR = "figures/report"
#: The figures :func:`write_figures` writes (the example episodes come on top, see :func:`write_example_figures`).
FIGURES = ("learning_curves.png", "manipulation_curves.png", "zero_shot.png", "fewshot_curves.png", "task_cka.png",
           "layer_cka.png", "subspace_vs_overlap.png", "probe_auroc.png", "selectivity.png",
           "top_activating_share.png", "top_activating_baseline.png")
ARM_COLOURS = {"share": "#0074D9", "baseline": "#FF851B", "oracle": "#2ECC40", "copy": "#AAAAAA",
               "majority": "#666666"}


def image(alt: str, name: str) -> str:
    """Markdown image of the figure file ``name``, linked from a document in the docs folder."""
    return f"![{alt}]({FIGURE_DIR}/{name})"


def learning_curves_figure(logs: dict, path: Path) -> None:
    """Val IoU and exact match over training steps, mean over each arm's seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key in zip(axes, ("val/iou", "val/exact_match")):
        for arm, runs in logs.items():
            x, y = mean_logged_curve([logged_curve(rows, key) for rows in runs.values()])
            if len(x):
                ax.plot(x, y, marker="o", ms=3, label=f"{arm} (mean of {len(runs)} seeds)",
                        color=ARM_COLOURS.get(arm))
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"Learning curves ({key})", fontsize=9)
        if ax.lines:
            ax.legend(fontsize=7)
    plots.save_figure(fig, path)


def manipulation_curves_figure(logs: dict, path: Path) -> None:
    """The manipulation-check columns of the training logs (``manip/*``) over steps, per arm."""
    keys = ("manip/gap", "manip/jaccard_spearman", "manip/effective_rank", "manip/label_r2")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.0))
    for ax, key in zip(axes, keys):
        for arm in ARMS:
            x, y = mean_logged_curve([logged_curve(rows, key) for rows in logs.get(arm, {}).values()])
            if len(x):
                ax.plot(x, y, label=arm, color=ARM_COLOURS[arm])
        ax.set_title(key + " (training batches)", fontsize=8)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    plots.save_figure(fig, path)


def zero_shot_figure(summary: dict, art: dict, path: Path) -> None:
    """Zero-shot exact match per split: the arms with their interval over seeds, and the controls."""
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
    plots.save_figure(fig, path)


def fewshot_curves_figure(curves: dict, method: str, path: Path) -> None:
    """Query IoU over fine-tuning steps: no adaptation, ``method`` and full fine-tuning, per arm."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    styles = {"none": ":", "adapted": "-", "full": "--"}
    for arm in ARMS:
        for col, ls in styles.items():
            x, y = mean_logged_curve([logged_curve(rows, f"iou_{col}") for rows in curves[arm].values()])
            name = method if col == "adapted" else col
            ax.plot(x, y, ls, color=ARM_COLOURS[arm], label=f"{arm} {name}")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("query IoU (mean over tasks and seeds)")
    ax.set_title("Few-shot adaptation")
    ax.legend(fontsize=7)
    plots.save_figure(fig, path)


def _heatmap(ax, M, title, labels=None, vmin=None, vmax=None, cmap="viridis"):
    im = ax.imshow(M, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_title(title, fontsize=8)
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    return im


def task_cka_figure(mats: dict, art: dict, path: Path) -> None:
    """Task x task CKA on the probe split, per arm and layer (seed 0)."""
    layers = art["layers"]
    L = len(layers)
    fig, axes = plt.subplots(len(ARMS), L, figsize=(2.6 * L, 2.6 * len(ARMS)), squeeze=False)
    im = None
    for r, arm in enumerate(ARMS):
        for c, layer in enumerate(layers):
            im = _heatmap(axes[r, c], mats[f"{arm}_task_cka"][c], f"{arm} seed0 {layer}", vmin=-0.2, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6)
    fig.suptitle(f"Task x task {art['task_cka_estimator']} CKA on the probe split (tasks = probe programs)", fontsize=9)
    plots.save_figure(fig, path)


def layer_cka_figure(mats: dict, art: dict, path: Path) -> None:
    """Layer x layer CKA between share and baseline on the test split (seed 0)."""
    layers = art["layers"]
    fig, ax = plt.subplots(figsize=(4, 3.5))
    im = _heatmap(ax, mats["layer_cka_share_vs_baseline"],
                  f"layer x layer {art['layer_cka_estimator']} CKA, test, seed 0", vmin=-0.2, vmax=1)
    ax.set_xticks(range(len(layers)), layers, fontsize=7)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_xlabel("baseline layer")
    ax.set_ylabel("share layer")
    fig.colorbar(im, ax=ax)
    plots.save_figure(fig, path)


def subspace_figure(mats: dict, art: dict, path: Path) -> None:
    """Task subspace similarity per arm, label Jaccard overlap, and the one against the other (seed 0)."""
    d = art["design"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.5))
    for i, arm in enumerate(ARMS):
        im = _heatmap(axes[i], mats[f"{arm}_task_subspace"],
                      f"{arm} seed0: subspace similarity of h\n(k={d['subspace_k']}, {d['shared_components']} shared "
                      "component(s) removed)", vmin=0, vmax=1)
        fig.colorbar(im, ax=axes[i])
    _heatmap(axes[2], mats["jaccard"], "label Jaccard overlap", vmin=0, vmax=1)
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
    plots.save_figure(fig, path)


def probe_auroc_figure(art: dict, path: Path) -> None:
    """Test AUROC per primitive of the probes on h and z and of the auxiliary head, mean over seeds."""
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
    plots.save_figure(fig, path)


def selectivity_figure(mats: dict, art: dict, path: Path) -> None:
    """Unit x primitive AUROC of the SAE units on test z, per arm (seed 0)."""
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
    plots.save_figure(fig, path)


def top_activating_figure(mats: dict, art: dict, arm: str, path: Path) -> None:
    """Query input and output of the top-activating test episodes of ``arm``'s most selective units (seed 0)."""
    ins, outs = mats[f"{arm}_top_inputs"], mats[f"{arm}_top_outputs"]
    units = art["seed0"]["top_units"][arm]
    U = ins.shape[0]
    X = ins.shape[1] if U else 0
    if U == 0 or X == 0:
        fig, ax = plt.subplots(figsize=(3, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, "no live selective units", ha="center")
        plots.save_figure(fig, path)
        return
    fig, axes = plt.subplots(U, 2 * X, figsize=(1.3 * 2 * X, 1.5 * U), squeeze=False)
    for r in range(U):
        u = units[r]
        for c in range(X):
            plots.draw_grid(axes[r, 2 * c], ins[r, c, -1],
                            f"u{u['unit']} ({u['primitive']})\nquery in" if c == 0 else "query in")
            plots.draw_grid(axes[r, 2 * c + 1], outs[r, c, -1], f"out, z={u['activations'][c]:.2f}")
    fig.suptitle(f"{arm} seed0: top-activating test episodes of the most selective SAE units", fontsize=9)
    plots.save_figure(fig, path)


def example_episodes_figure(examples: dict[str, np.ndarray], split: str, primitives, title: str, path: Path) -> None:
    """Demonstrations, query, prediction and target of one episode per primitive (a row each)."""
    prim = examples[f"{split}_primitive"]
    rows = [int(np.flatnonzero(prim == p)[0]) for p in range(len(primitives)) if (prim == p).any()]
    inputs, outputs, pred = (examples[f"{split}_{k}"] for k in ("inputs", "outputs", "prediction"))
    demos = inputs.shape[1] - 1
    fig, axes = plt.subplots(len(rows), 2 * demos + 3, figsize=(1.1 * (2 * demos + 3), 1.2 * len(rows)), squeeze=False)
    for r, i in enumerate(rows):
        grids = [g for d in range(demos) for g in (inputs[i, d], outputs[i, d])] + [inputs[i, -1], pred[i], outputs[i, -1]]
        heads = [f"demo {d + 1} {io}" for d in range(demos) for io in ("in", "out")] + ["query", "prediction", "target"]
        for c, (g, head) in enumerate(zip(grids, heads)):
            plots.draw_grid(axes[r, c], g, head if r == 0 else None)
        right = "right" if np.array_equal(pred[i], outputs[i, -1]) else "wrong"
        axes[r, 0].set_ylabel(f"{primitives[prim[i]]}\n({right})", fontsize=7)
    fig.suptitle(title, fontsize=9)
    plots.save_figure(fig, path)


def write_figures(a: Artifacts, method: str, fig_dir: Path) -> None:
    """Write the :data:`FIGURES` into ``fig_dir`` (``method``: the few-shot adaptation method)."""
    art, mats = a.analysis, a.matrices
    fig_dir.mkdir(parents=True, exist_ok=True)
    learning_curves_figure(a.learning_logs, fig_dir / "learning_curves.png")
    manipulation_curves_figure(a.train_logs, fig_dir / "manipulation_curves.png")
    zero_shot_figure(a.summary, art, fig_dir / "zero_shot.png")
    fewshot_curves_figure(a.finetune_curves, method, fig_dir / "fewshot_curves.png")
    task_cka_figure(mats, art, fig_dir / "task_cka.png")
    layer_cka_figure(mats, art, fig_dir / "layer_cka.png")
    subspace_figure(mats, art, fig_dir / "subspace_vs_overlap.png")
    probe_auroc_figure(art, fig_dir / "probe_auroc.png")
    selectivity_figure(mats, art, fig_dir / "selectivity.png")
    for arm in ARMS:
        top_activating_figure(mats, art, arm, fig_dir / f"top_activating_{arm}.png")


def write_example_figures(a: Artifacts, fig_dir: Path) -> list[tuple[str, str, str]]:
    """Write ``examples_<who>_<split>.png`` (val and test) for the first run of each arm and the oracle.

    Returns
    -------
    list of (run, split, file name)
    """
    written = []
    for who, (run, examples) in a.examples.items():
        for split in ("val", "test"):
            name = f"examples_{who}_{split}.png"
            example_episodes_figure(examples, split, NAMES, f"{run}, {split}: one episode per primitive", fig_dir / name)
            written.append((run, split, name))
    return written
