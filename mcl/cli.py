"""The `mcl` command line: one subcommand per pipeline stage, plus `data` and `bench` helpers.

Every stage subcommand validates the whole ``params.yaml`` before doing any work; bad
params, stores or checkpoints end with a one-line error and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mcl.config import ConfigError, Params, load_params

PARAMS_OPTION = click.option("--params", "params_path", default="params.yaml", show_default=True,
                             type=click.Path(dir_okay=False), help="Parameter file (validated before any work).")


class UserError(click.ClickException):
    """A bad input: printed as one line, exit code 2."""

    exit_code = 2


def _user_errors():
    from mcl.errors import CheckpointError, NonFiniteLossError, StoreError

    return (ConfigError, StoreError, CheckpointError, NonFiniteLossError, PermissionError, FileNotFoundError)


class MclGroup(click.Group):
    """Turns known bad-input exceptions into one-line errors with exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _user_errors() as e:
            raise UserError(str(e)) from None


def _load(params_path: str) -> Params:
    return load_params(params_path)


@click.group(cls=MclGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """mcl: does a shared-subspace regulariser help networks generalise to unseen compositions?

    Stages (run them through `uv run dvc repro`, which calls these with params.yaml):
    generate -> train -> evaluate -> finetune. Helpers: `mcl data info`, `mcl bench ...`.
    """


# ---------------------------------------------------------------------------
# generate

@cli.command()
@PARAMS_OPTION
@click.option("--out", type=click.Path(), default=None, help="Store path (default: data.store from params).")
def generate(params_path, out):
    """Generate the frozen episode splits (train, val, test, fewshot, probe) into a Zarr or HDF5 store.

    Same params give byte-identical arrays. The store is written to a temporary path and
    renamed into place, so an interrupted run never leaves a partial store.
    """
    params = _load(params_path)  # validate before importing anything heavy or doing any work
    from tqdm import tqdm

    from mcl.data.generator import SPLITS, generate_dataset
    from mcl.data.store import store_attrs, store_format, write_store

    cfg = params.data
    path = Path(out or cfg.store)
    store_format(path)  # fail early on an unknown suffix
    with tqdm(total=len(SPLITS), desc="generate", unit="split", file=sys.stderr) as bar:
        splits, label_sets = generate_dataset(cfg, progress=lambda name: (bar.set_postfix_str(name), bar.update()))
    write_store(path, splits, store_attrs(splits, cfg, label_sets))
    click.echo(f"wrote {path}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


# ---------------------------------------------------------------------------
# train

ARM_OPTION = click.option("--arm", type=click.Choice(["share", "baseline"]), required=True,
                          help="share: params as given; baseline: loss.beta forced to 0.")
SEED_OPTION = click.option("--seed", type=int, required=True, help="Training seed (one of train.seeds in the pipeline).")


@cli.command()
@PARAMS_OPTION
@ARM_OPTION
@SEED_OPTION
@click.option("--resume", is_flag=True, help="Continue from the run's last checkpoint (exact on CPU).")
@click.option("--models-dir", default="models", show_default=True, help="Run directories go here: <arm>-seed<k>/.")
@click.option("--metrics-dir", default="metrics/train", show_default=True, help="Training logs go here: <arm>-seed<k>/.")
@click.option("--no-tensorboard", is_flag=True, help="Skip the TensorBoard event files.")
def train(params_path, arm, seed, resume, models_dir, metrics_dir, no_tensorboard):
    """Train one model (one arm, one seed) on the frozen train split.

    Writes models/<arm>-seed<k>/{config.yaml,last.pt,best.pt,tb/} and
    metrics/train/<arm>-seed<k>/{metrics.csv,metrics.json,plots/} (DVCLive).
    """
    params = _load(params_path)  # validate before importing torch or doing any work
    from mcl.training.trainer import run_name, train as train_run

    name = run_name(arm, seed)
    summary = train_run(params, arm, seed, Path(models_dir) / name, Path(metrics_dir) / name, resume=resume,
                        tensorboard=not no_tensorboard)
    final = summary["final"]
    click.echo(f"{name}: {summary['steps']} steps, val iou {final.get('val/iou', float('nan')):.4f}, "
               f"val exact_match {final.get('val/exact_match', float('nan')):.4f}, best val iou {summary['best_val_iou']:.4f}")


@cli.command()
@PARAMS_OPTION
@ARM_OPTION
@SEED_OPTION
@click.option("--models-dir", default="models", show_default=True)
@click.option("--out", default=None, help="Metrics file (default metrics/eval/<arm>-seed<k>.json).")
def evaluate(params_path, arm, seed, models_dir, out):
    """Zero-shot evaluation of a trained model on val (lengths 1-2) and test (unseen length 3).

    Writes exact_match, cell_accuracy and iou overall, per composition length and per
    primitive, next to copy-the-query and majority-colour reference rows.
    """
    params = _load(params_path)
    from mcl.data.store import open_store
    from mcl.evaluation.zero_shot import evaluate_model
    from mcl.io import write_json
    from mcl.training.trainer import arm_params, load_trained, resolve_device, run_name

    params = arm_params(params, arm)
    name = run_name(arm, seed)
    out = Path(out or f"metrics/eval/{name}.json")
    device = resolve_device(params.train.device)
    store = open_store(params.data.store)
    model = load_trained(Path(models_dir) / name, params, device)
    result = evaluate_model(model, {s: store.load(s) for s in ("val", "test")}, store.primitives,
                            params.eval.batch_size, device)
    write_json(out, result)
    ref = result["reference"]
    click.echo(f"{name}: val exact_match {result['val']['exact_match']:.4f} iou {result['val']['iou']:.4f} "
               f"(copy {ref['val']['copy']['exact_match']:.4f} / {ref['val']['copy']['iou']:.4f}); "
               f"test exact_match {result['test']['exact_match']:.4f} iou {result['test']['iou']:.4f} "
               f"(copy {ref['test']['copy']['exact_match']:.4f} / {ref['test']['copy']['iou']:.4f})")


@cli.command()
@PARAMS_OPTION
@ARM_OPTION
@SEED_OPTION
@click.option("--models-dir", default="models", show_default=True)
@click.option("--out-dir", default="metrics/finetune", show_default=True,
              help="Writes <arm>-seed<k>.json (means per method and per-task results) and <arm>-seed<k>.curve.csv.")
def finetune(params_path, arm, seed, models_dir, out_dir):
    """Few-shot adaptation of a trained model on label sets of the fewshot split.

    Per label set: no adaptation, finetune.method (LoRA or adapter: only inserted
    parameters train), and full fine-tuning; curves, final IoU / exact match, steps to
    finetune.threshold IoU (censored at steps + 1) and wall time.
    """
    params = _load(params_path)
    from tqdm import tqdm

    from mcl.data.store import open_store
    from mcl.io import write_csv, write_json
    from mcl.training.finetune import finetune_model, mean_curve
    from mcl.training.trainer import arm_params, load_trained, resolve_device, run_name

    params = arm_params(params, arm)
    name = run_name(arm, seed)
    device = resolve_device(params.train.device)
    store = open_store(params.data.store)
    model = load_trained(Path(models_dir) / name, params, device)
    eps = store.load("fewshot")
    with tqdm(total=params.finetune.num_tasks, desc=f"finetune {name}", unit="task", file=sys.stderr) as bar:
        try:
            result = finetune_model(model, eps, store.primitives, params, device, progress=lambda _: bar.update())
        except ValueError as e:
            raise UserError(str(e)) from None
    out_dir = Path(out_dir)
    write_json(out_dir / f"{name}.json", {**result["summary"], "method": params.finetune.method,
                                           "tasks": {t: {how: {k: v for k, v in r.items() if k != "curve"}
                                                         for how, r in runs.items()}
                                                     for t, runs in result["tasks"].items()}})
    rows = mean_curve(result)
    write_csv(out_dir / f"{name}.curve.csv", list(rows[0]), rows)
    s = result["summary"]
    click.echo(f"{name}: " + "; ".join(f"{how} final iou {s[how]['final_iou']:.4f}, steps to threshold "
                                       f"{s[how]['steps_to_threshold']:.1f}" for how in result["methods"]))


@cli.command()
@PARAMS_OPTION
@click.option("--eval-dir", default="metrics/eval", show_default=True)
@click.option("--finetune-dir", default="metrics/finetune", show_default=True)
@click.option("--train-dir", default="metrics/train", show_default=True)
@click.option("--out", default="metrics/summary.json", show_default=True)
def summarize(params_path, eval_dir, finetune_dir, train_dir, out):
    """Headline numbers per arm (mean over train.seeds) into one small file for `dvc exp show`."""
    params = _load(params_path)
    from mcl.evaluation.summary import summarize_runs
    from mcl.io import write_json

    summary = summarize_runs(params.train.seeds, Path(eval_dir), Path(finetune_dir), Path(train_dir),
                             params.finetune.method)
    write_json(Path(out), summary)
    for arm, values in summary.items():
        click.echo(f"{arm}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))


# ---------------------------------------------------------------------------
# data helpers

@cli.group(cls=MclGroup)
def data():
    """Inspect frozen episode stores."""


@data.command("info")
@click.argument("path", type=click.Path())
@click.option("--top", default=12, show_default=True, help="Label sets listed per split.")
def data_info(path, top):
    """Print a store's splits, counts, label-set histogram and checksums (verifying each split)."""
    from mcl.data.card import format_info
    from mcl.data.store import open_store

    click.echo(format_info(open_store(path), top=top))


@data.command("card")
@click.argument("path", type=click.Path())
@click.option("--out", default="docs/dataset.md", show_default=True, help="Markdown file to write.")
@click.option("--figures", default="docs/figures", show_default=True, help="Folder for the PNG figures.")
@click.option("--params", "params_path", default=None, type=click.Path(dir_okay=False),
              help="Validate this parameter file first (the dataset_card stage passes params.yaml).")
def data_card(path, out, figures, params_path):
    """Write the dataset card (markdown + primitive pictures) from a store."""
    if params_path is not None:
        _load(params_path)
    from mcl.data.card import write_card
    from mcl.data.store import open_store

    write_card(open_store(path), out, figures)
    click.echo(f"wrote {out}")


# ---------------------------------------------------------------------------
# benchmarks

@cli.group(cls=MclGroup)
def bench():
    """Speed benchmarks: figures and ratios measured side by side in one run."""


@bench.command("generate")
@PARAMS_OPTION
@click.option("--episodes", default=50_000, show_default=True, help="Train-type episodes to generate.")
def bench_generate_cmd(params_path, episodes):
    """Generator throughput (episodes/s, all rules on) next to a per-grid Python loop."""
    from mcl.bench.generate import bench_generate

    for line in bench_generate(_load(params_path).data, episodes=episodes):
        click.echo(line)


@bench.command("share")
@PARAMS_OPTION
def bench_share_cmd(params_path):
    """Share loss (Gram route) vs the naive d x d projector formulation, and vs a training step."""
    params = _load(params_path)
    from mcl.bench.train import bench_share_cost

    for line in bench_share_cost(params):
        click.echo(line)


@bench.command("train")
@PARAMS_OPTION
@click.option("--steps", default=200, show_default=True, help="Training steps to time.")
def bench_train_cmd(params_path, steps):
    """Training episodes/s of `mcl train` next to a bare forward/backward/step of the same model."""
    params = _load(params_path)
    from mcl.bench.train import bench_train

    for line in bench_train(params, steps=steps):
        click.echo(line)


# ---------------------------------------------------------------------------
# analysis and report

@cli.command()
@PARAMS_OPTION
@click.option("--models-dir", default="models", show_default=True)
@click.option("--metrics-dir", default="metrics", show_default=True,
              help="Metrics root: reads eval/, finetune/, train/; writes hypotheses.json.")
@click.option("--out-dir", default="metrics/analysis", show_default=True, help="Matrices and per-seed values for the report.")
def analyse(params_path, models_dir, metrics_dir, out_dir):
    """Representation analyses (CKA, subspaces, probes, SAE features) and the H1-H4 verdicts.

    Writes metrics/hypotheses.json (effect share - baseline, bootstrap CI, n, p, verdict per
    hypothesis) and metrics/analysis/{analysis.json,matrices.npz}.
    """
    import os
    import time

    params = _load(params_path)  # validates without importing numpy
    # Thousands of tiny L-BFGS steps in the probes: a threaded BLAS is many times slower there
    # than one thread (and the CPU is shared with torch). Must be set before numpy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from mcl.analysis.run import analyse as run_analyse

    t0 = time.perf_counter()
    hyp = run_analyse(params, Path(models_dir), Path(metrics_dir), Path(out_dir),
                      progress=lambda msg: click.echo(msg, err=True))
    for key, e in hyp.items():
        eff = "n/a" if e["effect"] is None else f"{e['effect']:+.4f} [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"
        click.echo(f"{key}: {eff} {e['verdict']}")
    click.echo(f"analyse: {time.perf_counter() - t0:.1f} s")


@cli.command()
@PARAMS_OPTION
@click.option("--metrics-dir", default="metrics", show_default=True)
@click.option("--analysis-dir", default="metrics/analysis", show_default=True)
@click.option("--models-dir", default="models", show_default=True, help="Read for each run's config.yaml (experiment log).")
@click.option("--docs-dir", default="docs", show_default=True,
              help="Writes results_summary.md, analysis_report.md and figures/report/.")
def report(params_path, metrics_dir, analysis_dir, models_dir, docs_dir):
    """Generate docs/results_summary.md and docs/analysis_report.md (+ figures) from the metrics files."""
    params = _load(params_path)
    from mcl.analysis.report import write_report

    paths = write_report(params, Path(metrics_dir), Path(analysis_dir), Path(models_dir), Path(docs_dir))
    for p in paths:
        click.echo(f"wrote {p}")


@cli.command()
@PARAMS_OPTION
@click.option("--arm", type=click.Choice(["share", "baseline"]), default="share", show_default=True,
              help="Arm to train (baseline: loss.beta forced to 0).")
@click.option("--runs", type=click.IntRange(min=2), default=2, show_default=True, help="Trainings per seed.")
@click.option("--seed", "seeds", type=int, multiple=True, help="Seeds to train (repeatable; default train.seeds).")
@click.option("--out", default="docs/reproducibility.md", show_default=True, help="Markdown report to write.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the runs here (default: a temporary folder, removed afterwards).")
def reproducibility(params_path, arm, runs, seeds, out, work_dir):
    """Train one arm several times per seed and report run-to-run and seed-to-seed spread.

    Not a pipeline stage (it trains runs x seeds models: about 15 minutes with the defaults on a
    2-core CPU). Writes docs/reproducibility.md with the command that reproduces it.
    """
    params = _load(params_path)
    from mcl.analysis.reproducibility import reproducibility_study
    from mcl.io import write_text
    from mcl.training.trainer import check_writable

    check_writable(Path(out).parent)
    text, rows = reproducibility_study(params, params_path, arm, runs, list(seeds) or None,
                                       Path(work_dir) if work_dir else None)
    write_text(out, text)
    click.echo(f"wrote {out} ({len(rows)} runs)")


def main():
    cli(prog_name="mcl")


if __name__ == "__main__":
    main()
