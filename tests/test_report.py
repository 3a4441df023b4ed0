"""`mcl report`: both documents and every figure from fixture metrics, with the fixture numbers in the text."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mcl.analysis.report import FIGURES, write_report
from mcl.analysis.run import HYPOTHESIS_KEYS, hypothesis_entry, write_json

SEEDS = [0, 1]
PRIMS = ["flip", "rotate", "recolor"]
LAYERS = ["enc.0", "enc.1", "h", "z"]
T, E, S_UNITS = 4, 4, 6


@pytest.fixture(autouse=True)
def _no_git(monkeypatch):
    monkeypatch.setenv("MCL_CODE_VERSION", "fixture-version-abc")


def _params(overrides=None):
    from mcl.config import load_params

    return load_params(Path(__file__).parents[1] / "params.yaml", {"train.seeds": SEEDS, "analysis.n_boot": 200,
                                                                   **(overrides or {})})


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _fixture(root: Path, method: str = "lora") -> Path:
    """Fake outputs of every earlier stage under ``root/metrics`` (+ one run config under ``root/models``)."""
    from mcl.evaluation.summary import summarize_runs

    m = root / "metrics"
    rng = np.random.default_rng(0)
    for arm in ("share", "baseline"):
        for s in SEEDS:
            name = f"{arm}-seed{s}"
            test_iou = 0.4321 if arm == "share" else 0.3000 + 0.01 * s
            sec = lambda em, iou: {"exact_match": em, "cell_accuracy": 0.9, "iou": iou, "episodes": 32}  # noqa: E731
            ev = {"val": sec(0.5, 0.6), "test": sec(0.2 + 0.01 * s, test_iou),
                  "reference": {sp: {"copy": sec(0.0123, 0.3), "majority": sec(0.0, 0.1)} for sp in ("val", "test")}}
            write_json(m / "eval" / f"{name}.json", ev)
            res = lambda f: {"final_iou": f, "final_exact_match": 0.1, "steps_to_threshold": 20.0 + s,  # noqa: E731
                             "reached": 0.5, "wall_time_s": 1.0}
            ft = {"none": res(0.2), method: res(0.7), "full": res(0.8), "method": method,
                  "tasks": {t: {how: res(0.7) for how in ("none", method, "full")} for t in ("a+b+c", "b+c+d")}}
            write_json(m / "finetune" / f"{name}.json", ft)
            _write_csv(m / "finetune" / f"{name}.curve.csv",
                       [{"step": st, "iou_none": 0.2, "exact_match_none": 0.0, "iou_adapted": 0.2 + 0.01 * st,
                         "exact_match_adapted": 0.0, "iou_full": 0.2 + 0.02 * st, "exact_match_full": 0.0}
                        for st in (0, 10, 20)])
            _write_csv(m / "train" / name / "metrics.csv",
                       [{"step": st, "step_time_ms": 12.5 if arm == "share" else 10.0,
                         "val/iou": (0.1 * st / 100 if st % 100 == 0 else "")} for st in range(0, 401, 50)])
    write_json(m / "summary.json", summarize_runs(SEEDS, m / "eval", m / "finetune", m / "train", method))
    hyp = {}
    for key, (group, claim, direction) in HYPOTHESIS_KEYS.items():
        s = rng.normal(0.5, 0.01, size=(2, 20))
        hyp[key] = {**hypothesis_entry(s + 0.1, s, direction, n_boot=200, claim=claim), "hypothesis": group}
    hyp["H1_exact_match"]["effect"] = 0.1234
    write_json(m / "hypotheses.json", hyp)
    a = m / "analysis"
    mats = {"jaccard": np.eye(T), "h3_pairs_jaccard": rng.uniform(size=T * (T - 1) // 2),
            "layer_cka_share_vs_baseline": np.full((len(LAYERS), len(LAYERS)), 0.5)}
    for arm in ("share", "baseline"):
        mats[f"{arm}_task_cka"] = rng.uniform(size=(len(LAYERS), T, T))
        mats[f"{arm}_task_subspace"] = rng.uniform(size=(T, T))
        mats[f"{arm}_selectivity"] = rng.uniform(size=(S_UNITS, len(PRIMS)))
        mats[f"{arm}_h3_pairs_cka"] = rng.uniform(size=T * (T - 1) // 2)
        mats[f"{arm}_h3_pairs_subspace"] = rng.uniform(size=T * (T - 1) // 2)
        mats[f"{arm}_top_index"] = np.array([[0, 1]])
        mats[f"{arm}_top_inputs"] = rng.integers(0, 10, size=(1, 2, 4, 8, 8)).astype(np.uint8)
        mats[f"{arm}_top_outputs"] = rng.integers(0, 10, size=(1, 2, 4, 8, 8)).astype(np.uint8)
    a.mkdir(parents=True)
    np.savez_compressed(a / "matrices.npz", **mats)
    per_seed = {arm: {"rho_cka": [0.6543, 0.5], "rho_subspace": [0.4, 0.3], "probe_h": [0.8, 0.81],
                      "probe_z": [0.7, 0.72], "monosemanticity": [0.9, 0.91], "step_time_ms": [12.5, 12.5],
                      "probe_h_per_primitive": [[0.8, 0.9, None]] * 2, "probe_z_per_primitive": [[0.7, 0.6, 0.5]] * 2,
                      "monosemanticity_per_primitive": [[0.9, 0.9, 0.9]] * 2} for arm in ("share", "baseline")}
    write_json(a / "analysis.json", {
        "layers": LAYERS, "arms": ["share", "baseline"], "seeds": SEEDS, "primitives": PRIMS,
        "seed0": {"task_cka_debiased": {arm: [True] * len(LAYERS) for arm in ("share", "baseline")},
                  "top_units": {arm: [{"unit": 3, "primitive": "flip", "auroc": 0.9876, "activations": [1.5, 1.2]}]
                                for arm in ("share", "baseline")}},
        "probe": {"programs": T, "episodes_per_program": E, "n_pairs": T * (T - 1) // 2, "labels": [["flip"]] * T},
        "task_cka_estimator": "debiased", "layer_cka_estimator": "biased", "subspace_k": 2,
        "finetune": {"method": method, "tasks": ["a+b+c", "b+c+d"], "threshold": 0.8},
        "n_fit": 100, "n_test": 32, "dataset_checksums": {"train": "sha-fixture-1"},
        "per_seed": per_seed, "per_seed_test_means": {}, "wall_time_s": 1.0})
    cfg_dir = root / "models" / "share-seed0"
    cfg_dir.mkdir(parents=True)
    cfg_dir.joinpath("config.yaml").write_text(yaml.safe_dump({"arm": "share", "seed": 0, "loss": {"beta": 0.777},
                                                               "train": {"steps": 800}, "model": {"h_dim": 128}}))
    return m


def test_report_documents_figures_and_numbers(tmp_path):
    params = _params()
    m = _fixture(tmp_path)
    docs = tmp_path / "docs"
    paths = write_report(params, m, m / "analysis", tmp_path / "models", docs)
    summary = (docs / "results_summary.md").read_text()
    report = (docs / "analysis_report.md").read_text()
    assert docs / "results_summary.md" in paths and docs / "analysis_report.md" in paths
    for name in FIGURES:
        f = docs / "figures" / "report" / name
        assert f.is_file() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"figures/report/{name}" in report, name
    # numbers from the fixture files, formatted
    assert "0.4321" in summary and "0.4321" in report          # share test IoU (eval json -> summary.json)
    assert "+0.1234" in summary and "+0.1234" in report        # H1 effect from hypotheses.json
    assert "0.0123" in summary                                  # copy baseline exact match
    assert "12.5000" in summary                                 # training step time from metrics.csv
    assert "0.6543" in report and "0.9876" in report            # per-seed rho, top unit AUROC (analysis.json)
    for key in HYPOTHESIS_KEYS:
        assert f"| {key} |" in summary
    assert "supported" in summary and "refuted" in summary      # direction -1 key with a positive effect is refuted
    assert "uv run mcl report" in summary and "uv run dvc repro" in report
    # experiment log
    assert "Experiment log (実験ログ)" in report
    assert "fixture-version-abc" in report and "sha-fixture-1" in report
    assert "0.777" in report                                     # from models/share-seed0/config.yaml
    assert "params.yaml (no config.yaml found)" in report        # the other runs fall back to params
    assert "**debiased** estimator" in report and "Biased CKA on the test split" in report


def test_report_missing_hypotheses_names_the_file(tmp_path):
    m = _fixture(tmp_path)
    (m / "hypotheses.json").unlink()
    with pytest.raises(FileNotFoundError, match="hypotheses.json"):
        write_report(_params(), m, m / "analysis", tmp_path / "models", tmp_path / "docs")


def test_cli_report(tmp_path):
    from click.testing import CliRunner

    from mcl.cli import cli

    m = _fixture(tmp_path)
    raw = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    raw["train"]["seeds"] = SEEDS
    raw["analysis"]["n_boot"] = 200
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(cli, ["report", "--params", str(tmp_path / "params.yaml"), "--metrics-dir", str(m),
                                   "--analysis-dir", str(m / "analysis"), "--models-dir", str(tmp_path / "models"),
                                   "--docs-dir", str(tmp_path / "docs")])
    assert res.exit_code == 0, res.output
    assert "results_summary.md" in res.output
    assert json.loads((m / "hypotheses.json").read_text())["H1_exact_match"]["effect"] == 0.1234
