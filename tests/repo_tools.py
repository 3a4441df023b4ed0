"""Helpers for tests that run `git` and `dvc` in a temporary repository holding a copy of this checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]
SKIP_ANYWHERE = {".git", ".venv", "__pycache__", ".pytest_cache"}
SKIP_TOP = {"models", "metrics", ".dvc/cache", ".dvc/tmp"}  # run outputs and DVC's own state


def checkout_files() -> list[str]:
    """Files of this checkout (tracked or untracked-but-not-ignored), without run outputs."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk it
        files = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file()]
    keep = []
    for f in files:
        parts = Path(f).parts
        if any(part in SKIP_ANYWHERE or part.endswith((".zarr", ".h5", ".egg-info")) for part in parts):
            continue
        if any("/".join(parts[:i]) in SKIP_TOP for i in range(1, len(parts))):
            continue
        if parts[0] == "data" and f != "data/.gitignore":
            continue
        if (REPO / f).is_file():  # deleted but still tracked: skip
            keep.append(f)
    return keep


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@mcl.invalid", "-c", "user.name=mcl test", *args], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout


def copy_checkout(root: Path) -> Path:
    """Copy this checkout's files (no run outputs) to ``root`` and return it; no git repository yet."""
    for f in checkout_files():
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, root / f)
    assert (root / "dvc.yaml").is_file() and (root / "mcl" / "cli.py").is_file() and (root / ".dvc").is_dir()
    return root


def dvc_run(repo: Path, env: dict, *args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    """``python -m dvc ARGS`` in ``repo`` (no check)."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout)


def dvc(repo: Path, env: dict, *args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    """``python -m dvc ARGS`` in ``repo``; fails the test with DVC's output on a non-zero exit."""
    proc = dvc_run(repo, env, *args, timeout=timeout)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def status(repo: Path, env: dict, *targets: str) -> dict:
    """``dvc status --json``: {} when everything is up to date."""
    return json.loads(dvc(repo, env, "status", "--json", *targets).stdout or "{}")


def stages_run(proc: subprocess.CompletedProcess) -> set[str]:
    """Names of the stages a `dvc repro` / `dvc exp run` output says it ran."""
    return {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage '")}


def repo_env(base_env: dict) -> dict:
    """Environment for `dvc` in a repository copy: the stages run ``python -m mcl.cli`` from the stage's
    working directory, so they import the copy's code (or a queued experiment's own copy)."""
    env = dict(base_env)
    env.pop("PYTHONPATH", None)
    # no __pycache__ next to the copied sources: DVC would hash it into the code deps
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def tiny_repo(root: Path, write_tiny_params) -> Path:
    """A git repository at ``root`` holding a copy of this checkout with tiny params (one seed, CPU), committed."""
    copy_checkout(root)
    write_tiny_params(root / "params.yaml", {"data.store": "data/episodes.zarr"})
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "copy of the checkout with tiny params")
    return root


def clone_with_cache(src: Path, dest: Path, env: dict) -> Path:
    """`git clone` of ``src`` plus a copy of its DVC cache, outputs checked out: an independent repository
    in the state of ``src``'s HEAD, without running any stage."""
    git(src.parent, "clone", "-q", str(src), str(dest))
    shutil.copytree(src / ".dvc" / "cache", dest / ".dvc" / "cache")
    dvc(dest, env, "checkout")
    return dest
