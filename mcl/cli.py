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
    generate -> train -> evaluate -> finetune -> summarize -> analyse -> report.
    Studies outside the pipeline: `mcl learnability`, `mcl reproducibility`, `mcl sweep`
    (after a queued loss.beta sweep). Helpers: `mcl data info`, `mcl bench ...`.
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

    from mcl.data.generator import ALL_SPLITS, generate_dataset
    from mcl.data.store import store_attrs, store_format, write_store

    cfg = params.data
    path = Path(out or cfg.store)
    store_format(path)  # fail early on an unknown suffix
    with tqdm(total=len(ALL_SPLITS), desc="generate", unit="split", file=sys.stderr) as bar:
        splits, label_sets = generate_dataset(cfg, progress=lambda name: (bar.set_postfix_str(name), bar.update()))
    write_store(path, splits, store_attrs(splits, cfg, label_sets))
    click.echo(f"wrote {path}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))


# ---------------------------------------------------------------------------
# train

ARM_CHOICE = click.Choice(["share", "baseline", "oracle"])
ARM_HELP = ("share: params as given; baseline: loss.beta forced to 0; oracle: the baseline with the true program "
            "as its task vector, absent steps skipped (control).")
ARM_OPTION = click.option("--arm", type=ARM_CHOICE, required=True, help=ARM_HELP)
WORKERS_HELP = "Processes side by side (default train.workers; 0 there = cores // train.threads)."
SEED_OPTION = click.option("--seed", type=int, required=True, help="Training seed (one of train.seeds in the pipeline).")


@cli.command()
@PARAMS_OPTION
@click.option("--arm", "arms", type=ARM_CHOICE, required=True, multiple=True,
              help="Arm to train (repeatable: the arms' seeds share one pool, in the order given). " + ARM_HELP)
@click.option("--seed", "seeds", type=int, multiple=True,
              help="Seed to train (repeatable, for every arm); default: every seed in train.seeds "
                   "(train.oracle_seeds for oracle).")
@click.option("--workers", type=int, default=None, help=WORKERS_HELP)
@click.option("--resume", is_flag=True, help="Continue each seed from its last checkpoint (exact on CPU).")
@click.option("--models-dir", default="models", show_default=True, help="Run directories go here: <arm>/seed<k>/.")
@click.option("--metrics-dir", default="metrics/train", show_default=True, help="Training logs go here: <arm>/seed<k>/.")
@click.option("--no-tensorboard", is_flag=True, help="Skip the TensorBoard event files.")
def train(params_path, arms, seeds, workers, resume, models_dir, metrics_dir, no_tensorboard):
    """Train arms on the frozen train split, their seeds side by side.

    Writes models/<arm>/seed<k>/{config.yaml,last.pt,best.pt,tb/} and
    metrics/train/<arm>/seed<k>/{metrics.csv,metrics.json,plots/,timing.csv} (DVCLive).
    A seed gives the same weights and metrics alone or beside others (train.threads is fixed).
    """
    params = _load(params_path)  # validate before importing torch or doing any work
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    from mcl.training.pool import train_seeds
    from mcl.config import run_name

    arm_seeds = {arm: list(seeds) or list(params.train.oracle_seeds if arm == "oracle" else params.train.seeds)
                 for arm in arms}
    summaries = train_seeds(params, arm_seeds, models_dir, metrics_dir, resume=resume, workers=workers,
                            tensorboard=not no_tensorboard)
    for summary in summaries:
        final = summary["final"]
        click.echo(f"{run_name(summary['arm'], summary['seed'])}: {summary['steps']} steps, "
                   f"val iou {final.get('val/iou', float('nan')):.4f}, "
                   f"val exact_match {final.get('val/exact_match', float('nan')):.4f}, "
                   f"best val iou {summary['best_val_iou']:.4f}")


@cli.command()
@PARAMS_OPTION
@ARM_OPTION
@SEED_OPTION
@click.option("--models-dir", default="models", show_default=True)
@click.option("--out", default=None, help="Metrics file (default metrics/eval/<arm>-seed<k>.json).")
def evaluate(params_path, arm, seed, models_dir, out):
    """Zero-shot evaluation of a trained model on val (lengths 1-2), test (unseen length 3),
    dev (other unseen length-3 label sets, for model selection) and novel2 (held-out length-2 combinations).

    Writes exact_match, cell_accuracy and iou overall, per composition length, per primitive
    (alone and in any composition) and per label set, next to copy-the-query and majority-colour
    reference rows; and beside it <name>.episodes.npz, the per-episode exact_match, cell_accuracy and
    iou of every split (<split>_<metric>, read by analyse), and <name>.examples.npz, the predicted grids
    of a few episodes per primitive (the report's figure).
    """
    params = _load(params_path)
    from mcl.data.store import open_store
    from mcl.evaluation.summary import ZERO_SHOT_SPLITS
    from mcl.evaluation.zero_shot import episode_arrays, evaluate_model, examples, split_values
    from mcl.io import write_json, write_npz
    from mcl.config import arm_params, run_name
    from mcl.models.build import load_trained, resolve_device

    params = arm_params(params, arm)
    name = run_name(arm, seed)
    out = Path(out or f"metrics/eval/{name}.json")
    device = resolve_device(params.train.device)
    store = open_store(params.data.store)
    model = load_trained(Path(models_dir) / name, params, device)
    splits = [s for s in ZERO_SHOT_SPLITS if s in ("val", "test") or s in store.splits]  # older stores lack dev, novel2
    episodes = {s: store.load(s) for s in splits}
    values = split_values(model, episodes, params.eval.batch_size, device)
    result = evaluate_model(model, episodes, store.primitives, params.eval.batch_size, device, values=values)
    write_json(out, result)
    write_npz(out.with_suffix(".episodes.npz"), episode_arrays(values))
    shown = {s: episodes[s] for s in ("val", "test")}
    write_npz(out.with_suffix(".examples.npz"), examples(model, shown, params.eval.batch_size, device))
    ref = result["reference"]
    click.echo(f"{name}: val exact_match {result['val']['exact_match']:.4f} iou {result['val']['iou']:.4f} "
               f"(copy {ref['val']['copy']['exact_match']:.4f} / {ref['val']['copy']['iou']:.4f}); "
               f"test exact_match {result['test']['exact_match']:.4f} iou {result['test']['iou']:.4f} "
               f"(copy {ref['test']['copy']['exact_match']:.4f} / {ref['test']['copy']['iou']:.4f})")


@cli.command()
@PARAMS_OPTION
@ARM_OPTION
@click.option("--seed", "seeds", type=int, multiple=True,
              help="Seed to adapt (repeatable); default: every seed in train.seeds (train.oracle_seeds for oracle).")
@click.option("--workers", type=int, default=None, help=WORKERS_HELP)
@click.option("--models-dir", default="models", show_default=True)
@click.option("--out-dir", default="metrics/finetune", show_default=True,
              help="Writes <arm>/seed<k>.json: means per method and per-task results.")
@click.option("--curves-dir", default="metrics/finetune_curves", show_default=True,
              help="Writes <arm>/seed<k>.csv: IoU and exact match per step, mean over label sets (the stage's plot).")
@click.option("--split", type=click.Choice(["fewshot", "dev"]), default="fewshot", show_default=True,
              help="Label sets to adapt to: fewshot (the H2 measurement; test's label sets) or dev "
                   "(for choosing the finetune budget without looking at test label sets).")
def finetune(params_path, arm, seeds, workers, models_dir, out_dir, curves_dir, split):
    """Few-shot adaptation of trained models on label sets of the fewshot (or dev) split, seeds side by side.

    Per label set: no adaptation, finetune.method (LoRA or adapter: only inserted
    parameters train), and full fine-tuning; curves, final IoU / exact match, the gain
    over no adaptation, steps to a target relative to the step-0 IoU (censored at steps + 1)
    and wall time.
    """
    params = _load(params_path)
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    from mcl.training.fewshot_run import finetune_seed
    from mcl.processes import map_processes, pool_workers

    seeds = list(seeds) or list(params.train.oracle_seeds if arm == "oracle" else params.train.seeds)
    n = workers or pool_workers(params.train.workers, params.train.threads, len(seeds))
    jobs = [(params, arm, s, models_dir, out_dir, curves_dir, split) for s in seeds]
    try:
        lines = map_processes(finetune_seed, jobs, n, desc=f"finetune {arm}")
    except ValueError as e:   # too few episodes for the requested tasks
        raise UserError(str(e)) from None
    for line in lines:
        click.echo(line)


@cli.command()
@PARAMS_OPTION
@click.option("--eval-dir", default="metrics/eval", show_default=True)
@click.option("--finetune-dir", default="metrics/finetune", show_default=True)
@click.option("--out", default="metrics/summary.json", show_default=True)
def summarize(params_path, eval_dir, finetune_dir, out):
    """Headline numbers per arm (mean over train.seeds) and the controls, in one small file for `dvc exp show`."""
    params = _load(params_path)
    from mcl.evaluation.summary import summarize_runs
    from mcl.io import write_json

    summary = summarize_runs(params.train.seeds, params.train.oracle_seeds, Path(eval_dir), Path(finetune_dir),
                             params.finetune.method)
    write_json(Path(out), summary)
    for arm, values in summary.items():
        if isinstance(values, dict):
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
@click.option("--steps", type=int, default=None, help="Training steps to time (default 200; 1000 per seed with --parallel, where each process also pays a fixed start-up).")
@click.option("--parallel", is_flag=True, help="Instead: train --seeds seeds one after another, then side by side.")
@click.option("--seeds", default=2, show_default=True, help="With --parallel: seeds to train.")
@click.option("--workers", type=int, default=None, help="With --parallel: processes (default as `mcl train`).")
def bench_train_cmd(params_path, steps, parallel, seeds, workers):
    """Training episodes/s of `mcl train` next to a bare forward/backward/step of the same model.

    With --parallel: wall time of N seeds trained one after another and side by side in the
    process pool, their ratio, and whether each seed's weights came out the same. Generates
    its own temporary store (no pipeline stage needed).
    """
    params = _load(params_path)
    from mcl.bench.train import bench_parallel, bench_train

    if parallel:
        lines = bench_parallel(params, seeds=seeds, steps=steps or 1000, workers=workers)
    else:
        lines = bench_train(params, steps=steps or 200)
    for line in lines:
        click.echo(line)


# ---------------------------------------------------------------------------
# analysis and report

@cli.command()
@PARAMS_OPTION
@click.option("--models-dir", default="models", show_default=True)
@click.option("--metrics-dir", default="metrics", show_default=True,
              help="Metrics root: reads eval/ and finetune/; writes hypotheses.json.")
@click.option("--out-dir", default="metrics/analysis", show_default=True, help="Matrices and per-seed values for the report.")
def analyse(params_path, models_dir, metrics_dir, out_dir):
    """Representation analyses and the pre-registered decisions (docs/hypotheses.md).

    For every arm and seed in train.seeds: the manipulation check on val, zero-shot exact match
    per episode (test, novel2, dev, from eval/<arm>/seed<k>.episodes.npz), few-shot gains (from
    finetune/), task subspaces and CKA on the
    probe split, held-out monosemanticity and probes. Writes metrics/hypotheses.json (per key:
    effect share - baseline, interval, Holm / raw p, MDE, verdict, role) and
    metrics/analysis/{analysis.json,matrices.npz} (everything else).
    """
    import os
    import time

    params = _load(params_path)  # validates without importing numpy
    # Thousands of tiny L-BFGS steps in the probes: a threaded BLAS is many times slower there
    # than one thread (and the CPU is shared with torch). Must be set before numpy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from mcl.stats.hypotheses import by_key
    from mcl.analysis.run import analyse as run_analyse

    t0 = time.perf_counter()
    hyp = run_analyse(params, Path(models_dir), Path(metrics_dir), Path(out_dir),
                      progress=lambda msg: click.echo(msg, err=True))
    roles = {k: h.role for k, h in by_key().items()}
    for key, e in hyp.items():
        if not isinstance(e, dict):
            continue
        eff = "n/a" if e["effect"] is None else (
            f"{e['effect']:+.4f} [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]" if e.get("ci_low") is not None
            else f"{e['effect']:+.4f}")
        click.echo(f"{key} ({roles.get(key, 'unregistered')}): {eff} {e['verdict']}")
    click.echo(f"analyse: {hyp['n_seeds']} seeds, {time.perf_counter() - t0:.1f} s")


@cli.command()
@PARAMS_OPTION
@click.option("--metrics-dir", default="metrics", show_default=True)
@click.option("--analysis-dir", default="metrics/analysis", show_default=True)
@click.option("--models-dir", default="models", show_default=True, help="Read for each run's config.yaml (experiment log).")
@click.option("--docs-dir", default="docs", show_default=True,
              help="Writes hypotheses.md, results_summary.md, analysis_report.md and figures/report/.")
def report(params_path, metrics_dir, analysis_dir, models_dir, docs_dir):
    """Generate docs/results_summary.md, docs/analysis_report.md (+ figures) from the metrics files,
    and docs/hypotheses.md (the pre-registration) from the table in mcl/stats/hypotheses.py."""
    params = _load(params_path)
    from mcl.report.write import write_preregistration, write_report

    paths = [write_preregistration(Path(docs_dir) / "hypotheses.md", alpha=params.analysis.alpha)]
    paths += write_report(params, Path(metrics_dir), Path(analysis_dir), Path(models_dir), Path(docs_dir))
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
    from mcl.io import check_writable
    from mcl.studies.reproducibility import reproducibility_study
    from mcl.studies.result import write_study

    check_writable(Path(out).parent)
    result = reproducibility_study(params, params_path, arm, runs, list(seeds) or None,
                                   Path(work_dir) if work_dir else None)
    write_study(result, out)
    click.echo(f"wrote {out} ({len(result.data)} runs)")


@cli.command()
@PARAMS_OPTION
@click.option("--out", default="docs/learnability.md", show_default=True, help="Markdown report to write.")
@click.option("--figure", default="docs/figures/learnability.png", show_default=True,
              help="PNG figure to write; the per-primitive figure goes beside it as <name>_primitives.png.")
@click.option("--seed", default=0, show_default=True, help="Training seed of every variant.")
@click.option("--workers", type=int, default=None, help="Runs side by side (default as `mcl train`).")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the runs here (default: a temporary folder, removed afterwards).")
def learnability(params_path, out, figure, seed, workers, work_dir):
    """Does the model learn the task? Train the default recipe and its ablations, write curves.

    Variants (mcl/studies/learnability.py): default, share arm, the oracle-task control, and
    one change each: no executor co-training, auxiliary weight 0 and 1, cosine decay all along,
    one executor pass, the previous executor (also given the true program), the previous
    demonstration embedding, the previous model, the GRU encoder. Val, test and per-primitive
    val exact match against steps, with steps and core-minutes to val 0.5 / 0.8 / 0.95, go to
    docs/learnability.md and its figures. Not a pipeline stage: it trains 13 models (about half
    an hour at the defaults on 2 cores; docs/learnability.md gives the measured time).
    """
    params = _load(params_path)
    from mcl.config import load_raw
    from mcl.io import check_writable
    from mcl.studies.learnability import VARIANTS, learnability_study
    from mcl.studies.result import write_study
    from mcl.training.pool import pool_workers

    check_writable(Path(out).parent, Path(figure).parent)
    n = workers or pool_workers(params.train.workers, params.train.threads, len(VARIANTS))
    result = learnability_study(load_raw(params_path), params_path, Path(out), Path(figure), seed, n,
                                Path(work_dir) if work_dir else None)
    write_study(result, out)
    click.echo(f"wrote {out} and {', '.join(str(f) for f in result.figures)}")


@cli.command()
@PARAMS_OPTION
@click.option("--pipeline-min", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Measured wall clock (minutes) of the default run read here, e.g. from `time uv run dvc repro --force`.")
@click.option("--budget-min", type=click.FloatRange(min=0, min_open=True), default=45.0, show_default=True,
              help="Wall clock the default pipeline may take.")
@click.option("--power", "power_level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.8,
              show_default=True, help="Target power against each primary's smallest effect of interest.")
@click.option("--max-seeds", type=click.IntRange(min=2), default=30, show_default=True, help="Largest seed count considered.")
@click.option("--analysis", "analysis_path", default="metrics/analysis/analysis.json", show_default=True,
              type=click.Path(dir_okay=False), help="The default run's analysis (variance components per primary).")
@click.option("--timing-dir", default="metrics/train", show_default=True, type=click.Path(file_okay=False),
              help="The default run's training logs: <arm>/seed<k>/timing.csv.")
@click.option("--out", default="docs/power.md", show_default=True, help="Markdown report to write.")
def power(params_path, pipeline_min, budget_min, power_level, max_seeds, analysis_path, timing_dir, out):
    """How many seeds? Size train.seeds by power analysis on a finished default run.

    For each pre-registered primary: the seeds at which its test detects its smallest effect of
    interest (from the run's variance components), and the minimum detectable effect against
    seeds; the recommendation is the most demanding primary's count, capped by the budget.
    Writes docs/power.md; not a pipeline stage (it reads the run's wall clock).
    """
    params = _load(params_path)
    from mcl.io import check_writable
    from mcl.studies.power import power_study
    from mcl.studies.result import write_study

    check_writable(Path(out).parent)
    try:
        study = power_study(params, Path(analysis_path), Path(timing_dir), pipeline_min, budget_min,
                            power_level, max_seeds)
    except ValueError as e:
        raise UserError(str(e)) from None
    write_study(study, out)
    result = study.data
    agree = "agrees with" if result["recommended"] == result["current"] else "differs from"
    click.echo(f"wrote {out}: {result['recommended']} seeds recommended ({agree} train.seeds: {result['current']})")


@cli.command()
@click.option("--exp-json", type=click.Path(dir_okay=False), default=None,
              help="Saved `dvc exp show --json` output (default: run it now in this repository).")
@click.option("--out", default="docs/dose_response.md", show_default=True, help="Markdown table to write.")
@click.option("--figure", default="docs/figures/dose_response.png", show_default=True, help="PNG figure to write.")
@click.option("--rev", default=None, help="Collect the experiments based on this commit (default: HEAD).")
def sweep(exp_json, out, figure, rev):
    """Collect a loss.beta sweep into a dose-response table and figure; beta is chosen on dev only.

    Queue and run the sweep first:  uv run dvc exp run --queue -S loss.beta=0.03,0.1,0.3,1
    then  uv run dvc queue start  (and wait for `dvc queue status` to show Success).
    """
    import json
    import subprocess

    from mcl.io import check_writable
    from mcl.studies.sweep import collect_sweep, dose_response_study
    from mcl.studies.result import write_study

    check_writable(Path(out).parent, Path(figure).parent)
    if exp_json:
        text = Path(exp_json).read_text()
    else:
        cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"] + (["--rev", rev] if rev else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"dvc exp show --json failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        text = proc.stdout
    try:
        rows = collect_sweep(json.loads(text))
    except json.JSONDecodeError as e:
        raise UserError(f"{exp_json or 'dvc exp show --json'}: not JSON ({e.msg} at line {e.lineno})") from None
    if not rows:
        raise UserError("no experiments with loss.beta and metrics/hypotheses.json found (queue and run the sweep first)")
    result = dose_response_study(rows, Path(figure))
    write_study(result, out)
    click.echo(f"wrote {out} and {figure}: {len(rows)} experiments, dev selects loss.beta = {result.data['selected_beta']}")


def main():
    cli(prog_name="mcl")


if __name__ == "__main__":
    main()
