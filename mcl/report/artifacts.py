"""Everything the report formats, read once: metrics files, analysis outputs and run configs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from mcl.config import ARMS, Params, arm_params, run_name, to_dict
from mcl.io import read_csv, read_json


@dataclass
class Artifacts:
    """The inputs of the report (see :func:`load_artifacts`).

    Attributes
    ----------
    seeds : list of int
        ``train.seeds``.
    runs : dict
        Arm -> its run names, one per seed.
    oracle_runs : list of str
        Runs of the oracle-task control (``train.oracle_seeds``).
    summary : dict
        ``metrics/summary.json``.
    analysis : dict
        ``metrics/analysis/analysis.json``.
    hypotheses : dict
        ``metrics/hypotheses.json``, each entry laid over its decided entry in ``analysis["hypotheses"]``.
    evals, finetune : dict
        Arm -> run -> ``metrics/eval/<run>.json`` and ``metrics/finetune/<run>.json``.
    oracle_evals : dict
        Oracle run -> ``metrics/eval/<run>.json``.
    finetune_curves, train_logs : dict
        Arm -> run -> rows of ``metrics/finetune_curves/<run>.csv`` and ``metrics/train/<run>/metrics.csv``.
    oracle_train_logs : dict
        Oracle run -> rows of its training log, for the runs that have one.
    matrices : dict
        ``metrics/analysis/matrices.npz``.
    examples : dict
        Arm (and "oracle") -> (its first run, the arrays of ``metrics/eval/<run>.examples.npz``).
    configs : dict
        Run -> (its resolved config, where that came from); the arms' runs, then the oracle's.
    """

    seeds: list[int]
    runs: dict[str, list[str]]
    oracle_runs: list[str]
    summary: dict
    analysis: dict
    hypotheses: dict
    evals: dict[str, dict[str, dict]]
    finetune: dict[str, dict[str, dict]]
    oracle_evals: dict[str, dict]
    finetune_curves: dict[str, dict[str, list[dict[str, str]]]]
    train_logs: dict[str, dict[str, list[dict[str, str]]]]
    oracle_train_logs: dict[str, list[dict[str, str]]]
    matrices: dict[str, np.ndarray]
    examples: dict[str, tuple[str, dict[str, np.ndarray]]]
    configs: dict[str, tuple[dict, str]]

    @property
    def decided(self) -> dict:
        """The decided hypothesis entries of ``analysis.json`` (p-values, MDE, delta, claim, ...)."""
        return self.analysis.get("hypotheses", {})

    @property
    def learning_logs(self) -> dict[str, dict[str, list[dict[str, str]]]]:
        """Training logs of the arms, plus the oracle's where it has any."""
        return {**self.train_logs, "oracle": self.oracle_train_logs} if self.oracle_train_logs else self.train_logs


def logged_curve(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(step, value) of the log rows where ``key`` is filled."""
    pts = []
    for r in rows:
        v = r.get(key)
        if v in (None, "", "nan"):
            continue
        try:
            pts.append((float(r["step"]), float(v)))
        except ValueError:
            continue
    if not pts:
        return np.zeros(0), np.zeros(0)
    a = np.array(pts)
    return a[:, 0], a[:, 1]


def mean_logged_curve(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over runs of (step, value) curves, at the steps every run logged."""
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return np.zeros(0), np.zeros(0)
    steps = sorted(set.intersection(*[set(c[0].tolist()) for c in curves]))
    vals = [np.mean([c[1][list(c[0]).index(s)] for c in curves]) for s in steps]
    return np.array(steps), np.array(vals)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _run_config(params: Params, models_dir: Path, arm: str, run: str) -> tuple[dict, str]:
    """``models/<run>/config.yaml``, else the config ``params.yaml`` gives the run; with its source."""
    path = models_dir / run / "config.yaml"
    if path.is_file():
        return yaml.safe_load(path.read_text()), f"`{path}`"
    cfg = {"arm": arm, "seed": int(run.rsplit("seed", 1)[1]), **to_dict(arm_params(params, arm))}
    return cfg, "params.yaml (no config.yaml found)"


def load_artifacts(params: Params, metrics_dir: Path, analysis_dir: Path, models_dir: Path) -> Artifacts:
    """Read every input of the report.

    Parameters
    ----------
    params : Params
        The run's parameters (seeds, oracle seeds; the fallback for a missing config.yaml).
    metrics_dir, analysis_dir, models_dir : Path
        ``metrics/``, ``metrics/analysis/`` and ``models/``.

    Returns
    -------
    Artifacts

    Raises
    ------
    FileNotFoundError
        Naming the file, when a required one is missing.
    """
    metrics_dir, analysis_dir, models_dir = map(Path, (metrics_dir, analysis_dir, models_dir))
    runs = {arm: [run_name(arm, s) for s in params.train.seeds] for arm in ARMS}
    oracle_runs = [run_name("oracle", s) for s in params.train.oracle_seeds]
    summary = read_json(metrics_dir / "summary.json")
    analysis = read_json(analysis_dir / "analysis.json")
    decided = analysis.get("hypotheses", {})
    # the metric file holds the headline fields; the decided entries (p, MDE, role, ...) are in analysis.json
    hypotheses = {k: ({**decided.get(k, {}), **v} if isinstance(v, dict) else v)
                  for k, v in read_json(metrics_dir / "hypotheses.json").items()}
    evals = {arm: {r: read_json(metrics_dir / "eval" / f"{r}.json") for r in runs[arm]} for arm in ARMS}
    finetune = {arm: {r: read_json(metrics_dir / "finetune" / f"{r}.json") for r in runs[arm]} for arm in ARMS}
    curves = {arm: {r: read_csv(metrics_dir / "finetune_curves" / f"{r}.csv") for r in runs[arm]} for arm in ARMS}
    train = {arm: {r: read_csv(metrics_dir / "train" / r / "metrics.csv") for r in runs[arm]} for arm in ARMS}
    oracle_logs = {r: metrics_dir / "train" / r / "metrics.csv" for r in oracle_runs}
    first_runs = {arm: runs[arm][0] for arm in ARMS} | ({"oracle": oracle_runs[0]} if oracle_runs else {})
    all_runs = [(arm, r) for arm in ARMS for r in runs[arm]] + [("oracle", r) for r in oracle_runs]
    return Artifacts(
        seeds=list(params.train.seeds), runs=runs, oracle_runs=oracle_runs, summary=summary, analysis=analysis,
        hypotheses=hypotheses, evals=evals, finetune=finetune,
        oracle_evals={r: read_json(metrics_dir / "eval" / f"{r}.json") for r in oracle_runs},
        finetune_curves=curves, train_logs=train,
        oracle_train_logs={r: read_csv(p) for r, p in oracle_logs.items() if p.is_file()},
        matrices=_load_npz(analysis_dir / "matrices.npz"),
        examples={who: (r, _load_npz(metrics_dir / "eval" / f"{r}.examples.npz")) for who, r in first_runs.items()},
        configs={r: _run_config(params, models_dir, arm, r) for arm, r in all_runs})
