"""A parameter sweep through DVC's experiment queue, as the README describes it.

In a temporary git repository holding a copy of this checkout (tiny params, one seed):
`dvc exp run --queue -S loss.beta=0.05,0.2` queues a two-point grid, `dvc queue start --jobs 2`
runs it with two workers, and `dvc exp show` / `dvc metrics diff` compare the results; the
experiments then travel to another clone with `dvc exp push` / `dvc exp pull`; and a queued run
is shown to lack the workspace's untracked files.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from repo_tools import dvc, dvc_run, git, repo_env, tiny_repo

pytestmark = pytest.mark.slow

BETAS = (0.05, 0.2)


@pytest.fixture(scope="module")
def sweep_repo(tmp_path_factory, write_tiny_params, mcl_env):
    root = tiny_repo(tmp_path_factory.mktemp("sweep") / "repo", write_tiny_params)
    env = repo_env(mcl_env)
    dvc(root, env, "repro", "generate")  # the frozen dataset, shared by every queued run through the cache
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "tiny params and their dataset")
    yield root, env
    dvc_run(root, env, "queue", "stop", "--kill", timeout=120)


def experiments(repo: Path, env: dict) -> dict[str, dict]:
    """name -> exp show data (params, metrics) of every experiment of HEAD."""
    rows = json.loads(dvc(repo, env, "exp", "show", "--json").stdout)
    return {rev["name"]: rev["data"] for row in rows for exp in (row.get("experiments") or []) for rev in exp["revs"]}


def wait_for_queue(repo: Path, env: dict, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = dvc(repo, env, "queue", "status").stdout
        if not any(state in out for state in ("Queued", "Running")):
            return out
        time.sleep(5)
    logs = dvc_run(repo, env, "queue", "logs", "--follow", timeout=30).stdout[-2000:]
    pytest.fail(f"queue not done after {timeout:.0f} s:\n{out}\n{logs}")


@pytest.fixture(scope="module")
def swept(sweep_repo):
    """Queue the loss.beta grid (up to the summary) and run it with two workers; returns the queue status."""
    repo, env = sweep_repo
    grid = ",".join(map(str, BETAS))
    queued = dvc(repo, env, "exp", "run", "--queue", "summarize", "-S", f"loss.beta={grid}").stdout
    assert queued.count("Queued experiment") == len(BETAS), queued
    assert "Started '2' new experiments task queue workers" in dvc(repo, env, "queue", "start", "--jobs", "2").stdout
    return wait_for_queue(repo, env, timeout=900)


def model_hash(data: dict, arm: str) -> str:
    """The DVC hash of an arm's models folder (it also holds TensorBoard files, so two trainings of the same
    run differ here even though their weights are the same bytes)."""
    return data["outs"][f"models/{arm}"]["hash"]


def locked_params(repo: Path, rev: str, stage: str) -> dict:
    """The params an experiment's dvc.lock recorded for ``stage``."""
    lock = yaml.safe_load(git(repo, "show", f"{rev}:dvc.lock"))
    return lock["stages"][stage]["params"]


def test_queued_grid_runs_with_two_workers_and_compares(sweep_repo, swept):
    repo, env = sweep_repo
    assert swept.count("Success") == len(BETAS), swept

    exps = experiments(repo, env)
    assert len(exps) == len(BETAS)
    by_beta = {data["params"]["params.yaml"]["data"]["loss"]["beta"]: (name, data) for name, data in exps.items()}
    assert sorted(by_beta) == sorted(BETAS)

    (lo_name, lo), (hi_name, hi) = by_beta[BETAS[0]], by_beta[BETAS[1]]
    assert {"share", "baseline"} <= set(lo["metrics"]["metrics/summary.json"]["data"])
    assert model_hash(lo, "share") != model_hash(hi, "share")
    assert locked_params(repo, lo["rev"], "train-share") != locked_params(repo, hi["rev"], "train-share")
    assert locked_params(repo, lo["rev"], "train-controls") == locked_params(repo, hi["rev"], "train-controls"), \
        "the baseline arm depends on loss.beta"
    summaries = [d["metrics"]["metrics/summary.json"]["data"] for d in (lo, hi)]
    assert summaries[0]["baseline"] == summaries[1]["baseline"], "the two experiments' baselines differ"

    diff = json.loads(dvc(repo, env, "metrics", "diff", lo_name, hi_name, "--json").stdout)
    summary = diff.get("metrics/summary.json", {})
    assert not [k for k in summary if k.startswith(("baseline.", "oracle.", "copy.", "majority."))], summary
    for key, change in summary.items():  # metrics diff reports the numbers exp show has
        arm, name = key.split(".", 1)
        assert change["old"] == lo["metrics"]["metrics/summary.json"]["data"][arm][name]
        assert change["new"] == hi["metrics"]["metrics/summary.json"]["data"][arm][name]
    assert dvc(repo, env, "exp", "show", "--csv").stdout.count("Success") == len(BETAS)


