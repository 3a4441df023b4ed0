"""Few-shot adaptation behind `mcl finetune`.

For each of ``finetune.num_tasks`` label sets of the ``fewshot`` split: ``shots`` support
episodes and ``queries`` held-out query episodes of that label set. Three ways to adapt,
each from a fresh copy of the trained model:

* ``none``: no adaptation (the zero-shot control);
* ``lora`` or ``adapter`` (``finetune.method``): insert at ``MCLModel.adapter_targets`` and
  train only the inserted parameters;
* ``full``: train every parameter (the other control).

Each trains for ``finetune.steps`` full-batch steps on the support episodes with the task
loss, and is scored on the queries at step 0 and every ``eval_every`` steps.

Statistics of one run (:func:`curve_statistics`)
------------------------------------------------
Primary, measuring adaptation rather than the zero-shot starting point:

* ``gain_iou`` / ``gain_exact_match`` (set by :func:`finetune_model`): final query score of
  the method minus that of ``none`` on the same task at the same step budget (0 for ``none``);
* ``target = iou0 + gap_fraction * (1 - iou0)``, ``iou0`` the run's step-0 IoU
  (:func:`relative_target`): close ``gap_fraction`` of the task's own gap to a perfect score;
* ``steps_to_target``: first scored step **after** step 0 with IoU >= ``target``; a run that
  never reaches it is censored at ``steps + 1`` and has ``reached_target = False``. ``none``
  never trains, so it is always censored.

Secondary (absolute, zero-shot inclusive): ``steps_to_threshold`` is the first scored step,
step 0 included, with IoU >= ``finetune.threshold`` (censored at ``steps + 1``, flag
``reached``); a model already above the threshold before any update scores 0.

Across tasks (:func:`summarise_method`) the times to the target are summarised by the
Kaplan-Meier restricted mean time up to ``rmst_limit = steps + 1`` (:func:`restricted_mean_time`).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from mcl.config import Params
from mcl.data.dataset import DeviceSplit, label_set_bitmask
from mcl.data.generator import Episodes
from mcl.evaluation.forward import predict_split
from mcl.evaluation.metrics import per_episode, summarise
from mcl.losses.task import task_loss
from mcl.models.adapters import freeze_except_inserted, inserted_parameters, insert_adapter, insert_lora

# Per-run scalars averaged over tasks in each method's summary (booleans become fractions).
SUMMARY_KEYS = ("final_iou", "final_exact_match", "steps_to_threshold", "reached", "wall_time_s",
                "gain_iou", "gain_exact_match", "target", "steps_to_target", "reached_target")


def fewshot_tasks(episodes: Episodes, num_tasks: int, shots: int, queries: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Pick ``num_tasks`` label sets with enough episodes: (label-set id, support index, query index).

    Label sets are taken in a fixed shuffled order (seed 0) among those with at least
    ``shots + queries`` episodes; support = their first ``shots`` episodes, queries = the next ``queries``.
    """
    ids = label_set_bitmask(episodes.labels)
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


def _score(model, split: DeviceSplit, index: np.ndarray) -> dict[str, float]:
    """Mean query metrics of ``model`` on ``split[index]`` (at least one episode): one batch in eval mode,
    its mode restored after; the means are taken on the split's device."""
    (b, pred), = predict_split(model, split, index, len(index))
    return summarise(per_episode(pred, b["outputs"][:, -1].long()))


def adapt(base, split: DeviceSplit, support: np.ndarray, query: np.ndarray, how: str, params: Params,
          seed: int) -> dict:
    """Adapt a copy of ``base`` one way (``none``, ``lora``, ``adapter``, ``full``) and record its curve.

    Returns the :func:`curve_statistics` of the curve (times censored at ``finetune.steps + 1``),
    ``wall_time_s``, ``trainable_parameters`` and ``curve`` (rows ``{"step", "iou",
    "exact_match"}``: step 0, every ``eval_every`` steps and the last step).
    """
    cfg = params.finetune
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    model.train()
    if how == "lora":
        insert_lora(model, model.adapter_targets, cfg.rank, cfg.lora_alpha)
    elif how == "adapter":
        insert_adapter(model, model.adapter_targets, cfg.adapter_dim)
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
    return {
        **curve_statistics(curve, cfg.threshold, cfg.gap_fraction, cfg.steps + 1),
        "wall_time_s": wall,
        "trainable_parameters": sum(p.numel() for p in trainable) if steps else 0,
        "curve": curve,
    }


