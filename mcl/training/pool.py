"""Train several runs side by side: one process per worker, a fixed thread count each.

At the default model size a second intra-op thread buys nothing, so the pipeline trains
seeds in parallel instead: ``train.workers`` processes (0: ``cores // train.threads``, at
most one per run), each running :func:`mcl.training.trainer.train`, which sets
``torch.set_num_threads(train.threads)``. A run is a pure function of (params, arm, seed),
whatever else runs beside it, so its weights and metrics are the same bytes as when it
trains alone; a killed pool resumes every run from its own checkpoint. Processes are
started with ``spawn`` (no forked torch state); one shared progress bar counts the steps
of all runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mcl.config import Params, run_name
from mcl.processes import map_processes, pool_workers

__all__ = ["Run", "pool_workers", "train_runs", "train_seeds"]


@dataclass(frozen=True)
class Run:
    """One training run: the arguments of :func:`mcl.training.trainer.train`."""

    params: Params
    arm: str
    seed: int
    run_dir: Path
    metrics_dir: Path
    options: dict = field(default_factory=dict)  # resume, tensorboard, curves


def _train_one(run: Run, queue) -> dict:
    from mcl.training.trainer import train

    last = [0]

    def on_step(done: int) -> None:  # report the steps completed since the last report
        queue.put(done - last[0])
        last[0] = done

    return train(run.params, run.arm, run.seed, run.run_dir, run.metrics_dir,
                 progress=on_step if queue is not None else False, **run.options)


def train_runs(runs: list[Run], workers: int, desc: str = "train", progress: bool = True) -> list[dict]:
    """Train ``runs`` in ``workers`` processes, one bar counting the steps of all; the per-run summaries in the
    order of ``runs``. The first failure cancels the runs not yet started and is raised. With one worker the
    runs train one after another in this process, each with its own bar, shown once its folders are checked
    (a bad folder is a one-line error)."""
    if workers == 1:
        from mcl.training.trainer import train

        return [train(r.params, r.arm, r.seed, r.run_dir, r.metrics_dir, progress=progress, **r.options) for r in runs]
    return map_processes(_train_one, [(r,) for r in runs], workers, desc, progress,
                         steps=sum(r.params.train.steps for r in runs))


def train_seeds(params: Params, arm_seeds: dict[str, list[int]], models_dir, metrics_dir, *, resume: bool = False,
                workers: int | None = None, tensorboard: bool = True, progress: bool = True) -> list[dict]:
    """Train the seeds of every arm in ``arm_seeds`` (arm -> seeds) side by side in one pool, in that order,
    so runs of a cheaper arm listed last fill the cores that the previous arm's last round leaves idle;
    runs go to ``models_dir/<arm>/seed<k>``, logs to ``metrics_dir/<arm>/seed<k>``. ``workers`` defaults
    to :func:`pool_workers` of ``train.workers``."""
    runs = [Run(params, arm, s, Path(models_dir) / run_name(arm, s), Path(metrics_dir) / run_name(arm, s),
                {"resume": resume, "tensorboard": tensorboard}) for arm, seeds in arm_seeds.items() for s in seeds]
    n = workers or pool_workers(params.train.workers, params.train.threads, len(runs))
    return train_runs(runs, n, desc=f"train {' + '.join(arm_seeds)}", progress=progress)
