"""Atomic file writes: every output goes to a temporary sibling that is renamed into place,
so a killed process never leaves a half-written file at the final path."""

from __future__ import annotations

import csv
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error remove it.

    ``suffix`` is appended to the temporary name for writers that insist on an extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (no newline translation)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj, **dumps) -> None:
    """Write ``obj`` as indented JSON atomically; ``dumps`` goes to :func:`json.dumps`."""
    write_text(path, json.dumps(obj, indent=2, **dumps) + "\n")


def write_csv(path: str | os.PathLike, fieldnames: list[str], rows) -> None:
    """Write dict ``rows`` as CSV with a header atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())
