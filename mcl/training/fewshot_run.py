"""`mcl finetune`'s unit of work: adapt one trained run and write its files (a process of the pool)."""

from __future__ import annotations

from pathlib import Path

import torch

from mcl.config import Params, arm_params, run_name
from mcl.data.store import open_store
from mcl.io import write_csv, write_json
from mcl.models.build import load_trained, resolve_device
from mcl.training.finetune import finetune_model, mean_curve

__all__ = ["finetune_seed"]


def finetune_seed(params: Params, arm: str, seed: int, models_dir: str, out_dir: str, curves_dir: str,
                  split: str) -> str:
    """Adapt one trained run on ``split`` with ``train.threads`` threads (the same bytes alone or in a pool);
    write its json to ``out_dir/<arm>/seed<k>.json`` and its mean curve to ``curves_dir/<arm>/seed<k>.csv``
    and return its summary line."""
    torch.set_num_threads(params.train.threads)
    params = arm_params(params, arm)
    name = run_name(arm, seed)
    device = resolve_device(params.train.device)
    store = open_store(params.data.store)
    model = load_trained(Path(models_dir) / name, params, device)
    result = finetune_model(model, store.load(split), store.primitives, params, device)
    tasks = {t: {how: {k: v for k, v in r.items() if k != "curve"} for how, r in runs.items()}
             for t, runs in result["tasks"].items()}
    write_json(Path(out_dir) / f"{name}.json", {**result["summary"], "method": params.finetune.method, "tasks": tasks})
    rows = mean_curve(result)
    write_csv(Path(curves_dir) / f"{name}.csv", list(rows[0]), rows)
    s = result["summary"]
    return f"{name}: " + "; ".join(f"{how} final iou {s[how]['final_iou']:.4f}, steps to threshold "
                                   f"{s[how]['steps_to_threshold']:.1f}" for how in result["methods"])
