"""`mcl report`: the first page of results_summary.md, the analysis report, its figures and the
pre-registration, from the outputs of a tiny real pipeline (tests/test_analysis_run.py builds it)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from test_analysis_run import build_tiny_pipeline, run_analyse_cli

from mcl.stats.hypotheses import HYPOTHESES, by_key, render_preregistration
from mcl.analysis.run import H2_UNTESTABLE
from mcl.report.figures import FIGURES
from mcl.report.summary_page import MDE_SENTENCE
from mcl.report.write import write_preregistration, write_report


@pytest.fixture(autouse=True)
def _no_git(monkeypatch):
    monkeypatch.setenv("MCL_CODE_VERSION", "fixture-version-abc")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny pipeline run up to and including `mcl analyse` (read-only: copy it with ``_copy``)."""
    root = tmp_path_factory.mktemp("report")
    params, params_path = build_tiny_pipeline(root)
    run_analyse_cli(root, params_path)
    return root, params, params_path


def _copy(pipeline, tmp_path: Path) -> Path:
    src = pipeline[0]
    dst = tmp_path / "run"
    shutil.copytree(src / "metrics", dst / "metrics")
    shutil.copytree(src / "models", dst / "models", ignore=shutil.ignore_patterns("*.pt", "tb"))
    return dst


