"""Jobs side by side in spawned processes: how many workers, and a map over them with one progress bar."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

__all__ = ["map_processes", "pool_workers"]


def pool_workers(requested: int, threads: int, n_runs: int, cores: int | None = None) -> int:
    """Worker processes for ``n_runs`` runs: ``requested`` or, if 0, ``cores // threads``; 1..n_runs."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = requested or max(1, cores // threads)
    return max(1, min(n, n_runs))


class _BarQueue:
    """The one method of a queue that a job in this process needs: counts go straight to the bar."""

    def __init__(self, bar):
        self.put = bar.update


def _drain(queue) -> int:
    """The sum of the counts waiting in ``queue`` (0 for None)."""
    n = 0
    while queue is not None and not queue.empty():
        n += queue.get()
    return n


def map_processes(fn, jobs: list[tuple], workers: int, desc: str, progress: bool = True,
                  steps: int | None = None) -> list:
    """``[fn(*job) for job in jobs]``, run in ``workers`` spawned processes (in this one if 1), under one progress
    bar. The bar counts finished jobs or, given ``steps`` (the jobs' total), steps: then each job gets one more
    argument, a queue it puts its counts of newly finished steps on (None without a bar). ``fn`` must be a
    module-level function. The first failure cancels the jobs not yet started and is raised."""
    from tqdm import tqdm

    counted = steps is not None
    with tqdm(total=steps if counted else len(jobs), desc=f"{desc} ({len(jobs)} runs, {workers} workers)",
              unit="step" if counted else "run", file=sys.stderr, disable=not progress) as bar:
        if workers == 1:
            extra = (_BarQueue(bar) if progress else None,) if counted else ()
            results = []
            for job in jobs:
                results.append(fn(*job, *extra))
                if not counted:
                    bar.update()
            return results
        ctx = mp.get_context("spawn")
        with contextlib.ExitStack() as stack:
            queue = stack.enter_context(ctx.Manager()).Queue() if counted and progress else None
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=ctx))
            futures = [pool.submit(fn, *job, *((queue,) if counted else ())) for job in jobs]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                bar.update(_drain(queue) if counted else len(done))
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    for f in pending:
                        f.cancel()
                    raise failed[0].exception()
        return [f.result() for f in futures]
