"""Seeds trained side by side: the same bytes as alone, exact resume after SIGKILL, the benchmarks."""

from __future__ import annotations

import json
import operator
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcl.studies.reproducibility import weights_digest
from mcl.models.checkpoint import load_checkpoint
from mcl.processes import map_processes
from mcl.training.pool import pool_workers, train_seeds

SEEDS = [0, 1]
FILES = ("metrics.csv", "metrics.json", "sae_log_density.csv")


def outputs(models: Path, metrics: Path, arm: str = "share") -> dict:
    """Per seed: the weights digests of last.pt / best.pt and the bytes of the metrics files."""
    out = {}
    for s in SEEDS:
        run, log = models / arm / f"seed{s}", metrics / arm / f"seed{s}"
        out[s] = {ckpt: weights_digest(load_checkpoint(run / ckpt)["model"]) for ckpt in ("last.pt", "best.pt")}
        out[s].update({f: (log / f).read_bytes() for f in FILES})
    return out


def test_pool_workers():
    assert pool_workers(0, 1, 5, cores=2) == 2
    assert pool_workers(0, 2, 5, cores=2) == 1
    assert pool_workers(0, 1, 1, cores=16) == 1      # never more workers than runs
    assert pool_workers(3, 1, 5, cores=2) == 3       # an explicit request wins over the core count
    assert pool_workers(0, 4, 5, cores=2) == 1       # at least one


@pytest.mark.parametrize("workers", [1, 2])
def test_map_processes_keeps_order_and_raises_the_first_failure(workers):
    assert map_processes(operator.sub, [(5, 1), (3, 4), (0, 2)], workers, "sub", progress=False) == [4, -1, -2]
    with pytest.raises(ZeroDivisionError):
        map_processes(operator.truediv, [(1, 1), (1, 0)], workers, "div", progress=False)


