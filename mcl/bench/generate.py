"""`mcl bench generate`: generator throughput with every rule on, next to a per-grid Python loop."""

from __future__ import annotations

import time

import numpy as np

from mcl.config import DataConfig
from mcl.data.generator import (SPLIT_LENGTHS, feasible_label_sets, generate_dataset, generate_split,
                                signature_table)
from mcl.data.primitives import SIZE, run_program_reference, run_programs


def bench_generate(cfg: DataConfig, episodes: int = 50_000, loop_episodes: int = 2_000) -> list[str]:
    """Measure and describe generator speed; returns report lines."""
    t0 = time.perf_counter()
    table = signature_table()
    t_table = time.perf_counter() - t0
    sets = feasible_label_sets(SPLIT_LENGTHS["train"], cfg, table)

    t0 = time.perf_counter()
    train = generate_split("train", episodes, cfg, table, sets)
    t_split = time.perf_counter() - t0

    t0 = time.perf_counter()
    splits, _ = generate_dataset(cfg)
    t_dataset = time.perf_counter() - t0
    total = sum(len(e) for e in splits.values())

    # the same programs on the same grids: vectorised vs a per-grid Python loop
    sub = train.take(np.arange(min(loop_episodes, len(train))))
    s = sub.inputs.shape[1]
    grids = sub.inputs.reshape(-1, SIZE, SIZE)
    program = np.repeat(sub.program, s, axis=0)
    args = np.repeat(sub.args, s, axis=0)
    t0 = time.perf_counter()
    fast = run_programs(grids, program, args)
    t_vec = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = np.stack([run_program_reference(g, p, a) for g, p, a in zip(grids, program, args)])
    t_loop = time.perf_counter() - t0
    assert np.array_equal(fast, slow), "vectorised and per-grid programs disagree"

    n = len(grids)
    return [
        f"signature table: {table.count} programs of length <= 2 hashed in {t_table:.2f} s (once per process)",
        f"generate train-type episodes, all rules on ({s} pairs, lengths 1-2): {episodes / t_split:,.0f} episodes/s "
        f"({episodes} in {t_split:.2f} s)",
        f"default dataset (all 5 splits, {total} episodes): {t_dataset:.2f} s",
        f"apply programs to {n} grids: vectorised {n / t_vec:,.0f} grids/s, per-grid Python loop {n / t_loop:,.0f} "
        f"grids/s, ratio {t_loop / t_vec:.1f}x",
    ]
