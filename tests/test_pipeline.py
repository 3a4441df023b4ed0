"""The DVC pipeline end to end, in a temporary git repository holding a copy of this checkout.

`dvc repro` runs every stage (generate, dataset_card, train x2, evaluate x2, finetune x2,
summarize, and whatever follows) with tiny params and one seed; then a change of
``loss.beta`` must retrain only the share arm and leave the cached baseline alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mcl.data.generator import SPLITS
from mcl.data.store import open_store

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[1]
METRIC_KEYS = {"exact_match", "cell_accuracy", "iou"}
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


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@mcl.invalid", "-c", "user.name=mcl test", *args], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory, write_tiny_params) -> Path:
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    for f in checkout_files():
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, root / f)
    assert (root / "dvc.yaml").is_file() and (root / "mcl" / "cli.py").is_file() and (root / ".dvc").is_dir()
    write_tiny_params(root / "params.yaml", {"data.store": "data/episodes.zarr"})  # tiny, seeds [0], cpu
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "copy of the checkout with tiny params")
    return root


@pytest.fixture(scope="module")
def dvc_env(mcl_env, pipeline_repo) -> dict:
    env = dict(mcl_env)
    # the stages run the copied code (`mcl` from the venv, package from the copy)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pipeline_repo), os.environ.get("PYTHONPATH")]))
    # no __pycache__ next to the copied sources: DVC would hash it into the code deps
    # (see test_dvc_ignores_python_bytecode_caches)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def dvc(repo: Path, env: dict, *args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def status(repo: Path, env: dict, *targets: str) -> dict:
    return json.loads(dvc(repo, env, "status", "--json", *targets).stdout or "{}")


def stages_run(proc: subprocess.CompletedProcess) -> set[str]:
    return {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage '")}


def snapshot(paths: list[Path]) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


def test_dvc_repro_end_to_end_and_beta_retrains_only_share(pipeline_repo, dvc_env):
    repo, env = pipeline_repo, dvc_env

    # generate alone produces the store
    dvc(repo, env, "repro", "generate")
    store = open_store(repo / "data" / "episodes.zarr")
    assert set(SPLITS) <= set(store.splits)
    assert len(store.load("train")) == 400 and len(store.load("fewshot")) == 300

    ran = stages_run(dvc(repo, env, "repro"))
    assert {"train-share@0", "train-baseline@0", "evaluate@share-0", "evaluate@baseline-0",
            "finetune@share-0", "finetune@baseline-0", "summarize", "dataset_card"} <= ran, ran
    assert "generate" not in ran

    for arm in ("share", "baseline"):
        name = f"{arm}-seed0"
        ev = json.loads((repo / "metrics" / "eval" / f"{name}.json").read_text())
        assert {"val", "test", "reference"} <= set(ev)
        for split in ("val", "test"):
            assert METRIC_KEYS <= set(ev[split]), split
            assert all(0.0 <= ev[split][k] <= 1.0 for k in METRIC_KEYS)
            assert METRIC_KEYS <= set(ev["reference"][split]["copy"])
        assert ev["test"]["episodes"] == 32 and set(ev["test"]["by_length"]) == {"3"}

        ft = json.loads((repo / "metrics" / "finetune" / f"{name}.json").read_text())
        assert ft["method"] == "lora" and {"none", "lora", "full"} <= set(ft) and len(ft["tasks"]) == 2
        assert {"final_iou", "steps_to_threshold"} <= set(ft["lora"])
        curve = (repo / "metrics" / "finetune" / f"{name}.curve.csv").read_text().splitlines()
        assert {"step", "iou_none", "iou_adapted", "iou_full"} <= set(curve[0].split(","))
        assert [line.split(",")[0] for line in curve[1:]] == ["0", "2", "4"]

        train_dir = repo / "metrics" / "train" / name
        assert json.loads((train_dir / "metrics.json").read_text())["step"] == 8
        assert (train_dir / "metrics.csv").read_text().splitlines()[-1].startswith("8,")
        assert (repo / "models" / name / "last.pt").is_file() and (repo / "models" / name / "best.pt").is_file()

    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert set(summary) == {"share", "baseline"}
    assert summary["share"]["seeds"] == 1 and "test_iou" in summary["share"]
    assert (repo / "docs" / "dataset.md").is_file()
    assert status(repo, env) == {}, "pipeline not up to date right after dvc repro"
    assert not (repo / "dvclive").exists()

    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pipeline outputs")

    baseline = snapshot([repo / "models" / "baseline-seed0" / "last.pt", repo / "models" / "baseline-seed0" / "best.pt",
                         repo / "metrics" / "eval" / "baseline-seed0.json",
                         repo / "metrics" / "finetune" / "baseline-seed0.json",
                         repo / "metrics" / "train" / "baseline-seed0" / "metrics.csv"])
    share = snapshot([repo / "models" / "share-seed0" / "last.pt", repo / "metrics" / "eval" / "share-seed0.json",
                      repo / "metrics" / "finetune" / "share-seed0.json", repo / "metrics" / "summary.json"])

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["loss"]["beta"] = params["loss"]["beta"] * 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    changed = status(repo, env)
    assert "train-share@0" in changed, changed  # downstream stages follow once its outputs change
    assert "loss" in json.dumps(changed["train-share@0"])
    assert not [s for s in changed if "baseline" in s or s in ("generate", "dataset_card")], changed

    # reproduce up to the summary (later report stages are covered by the full run above)
    ran = stages_run(dvc(repo, env, "repro", "summarize"))
    assert {"train-share@0", "evaluate@share-0", "finetune@share-0", "summarize"} <= ran, ran
    assert not [s for s in ran if "baseline" in s or s in ("generate", "dataset_card")], ran

    assert snapshot(list(baseline)) == baseline, "the baseline arm was touched"
    now = snapshot(list(share))
    last = repo / "models" / "share-seed0" / "last.pt"
    assert now[last][1] != share[last][1], "share weights did not change with loss.beta"
    for p in share:
        assert now[p][0] != share[p][0], f"{p.relative_to(repo)} was not rewritten"
    assert status(repo, env, "summarize", "--with-deps") == {}


def test_dvc_ignores_python_bytecode_caches(pipeline_repo, dvc_env):
    for path in ("mcl/training/__pycache__/finetune.cpython-311.pyc", "mcl/models/__pycache__/adapters.cpython-311.pyc"):
        proc = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", "-d", path], cwd=pipeline_repo,
                              env=dvc_env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{path} is not ignored by DVC: {proc.stdout}{proc.stderr}"
