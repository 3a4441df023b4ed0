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
    from mcl.data.store import StoreError
    from mcl.training.checkpoint import CheckpointError
    from mcl.training.trainer import NonFiniteLossError

    return (ConfigError, StoreError, CheckpointError, NonFiniteLossError, PermissionError)


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
    from tqdm import tqdm

    from mcl.data.generator import SPLITS, generate_dataset
    from mcl.data.store import store_attrs, store_format, write_store

    params = _load(params_path)
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
    from mcl.training.trainer import run_name, train as train_run

    params = _load(params_path)
    name = run_name(arm, seed)
    summary = train_run(params, arm, seed, Path(models_dir) / name, Path(metrics_dir) / name, resume=resume,
                        tensorboard=not no_tensorboard)
    final = summary["final"]
    click.echo(f"{name}: {summary['steps']} steps, val iou {final.get('val/iou', float('nan')):.4f}, "
               f"val exact_match {final.get('val/exact_match', float('nan')):.4f}, best val iou {summary['best_val_iou']:.4f}")


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
def data_card(path, out, figures):
    """Write the dataset card (markdown + primitive pictures) from a store."""
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


def main():
    cli(prog_name="mcl")


if __name__ == "__main__":
    main()
