"""Zero-shot evaluation behind `mcl evaluate`: val (lengths 1-2) and test (unseen length-3 compositions).

Reports ``exact_match``, ``cell_accuracy`` and ``iou`` overall, per composition length, per
primitive (episodes whose label contains it), per primitive alone (length-1 episodes of it) and
per label set, with two reference rows computed on the same episodes: ``copy`` (predict the
query input) and ``majority`` (every cell gets the query input's most frequent colour).
"""

from __future__ import annotations

import numpy as np
import torch

from mcl.data.dataset import DeviceSplit
from mcl.data.generator import Episodes, label_set_name
from mcl.evaluation.forward import evaluate_split, predict_split
from mcl.evaluation.metrics import copy_prediction, majority_prediction, per_episode, summarise


def breakdown(values: dict[str, torch.Tensor], episodes: Episodes, primitives: list[str]) -> dict:
    """Overall metrics plus ``by_length``, ``by_primitive`` (episodes containing it), ``by_primitive_alone``
    (its length-1 episodes) and ``by_label_set`` sections for per-episode ``values``."""
    lengths = torch.from_numpy((episodes.program >= 0).sum(axis=1))
    labels = torch.from_numpy(episodes.labels.astype(bool))
    names = np.array([label_set_name(row, primitives) for row in episodes.labels])
    out = summarise(values)
    out["by_length"] = {str(int(n)): summarise(values, lengths == n) for n in torch.unique(lengths)}
    out["by_primitive"] = {name: summarise(values, labels[:, i]) for i, name in enumerate(primitives)
                           if labels[:, i].any()}
    alone = labels & (lengths == 1)[:, None]
    out["by_primitive_alone"] = {name: summarise(values, alone[:, i]) for i, name in enumerate(primitives)
                                 if alone[:, i].any()}
    out["by_label_set"] = {name: summarise(values, torch.from_numpy(names == name)) for name in sorted(set(names))}
    return out


def reference_rows(episodes: Episodes, primitives: list[str]) -> dict:
    """Copy-the-query and majority-colour predictions scored like a model."""
    query = torch.from_numpy(episodes.inputs[:, -1])
    target = torch.from_numpy(episodes.outputs[:, -1]).long()
    return {
        "copy": breakdown(per_episode(copy_prediction(query), target), episodes, primitives),
        "majority": breakdown(per_episode(majority_prediction(query), target), episodes, primitives),
    }


def example_index(episodes: Episodes, per_primitive: int, alone: bool) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_primitive`` episodes of each primitive (length-1 ones when ``alone``, else any that
    contain it and were not taken for an earlier primitive): ``(episode index, primitive index)``, int64 [n]
    each, primitive-major."""
    lengths = (episodes.program >= 0).sum(axis=1)
    taken = np.zeros(len(episodes.labels), dtype=bool)
    rows, prims = [], []
    for p in range(episodes.labels.shape[1]):
        hits = np.flatnonzero(episodes.labels[:, p].astype(bool) & ((lengths == 1) if alone else ~taken))[:per_primitive]
        taken[hits] = True
        rows += hits.tolist()
        prims += [p] * len(hits)
    return np.array(rows, dtype=np.int64), np.array(prims, dtype=np.int64)


def examples(model, splits: dict[str, Episodes], batch_size: int, device: torch.device,
             per_primitive: int = 2) -> dict[str, np.ndarray]:
    """Predicted grids of a few episodes per primitive, for the report's figure: per split ``{split}_inputs``,
    ``{split}_outputs`` uint8 [n, S, 8, 8], ``{split}_prediction`` uint8 [n, 8, 8], ``{split}_primitive`` [n]
    (val: episodes of the primitive alone; other splits: episodes that contain it)."""
    out = {}
    for name, episodes in splits.items():
        index, prim = example_index(episodes, per_primitive, alone=name == "val")
        if not len(index):
            continue
        preds = [p.cpu() for _, p in predict_split(model, DeviceSplit(episodes.take(index), device),
                                                   np.arange(len(index)), batch_size)]
        out[f"{name}_inputs"], out[f"{name}_outputs"] = episodes.inputs[index], episodes.outputs[index]
        out[f"{name}_prediction"] = torch.cat(preds).numpy().astype(np.uint8)
        out[f"{name}_primitive"] = prim
    return out


def split_values(model, splits: dict[str, Episodes], batch_size: int,
                 device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    """Per split, the per-episode metrics of :func:`mcl.evaluation.forward.evaluate_split` (float [n] each)."""
    return {name: evaluate_split(model, DeviceSplit(episodes, device), np.arange(len(episodes)), batch_size)
            for name, episodes in splits.items()}


def episode_arrays(values: dict[str, dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """:func:`split_values` as the arrays of ``<name>.episodes.npz``: ``<split>_<metric>`` -> float32 [n]."""
    return {f"{split}_{metric}": v.numpy() for split, per in values.items() for metric, v in per.items()}


def evaluate_model(model, splits: dict[str, Episodes], primitives: list[str], batch_size: int,
                   device: torch.device, values: dict[str, dict[str, torch.Tensor]] | None = None) -> dict:
    """Metrics JSON for one model: top-level ``val`` and ``test`` sections and ``reference`` rows.

    ``values``: the :func:`split_values` of ``model`` when already computed (else computed here).
    """
    if values is None:
        values = split_values(model, splits, batch_size, device)
    result: dict = {name: breakdown(values[name], episodes, primitives) for name, episodes in splits.items()}
    result["reference"] = {name: reference_rows(episodes, primitives) for name, episodes in splits.items()}
    return result
