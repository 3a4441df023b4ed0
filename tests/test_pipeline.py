"""The DVC pipeline end to end, in a temporary git repository holding a copy of this checkout.

`dvc repro` runs every stage (generate, dataset_card, train-share, train-controls,
evaluate, finetune, summarize, analyse, report) with tiny params and one seed (the session
fixture ``reproduced_repo``); then, in a clone, a change of ``loss.beta`` must retrain only the
share arm and leave the cached baseline alone; a forced rerun must leave every metric unchanged;
and `dvc exp show` must stay readable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from repo_tools import REPO, clone_with_cache, dvc, repo_env, stages_run, status

from mcl.data.generator import ALL_SPLITS
from mcl.data.store import open_store

pytestmark = pytest.mark.slow

METRIC_KEYS = {"exact_match", "cell_accuracy", "iou"}


@pytest.fixture(scope="module")
def dvc_env(mcl_env) -> dict:
    return repo_env(mcl_env)


def snapshot(paths: list[Path]) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


def test_dvc_repro_end_to_end_and_beta_retrains_only_share(reproduced_repo, dvc_env, tmp_path):
    repo, runs = reproduced_repo
    env = dvc_env

    # generate alone produced the store
    assert stages_run(runs["generate"]) == {"generate"}
    store = open_store(repo / "data" / "episodes.zarr")
    assert set(ALL_SPLITS) <= set(store.splits)
    assert len(store.load("train")) == 400 and len(store.load("fewshot")) == 300

    ran = stages_run(runs["repro"])
    assert {"train-share", "train-controls", "evaluate@share-0", "evaluate@baseline-0",
            "evaluate-oracle@0", "finetune@share", "finetune@baseline", "summarize", "dataset_card", "analyse",
            "report"} <= ran, ran
    assert "generate" not in ran

    for arm in ("share", "baseline"):
        name = f"{arm}/seed0"
        ev = json.loads((repo / "metrics" / "eval" / f"{name}.json").read_text())
        assert {"val", "test", "dev", "novel2", "reference"} <= set(ev)
        for split in ("val", "test"):
            assert METRIC_KEYS <= set(ev[split]), split
            assert all(0.0 <= ev[split][k] <= 1.0 for k in METRIC_KEYS)
            assert METRIC_KEYS <= set(ev["reference"][split]["copy"])
        assert ev["test"]["episodes"] == 32 and set(ev["test"]["by_length"]) == {"3"}

        ft = json.loads((repo / "metrics" / "finetune" / f"{name}.json").read_text())
        assert ft["method"] == "lora" and {"none", "lora", "full"} <= set(ft) and len(ft["tasks"]) == 2
        assert {"final_iou", "steps_to_threshold"} <= set(ft["lora"])
        curve = (repo / "metrics" / "finetune_curves" / f"{name}.csv").read_text().splitlines()
        assert {"step", "iou_none", "iou_adapted", "iou_full"} <= set(curve[0].split(","))
        assert [line.split(",")[0] for line in curve[1:]] == ["0", "2", "4"]

        train_dir = repo / "metrics" / "train" / name
        assert json.loads((train_dir / "metrics.json").read_text())["step"] == 8
        assert (train_dir / "metrics.csv").read_text().splitlines()[-1].startswith("8,")
        assert (repo / "models" / name / "last.pt").is_file() and (repo / "models" / name / "best.pt").is_file()

    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert set(summary) == {"share", "baseline", "oracle", "copy", "majority", "seeds"}
    assert summary["seeds"] == 1 and "test_iou" in summary["share"]
    assert {"val_exact_match", "test_exact_match", "dev_exact_match", "novel2_exact_match"} <= set(summary["oracle"])
    assert (repo / "docs" / "dataset.md").is_file()
    assert status(repo, env) == {}, "pipeline not up to date right after dvc repro"
    assert not (repo / "dvclive").exists()

    # a change of loss.beta, in a clone (the reproduced repository is shared with other tests)
    repo = clone_with_cache(repo, tmp_path / "clone", env)
    assert status(repo, env) == {}
    baseline = snapshot([repo / "models" / "baseline/seed0" / "last.pt", repo / "models" / "baseline/seed0" / "best.pt",
                         repo / "metrics" / "eval" / "baseline/seed0.json",
                         repo / "metrics" / "finetune" / "baseline/seed0.json",
                         repo / "metrics" / "train" / "baseline/seed0" / "metrics.csv"])
    share = snapshot([repo / "models" / "share/seed0" / "last.pt", repo / "metrics" / "eval" / "share/seed0.json",
                      repo / "metrics" / "finetune" / "share/seed0.json", repo / "metrics" / "summary.json"])

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["loss"]["beta"] = params["loss"]["beta"] * 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    changed = status(repo, env)
    assert "train-share" in changed, changed  # downstream stages follow once its outputs change
    assert "loss" in json.dumps(changed["train-share"])
    assert not [s for s in changed if "baseline" in s or "oracle" in s or s in ("generate", "dataset_card")], changed

    # reproduce up to the summary (later report stages are covered by the full run above)
    ran = stages_run(dvc(repo, env, "repro", "summarize"))
    assert {"train-share", "evaluate@share-0", "finetune@share", "summarize"} <= ran, ran
    assert not [s for s in ran if "baseline" in s or "oracle" in s or s in ("generate", "dataset_card")], ran

    assert snapshot(list(baseline)) == baseline, "the baseline arm was touched"
    now = snapshot(list(share))
    last = repo / "models" / "share/seed0" / "last.pt"
    assert now[last][1] != share[last][1], "share weights did not change with loss.beta"
    for p in share:
        assert now[p][0] != share[p][0], f"{p.relative_to(repo)} was not rewritten"
    assert status(repo, env, "summarize", "--with-deps") == {}


def test_dvc_ignores_python_bytecode_caches(reproduced_repo, dvc_env):
    for path in ("mcl/training/__pycache__/finetune.cpython-311.pyc", "mcl/models/__pycache__/adapters.cpython-311.pyc"):
        proc = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", "-d", path], cwd=reproduced_repo[0],
                              env=dvc_env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{path} is not ignored by DVC: {proc.stdout}{proc.stderr}"


def test_forced_rerun_leaves_every_metric_unchanged(reproduced_repo, dvc_env, tmp_path):
    """Timings are not DVC metrics: an identical rerun gives an empty `dvc metrics diff` and the same bytes."""
    repo = clone_with_cache(reproduced_repo[0], tmp_path / "clone", dvc_env)
    metrics = [Path(p) for p in json.loads(dvc(repo, dvc_env, "metrics", "show", "--json").stdout)[""]["data"]]
    assert {Path("metrics/summary.json"), Path("metrics/hypotheses.json")} <= set(metrics), metrics
    before = {p: (repo / p).read_bytes() for p in metrics}
    dvc(repo, dvc_env, "repro", "--force", "analyse", "summarize")
    assert {p: (repo / p).read_bytes() for p in metrics} == before
    assert json.loads(dvc(repo, dvc_env, "metrics", "diff", "--json").stdout) == {}


def test_exp_show_fits_a_screen(reproduced_repo, dvc_env):
    """Declared metrics hold headline numbers only: at most 80 metric columns in `dvc exp show` (the
    rest are params and deps, one column each), and the README's filter shows beta beside every verdict."""
    repo = reproduced_repo[0]
    columns = dvc(repo, dvc_env, "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    deps = {d for stage in yaml.safe_load((repo / "dvc.lock").read_text())["stages"].values()
            for d in (x["path"] for x in stage.get("deps", []))}
    metric_columns = [c for c in columns if c.split(".")[0] not in params and c not in deps
                      and c not in ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")]
    assert len(metric_columns) <= 80, f"{len(metric_columns)} metric columns: {metric_columns}"
    readme = (REPO / "README.md").read_text()
    command = readme.split("uv run dvc exp show --drop ")[1].split("#")[0].split()
    view = dvc(repo, dvc_env, "exp", "show", "--csv", "--drop", *[a.strip("'") for a in command]).stdout.splitlines()[0].split(",")
    verdicts = [c for c in view if c.endswith(".verdict")]
    assert "loss.beta" in view and len(verdicts) == 5 and len(view) <= 8, view
