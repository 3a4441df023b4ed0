"""Jobs side by side in spawned processes: how many workers, and a map over them with one progress bar."""

from __future__ import annotations

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


def map_processes(fn, jobs: list[tuple], workers: int, desc: str, progress: bool = True) -> list:
    """``[fn(*job) for job in jobs]``, run in ``workers`` spawned processes (in this one if 1); one bar counts
    finished jobs. ``fn`` must be a module-level function. The first failure cancels the jobs not yet
    started and is raised."""
    from tqdm import tqdm

    with tqdm(total=len(jobs), desc=f"{desc} ({len(jobs)} runs, {workers} workers)", unit="run", file=sys.stderr,
              disable=not progress) as bar:
        if workers == 1:
            results = []
            for job in jobs:
                results.append(fn(*job))
                bar.update()
            return results
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(fn, *job) for job in jobs]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                bar.update(len(done))
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    for f in pending:
                        f.cancel()
                    raise failed[0].exception()
        return [f.result() for f in futures]