def test_experiments_travel_to_another_clone(sweep_repo, swept, tmp_path):
    """docs/scaling.md's multi-machine flow on one machine: `dvc exp push` from the clone that ran the
    sweep, `dvc exp pull` in another clone, which then restores an experiment's outputs from the remote."""
    repo, env = sweep_repo
    origin, storage, other = tmp_path / "origin.git", tmp_path / "dvc-storage", tmp_path / "other"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "HEAD")
    dvc(repo, env, "remote", "add", "--local", "-d", "shared", str(storage))
    dvc(repo, env, "push")  # the frozen dataset of the baseline commit
    pushed = dvc(repo, env, "exp", "push", "origin").stdout
    sent = experiments(repo, env)
    assert all(name in pushed for name in sent), pushed

    git(tmp_path, "clone", "-q", str(origin), str(other))
    dvc(other, env, "remote", "add", "--local", "-d", "shared", str(storage))
    dvc(other, env, "exp", "pull", "origin")
    got = experiments(other, env)
    assert set(got) == set(sent)
    for name in sent:
        assert got[name]["metrics"] == sent[name]["metrics"]
        assert {arm: model_hash(got[name], arm) for arm in ("share", "baseline")} == \
            {arm: model_hash(sent[name], arm) for arm in ("share", "baseline")}

    name = sorted(sent)[0]
    dvc(other, env, "exp", "apply", name)
    assert (other / "models" / "share/seed0" / "last.pt").is_file(), "the experiment's model did not come along"
    summary = json.loads((other / "metrics" / "summary.json").read_text())
    assert summary == sent[name]["metrics"]["metrics/summary.json"]["data"]


def test_queued_run_copies_only_tracked_files(sweep_repo, swept):
    """README: a queued run gets the workspace's tracked changes but not its untracked files, and runs the code
    of its own copy (`python -m mcl.cli`). A tracked edit that imports an untracked module works in the
    workspace and fails in the queue. (Last in this module: it queues a failing experiment.)"""
    repo, env = sweep_repo
    cli, probe = repo / "mcl" / "cli.py", repo / "mcl" / "untracked_probe.py"
    original = cli.read_text()
    try:
        probe.write_text("X = 1\n")
        cli.write_text(original.replace("import click\n", "import click\n\nimport mcl.untracked_probe  # noqa: F401\n", 1))
        here = subprocess.run([sys.executable, "-m", "mcl.cli", "--help"], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=120)
        assert here.returncode == 0, here.stderr

        out = dvc(repo, env, "exp", "run", "--queue", "generate", "-S", "data.seed=5").stdout
        name = re.search(r"Queued experiment '([^']+)'", out).group(1)
        dvc(repo, env, "queue", "start", "--jobs", "1")
        final = wait_for_queue(repo, env, timeout=300)
        assert re.search(rf"\b{name}\b.*\bFailed\b", final), final
        logs = dvc_run(repo, env, "queue", "logs", name, timeout=60)
        assert "No module named 'mcl.untracked_probe'" in logs.stdout + logs.stderr, logs.stdout[-2000:]
    finally:
        cli.write_text(original)
        probe.unlink(missing_ok=True)
