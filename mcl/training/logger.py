"""Training logs written three ways: DVCLive (for `dvc exp show` / `dvc plots`), TensorBoard, and a CSV.

All rows are kept in memory and ``metrics.csv`` is rewritten atomically at each log, so a
resumed run can drop the rows after its checkpoint and replay the rest: the logs of a
killed-and-resumed run equal those of an uninterrupted one.

Wall-clock figures (``step_time_ms``, ``wall_time_s``) go to ``timing.csv`` only, never to
``metrics.csv`` or DVCLive: identical reruns then give identical metrics files.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from dvclive import Live
from scmrepo.exceptions import SCMError

from mcl.io import write_csv


class _LiveWithoutRepo(Live):
    """DVCLive without its DVC/git integration, which dvcyaml=None and save_dvc_exp=False do not need."""

    def _init_dvc(self):
        pass


class RunLogger:
    """Logs rows of scalars keyed by step.

    Parameters
    ----------
    metrics_dir : folder for ``metrics.csv`` and the DVCLive files (``metrics.json``, ``plots/``)
    tb_dir : TensorBoard log folder, or None to skip TensorBoard
    resume_step : keep the rows of an existing ``metrics.csv`` up to this step (None: start fresh)
    """

    def __init__(self, metrics_dir: str | os.PathLike, tb_dir: str | os.PathLike | None, resume_step: int | None = None):
        self.dir = Path(metrics_dir)
        self.csv_path = self.dir / "metrics.csv"
        self.timing_path = self.dir / "timing.csv"
        self.rows = _read_rows(self.csv_path, resume_step)
        self.timing_rows = _read_rows(self.timing_path, resume_step)
        # DVCLive: dvcyaml=None and save_dvc_exp=False so it never rewrites the root dvc.yaml;
        # the metrics and plots are declared in dvc.yaml.
        kwargs = dict(resume=False, dvcyaml=None, save_dvc_exp=False, report=None)
        try:
            self.live = Live(str(self.dir), **kwargs)
        except SCMError:  # DVCLive asks git for HEAD, which fails in a repo without commits
            self.live = _LiveWithoutRepo(str(self.dir), **kwargs)
        self.tb = None
        if tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(tb_dir), purge_step=None if resume_step is None else resume_step + 1)
        for row in self.rows:  # replay kept rows so DVCLive's files match an uninterrupted run
            self._live_row(row)

    def _live_row(self, row: dict) -> None:
        self.live.step = int(row["step"])
        for key, value in sorted(row.items()):  # sorted: a replayed (resumed) row writes the same bytes
            if key != "step" and not math.isnan(value):
                self.live.log_metric(key, value)
        self.live.make_summary()

    def log(self, step: int, values: dict[str, float], timing: dict[str, float] | None = None) -> None:
        """Log ``values`` (metrics: CSV, DVCLive, TensorBoard) and ``timing`` (timing.csv, TensorBoard)."""
        row = {"step": float(step), **{k: float(v) for k, v in values.items()}}
        self.rows.append(row)
        self._live_row(row)
        if self.tb is not None:
            for key, value in {**values, **(timing or {})}.items():
                self.tb.add_scalar(key, value, step)
        _write_rows(self.csv_path, self.rows)
        if timing:
            self.timing_rows.append({"step": float(step), **{k: float(v) for k, v in timing.items()}})
            _write_rows(self.timing_path, self.timing_rows)

    def close(self) -> None:
        self.live.end()
        if self.tb is not None:
            self.tb.close()


def _read_rows(path: Path, resume_step: int | None) -> list[dict]:
    """Rows of a logged CSV up to ``resume_step`` (None: start fresh, no rows)."""
    if resume_step is None or not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    return [r for r in rows if r["step"] <= resume_step]


def _write_rows(path: Path, rows: list[dict]) -> None:
    keys = ["step"] + sorted({k for r in rows for k in r} - {"step"})
    write_csv(path, keys, ({k: (int(v) if k == "step" else repr(v)) for k, v in r.items()} for r in rows))
