"""Tests for mcl.studies.sweep: collecting a loss.beta sweep from `dvc exp show --json`.

A hand-made output of the DVC 3 shape (and of the older DVC 2 dict shape) checks the parser;
`test_real_queue` runs a two-point queue of a trivial stage (no training: the stage writes a
hypotheses.json computed from beta) in a temporary git + DVC repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from repo_tools import git

from mcl.studies.result import write_study
from mcl.studies.sweep import collect_sweep, dose_response_study, plotted_keys, select_beta


def hyp(effect: float, verdict: str = "inconclusive", role: str = "primary", holm: bool = True) -> dict:
    e = {"effect": effect, "ci_low": effect - 0.02, "ci_high": effect + 0.02, "verdict": verdict, "role": role,
         "mde": 0.03, "p_value": 0.2}
    if holm:
        e["p_holm"] = 0.4
    return e


def rev(name: str, sha: str, beta, metrics: dict | None, error=None) -> dict:
    data = {
        "rev": sha, "timestamp": "2026-01-01T00:00:00",
        "params": {"params.yaml": {"data": {"loss": {"beta": beta, "alpha": 0.1}, "train": {"seeds": [0, 1, 2]}}}},
        "metrics": {} if metrics is None else {"metrics/hypotheses.json": {"data": metrics}},
        "deps": {}, "outs": {}, "meta": {},
    }
    return {"rev": sha, "name": name, "data": data, "error": error, "experiments": None}


def exp_show_v3() -> list:
    m_lo = {"M_gap": hyp(0.01), "dev_exact_match": hyp(0.004, role="exploratory", holm=False),
            "H1_exact_match": hyp(0.002), "H1_iou": hyp(-0.01, role="exploratory", holm=False)}
    m_hi = {"M_gap": hyp(0.08, "supported"), "dev_exact_match": hyp(0.012, role="exploratory", holm=False),
            "H1_exact_match": hyp(0.03), "cost_step_time_ms": {"effect": 4.0, "verdict": "supported"}}
    return [
        {"rev": "workspace", "name": None, "data": rev(None, "workspace", 0.1, m_lo)["data"], "error": None,
         "experiments": None},
        {"rev": "c0ffee" * 6 + "abcd", "name": "main", "data": rev("main", "c0ffee", 0.1, None)["data"], "error": None,
         "experiments": [
             {"revs": [rev("wacky-neck", "a" * 40, 0.3, m_hi)], "executor": None, "name": "wacky-neck"},
             {"revs": [rev("uveal-flap", "b" * 40, 0.03, m_lo)], "executor": None, "name": "uveal-flap"},
             {"revs": [rev("pagan-alto", "c" * 40, 1.0, None)], "name": "pagan-alto",
              "executor": {"state": "queued", "name": "dvc-task", "local": {}}},
         ]},
    ]


def test_collect_sweep_dvc3_shape():
    rows = collect_sweep(exp_show_v3())
    assert [r["name"] for r in rows] == ["uveal-flap", "wacky-neck", "pagan-alto"]  # by beta; workspace/commit skipped
    assert [r["beta"] for r in rows] == [0.03, 0.3, 1.0]
    assert [r["n_seeds"] for r in rows] == [3, 3, 3]  # len(train.seeds)
    lo, hi, queued = rows
    assert lo["state"] == "success" and queued["state"] == "queued" and queued["results"] == {}
    assert lo["parent"].startswith("c0ffee") and hi["rev"] == "a" * 40
    assert set(lo["results"]) == {"M_gap", "dev_exact_match", "H1_exact_match", "H1_iou"}
    assert "cost_step_time_ms" in hi["results"] and hi["results"]["cost_step_time_ms"]["p"] is None
    assert hi["results"]["M_gap"] == {"effect": 0.08, "ci_low": pytest.approx(0.06), "ci_high": pytest.approx(0.1),
                                      "p": 0.4, "verdict": "supported", "role": "primary", "mde": 0.03}
    assert lo["results"]["dev_exact_match"]["p"] == 0.2  # no p_holm: the unadjusted p
    assert lo["dev_exact_match"] == 0.004 and hi["dev_exact_match"] == 0.012 and queued["dev_exact_match"] is None
    json.dumps(rows, allow_nan=False)


def test_collect_sweep_handles_errors_and_odd_entries():
    show = exp_show_v3()
    exps = show[1]["experiments"]
    broken = rev("sad-run", "d" * 40, 0.1, None, error={"type": "ReproductionError", "msg": "failed to reproduce"})
    broken["data"]["metrics"] = {"metrics/hypotheses.json": {"error": {"type": "FileNotFoundError", "msg": "no file"}}}
    exps.append({"revs": [broken], "executor": None, "name": "sad-run"})
    exps.append({"revs": [], "executor": None, "name": "empty"})
    nobeta = rev("no-beta", "e" * 40, None, {"M_gap": hyp(float("nan"))})
    exps.append({"revs": [nobeta], "executor": None, "name": "no-beta"})
    # a running experiment shows its baseline's metrics: they are not its results
    stale = rev("busy-run", "f" * 40, 0.3, {"M_gap": hyp(0.5)})
    exps.append({"revs": [stale], "executor": {"state": "running"}, "name": "busy-run"})
    rows = {r["name"]: r for r in collect_sweep(show)}
    assert "empty" not in rows
    assert rows["sad-run"]["state"] == "failed" and rows["sad-run"]["error"] == "failed to reproduce"
    assert rows["sad-run"]["results"] == {}
    assert rows["no-beta"]["beta"] is None and rows["no-beta"]["state"] == "success"
    assert rows["busy-run"]["state"] == "running" and rows["busy-run"]["results"] == {}
    assert rows["no-beta"]["results"]["M_gap"]["effect"] is None  # NaN -> None
    assert list(rows)[-1] == "no-beta"  # missing beta sorts last


def test_collect_sweep_dvc2_dict_shape():
    v3 = exp_show_v3()[1]["experiments"]
    data = {e["name"]: e["revs"][0]["data"] for e in v3}
    legacy = {
        "workspace": {"baseline": {"data": exp_show_v3()[0]["data"]}},
        "c0ffee": {
            "baseline": {"data": {**exp_show_v3()[1]["data"], "name": "main"}},
            "a" * 40: {"data": {**data["wacky-neck"], "name": "wacky-neck", "queued": False, "running": False}},
            "b" * 40: {"data": {**data["uveal-flap"], "name": "uveal-flap", "queued": False, "running": False}},
            "c" * 40: {"data": {**data["pagan-alto"], "name": "pagan-alto", "queued": True, "running": False}},
        },
    }
    rows = collect_sweep(legacy)
    assert [(r["name"], r["beta"], r["state"]) for r in rows] == [
        ("uveal-flap", 0.03, "success"), ("wacky-neck", 0.3, "success"), ("pagan-alto", 1.0, "queued")]
    assert rows[1]["results"]["M_gap"]["effect"] == 0.08


def test_collect_sweep_options():
    show = exp_show_v3()
    rows = collect_sweep(show, param="loss.alpha")
    assert {r["beta"] for r in rows} == {0.1}
    assert all(r["results"] == {} for r in collect_sweep(show, metrics_path="metrics/other.json"))
    # a project in a subdirectory: metric keys carry the prefix
    for e in show[1]["experiments"]:
        m = e["revs"][0]["data"]["metrics"]
        if m:
            m["sub/metrics/hypotheses.json"] = m.pop("metrics/hypotheses.json")
    assert collect_sweep(show)[0]["results"]["M_gap"]["effect"] == 0.01


def test_select_beta_uses_dev_only():
    rows = collect_sweep(exp_show_v3())
    assert select_beta(rows) == 0.3
    with pytest.raises(ValueError, match="dev split only"):
        select_beta(rows, key="H1_exact_match")
    with pytest.raises(ValueError, match="dev split only"):
        select_beta(rows, key="cost_step_time_ms")
    tie = [{"beta": b, "results": {"dev_exact_match": {"effect": 0.01}}} for b in (1.0, 0.1, 0.3)]
    assert select_beta(tie) == 0.1  # ties: the smallest beta
    zero = [{"beta": 0.0, "results": {"dev_exact_match": {"effect": 0.0}}},
            {"beta": 0.3, "results": {"dev_exact_match": {"effect": -0.01}}}]
    assert select_beta(zero) == 0.0
    assert select_beta(zero[1:]) == 0.0  # beta 0 (the baseline itself) competes even when not run
    with pytest.raises(ValueError, match="no experiment"):
        select_beta([{"beta": None, "results": {}}])


def render_dose_response(rows, md, png):
    """The study as `mcl sweep` runs it: compute, then write page and figure; the study's data."""
    result = dose_response_study(rows, png)
    assert not png.exists() and not md.exists()  # computing writes nothing
    write_study(result, md)
    return result.data


