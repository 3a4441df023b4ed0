"""The headline file ``metrics/summary.json``: per arm, means over seeds of the main numbers.

`dvc exp show` adds one column per metrics file and key, so this file holds a handful of
numbers per arm (zero-shot exact match per split, few-shot gain) and the controls (the
oracle-task executor, copy-the-query and majority baselines); the per-run files keep the detail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcl.config import ARMS, run_name
from mcl.io import read_json

ZERO_SHOT_SPLITS = ("val", "test", "dev", "novel2")


def eval_headline(ev: dict) -> dict[str, float]:
    """Zero-shot exact match per split present in an evaluate file, and IoU on test."""
    row = {f"{split}_exact_match": ev[split]["exact_match"] for split in ZERO_SHOT_SPLITS if split in ev}
    row["test_iou"] = ev["test"]["iou"]
    return row


def run_headline(name: str, eval_dir: Path, finetune_dir: Path, method: str) -> dict[str, float]:
    """The headline numbers of one run."""
    row = eval_headline(read_json(eval_dir / f"{name}.json"))
    ft = read_json(finetune_dir / f"{name}.json")
    row[f"fewshot_{method}_gain_iou"] = ft[method].get("gain_iou", float("nan"))
    return row


def mean_by_key(rows: list[dict]) -> dict[str, float]:
    """Per key of the first row, the mean over ``rows`` of its values."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def summarize_runs(seeds: list[int], oracle_seeds: list[int], eval_dir: Path, finetune_dir: Path,
                   method: str) -> dict:
    """Per arm the mean over ``seeds`` of each headline number; the oracle control and the
    copy-the-query / majority reference rows (exact match per split) beside them."""
    out = {}
    for arm in ARMS:
        out[arm] = mean_by_key([run_headline(run_name(arm, s), eval_dir, finetune_dir, method) for s in seeds])
    out["oracle"] = mean_by_key([eval_headline(read_json(eval_dir / f"{run_name('oracle', s)}.json")) for s in oracle_seeds])
    ref = read_json(eval_dir / f"{run_name(ARMS[0], seeds[0])}.json")["reference"]
    for kind in ("copy", "majority"):
        out[kind] = {f"{split}_exact_match": ref[split][kind]["exact_match"] for split in ZERO_SHOT_SPLITS if split in ref}
    out["seeds"] = len(seeds)
    return out
