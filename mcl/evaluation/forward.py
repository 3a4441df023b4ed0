"""The one batched forward pass over a split (:func:`forward_split`) and what is built on it:
predicted grids (:func:`predict_split`) and per-episode metrics (:func:`evaluate_split`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mcl.data.dataset import DeviceSplit
from mcl.data.primitives import NAMES
from mcl.evaluation.metrics import per_episode
from mcl.models.model import MCLModel, ModelOutput


@torch.no_grad()
def forward_split(model: MCLModel, split: DeviceSplit, index: np.ndarray, batch_size: int,
                  autocast: bool = False) -> Iterator[tuple[dict[str, torch.Tensor], ModelOutput]]:
    """Yield ``(batch, ModelOutput)`` for ``split[index]`` in batches of ``batch_size``, in order.

    The model runs in eval mode without gradients (its previous mode is restored when the
    generator ends or is closed), with bf16 autocast on the split's device when ``autocast``.
    ``batch`` is :meth:`DeviceSplit.batch` of the batch's indices; the true program and args are
    passed too (only the oracle encoder reads them).
    """
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(index), batch_size):
            b = split.batch(index[start:start + batch_size])
            with torch.autocast(split.device.type, dtype=torch.bfloat16, enabled=autocast):
                out = model(b["inputs"], b["outputs"], b["program"], b["args"])
            yield b, out
    finally:
        model.train(was_training)


def predict_split(model: MCLModel, split: DeviceSplit, index: np.ndarray, batch_size: int,
                  autocast: bool = False) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Yield ``(batch, predicted grids long [b, 8, 8])`` for ``split[index]`` (:func:`forward_split`)."""
    for b, out in forward_split(model, split, index, batch_size, autocast):
        yield b, out.logits.argmax(dim=1)


def evaluate_split(model: MCLModel, split: DeviceSplit, index: np.ndarray, batch_size: int,
                   autocast: bool = False) -> dict[str, torch.Tensor]:
    """Per-episode metrics (exact_match, cell_accuracy, iou) of ``model`` on ``split[index]``; float [n] each, on the CPU."""
    parts: dict[str, list] = {}
    for b, pred in predict_split(model, split, index, batch_size, autocast):
        for k, v in per_episode(pred, b["outputs"][:, -1].long()).items():
            parts.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def primitive_alone_masks(episodes) -> dict[str, torch.Tensor]:
    """Per primitive name, the episodes of ``episodes`` that are that primitive alone (length 1): bool [n]."""
    alone = torch.from_numpy(episodes.labels.astype(bool) & ((episodes.program >= 0).sum(axis=1) == 1)[:, None])
    return {name: alone[:, i] for i, name in enumerate(NAMES) if alone[:, i].any()}
