"""The headline file ``metrics/summary.json``: per arm, means over seeds of the main numbers.

`dvc exp show` adds one column per metrics file and key; this file keeps the table
readable while the per-run files keep the detail.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from mcl.config import ARMS, run_name


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run its stage first)") from None


def mean_step_time_ms(csv_path: Path) -> float:
    """Mean of the logged ``step_time_ms`` column of a training ``metrics.csv``."""
    with open(csv_path, newline="") as f:
        values = [float(r["step_time_ms"]) for r in csv.DictReader(f) if r.get("step_time_ms")]
    return float(np.mean(values)) if values else float("nan")


def run_headline(name: str, eval_dir: Path, finetune_dir: Path, train_dir: Path, method: str) -> dict[str, float]:
    """The headline numbers of one run."""
    ev = _read_json(eval_dir / f"{name}.json")
    ft = _read_json(finetune_dir / f"{name}.json")
    row = {}
    for split in ("val", "test"):
        for metric in ("exact_match", "iou", "cell_accuracy"):
            row[f"{split}_{metric}"] = ev[split][metric]
    row["test_copy_exact_match"] = ev["reference"]["test"]["copy"]["exact_match"]
    for how in ("none", method, "full"):
        row[f"fewshot_{how}_final_iou"] = ft[how]["final_iou"]
        row[f"fewshot_{how}_steps_to_threshold"] = ft[how]["steps_to_threshold"]
    row["train_step_time_ms"] = mean_step_time_ms(train_dir / name / "metrics.csv")
    return row


def summarize_runs(seeds: list[int], eval_dir: Path, finetune_dir: Path, train_dir: Path, method: str) -> dict:
    """Per arm: the mean over ``seeds`` of each headline number, plus the seed count."""
    out = {}
    for arm in ARMS:
        rows = [run_headline(run_name(arm, s), eval_dir, finetune_dir, train_dir, method) for s in seeds]
        out[arm] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        out[arm]["seeds"] = len(rows)
    return out
