"""Task losses and metrics on the predicted query grid.

Shapes: ``logits`` [B, C, H, W] (C = 10 colours, H = W = 8), ``target`` and ``pred``
long [B, H, W] with values in ``0..C-1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy", "soft_iou", "hard_iou", "task_loss"]


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-cell cross-entropy, in nats.

    Parameters
    ----------
    logits : [B, C, H, W] float
    target : [B, H, W] long
    reduction : 'mean' (scalar, mean over all B*H*W cells) or 'none' ([B], mean over
        each episode's cells).
    """
    ce = F.cross_entropy(logits, target.long(), reduction="none")  # [B, H, W]
    if reduction == "mean":
        return ce.mean()
    if reduction == "none":
        return ce.flatten(1).mean(1)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def soft_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Differentiable IoU per episode, in [0, 1].

    With ``p = softmax(logits)`` over colours and ``y`` the one-hot target, for each
    colour ``c``::

        I_c = sum_cells p_c * y_c
        U_c = sum_cells (p_c + y_c - p_c * y_c)

    and the IoU is the mean of ``I_c / U_c`` over the colours present in the target.

    Parameters
    ----------
    logits : [B, C, H, W] float
    target : [B, H, W] long

    Returns
    -------
    [B] float
    """
    num_colours = logits.shape[1]
    p = logits.softmax(dim=1).flatten(2)  # [B, C, N]
    y = F.one_hot(target.long().flatten(1), num_colours).transpose(1, 2).to(p.dtype)  # [B, C, N]
    inter = (p * y).sum(-1)
    union = (p + y - p * y).sum(-1)
    present = y.sum(-1) > 0  # [B, C]; U_c >= count_c >= 1 there
    ratio = torch.where(present, inter / union.clamp_min(1e-12), torch.zeros_like(inter))
    return ratio.sum(-1) / present.sum(-1).clamp_min(1)


def hard_iou(pred: torch.Tensor, target: torch.Tensor, num_colours: int = 10) -> torch.Tensor:
    """Evaluation IoU per episode between two colour grids, in [0, 1].

    For each colour ``c`` present in the target or in the prediction::

        IoU_c = |pred == c  and  target == c| / |pred == c  or  target == c|

    and the result is the mean of ``IoU_c`` over those colours. ``hard_iou(t, t) == 1``.

    Parameters
    ----------
    pred, target : [B, H, W] long

    Returns
    -------
    [B] float32
    """
    colours = torch.arange(num_colours, device=target.device).view(1, -1, 1)
    p = pred.long().flatten(1).unsqueeze(1) == colours  # [B, C, N]
    t = target.long().flatten(1).unsqueeze(1) == colours
    inter = (p & t).sum(-1).float()
    union = (p | t).sum(-1).float()
    used = union > 0
    ratio = torch.where(used, inter / union.clamp_min(1), torch.zeros_like(inter))
    return ratio.sum(-1) / used.sum(-1).clamp_min(1)


def task_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Scalar task loss: ``'ce'`` -> :func:`cross_entropy`; ``'iou'`` -> ``mean(1 - soft_iou)``."""
    if kind == "ce":
        return cross_entropy(logits, target)
    if kind == "iou":
        return (1.0 - soft_iou(logits, target)).mean()
    raise ValueError(f"loss.task must be 'ce' or 'iou', got {kind!r}")
