"""One batched forward pass over a split: predicted grids and per-episode metrics."""

from __future__ import annotations

import numpy as np
import torch

from mcl.data.dataset import DeviceSplit
from mcl.data.primitives import NAMES
from mcl.evaluation.metrics import per_episode
from mcl.models.model import MCLModel


@torch.no_grad()
def predict_split(model: MCLModel, split: DeviceSplit, index: np.ndarray, batch_size: int,
                  autocast: bool = False):
    """Yield ``(batch, predicted grids long [b, 8, 8])`` for ``split[index]`` in batches, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(index), batch_size):
            b = split.batch(index[start:start + batch_size])
            with torch.autocast(split.device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(b["inputs"], b["outputs"], b["program"], b["args"]).logits
            yield b, logits.argmax(dim=1)
    finally:
        model.train(was_training)


def evaluate_split(model: MCLModel, split: DeviceSplit, index: np.ndarray, batch_size: int,
                   autocast: bool = False) -> dict[str, torch.Tensor]:
    """Per-episode metrics (exact_match, cell_accuracy, iou) of ``model`` on ``split[index]``; float [n] each."""
    parts: dict[str, list] = {}
    for b, pred in predict_split(model, split, index, batch_size, autocast):
        for k, v in per_episode(pred, b["outputs"][:, -1].long()).items():
            parts.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def primitive_alone_masks(eps) -> dict[str, torch.Tensor]:
    """Per primitive name, the episodes of ``eps`` that are that primitive alone (length 1): bool [n]."""
    alone = torch.from_numpy(eps.labels.astype(bool) & ((eps.program >= 0).sum(axis=1) == 1)[:, None])
    return {name: alone[:, i] for i, name in enumerate(NAMES) if alone[:, i].any()}