# ---------------------------------------------------------------------------
# statistics of curves (pure numpy)


def relative_target(iou0: float, gap_fraction: float) -> float:
    """IoU a run must reach relative to its own start: ``iou0 + gap_fraction * (1 - iou0)``.

    ``iou0`` in ``[0, 1]`` is the step-0 (zero-shot) query IoU; ``gap_fraction`` in ``(0, 1)``
    is the share of the remaining gap to 1 that must be closed.
    """
    if not 0.0 <= iou0 <= 1.0:
        raise ValueError(f"iou0 must be in [0, 1], got {iou0}")
    if not 0.0 < gap_fraction < 1.0:
        raise ValueError(f"gap_fraction must be in (0, 1), got {gap_fraction}")
    return float(iou0 + gap_fraction * (1.0 - iou0))


def time_to_reach(steps, values, target: float, censor_at: int, count_step0: bool = False) -> tuple[int, bool]:
    """First scored step whose value is ``>= target``, as a (possibly censored) time-to-event.

    Parameters
    ----------
    steps : int ``[m]``, increasing scored steps (0 = before any update)
    values : float ``[m]``, the score at each step
    target : the level to reach
    censor_at : time reported when the level is never reached (``finetune.steps + 1``)
    count_step0 : whether step 0 may count as reaching it (only for the absolute,
        zero-shot-inclusive threshold)

    Returns
    -------
    (time, event)
        ``(first step, True)`` when reached, else ``(censor_at, False)``.
    """
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if steps.ndim != 1 or steps.shape != values.shape:
        raise ValueError(f"steps and values must be 1-D of equal length, got {steps.shape} and {values.shape}")
    if np.any(np.diff(steps) <= 0):
        raise ValueError("steps must be strictly increasing")
    hit = (values >= target) & ((steps > 0) | count_step0)
    if not hit.any():
        return int(censor_at), False
    return int(steps[np.argmax(hit)]), True


def curve_statistics(curve: list[dict], threshold: float, gap_fraction: float, censor_at: int) -> dict:
    """Scalar statistics of one adaptation curve (rows ``{"step", "iou", "exact_match"}``, step 0 first).

    Returns
    -------
    dict
        ``final_iou``, ``final_exact_match`` (last row); ``steps_to_threshold``, ``reached``
        (absolute ``threshold``, step 0 counts); ``target`` (:func:`relative_target` of the
        step-0 IoU), ``steps_to_target``, ``reached_target`` (step 0 never counts). Times
        are censored at ``censor_at``; see the module docstring.
    """
    if not curve or curve[0]["step"] != 0:
        raise ValueError("a curve must start with its step-0 row")
    steps = [c["step"] for c in curve]
    iou = [c["iou"] for c in curve]
    target = relative_target(iou[0], gap_fraction)
    t_abs, e_abs = time_to_reach(steps, iou, threshold, censor_at, count_step0=True)
    t_rel, e_rel = time_to_reach(steps, iou, target, censor_at)
    return {
        "final_iou": curve[-1]["iou"],
        "final_exact_match": curve[-1]["exact_match"],
        "steps_to_threshold": t_abs,
        "reached": e_abs,
        "target": target,
        "steps_to_target": t_rel,
        "reached_target": e_rel,
    }


