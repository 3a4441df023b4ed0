"""Zero-shot evaluation behind `mcl evaluate`: val (lengths 1-2) and test (unseen length-3 compositions).

Reports ``exact_match``, ``cell_accuracy`` and ``iou`` overall, per composition length and
per primitive (episodes whose label contains it), with two reference rows computed on the
same episodes: ``copy`` (predict the query input) and ``majority`` (every cell gets the
query input's most frequent colour).
"""

from __future__ import annotations

import numpy as np
import torch

from mcl.data.dataset import DeviceSplit
from mcl.data.generator import Episodes
from mcl.evaluation.metrics import copy_prediction, majority_prediction, per_episode, summarise


def breakdown(values: dict[str, torch.Tensor], eps: Episodes, primitives: list[str]) -> dict:
    """Overall metrics plus ``by_length`` and ``by_primitive`` sections for per-episode ``values``."""
    lengths = torch.from_numpy((eps.program >= 0).sum(axis=1))
    labels = torch.from_numpy(eps.labels.astype(bool))
    out = summarise(values)
    out["by_length"] = {str(int(n)): summarise(values, lengths == n) for n in torch.unique(lengths)}
    out["by_primitive"] = {name: summarise(values, labels[:, i]) for i, name in enumerate(primitives)
                           if labels[:, i].any()}
    return out


def reference_rows(eps: Episodes, primitives: list[str]) -> dict:
    """Copy-the-query and majority-colour predictions scored like a model."""
    query = torch.from_numpy(eps.inputs[:, -1])
    target = torch.from_numpy(eps.outputs[:, -1]).long()
    return {
        "copy": breakdown(per_episode(copy_prediction(query), target), eps, primitives),
        "majority": breakdown(per_episode(majority_prediction(query), target), eps, primitives),
    }


def evaluate_model(model, splits: dict[str, Episodes], primitives: list[str], batch_size: int,
                   device: torch.device) -> dict:
    """Metrics JSON for one model: top-level ``val`` and ``test`` sections and ``reference`` rows."""
    from mcl.training.trainer import evaluate_split

    result: dict = {}
    for name, eps in splits.items():
        split = DeviceSplit(eps, device)
        values = evaluate_split(model, split, np.arange(len(eps)), batch_size)
        result[name] = breakdown(values, eps, primitives)
    result["reference"] = {name: reference_rows(eps, primitives) for name, eps in splits.items()}
    return result
