"""Build a model from its params, pick its device, and rebuild a trained one from a checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mcl.config import Params, to_dict
from mcl.data.primitives import NUM_PRIMITIVES
from mcl.models.checkpoint import CheckpointError, load_checkpoint
from mcl.models.model import MCLModel


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def build_model(params: Params, device) -> MCLModel:
    """The model of ``params``, with a program encoder for co-training when ``loss.cotrain > 0``."""
    return MCLModel(params.model, NUM_PRIMITIVES, max_demos=max(16, params.data.demos),
                    cotrain=params.loss.cotrain > 0).to(device)


def load_trained(run_dir: str | os.PathLike, params: Params, device="cpu", which: str = "best") -> MCLModel:
    """Rebuild a trained model from ``run_dir/{which}.pt`` (safe load, model config checked)."""
    state = load_checkpoint(Path(run_dir) / f"{which}.pt", to_dict(params.model), map_location=device)
    model = build_model(params, device)
    expected, saved = model.state_dict(), state["model"]
    problems = [f"missing {k}" for k in expected if k not in saved] + [f"unexpected {k}" for k in saved if k not in expected]
    problems += [f"{k} has shape {tuple(saved[k].shape)}, model wants {tuple(v.shape)}"
                 for k, v in expected.items() if k in saved and saved[k].shape != v.shape]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckpointError(f"{run_dir}/{which}.pt: weights do not fit the model: {'; '.join(problems[:3])}{more}")
    model.load_state_dict(saved)
    model.eval()
    return model
