"""The experiment log closing docs/analysis_report.md: code version, dataset, each run's config and headline."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from mcl.config import Params
from mcl.evaluation.summary import ZERO_SHOT_SPLITS
from mcl.report.artifacts import Artifacts
from mcl.text import fmt


def code_version(repo: Path | None = None) -> str:
    """``git rev-parse HEAD`` (plus ', work tree dirty' when ``git status`` lists changes), else 'unknown'.

    ``MCL_CODE_VERSION``, when set, is returned instead (for callers that must not run git, e.g. tests).
    """
    if os.environ.get("MCL_CODE_VERSION"):
        return os.environ["MCL_CODE_VERSION"]
    cwd = str(repo or Path.cwd())
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        rev = head.stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=30)
        if status.returncode == 0 and status.stdout.strip():
            rev += " (work tree dirty)"
        return rev
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_headline(ev: dict | None, ft: dict | None, method: str) -> str:
    """A run's zero-shot exact match, test IoU and few-shot result, from its eval and finetune files."""
    head = []
    if ev is not None:
        head += [f"{s} exact match {fmt(ev[s]['exact_match'])}" for s in ZERO_SHOT_SPLITS if s in ev]
        head.append(f"test IoU {fmt(ev['test']['iou'])}")
    if ft is not None:
        head.append(f"few-shot {method} final IoU {fmt(ft[method]['final_iou'])}, gain "
                    f"{fmt(ft[method].get('gain_iou'), signed=True)}")
    return ", ".join(head) or "no metrics file"


def run_entry(run: str, cfg: dict, source: str, headline: str) -> list[str]:
    """One run in the log: its main settings, its headline and its resolved config (folded)."""
    loss, train, model = cfg.get("loss", {}), cfg.get("train", {}), cfg.get("model", {})
    return [f"### {run}", "",
            f"- config: {source}; loss.beta {loss.get('beta', 'n/a')}, train.steps {train.get('steps', 'n/a')}, "
            f"model.encoder {model.get('encoder', 'n/a')}, model.h_dim {model.get('h_dim', 'n/a')}",
            f"- headline: {headline}",
            "", "<details><summary>resolved config</summary>", "", "```yaml",
            yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", "", "</details>", ""]


def experiment_log_section(params: Params, a: Artifacts, repo: Path | None = None) -> list[str]:
    """The experiment log: code version (of ``repo``, default the working directory), dataset checksums, every run."""
    checksums = a.analysis.get("dataset_checksums") or {}
    lines = ["## Experiment log (実験ログ)", "",
             f"Code version: `{code_version(repo)}`. Dataset: `{params.data.store}`, split checksums: "
             + (", ".join(f"{k} `{v}`" for k, v in checksums.items()) or "unavailable") + ".", ""]
    evals = {**a.evals, "oracle": a.oracle_evals}
    for arm, runs in (*a.runs.items(), ("oracle", a.oracle_runs)):
        for r in runs:
            cfg, source = a.configs[r]
            headline = log_headline(evals[arm].get(r), a.finetune.get(arm, {}).get(r), params.finetune.method)
            lines += run_entry(r, cfg, source, headline)
    return lines
