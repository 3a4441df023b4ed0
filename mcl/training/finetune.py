"""Few-shot adaptation behind `mcl finetune`.

For each of ``finetune.num_tasks`` label sets of the ``fewshot`` split: ``shots`` support
episodes and ``queries`` held-out query episodes of that label set. Three ways to adapt,
each from a fresh copy of the trained model:

* ``none``: no adaptation (the zero-shot control);
* ``lora`` or ``adapter`` (``finetune.method``): insert at ``MCLModel.ADAPTER_TARGETS`` and
  train only the inserted parameters;
* ``full``: train every parameter (the other control).

Each trains for ``finetune.steps`` full-batch steps on the support episodes with the task
loss, and is scored on the queries at step 0 and every ``eval_every`` steps. ``steps_to_threshold``
is the first scored step with IoU >= ``finetune.threshold``, censored at ``steps + 1``.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from mcl.config import Params
from mcl.data.dataset import DeviceSplit, label_set_ids
from mcl.data.generator import Episodes
from mcl.evaluation.metrics import per_episode, summarise
from mcl.losses.task import task_loss
from mcl.models.adapters import freeze_except_inserted, inserted_parameters, insert_adapter, insert_lora


def fewshot_tasks(eps: Episodes, num_tasks: int, shots: int, queries: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Pick ``num_tasks`` label sets with enough episodes: (label-set id, support index, query index).

    Label sets are taken in a fixed shuffled order (seed 0) among those with at least
    ``shots + queries`` episodes; support = their first ``shots`` episodes, queries = the next ``queries``.
    """
    ids = label_set_ids(eps.labels)
    keys, counts = np.unique(ids, return_counts=True)
    eligible = keys[counts >= shots + queries]
    if len(eligible) < num_tasks:
        raise ValueError(f"fewshot split: only {len(eligible)} label sets have finetune.shots + finetune.queries = "
                         f"{shots + queries} episodes, finetune.num_tasks is {num_tasks} (raise data.n_fewshot)")
    chosen = np.random.default_rng(0).permutation(eligible)[:num_tasks]
    tasks = []
    for key in chosen:
        rows = np.flatnonzero(ids == key)
        tasks.append((int(key), rows[:shots], rows[shots:shots + queries]))
    return tasks


@torch.no_grad()
def _score(model, split: DeviceSplit, index: np.ndarray) -> dict[str, float]:
    model.eval()
    b = split.batch(index)
    pred = model(b["inputs"], b["outputs"]).logits.argmax(dim=1)
    model.train()
    return summarise(per_episode(pred, b["outputs"][:, -1].long()))


def adapt(base, split: DeviceSplit, support: np.ndarray, query: np.ndarray, how: str, params: Params, seed: int) -> dict:
    """Adapt a copy of ``base`` one way (``none``, ``lora``, ``adapter``, ``full``) and record its curve."""
    cfg = params.finetune
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    model.train()
    if how == "lora":
        insert_lora(model, model.ADAPTER_TARGETS, cfg.rank, cfg.lora_alpha)
    elif how == "adapter":
        insert_adapter(model, model.ADAPTER_TARGETS, cfg.adapter_dim)
    if how in ("lora", "adapter"):
        freeze_except_inserted(model)
        trainable = inserted_parameters(model)
    else:
        trainable = [p for p in model.parameters() if p.requires_grad]
    model.to(split.device)
    steps = 0 if how == "none" else cfg.steps
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0) if steps else None
    b = split.batch(support)
    target = b["outputs"][:, -1].long()
    curve = [{"step": 0, **_score(model, split, query)}]
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = task_loss(model(b["inputs"], b["outputs"]).logits, target, params.loss.task)
        loss.backward()
        optimizer.step()
        if step % cfg.eval_every == 0 or step == steps:
            curve.append({"step": step, **_score(model, split, query)})
    wall = time.perf_counter() - t0
    reached = [c["step"] for c in curve if c["iou"] >= cfg.threshold]
    return {
        "final_iou": curve[-1]["iou"],
        "final_exact_match": curve[-1]["exact_match"],
        "steps_to_threshold": reached[0] if reached else cfg.steps + 1,
        "reached": bool(reached),
        "wall_time_s": wall,
        "trainable_parameters": sum(p.numel() for p in trainable) if steps else 0,
        "curve": curve,
    }


def finetune_model(base, eps: Episodes, primitives: list[str], params: Params, device, progress=None) -> dict:
    """All tasks x {none, method, full} for one trained model: per-task results and means per method."""
    cfg = params.finetune
    split = DeviceSplit(eps, device)
    methods = ["none", cfg.method, "full"]
    tasks = {}
    for t, (key, support, query) in enumerate(fewshot_tasks(eps, cfg.num_tasks, cfg.shots, cfg.queries)):
        name = "+".join(p for i, p in enumerate(primitives) if key >> i & 1)
        tasks[name] = {how: adapt(base, split, support, query, how, params, seed=t) for how in methods}
        if progress:
            progress(name)
    summary = {}
    for how in methods:
        runs = [tasks[name][how] for name in tasks]
        summary[how] = {k: float(np.mean([r[k] for r in runs]))
                        for k in ("final_iou", "final_exact_match", "steps_to_threshold", "reached", "wall_time_s")}
        summary[how]["tasks"] = len(runs)
    return {"methods": methods, "summary": summary, "tasks": tasks}


def mean_curve(result: dict) -> list[dict]:
    """Curve rows averaged over tasks, for `dvc plots`: step, iou_none, iou_adapted, iou_full (and exact_match_*).

    ``adapted`` is ``finetune.method`` (LoRA or adapter); ``none`` is flat (it never trains).
    """
    rows: dict[int, dict] = {}
    for how in result["methods"]:
        column = "adapted" if how in ("lora", "adapter") else how
        per_task = [result["tasks"][name][how]["curve"] for name in result["tasks"]]
        for points in zip(*per_task):
            row = rows.setdefault(points[0]["step"], {"step": points[0]["step"]})
            row[f"iou_{column}"] = float(np.mean([p["iou"] for p in points]))
            row[f"exact_match_{column}"] = float(np.mean([p["exact_match"] for p in points]))
    start = rows[0]
    for row in rows.values():
        row.setdefault("iou_none", start["iou_none"])
        row.setdefault("exact_match_none", start["exact_match_none"])
    return [rows[s] for s in sorted(rows)]