def _edit(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def _report(pipeline, root: Path) -> tuple[str, str]:
    params = pipeline[1]
    docs = root / "docs"
    write_report(params, root / "metrics", root / "metrics" / "analysis", root / "models", docs)
    return (docs / "results_summary.md").read_text(), (docs / "analysis_report.md").read_text()


def _cli_report(pipeline, root: Path):
    from click.testing import CliRunner

    from mcl.cli import cli

    res = CliRunner().invoke(cli, ["report", "--params", str(pipeline[2]), "--metrics-dir", str(root / "metrics"),
                                   "--analysis-dir", str(root / "metrics" / "analysis"),
                                   "--models-dir", str(root / "models"), "--docs-dir", str(root / "docs")])
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.slow
def test_cli_report_writes_documents_figures_and_preregistration(pipeline, tmp_path):
    root = _copy(pipeline, tmp_path)
    res = _cli_report(pipeline, root)
    docs = root / "docs"
    for name in ("hypotheses.md", "results_summary.md", "analysis_report.md"):
        assert f"wrote {docs / name}" in res.output
    report = (docs / "analysis_report.md").read_text()
    for name in FIGURES:
        f = docs / "figures" / "report" / name
        assert f.is_file() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"figures/report/{name}" in report, name
    # the pre-registration is the table's rendering, then the analysis constants; no results in it
    prereg = (docs / "hypotheses.md").read_text()
    assert prereg.startswith(render_preregistration(HYPOTHESES, alpha=pipeline[1].analysis.alpha).rstrip())
    assert "How the analysis computes the metrics" in prereg
    full = json.loads((root / "metrics" / "analysis" / "analysis.json").read_text())["hypotheses"]
    assert f"{full['H4_monosemanticity']['mde']:.4f}" not in prereg
    # experiment log: every run, configs from models/<arm>/seed<k>/config.yaml
    assert "Experiment log (実験ログ)" in report and "fixture-version-abc" in report
    for run in ("share/seed0", "share/seed1", "baseline/seed0", "baseline/seed1", "oracle/seed0"):
        assert f"### {run}" in report
    assert "model.encoder oracle" in report


def test_preregistration_is_generated_from_the_table(tmp_path):
    table = list(HYPOTHESES)
    i = [h.key for h in table].index("H1_exact_match")
    a = write_preregistration(tmp_path / "a.md", table).read_text()
    table[i] = dataclasses.replace(table[i], delta=0.0375)
    b = write_preregistration(tmp_path / "b.md", table).read_text()
    assert a != b
    assert "delta = 0.0375 exact-match rate" in b and "delta = 0.0375" not in a
    assert f"delta = {by_key()['H1_exact_match'].delta:g} exact-match rate" in a
    for h in HYPOTHESES:  # every metric is defined, before any result
        assert f"### `{h.key}` ({h.role})" in a and h.metric in a


@pytest.mark.slow
def test_first_page_order_manipulation_controls_and_mde(pipeline, tmp_path):
    root = _copy(pipeline, tmp_path)
    a = root / "metrics" / "analysis" / "analysis.json"
    h = root / "metrics" / "hypotheses.json"
    s = root / "metrics" / "summary.json"
    # make the numbers recognisable: they must come from the files
    _edit(s, lambda o: o["oracle"].update(test_exact_match=0.4321))
    _edit(s, lambda o: o["copy"].update(test_exact_match=0.0123))
    _edit(s, lambda o: o["majority"].update(test_exact_match=0.0234))
    _edit(h, lambda o: o["M_gap"].update(effect=0.0567, ci_low=-0.01, ci_high=0.12, verdict="inconclusive", mde=0.5))
    _edit(h, lambda o: o["H1_exact_match"].update(effect=0.1234, mde=0.001))
    _edit(a, lambda o: o["hypotheses"]["H1_exact_match"].update(se=0.01))
    _edit(a, lambda o: o["summary"]["share"]["val_effective_rank"].update(mean=7.25))
    summary, report = _report(pipeline, root)
    lines = summary.splitlines()
    # (1) first lines: the manipulation check failed, and what that means
    head = "\n".join(lines[:4])
    assert "Manipulation check failed" in head and "`M_gap` = +0.0567" in head
    assert "do not test the hypothesis" in head
    i_man = summary.index("## 1. Did the treatment do what it claims?")
    i_learn = summary.index("## 2. Did the models learn the task?")
    i_stat = summary.index("## 3. Would the statistics call noise an effect?")
    i_table = summary.index("## 4. Hypotheses H1-H4")
    assert i_man < i_learn < i_stat < i_table
    man = summary[i_man:i_learn]
    assert "`M_gap` (primary)" in man and "`M_spearman` (secondary)" in man and "7.25" in man
    assert "effective rank of h" in man
    # (2) the controls next to the arms
    learn = summary[i_learn:i_stat]
    for label in ("share (2 seeds)", "baseline (2 seeds)", "oracle-task executor", "copy the query", "majority colour"):
        assert label in learn, label
    assert "0.4321" in learn and "0.0123" in learn and "0.0234" in learn
    assert "0.0234 for the best trivial control (majority)" in learn
    assert "Dev is used only to choose hyperparameters" in learn
    # (3) method, seeds and the MDE sentence where the MDE exceeds delta (and not where it does not)
    stat = summary[i_stat:i_table]
    assert "2 seeds per arm" in stat and "Holm" in stat and "TOST" in stat
    assert f"- `M_gap`: {MDE_SENTENCE} (MDE 0.5000 > delta 0.0200)." in stat
    assert f"- `H1_exact_match`: {MDE_SENTENCE}" not in stat
    # (4) the table, primaries first, numbers from hypotheses.json
    table = summary[i_table:summary.index("## Headline numbers per arm")]
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| key")]
    roles = [r.split(" | ")[1] for r in rows]
    assert roles == sorted(roles, key=["primary", "secondary", "exploratory"].index)
    assert {r.split(" | ")[0][2:] for r in rows} == {hh.key for hh in HYPOTHESES}
    assert "| H1_exact_match | primary |" in summary and "+0.1234" in summary
    assert "cost_step_time_ms" not in summary and "cost_step_time_ms" not in report


@pytest.mark.slow
def test_manipulation_passed_and_h2_testable(pipeline, tmp_path):
    root = _copy(pipeline, tmp_path)
    a = root / "metrics" / "analysis" / "analysis.json"
    h = root / "metrics" / "hypotheses.json"
    _edit(h, lambda o: o["M_gap"].update(effect=0.05, ci_low=0.03, ci_high=0.07, verdict="supported", p_holm=0.001))
    _edit(a, lambda o: o["h2_precondition"].update(testable=True, effect=0.1, ci_low=0.05, ci_high=0.15))
    # as `mcl analyse` writes the metric file when the precondition holds: the H2 verdicts are the decided ones
    decided = json.loads(a.read_text())["hypotheses"]
    _edit(h, lambda o: [o[k].update(verdict=decided[k]["verdict"]) for k in ("H2_gain", "H2_rmst")])
    summary, report = _report(pipeline, root)
    assert "Manipulation check passed" in "\n".join(summary.splitlines()[:4])
    assert "Manipulation check failed" not in summary
    assert H2_UNTESTABLE not in summary and H2_UNTESTABLE not in report
    assert "H2 is testable" in summary
    # and when adaptation does not help the baseline, the H2 rows say so in place of a verdict
    _edit(a, lambda o: o["h2_precondition"].update(testable=False, effect=-0.01, ci_low=-0.03, ci_high=0.01))
    summary, report = _report(pipeline, root)
    h2_rows = [ln for ln in summary.splitlines() if ln.startswith("| H2_")]
    assert len(h2_rows) == 2 and all(H2_UNTESTABLE in r for r in h2_rows)
    assert H2_UNTESTABLE in report


@pytest.mark.slow
def test_report_missing_inputs_name_the_file(pipeline, tmp_path):
    root = _copy(pipeline, tmp_path)
    (root / "metrics" / "hypotheses.json").unlink()
    with pytest.raises(FileNotFoundError, match="hypotheses.json"):
        _report(pipeline, root)
    root = _copy(pipeline, tmp_path / "b")
    (root / "models" / "share" / "seed1" / "config.yaml").unlink()
    _, report = _report(pipeline, root)
    assert "params.yaml (no config.yaml found)" in report