def test_finetune_side_by_side_equals_alone(write_tiny_params, make_tiny_params, run_mcl, tmp_path):
    """Each seed's few-shot curves and results (all but the wall time) are the same adapted alone or beside
    another seed."""
    over = {"train.seeds": SEEDS, "finetune.lr": 0.05}   # a large step: the curves move within the tiny budget
    params = write_tiny_params(tmp_path / "params.yaml", over)
    train_seeds(make_tiny_params(over), {"share": SEEDS}, tmp_path / "models", tmp_path / "metrics",
                workers=2, tensorboard=False, progress=False)
    got = {}
    for workers in (1, 2):
        out = tmp_path / f"finetune{workers}"
        proc = run_mcl(["finetune", "--params", params, "--arm", "share", "--workers", workers,
                        "--models-dir", tmp_path / "models", "--out-dir", out, "--curves-dir", out / "curves"],
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert [line.split(":")[0] for line in proc.stdout.splitlines()] == [f"share/seed{s}" for s in SEEDS]
        got[workers] = {s: ((out / f"curves/share/seed{s}.csv").read_bytes(),
                            json.loads(re.sub(r'"wall_time_s": [^,}]+', '"wall_time_s": 0',
                                              (out / f"share/seed{s}.json").read_text()))) for s in SEEDS}
    assert got[1] == got[2]
    assert got[1][0][0] != got[1][1][0]  # the seeds really differ


def count_steps(n: int, queue) -> tuple[int, bool]:
    """A job that reports ``n`` steps, one at a time, on the queue it is given (if any)."""
    for _ in range(n if queue is not None else 0):
        queue.put(1)
    return n, queue is not None


@pytest.mark.parametrize("workers", [1, 2])
def test_map_processes_counting_steps_hands_each_job_a_queue_if_it_shows_a_bar(workers):
    jobs = [(3,), (2,)]
    assert map_processes(count_steps, jobs, workers, "steps", progress=True, steps=5) == [(3, True), (2, True)]
    assert map_processes(count_steps, jobs, workers, "steps", progress=False, steps=5) == [(3, False), (2, False)]
    assert map_processes(operator.neg, [(1,), (2,)], workers, "neg", progress=True) == [-1, -2]   # no queue


@pytest.fixture(scope="module")
def serial(make_tiny_params, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("serial")
    train_seeds(make_tiny_params({"train.seeds": SEEDS}), {"share": SEEDS}, root / "models", root / "metrics",
                workers=1, tensorboard=False, progress=False)
    return outputs(root / "models", root / "metrics")


def test_parallel_equals_serial(make_tiny_params, tmp_path, serial):
    """Each seed's weights and metrics files are the same bytes trained alone or beside another seed."""
    train_seeds(make_tiny_params({"train.seeds": SEEDS}), {"share": SEEDS}, tmp_path / "models", tmp_path / "metrics",
                workers=2, tensorboard=False, progress=False)
    got = outputs(tmp_path / "models", tmp_path / "metrics")
    assert got == serial
    assert got[0]["last.pt"] != got[1]["last.pt"]  # the seeds really differ


def test_killed_pool_resumes_exactly(write_tiny_params, run_mcl, mcl_env, tmp_path):
    """SIGKILL the whole pool (main process and workers) once every seed has a checkpoint; `--resume` then
    ends with exactly the outputs of an uninterrupted pool."""
    over = {"train.seeds": SEEDS, "train.steps": 120, "train.checkpoint_every": 10, "train.eval_every": 20,
            "train.log_every": 10}
    params = write_tiny_params(tmp_path / "params.yaml", over)
    args = ["train", "--params", params, "--arm", "share", "--workers", "2", "--no-tensorboard"]

    def dirs(name):
        return ["--models-dir", tmp_path / name / "models", "--metrics-dir", tmp_path / name / "metrics"]

    proc = subprocess.Popen([sys.executable, "-m", "mcl.cli", *map(str, args + dirs("killed"))], cwd=tmp_path,
                            env=mcl_env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lasts = [tmp_path / "killed" / "models" / "share" / f"seed{s}" / "last.pt" for s in SEEDS]
    deadline = time.monotonic() + 240
    while not all(p.exists() for p in lasts) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = [int(load_checkpoint(p)["step"]) for p in lasts]
    assert min(steps) < over["train.steps"], f"the pool finished before the kill (steps {steps}): nothing resumed"

    resumed = run_mcl(args + dirs("killed") + ["--resume"], cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    whole = run_mcl(args + dirs("whole"), cwd=tmp_path, timeout=300)
    assert whole.returncode == 0, whole.stderr
    assert (outputs(tmp_path / "killed" / "models", tmp_path / "killed" / "metrics")
            == outputs(tmp_path / "whole" / "models", tmp_path / "whole" / "metrics"))


def test_bench_parallel_prints_both_times_and_ratio(write_tiny_params, run_mcl, tmp_path):
    """Runs without any store (a fresh clone has none): it generates its own in a temporary folder."""
    params = write_tiny_params(tmp_path / "params.yaml", {"data.store": "data/missing.zarr"})
    proc = run_mcl(["bench", "train", "--params", params, "--parallel", "--seeds", "2", "--steps", "4"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    serial = float(out.split("one after another: ")[1].split(" s")[0])
    parallel = float(out.split("side by side (2 processes): ")[1].split(" s")[0])
    ratio = float(out.split("ratio side by side / one after another: ")[1].split(" ")[0])
    assert ratio == pytest.approx(parallel / serial, rel=0.02)  # times printed to 0.01 s
    assert "final weights identical per seed: yes" in out
    assert not (tmp_path / "data").exists()


def test_bench_share_runs_without_a_store(write_tiny_params, run_mcl, tmp_path):
    params = write_tiny_params(tmp_path / "params.yaml", {"data.store": "data/missing.zarr"})
    proc = run_mcl(["bench", "share", "--params", params], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Gram route" in proc.stdout and "share loss" in proc.stdout


def test_bench_train_prints_the_default_and_the_previous_model_side_by_side(write_tiny_params, run_mcl, tmp_path):
    params = write_tiny_params(tmp_path / "params.yaml", {"data.store": "data/missing.zarr"})
    proc = run_mcl(["bench", "train", "--params", params, "--steps", "4"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    bare = float(out.split("bare forward/backward/step on a pre-built batch: ")[1].split(" ms")[0])
    previous = float(out.split("transformer executor, no co-training), bare step: ")[1].split(" ms")[0])
    ratio = float(out.split("default / previous: ")[1].split()[0])
    assert ratio == pytest.approx(bare / previous, rel=0.1)  # the two times are printed to 0.1 ms