def test_render_dose_response(tmp_path):
    rows = collect_sweep(exp_show_v3())
    assert plotted_keys(rows) == ["M_gap", "H1_exact_match", "dev_exact_match"]
    out = render_dose_response(rows, tmp_path / "dose" / "dose.md", tmp_path / "dose" / "dose.png")
    assert out == {"selected_beta": 0.3, "keys": ["M_gap", "H1_exact_match", "dev_exact_match"]}
    md = (tmp_path / "dose" / "dose.md").read_text()
    assert "Selected beta (best `dev_exact_match` effect): **0.3**" in md
    assert "## `M_gap` (primary, val" in md and "## `H1_exact_match` (primary, test" in md
    assert "| 0.3 | wacky-neck | 0.08 | [0.06, 0.1] | 0.4 | supported |" in md
    assert "| pagan-alto | 1 | 3 | queued |" in md
    assert (tmp_path / "dose" / "dose.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "No beta = 0 experiment" in md  # the fixture sweeps 0.03, 0.3 and 1
    # the compact metrics/hypotheses.json carries no p-values: no p column
    for r in rows:
        for e in r["results"].values():
            e["p"] = None
    render_dose_response(rows, tmp_path / "nop.md", tmp_path / "nop.png")
    md = (tmp_path / "nop.md").read_text()
    assert "| beta | experiment | effect | CI | verdict |" in md and "| p |" not in md
    assert "| 0.3 | wacky-neck | 0.08 | [0.06, 0.1] | supported |" in md
    # nothing collected: still writes both, no selection
    empty = render_dose_response([], tmp_path / "e.md", tmp_path / "e.png")
    assert empty == {"selected_beta": None, "keys": []} and (tmp_path / "e.png").is_file()


STAGE = """\
import json, pathlib, yaml
beta = yaml.safe_load(open("params.yaml"))["loss"]["beta"]
entry = lambda e: {"effect": e, "ci_low": e - 0.01, "ci_high": e + 0.01, "p_value": 0.5, "verdict": "inconclusive"}
pathlib.Path("metrics").mkdir(exist_ok=True)
json.dump({"dev_exact_match": entry(0.01 * beta), "M_gap": entry(0.1 * beta)}, open("metrics/hypotheses.json", "w"))
"""

DVC_YAML = """\
stages:
  analyse:
    cmd: python stage.py
    deps: [stage.py]
    params: [loss.beta]
    metrics:
      - metrics/hypotheses.json:
          cache: false
"""


@pytest.mark.slow
def test_real_queue(tmp_path, mcl_env):
    """`dvc exp run --queue -S loss.beta=0,0.3` + `dvc queue start`, then collect `dvc exp show --json`."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**mcl_env, "PYTHONDONTWRITEBYTECODE": "1"}

    def dvc(*args: str, timeout: int = 120) -> str:
        proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc.stdout

    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@mcl.invalid")
    git(repo, "config", "user.name", "mcl test")
    dvc("init", "-q")
    (repo / "params.yaml").write_text("loss:\n  beta: 0.1\n")
    (repo / "stage.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "trivial sweep project")
    try:
        assert dvc("exp", "run", "--queue", "-S", "loss.beta=0,0.3").count("Queued experiment") == 2
        dvc("queue", "start", "--jobs", "1")
        deadline = time.monotonic() + 90
        while any(s in (status := dvc("queue", "status")) for s in ("Queued", "Running")):
            assert time.monotonic() < deadline, status
            time.sleep(1)
        assert status.count("Success") == 2, status
        rows = collect_sweep(json.loads(dvc("exp", "show", "--json")))
    finally:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "stop", "--kill"], cwd=repo, env=env,
                       capture_output=True, timeout=60)
    assert [r["beta"] for r in rows] == [0.0, 0.3]
    assert all(r["state"] == "success" for r in rows)
    assert rows[1]["results"]["M_gap"]["effect"] == pytest.approx(0.03)
    assert rows[1]["dev_exact_match"] == pytest.approx(0.003) and rows[0]["dev_exact_match"] == 0.0
    assert select_beta(rows) == 0.3
    render_dose_response(rows, tmp_path / "dose.md", tmp_path / "dose.png")
    md = (tmp_path / "dose.md").read_text()
    assert all(f"| {r['name']} |" in md for r in rows)
    assert (tmp_path / "dose.png").stat().st_size > 0


def test_mcl_sweep_command(tmp_path, run_mcl):
    """`mcl sweep --exp-json` writes the table and the figure and names the beta dev selects; bad input is one line."""
    saved = tmp_path / "exp.json"
    saved.write_text(json.dumps(exp_show_v3()))
    out, fig = tmp_path / "docs" / "dose.md", tmp_path / "docs" / "figures" / "dose.png"
    proc = run_mcl(["sweep", "--exp-json", saved, "--out", out, "--figure", fig], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    beta = select_beta(collect_sweep(exp_show_v3()))
    assert f"dev selects loss.beta = {beta}" in proc.stdout
    assert out.read_text().strip() and fig.read_bytes()[:4] == b"\x89PNG"
    saved.write_text("{not json")
    bad = run_mcl(["sweep", "--exp-json", saved, "--out", out, "--figure", fig], cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not JSON" in bad.stderr
