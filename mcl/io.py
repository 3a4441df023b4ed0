"""Atomic file writes: every output goes to a temporary sibling that is renamed into place,
so a killed process never leaves a half-written file at the final path. Plus the one
conversion of results to strict JSON (:func:`json_safe`)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import math
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only, nothing is sent
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to another user
        return True
    return True


def _remove_stale_temps(path: Path, suffix: str) -> None:
    """Delete temporaries of ``path`` left behind by killed writers (SIGKILL, OOM, power loss skip the cleanup).

    Only names of the exact form ``atomic_path`` gives (``.NAME.tmp-PID[SUFFIX]``) whose PID names no
    live process are removed, so a concurrent writer's temporary on this machine is never touched. (A
    reused PID only keeps a stale file a while longer; writers in another PID namespace or on another
    host sharing the folder are not told apart, which could at worst make such a writer's rename fail.)
    POSIX only: on Windows ``os.kill(pid, 0)`` would not be a harmless probe.
    """
    if os.name != "posix":
        return
    pattern = re.compile(re.escape(f".{path.name}.tmp-") + r"(\d+)" + re.escape(suffix))
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) != os.getpid() and not _process_exists(int(m.group(1))):
            try:
                (path.parent / name).unlink()
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass  # removed by another process meanwhile, or not ours to remove


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error remove it.

    ``suffix`` is appended to the temporary name for writers that insist on an extension.
    Temporaries of ``path`` from writers that were killed meanwhile are removed first, so they
    do not pile up across kill-and-resume cycles.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path, suffix)
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


def write_npz(path: str | os.PathLike, arrays: dict) -> None:
    """Write ``arrays`` (name -> numpy array) as a compressed ``.npz`` atomically."""
    import numpy as np

    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def finite_or_none(x) -> float | None:
    """``x`` as a float, or None when it is None, NaN or infinite."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def json_safe(obj):
    """A strict-JSON copy of ``obj``: NaN and infinities -> None, tuples and numpy arrays -> lists,
    numpy scalars -> Python numbers, mapping keys -> str."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy array or scalar
        return json_safe(obj.tolist())
    if isinstance(obj, float):
        return finite_or_none(obj)
    return obj


def write_csv(path: str | os.PathLike, fieldnames: list[str], rows) -> None:
    """Write dict ``rows`` as CSV with a header atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def check_writable(*dirs: Path) -> None:
    """Fail before any work when an output folder cannot be created or written."""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise PermissionError(f"{d}: output folder is not writable ({e.strerror})") from None


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of the CSV file ``path``; a missing file names the stage to run first."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run its stage first)") from None


def read_json(path: str | os.PathLike):
    """The JSON value in ``path``; a missing file names the stage to run first."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run its stage first)") from None