def restricted_mean_time(times, events, limit: float) -> float:
    """Kaplan-Meier restricted mean time-to-event up to ``limit``.

    Parameters
    ----------
    times : float ``[n]``, non-negative observed times (event or censoring)
    events : bool ``[n]``, True where the event was observed at ``times[i]``, False where the
        observation was censored there
    limit : upper end of the integral (``> 0``); here the censoring time ``steps + 1``

    Returns
    -------
    float
        ``integral_0^limit S(t) dt`` with ``S`` the Kaplan-Meier survival estimate,
        ``S(t) = prod_{t_j <= t} (1 - d_j / n_j)`` over distinct event times ``t_j`` (``d_j``
        events at ``t_j``, ``n_j`` observations with time ``>= t_j``: a censoring tied with an
        event is still at risk). Between ``0`` and ``limit``; NaN for ``n = 0``. When every
        censoring happens at or after ``limit`` this equals ``mean(min(times, limit))``.
    """
    t = np.asarray(times, dtype=np.float64).ravel()
    e = np.asarray(events).ravel()
    if t.shape != e.shape:
        raise ValueError(f"times and events must have the same length, got {t.size} and {e.size}")
    if e.dtype != bool and not np.all(np.isin(e, (0, 1))):
        raise ValueError("events must be boolean (or 0/1)")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError("times must be finite and non-negative")
    if not np.isfinite(limit) or limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    if t.size == 0:
        return float("nan")
    e = e.astype(bool)
    event_times = np.unique(t[e & (t <= limit)])
    at_risk = (t[None, :] >= event_times[:, None]).sum(axis=1)
    deaths = ((t[None, :] == event_times[:, None]) & e[None, :]).sum(axis=1)
    surv = np.cumprod(1.0 - deaths / at_risk)  # S just after each event time
    edges = np.concatenate([[0.0], event_times, [float(limit)]])
    levels = np.concatenate([[1.0], surv])  # S on [edges[i], edges[i + 1])
    return float(np.sum(levels * np.diff(edges)))


def rmst_to_target(runs: list[dict], limit: float) -> float:
    """:func:`restricted_mean_time` of ``steps_to_target`` / ``reached_target`` over per-task runs.

    ``runs`` are result dicts of :func:`adapt` (any mix of tasks and seeds, e.g. one method's
    runs pooled over seeds); ``limit`` is ``finetune.steps + 1``.
    """
    return restricted_mean_time([r["steps_to_target"] for r in runs], [r["reached_target"] for r in runs], limit)


def gains(runs: dict[str, dict], reference: str = "none") -> dict[str, dict[str, float]]:
    """Gain of each way of adapting one task over ``reference`` at the same step budget.

    ``runs`` maps a method name to its :func:`adapt` result on the same task (and seed).
    Returns ``{method: {"gain_iou": final_iou - final_iou[reference], "gain_exact_match": ...}}``
    (0 for the reference itself).
    """
    ref = runs[reference]
    return {how: {"gain_iou": float(r["final_iou"] - ref["final_iou"]),
                  "gain_exact_match": float(r["final_exact_match"] - ref["final_exact_match"])}
            for how, r in runs.items()}


def summarise_method(runs: list[dict], limit: float) -> dict:
    """Means over tasks of one method's per-run scalars (:data:`SUMMARY_KEYS`), plus survival.

    Returns the mean of each key of :data:`SUMMARY_KEYS` (fractions for the ``reached*``
    flags), ``rmst_to_target`` (:func:`rmst_to_target` up to ``limit``), ``rmst_limit`` and
    ``tasks`` (the number of runs).
    """
    out = {k: float(np.mean([r[k] for r in runs])) for k in SUMMARY_KEYS}
    out["rmst_to_target"] = rmst_to_target(runs, limit)
    out["rmst_limit"] = float(limit)
    out["tasks"] = len(runs)
    return out


def finetune_model(base, episodes: Episodes, primitives: list[str], params: Params, device, progress=None) -> dict:
    """All tasks x {none, method, full} for one trained model: per-task results and means per method.

    Returns ``{"methods", "summary": {method: summarise_method(...)}, "tasks": {name: {method:
    adapt result + gain_iou + gain_exact_match}}}``.
    """
    cfg = params.finetune
    split = DeviceSplit(episodes, device)
    methods = ["none", cfg.method, "full"]
    tasks = {}
    for t, (key, support, query) in enumerate(fewshot_tasks(episodes, cfg.num_tasks, cfg.shots, cfg.queries)):
        name = "+".join(p for i, p in enumerate(primitives) if key >> i & 1)
        runs = {how: adapt(base, split, support, query, how, params, seed=t) for how in methods}
        for how, g in gains(runs).items():
            runs[how].update(g)
        tasks[name] = runs
        if progress:
            progress(name)
    summary = {how: summarise_method([tasks[name][how] for name in tasks], cfg.steps + 1) for how in methods}
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
