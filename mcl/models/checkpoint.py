"""Checkpoints: atomic writes, safe loads (no arbitrary unpickling), config checks.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts written with
``torch.save`` to a temporary file that is renamed into place, and read back with
``torch.load(..., weights_only=True)``, which refuses pickled objects of any other type
(so a crafted file cannot run code on load). Files that are not torch's zip format (empty,
a bare pickle, random bytes) or whose archive is truncated are refused before any unpickling.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from mcl.errors import CheckpointError, brief
from mcl.io import atomic_path

FORMAT = "mcl-checkpoint-v1"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be an mcl checkpoint, judged from its bytes alone (None: worth a safe load).

    mcl writes only torch's zip format, so anything else (an empty file, a bare pickle, JSON, random
    bytes) is refused before any unpickler sees it; a zip without its central directory is truncated.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "empty file (0 bytes)"
    if head != b"PK\x03\x04":
        return "not a torch checkpoint (mcl writes torch's zip format; this file is something else)"
    if not zipfile.is_zipfile(path):
        return "truncated or corrupt checkpoint (its zip archive has no central directory)"
    return None


def load_checkpoint(path: str | os.PathLike, model_config: dict | None = None, map_location="cpu") -> dict:
    """Read a checkpoint safely; with ``model_config``, refuse one saved for another model config."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    problem = _unreadable(path)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+", str(e))
        raise CheckpointError(f"{path}: refused: the checkpoint holds pickled objects that are not plain data "
                              f"({found.group(0) if found else 'not tensors, numbers, strings, lists or dicts'}); "
                              "checkpoints are loaded with weights_only=True and never run code") from None
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({brief(e)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mcl checkpoint (format {state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    if model_config is not None:
        saved = state.get("config", {}).get("model", {})
        diff = sorted(k for k in set(saved) | set(model_config) if saved.get(k) != model_config.get(k))
        if diff:
            detail = ", ".join(f"model.{k} (checkpoint {saved.get(k)!r}, params {model_config.get(k)!r})" for k in diff)
            raise CheckpointError(f"{path}: checkpoint was trained with a different model config: {detail}")
    return state
