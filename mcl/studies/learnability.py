"""The learnability study behind `mcl learnability` (docs/learnability.md).

Trains the default recipe and the ablations that explain it, side by side in the process
pool, and records validation (lengths 1-2, seen label sets), validation per primitive alone
(length-1 episodes) and test (unseen length 3) exact match against steps, with the wall time
of each run. The oracle-task control (the executor given the true program) bounds what task
inference can reach: on test it separates "the executor cannot compose three steps" from
"the encoder cannot infer a new composition".
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mcl.config import Params, parse_params
from mcl.io import read_csv
from mcl.data.primitives import NAMES
from mcl.studies.result import StudyResult

CURVE_SPLITS = ("val", "test")
THRESHOLDS = (0.5, 0.8, 0.95)


@dataclass(frozen=True)
class Variant:
    """One configuration of the study: an arm and params overrides (dotted keys)."""

    name: str
    arm: str
    what: str
    overrides: dict = field(default_factory=dict)


OLD_MODEL = {"model.executor": "transformer", "model.demo_embed": "patch"}

# The default recipe first; each ablation changes one thing (attention_only: the model before the routing
# executor and the correspondence embedding, where cells interact only through attention).
VARIANTS: tuple[Variant, ...] = (
    Variant("default", "baseline", "the default recipe (baseline arm: no share loss)"),
    Variant("share", "share", "the default recipe with the share loss (share arm)"),
    Variant("oracle", "oracle", "oracle-task control: the executor given the true program (absent steps skipped)"),
    Variant("no_cotrain", "baseline", "no executor co-training on the true program", {"loss.cotrain": 0.0}),
    Variant("aux_0", "baseline", "no auxiliary primitive-label loss", {"loss.alpha": 0.0}),
    Variant("aux_1", "baseline", "auxiliary primitive-label loss weight 1 (the previous default)", {"loss.alpha": 1.0}),
    Variant("cosine_lr", "baseline", "cosine learning-rate decay over the whole run", {"train.lr_decay": 1.0}),
    Variant("one_pass", "baseline", "the routing executor in one pass instead of one per step",
            {"model.executor_steps": 1}),
    Variant("transformer_executor", "baseline", "the previous executor (FiLM transformer over patches)",
            {"model.executor": "transformer"}),
    Variant("oracle_transformer_executor", "oracle", "oracle-task control with the previous executor",
            {"model.executor": "transformer"}),
    Variant("patch_embed", "baseline", "the previous demonstration embedding (patch tokens per pair)",
            {"model.demo_embed": "patch"}),
    Variant("attention_only", "baseline", "the previous model: patch tokens and the transformer executor", OLD_MODEL),
    Variant("gru", "baseline", "GRU encoder over the pairs instead of the transformer", {"model.encoder": "gru"}),
)


def variant_params(raw: dict, variant: Variant, work_dir: Path) -> Params:
    """Params of one variant: the raw params.yaml dict with the variant's overrides. A variant that
    changes the data gets its own store, generated under ``work_dir``."""
    import dataclasses

    from mcl.data.store import generate_store

    params = parse_params(raw, overrides=variant.overrides)
    if any(key.startswith("data.") for key in variant.overrides):
        path = work_dir / variant.name / Path(params.data.store).name
        params = dataclasses.replace(params, data=generate_store(params.data, path))
    return params


def read_curve(metrics_dir: Path) -> list[dict]:
    """Rows ``{"step", "val", "test", "minutes", <primitive>...}`` at every evaluation of a training log:
    exact match on val, test and val per primitive alone (NaN where the log has none), and the run's
    wall-clock minutes at that step (from ``timing.csv``)."""
    minutes = {int(float(r["step"])): float(r["wall_time_s"]) / 60 for r in read_csv(metrics_dir / "timing.csv")}

    def value(r: dict, key: str) -> float:
        return float(r[key]) if r.get(key) not in (None, "") else float("nan")

    return [{"step": int(float(r["step"])), **{s: value(r, f"{s}/exact_match") for s in CURVE_SPLITS},
             "minutes": minutes.get(int(float(r["step"])), float("nan")),
             **{p: value(r, f"val_alone/{p}") for p in NAMES}}
            for r in read_csv(metrics_dir / "metrics.csv") if r.get("val/exact_match")]


def first_reaching(curve: list[dict], threshold: float) -> dict | None:
    """The first evaluation whose val exact match is >= ``threshold``, or None."""
    return next((r for r in curve if r["val"] >= threshold), None)


def train_variants(raw: dict, variants: tuple[Variant, ...], seed: int, work_dir: Path, workers: int,
              progress: bool = True) -> dict[str, list[dict]]:
    """Train every variant (seed ``seed``) under ``work_dir``; its curve per variant name."""
    from mcl.training.pool import Run, train_runs

    runs = [Run(variant_params(raw, v, work_dir), v.arm, seed, work_dir / v.name / "model", work_dir / v.name / "metrics",
                {"tensorboard": False, "curves": ("test",)}) for v in variants]
    train_runs(runs, workers, desc="learnability", progress=progress)
    return {v.name: read_curve(work_dir / v.name / "metrics") for v in variants}


def _reach(curve: list[dict], threshold: float) -> str:
    r = first_reaching(curve, threshold)
    return "not reached" if r is None else f"{r['step']} / {r['minutes']:.1f}"


def render_learnability(curves: dict[str, list[dict]], variants: tuple[Variant, ...], params: Params, command: str,
           figures: tuple[str, str], workers: int) -> str:
    """Markdown of the study: what was run, final and best exact match, steps and core-minutes to each
    threshold, per-primitive finals, the figures and the curves."""
    t, m = params.train, params.model
    lines = [
        "# Learnability: does the model learn the task?",
        "",
        f"Generated by `{command}`; every number below comes from the runs that command makes.",
        "",
        f"Each variant trains one seed for {t.steps} steps (batch {t.batch_size}, lr {t.lr}, decayed over the last "
        f"{t.lr_decay:g} of the steps; demonstration embedding `{m.demo_embed}`, `{m.encoder}` encoder, `{m.executor}` "
        f"executor with {m.executor_steps} passes, d_model {m.d_model}, h_dim {m.h_dim}) and is scored every "
        f"{t.eval_every} steps on the first {t.val_episodes} episodes of val (lengths 1-2, seen label sets) and of "
        f"test (unseen length 3). Runs use one thread each, {workers} side by side, so wall-clock minutes of a run "
        "are its core-minutes.",
        "",
        "| variant | what changes | val exact (final) | val exact (best) | test exact (final) | "
        + " | ".join(f"steps / core-min to val {x:g}" for x in THRESHOLDS) + " | ms per step |",
        "|---|---|---|---|---|" + "---|" * len(THRESHOLDS) + "---|",
    ]
    for v in variants:
        c = curves[v.name]
        ms = 60000 * c[-1]["minutes"] / c[-1]["step"]
        lines.append(f"| `{v.name}` | {v.what} | {c[-1]['val']:.3f} | {max(r['val'] for r in c):.3f} | "
                     f"{c[-1]['test']:.3f} | " + " | ".join(_reach(c, x) for x in THRESHOLDS) + f" | {ms:.0f} |")
    lines += ["", f"![exact match against steps]({figures[0]})", "",
              "The `oracle` row bounds task inference: the gap between it and `default` on val is what the "
              "encoder loses in inferring the task; on test, a low oracle means the executor cannot compose three "
              "steps, a high oracle with a low `default` means the encoder cannot infer a new composition.", "",
              "## Per primitive", "",
              "Final val exact match on the episodes of each primitive alone (the length-1 episodes among the "
              f"first {t.val_episodes} val episodes):", "",
              "| variant | " + " | ".join(NAMES) + " |", "|---|" + "---|" * len(NAMES)]
    for v in variants:
        lines.append(f"| `{v.name}` | " + " | ".join(f"{curves[v.name][-1][p]:.2f}" for p in NAMES) + " |")
    lines += ["", f"![val exact match per primitive against steps]({figures[1]})", "",
              "## Curves", "", "| variant | " + " | ".join(f"step {r['step']}" for r in curves[variants[0].name]) + " |",
              "|---|" + "---|" * len(curves[variants[0].name])]
    for v in variants:
        lines.append(f"| `{v.name}` val / test | " + " | ".join(f"{r['val']:.3f} / {r['test']:.3f}" for r in curves[v.name]) + " |")
    return "\n".join(lines) + "\n"


def draw_curves(curves: dict[str, list[dict]]):
    """Val (solid) and test (dashed) exact match against steps, one colour per variant: the figure."""
    from mcl.plots import plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (name, c) in enumerate(curves.items()):
        steps = [r["step"] for r in c]
        ax.plot(steps, [r["val"] for r in c], color=f"C{i % 10}", label=name, linestyle="-" if i < 10 else "-.")
        ax.plot(steps, [r["test"] for r in c], color=f"C{i % 10}", linestyle="--", alpha=0.6)
    ax.set_xlabel("training step")
    ax.set_ylabel("exact match (solid: val, dashed: test)")
    ax.legend(fontsize=6, ncol=2)
    return fig


def draw_primitive_curves(curves: dict[str, list[dict]]):
    """Val exact match of each primitive alone against steps, one panel per primitive, a line per variant:
    the figure."""
    from mcl.plots import plt

    fig, axes = plt.subplots(2, 4, figsize=(12, 5.5), sharex=True, sharey=True)
    for ax, prim in zip(axes.flat, NAMES):
        for i, (name, c) in enumerate(curves.items()):
            ax.plot([r["step"] for r in c], [r[prim] for r in c], color=f"C{i % 10}", label=name,
                    linestyle="-" if i < 10 else "-.")
        ax.set_title(prim, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
    for ax in axes[1]:
        ax.set_xlabel("training step")
    axes[0, 0].legend(fontsize=5, ncol=2)
    return fig


def learnability_study(raw: dict, params_path: str, out: Path, figure: Path, seed: int, workers: int,
                       work_dir: Path | None = None, variants: tuple[Variant, ...] = VARIANTS) -> StudyResult:
    """Train the variants; the page (to be written to ``out``), the curves per variant, and the figures
    ``figure`` and ``<figure>_primitives`` (linked from the page)."""
    params = parse_params(raw)
    command = "uv run mcl learnability" + ("" if params_path == "params.yaml" else f" --params {params_path}")
    with tempfile.TemporaryDirectory(prefix="mcl-learn-") as tmp:
        curves = train_variants(raw, variants, seed, Path(work_dir or tmp), workers)
    per_primitive = figure.with_name(f"{figure.stem}_primitives{figure.suffix}")
    rel = tuple(str(Path(f).relative_to(Path(out).parent)) for f in (figure, per_primitive))
    return StudyResult(render_learnability(curves, variants, params, command, rel, workers), curves,
                       {figure: draw_curves(curves), per_primitive: draw_primitive_curves(curves)})


__all__ = ["THRESHOLDS", "VARIANTS", "Variant", "first_reaching", "learnability_study", "read_curve",
           "render_learnability", "train_variants", "draw_curves", "draw_primitive_curves"]
