"""Grid metrics shared by training logs, zero-shot evaluation and few-shot adaptation.

The same three names are used everywhere:

* ``exact_match``: fraction of query grids predicted right in every cell;
* ``cell_accuracy``: fraction of cells predicted right;
* ``iou``: hard IoU (:func:`mcl.losses.task.hard_iou`): per grid, the mean over the colours
  present in the target or the prediction of |pred == c and target == c| / |pred == c or
  target == c|; averaged over grids.
"""

from __future__ import annotations

import torch

from mcl.losses.task import hard_iou

METRICS = ("exact_match", "cell_accuracy", "iou")


def per_episode(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-episode metrics for predictions and targets, long [B, 8, 8] -> dict of float [B]."""
    correct = (pred == target).flatten(1)
    return {
        "exact_match": correct.all(dim=1).float(),
        "cell_accuracy": correct.float().mean(dim=1),
        "iou": hard_iou(pred, target).float(),
    }


def summarise(values: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> dict[str, float]:
    """Means of per-episode metric tensors (optionally over ``mask``), plus the episode count."""
    out = {}
    for name in METRICS:
        v = values[name] if mask is None else values[name][mask]
        out[name] = float(v.mean()) if len(v) else float("nan")
    out["episodes"] = int(len(values["iou"]) if mask is None else int(mask.sum()))
    return out


def copy_prediction(query: torch.Tensor) -> torch.Tensor:
    """The copy baseline: predict the query input unchanged. [B, 8, 8] -> [B, 8, 8]."""
    return query.long()


def majority_prediction(query: torch.Tensor) -> torch.Tensor:
    """The majority-colour baseline: every cell gets the query input's most frequent colour."""
    counts = torch.nn.functional.one_hot(query.long().flatten(1), 10).sum(dim=1)  # [B, 10]
    return counts.argmax(dim=1)[:, None, None].expand(-1, *query.shape[1:]).clone()
