"""The training loop, its checkpoints and logs, and the `mcl train` command.

In-process runs use tiny params (conftest ``make_tiny_params``) and one thread; the CLI runs
are subprocesses (``python -m mcl.cli``) with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mcl.config import to_dict
from mcl.errors import CheckpointError, NonFiniteLossError
from mcl.training import trainer as trainer_mod
from mcl.models.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from mcl.config import arm_params
from mcl.models.build import build_model, load_trained
from mcl.training.trainer import lr_at, train

REPO = Path(__file__).parents[1]
TIMING = {"step_time_ms", "wall_time_s"}
LOGGED_KEYS = ("train/task", "train/share", "train/aux", "train/sae", "train/loss", "train/cell_accuracy",
               "train/iou", "train/exact_match", "lr", "grad_norm", "skipped_steps", "manip/effective_rank")
TIMING_KEYS = ("step_time_ms", "wall_time_s")  # in timing.csv only: identical reruns give identical metrics files
VAL_KEYS = ("val/iou", "val/exact_match", "val/cell_accuracy", "val/best_iou")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"tensor {k} differs"


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


def run_inprocess(params, root: Path, arm="share", seed=0, **kw) -> tuple[Path, Path, dict]:
    run_dir, metrics_dir = root / "models" / f"{arm}/seed{seed}", root / "metrics" / f"{arm}/seed{seed}"
    summary = train(params, arm, seed, run_dir, metrics_dir, progress=False, tensorboard=False, **kw)
    return run_dir, metrics_dir, summary


# ---------------------------------------------------------------------------
# the `mcl train` command


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-c", "user.email=t@mcl.invalid", "-c", "user.name=mcl test", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)
    return proc.stdout


@pytest.mark.slow
def test_cli_train_five_steps_batch_two(tmp_path, write_tiny_params, run_mcl):
    """5 steps at batch size 2 through `mcl train`: files, logged keys, and DVCLive leaves dvc.yaml alone."""
    root = tmp_path / "project"
    (root / ".dvc").mkdir(parents=True)
    for rel in ("dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore"):
        shutil.copyfile(REPO / rel, root / rel)
    write_tiny_params(root / "params.yaml", {"train.steps": 5, "train.groups": 1, "train.group_size": 2, "train.cotrain_episodes": 2,
                                              "loss.share.k": 1, "train.log_every": 1, "train.eval_every": 5,
                                              "train.checkpoint_every": 5, "train.warmup_steps": 2})
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "init")
    dvc_yaml = (root / "dvc.yaml").read_bytes()

    proc = run_mcl(["train", "--arm", "share", "--seed", "0"], cwd=root)
    assert proc.returncode == 0, proc.stderr

    run_dir, metrics_dir = root / "models" / "share/seed0", root / "metrics" / "train" / "share/seed0"
    for name in ("config.yaml", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*")), "TensorBoard event file missing"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["arm"] == "share" and config["seed"] == 0
    assert config["train"]["groups"] * config["train"]["group_size"] == 2
    assert load_checkpoint(run_dir / "last.pt", config["model"])["step"] == 5

    rows = read_csv(metrics_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        for key in LOGGED_KEYS:
            assert r.get(key, "") != "", f"step {r['step']}: {key} missing"
            assert math.isfinite(float(r[key])), f"step {r['step']}: {key} = {r[key]}"
        assert 0.0 <= float(r["train/iou"]) <= 1.0
        assert not set(TIMING_KEYS) & set(r)
        assert {"manip/gap", "manip/share_objective", "manip/label_r2"} <= set(r)  # NaN here: groups of 1 episode
    timing = read_csv(metrics_dir / "timing.csv")
    assert [int(r["step"]) for r in timing] == [1, 2, 3, 4, 5]
    assert all(float(r[k]) > 0 for r in timing for k in TIMING_KEYS)
    for key in VAL_KEYS:
        assert 0.0 <= float(rows[-1][key]) <= 1.0, key
    assert all(r.get("val/iou", "") == "" for r in rows[:-1]), "val metrics logged off eval_every"

    live = json.loads((metrics_dir / "metrics.json").read_text())
    assert live["step"] == 5
    assert live["train"]["task"] == pytest.approx(float(rows[-1]["train/task"]))
    assert live["val"]["iou"] == pytest.approx(float(rows[-1]["val/iou"]))
    assert (metrics_dir / "plots").is_dir()

    # DVCLive must neither rewrite the root dvc.yaml nor add its own files outside the run folders.
    assert (root / "dvc.yaml").read_bytes() == dvc_yaml
    assert not (root / "dvclive").exists()
    changed = [line for line in _git(root, "status", "--porcelain", "--untracked-files=all").splitlines()]
    unexpected = [line for line in changed if not line[3:].startswith(("models/", "metrics/"))]
    assert not unexpected, unexpected


def test_logger_creates_no_dvc_yaml(tmp_path, monkeypatch):
    """In a git + DVC repository without a dvc.yaml, logging a run must not create one (nor dvclive/)."""
    from mcl.training.logger import RunLogger

    (tmp_path / ".dvc").mkdir()
    shutil.copyfile(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "init")
    monkeypatch.chdir(tmp_path)
    logger = RunLogger("metrics/train/share/seed0", None)
    for step in (1, 2):
        logger.log(step, {"train/task": 1.0 / step, "val/iou": 0.5})
    logger.close()
    assert json.loads((tmp_path / "metrics/train/share/seed0/metrics.json").read_text())["train"]["task"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dvc", ".git", "metrics"]


def test_logger_works_in_repo_without_commits(tmp_path, monkeypatch):
    from mcl.training.logger import RunLogger

    (tmp_path / ".dvc").mkdir()
    shutil.copyfile(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    _git(tmp_path, "init", "-q")
    monkeypatch.chdir(tmp_path)
    logger = RunLogger("metrics/train/share/seed0", None)
    logger.log(1, {"train/task": 1.0})
    logger.close()
    assert (tmp_path / "metrics/train/share/seed0/metrics.csv").is_file()


def _train_cmd(params: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mcl.cli", "train", "--params", str(params), "--arm", "share", "--seed", "0",
            "--models-dir", str(out / "models"), "--metrics-dir", str(out / "metrics"), "--no-tensorboard", *extra]


def _last_logged_step(csv_path: Path) -> int:
    rows = read_csv(csv_path) if csv_path.exists() else []
    return int(rows[-1]["step"]) if rows else 0


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, write_tiny_params, mcl_env):
    """Kill `mcl train` mid-run, resume: logs (minus timings) and final weights equal an uninterrupted run."""
    steps = 150
    params = write_tiny_params(tmp_path / "params.yaml", {"train.steps": steps, "train.checkpoint_every": 5,
                                                          "train.log_every": 2, "train.eval_every": 20,
                                                          "train.warmup_steps": 10,
                                                          "model.dropout": 0.1})  # consumes the torch RNG
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    ref = subprocess.Popen(_train_cmd(params, reference), cwd=tmp_path, env=mcl_env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_train_cmd(params, killed), cwd=tmp_path, env=mcl_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir, metrics_dir = killed / "models" / "share/seed0", killed / "metrics" / "share/seed0"
    last = run_dir / "last.pt"
    seen = None
    try:
        deadline = time.monotonic() + 240
        while victim.poll() is None and time.monotonic() < deadline:
            # kill once a checkpoint at step >= 10 exists and rows past it are logged (the resume must drop them)
            if last.exists():
                ckpt_step = load_checkpoint(last)["step"]  # every checkpoint seen must load
                logged = _last_logged_step(metrics_dir / "metrics.csv")
                if ckpt_step >= 10 and logged > ckpt_step:
                    os.kill(victim.pid, signal.SIGKILL)
                    seen = (ckpt_step, logged)
                    break
            time.sleep(0.002)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert victim.returncode == -signal.SIGKILL and seen, "the run ended before it could be killed: raise train.steps"

    # the last good checkpoint survives the kill and is loadable; the CSV is never half-written
    state = load_checkpoint(last)
    assert seen[0] <= state["step"] < steps and state["step"] % 5 == 0
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    if (run_dir / "best.pt").exists():
        load_checkpoint(run_dir / "best.pt")
    assert seen[1] <= _last_logged_step(metrics_dir / "metrics.csv") < steps

    resumed = subprocess.run(_train_cmd(params, killed, "--resume"), cwd=tmp_path, env=mcl_env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert ref.wait(timeout=300) == 0, ref.stderr.read()

    ref_run, ref_metrics = reference / "models" / "share/seed0", reference / "metrics" / "share/seed0"
    got, want = read_csv(metrics_dir / "metrics.csv"), read_csv(ref_metrics / "metrics.csv")
    assert [int(r["step"]) for r in want] == list(range(2, steps + 1, 2))
    assert list(got[0]) == list(want[0]), "columns differ"
    assert len(got) == len(want)
    for g, w in zip(without_timing(got), without_timing(want)):
        assert g == w, f"row at step {w['step']} differs"
    assert_same_tensors(model_tensors(run_dir / "last.pt"), model_tensors(ref_run / "last.pt"))
    assert_same_tensors(model_tensors(run_dir / "best.pt"), model_tensors(ref_run / "best.pt"))

    # DVCLive's files too: the summary and every plot series (the kept rows are replayed on resume)
    live_got = json.loads((metrics_dir / "metrics.json").read_text())
    live_want = json.loads((ref_metrics / "metrics.json").read_text())
    for d in (live_got, live_want):
        for key in TIMING:
            d.pop(key, None)
    assert live_got == live_want
    plots = sorted(p.relative_to(ref_metrics) for p in (ref_metrics / "plots").rglob("*.tsv")
                   if p.stem not in TIMING)
    assert plots and plots == sorted(p.relative_to(metrics_dir) for p in (metrics_dir / "plots").rglob("*.tsv")
                                     if p.stem not in TIMING)
    for rel in plots:
        assert (metrics_dir / rel).read_text() == (ref_metrics / rel).read_text(), rel


# ---------------------------------------------------------------------------
# in-process training


def test_same_seed_same_run_other_seed_other_weights(tmp_path, make_tiny_params):
    params = make_tiny_params({"train.log_every": 1})
    a_run, a_metrics, a_summary = run_inprocess(params, tmp_path / "a")
    b_run, b_metrics, _ = run_inprocess(params, tmp_path / "b")
    c_run, _, _ = run_inprocess(params, tmp_path / "c", seed=1)

    rows_a, rows_b = read_csv(a_metrics / "metrics.csv"), read_csv(b_metrics / "metrics.csv")
    assert len(rows_a) == params.train.steps
    assert without_timing(rows_a) == without_timing(rows_b)
    assert_same_tensors(model_tensors(a_run / "last.pt"), model_tensors(b_run / "last.pt"))
    assert_same_tensors(model_tensors(a_run / "best.pt"), model_tensors(b_run / "best.pt"))
    a, c = model_tensors(a_run / "last.pt"), model_tensors(c_run / "last.pt")
    assert any(not torch.equal(a[k], c[k]) for k in a), "seed 1 trained the same weights as seed 0"
    assert a_summary["steps"] == params.train.steps
    assert a_summary["final"]["step"] == params.train.steps


def test_arm_params_forces_beta_only_for_baseline(tiny_params):
    assert tiny_params.loss.beta > 0
    assert arm_params(tiny_params, "share") == tiny_params
    base = arm_params(tiny_params, "baseline")
    assert base.loss.beta == 0.0
    assert to_dict(base) == {**to_dict(tiny_params), "loss": {**to_dict(tiny_params.loss), "beta": 0.0}}
    assert tiny_params.loss.beta > 0  # the input is not modified
    with pytest.raises(ValueError, match="arm"):
        arm_params(tiny_params, "shared")


def test_share_arm_logs_share_loss_baseline_logs_zero(tmp_path, make_tiny_params):
    params = make_tiny_params({"train.steps": 6, "train.groups": 4, "train.log_every": 1, "train.eval_every": 6,
                               "loss.schedule.beta.end": 2})
    share_run, share_metrics, _ = run_inprocess(params, tmp_path, "share")
    base_run, base_metrics, _ = run_inprocess(params, tmp_path, "baseline")

    share_rows, base_rows = read_csv(share_metrics / "metrics.csv"), read_csv(base_metrics / "metrics.csv")
    after_warmup = [r for r in share_rows if int(r["step"]) - 1 >= 2]  # logged step = loop step + 1
    assert after_warmup
    assert all(float(r["train/w_beta"]) == pytest.approx(params.loss.beta) for r in after_warmup)
    assert any(float(r["train/share"]) > 0 for r in after_warmup)
    assert all(float(r["train/share"]) == 0.0 and float(r["train/w_beta"]) == 0.0 for r in base_rows)

    assert yaml.safe_load((base_run / "config.yaml").read_text())["loss"]["beta"] == 0.0
    assert yaml.safe_load((share_run / "config.yaml").read_text())["loss"]["beta"] == params.loss.beta
    assert load_checkpoint(base_run / "last.pt")["config"]["loss"]["beta"] == 0.0


def test_lr_schedule():
    base, warmup, total = 1.0e-2, 10, 110
    assert lr_at(0, base, warmup, total) == pytest.approx(base / warmup)
    assert lr_at(4, base, warmup, total) == pytest.approx(base * 5 / warmup)
    assert lr_at(warmup - 1, base, warmup, total) == pytest.approx(base)
    assert lr_at(warmup, base, warmup, total) == pytest.approx(base)  # cosine starts at the peak
    assert lr_at(warmup + 50, base, warmup, total) == pytest.approx(base * (0.05 + 0.95 * 0.5))
    assert lr_at(total, base, warmup, total) == pytest.approx(0.05 * base)  # floor: 5% of base
    assert lr_at(total + 100, base, warmup, total) == pytest.approx(0.05 * base)
    # decay over the last quarter only: constant until 75% of the steps, halfway down at 87.5%
    assert lr_at(warmup + 10, base, warmup, 120, 0.25) == pytest.approx(base)
    assert lr_at(90, base, warmup, 120, 0.25) == pytest.approx(base)
    assert lr_at(105, base, warmup, 120, 0.25) == pytest.approx(base * (0.05 + 0.95 * 0.5))
    assert lr_at(120, base, warmup, 120, 0.25) == pytest.approx(0.05 * base)
    lrs = [lr_at(s, base, warmup, total) for s in range(warmup, total)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and min(lrs) > 0.05 * base
    assert lr_at(0, base, 0, total) == pytest.approx(base)  # no warmup


# ---------------------------------------------------------------------------
# checkpoints


def _checkpoint(params, path: Path) -> Path:
    model = build_model(params, "cpu")
    save_checkpoint(path, {"step": 3, "model": model.state_dict(), "config": to_dict(params)})
    return path


def test_checkpoint_round_trip_and_missing(tmp_path, tiny_params):
    path = _checkpoint(tiny_params, tmp_path / "a" / "last.pt")
    state = load_checkpoint(path, to_dict(tiny_params.model))
    assert state["format"] == FORMAT and state["step"] == 3
    assert not list(path.parent.glob(".*tmp*")), "temporary file left behind"
    model = load_trained(path.parent, tiny_params, which="last")
    assert_same_tensors(model.state_dict(), state["model"])
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an mcl checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_truncated_checkpoint_is_refused(tmp_path, tiny_params):
    path = _checkpoint(tiny_params, tmp_path / "last.pt")
    data = path.read_bytes()
    for cut in (len(data) // 2, 100, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="last.pt"):
            load_checkpoint(path)


def test_checkpoint_from_other_model_config_is_refused(tmp_path, tiny_params, make_tiny_params):
    path = _checkpoint(tiny_params, tmp_path / "run" / "best.pt")
    other = make_tiny_params({"model.d_model": 32, "model.h_dim": 12})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, to_dict(other.model))
    msg = str(err.value)
    assert "model.d_model" in msg and "model.h_dim" in msg
    assert "model.n_heads" not in msg and "model.sae_dim" not in msg
    with pytest.raises(CheckpointError, match="model.d_model"):
        load_trained(path.parent, other)


class _RunsCodeOnLoad:
    """Unpickling this calls open(marker, 'w'): what a crafted checkpoint could do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pickle_is_refused_without_running_code(tmp_path, tiny_params):
    path = _checkpoint(tiny_params, tmp_path / "last.pt")
    state = torch.load(path, weights_only=True)
    marker = tmp_path / "pwned"
    torch.save({**state, "payload": _RunsCodeOnLoad(str(marker))}, path)

    with pytest.raises(CheckpointError, match="refused: the checkpoint holds pickled objects"):
        load_checkpoint(path)
    assert not marker.exists(), "loading the checkpoint ran code"
    with pytest.raises(CheckpointError):
        load_trained(tmp_path, tiny_params, which="last")
    assert not marker.exists()

    # the payload is live: an unsafe load does run it (so the check above means something)
    control = tmp_path / "control"
    torch.save({"payload": _RunsCodeOnLoad(str(control))}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()


def test_cli_evaluate_truncated_best_checkpoint(tmp_path, write_tiny_params, tiny_trained_run, run_mcl):
    write_tiny_params(tmp_path / "params.yaml")
    run_dir = tmp_path / "models" / "share/seed0"
    shutil.copytree(tiny_trained_run, run_dir)
    data = (run_dir / "best.pt").read_bytes()
    (run_dir / "best.pt").write_bytes(data[: len(data) // 2])

    proc = run_mcl(["evaluate", "--arm", "share", "--seed", "0", "--out", "eval.json"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert "best.pt" in line
    assert not (tmp_path / "eval.json").exists()


# ---------------------------------------------------------------------------
# non-finite losses


def _inject_nan(monkeypatch, bad_steps, kind: str):
    """At the given loop steps, make the real LossManager see NaN logits (kind 'task': NaN task loss) or add
    ``0 * sqrt(0 * h)`` to its total (kind 'gradient': the loss stays finite, its gradient is NaN)."""
    original = trainer_mod.LossManager.__call__
    signature = inspect.signature(original)

    def patched(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bad = bad_steps(bound.arguments["step"])
        if bad and kind == "task":
            bound.arguments["logits"] = bound.arguments["logits"] * float("nan")
        total, comps = original(*bound.args, **bound.kwargs)
        if bad and kind == "gradient":
            total = total + 0.0 * torch.sqrt((bound.arguments["h"] * 0.0).sum())
            assert math.isfinite(float(total.detach()))
        return total, comps

    monkeypatch.setattr(trainer_mod.LossManager, "__call__", patched)


def _record_checkpoints(monkeypatch) -> list[tuple[str, int, str, dict]]:
    """Wrap the trainer's save_checkpoint: (file name, step, sha256 of the file, model tensors) per save."""
    saved = []
    original = trainer_mod.save_checkpoint

    def wrapper(path, state):
        original(path, state)
        saved.append((Path(path).name, state["step"], hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                      {k: v.clone() for k, v in state["model"].items()}))

    monkeypatch.setattr(trainer_mod, "save_checkpoint", wrapper)
    return saved


@pytest.mark.parametrize("kind", ["task", "gradient"])
def test_nonfinite_stop_raises_and_keeps_last_good_checkpoint(tmp_path, make_tiny_params, monkeypatch, kind):
    params = make_tiny_params({"train.steps": 10, "train.checkpoint_every": 2, "train.log_every": 2,
                               "train.eval_every": 4, "train.nonfinite": "stop"})
    _inject_nan(monkeypatch, lambda step: step >= 5, kind)
    saved = _record_checkpoints(monkeypatch)
    run_dir = tmp_path / "models" / "share/seed0"
    with pytest.raises(NonFiniteLossError) as err:
        run_inprocess(params, tmp_path)
    msg = str(err.value)
    assert "step 5" in msg and f"non-finite {kind}" in msg, msg

    last_saves = [s for s in saved if s[0] == "last.pt"]
    assert [s[1] for s in last_saves] == [2, 4]
    state = load_checkpoint(run_dir / "last.pt", to_dict(params.model))
    assert state["step"] == 4
    assert hashlib.sha256((run_dir / "last.pt").read_bytes()).hexdigest() == last_saves[-1][2]
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    rows = read_csv(tmp_path / "metrics" / "share/seed0" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 4]


@pytest.mark.parametrize("kind", ["task", "gradient"])
def test_nonfinite_skip_counts_and_does_not_update(tmp_path, make_tiny_params, monkeypatch, kind):
    params = make_tiny_params({"train.steps": 8, "train.checkpoint_every": 1, "train.log_every": 1,
                               "train.eval_every": 8, "train.nonfinite": "skip"})
    _inject_nan(monkeypatch, lambda step: step in (2, 5), kind)
    saved = _record_checkpoints(monkeypatch)
    run_dir, metrics_dir, summary = run_inprocess(params, tmp_path)

    rows = {int(r["step"]): r for r in read_csv(metrics_dir / "metrics.csv")}
    assert sorted(rows) == list(range(1, 9))
    assert [float(rows[s]["skipped_steps"]) for s in range(1, 9)] == [0, 0, 1, 1, 1, 2, 2, 2]
    assert summary["final"]["skipped_steps"] == 2
    assert math.isnan(float(rows[3]["grad_norm"])) and math.isfinite(float(rows[4]["grad_norm"]))
    state = load_checkpoint(run_dir / "last.pt")
    assert state["step"] == 8 and state["skipped"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    # a skipped step leaves the weights as they were; a good step changes them
    weights = {step: model for name, step, _, model in saved if name == "last.pt"}
    assert_same_tensors(weights[2], weights[3])
    assert_same_tensors(weights[5], weights[6])
    assert any(not torch.equal(weights[3][k], weights[4][k]) for k in weights[3])


# ---------------------------------------------------------------------------
# output folders


def test_unwritable_output_dir_fails_before_any_work(tmp_path, make_tiny_params):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file")
    params = make_tiny_params({"data.store": str(tmp_path / "missing.zarr")})  # opening it would raise StoreError
    with pytest.raises(PermissionError, match="not writable") as err:
        train(params, "share", 0, blocker / "models", tmp_path / "metrics", progress=False, tensorboard=False)
    assert str(blocker / "models") in str(err.value)
    with pytest.raises(PermissionError, match="not writable"):
        train(params, "share", 0, tmp_path / "models", blocker / "metrics", progress=False, tensorboard=False)
    assert not (tmp_path / "models" / "last.pt").exists()


def test_cli_unwritable_output_dir_exits_2(tmp_path, write_tiny_params, run_mcl):
    write_tiny_params(tmp_path / "params.yaml")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file")
    proc = run_mcl(["train", "--arm", "share", "--seed", "0", "--models-dir", blocker / "models",
                    "--metrics-dir", tmp_path / "metrics"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert "not writable" in line and "not-a-dir" in line
    assert not (tmp_path / "metrics").exists(), "work started before the output check"


def test_share_arm_at_beta_zero_is_the_baseline(make_tiny_params, tmp_path):
    """The arms differ only by the treatment: with loss.beta = 0 the share arm trains the baseline's
    weights bit for bit (same data order, initialisation and every other loss); at the default beta
    it does not."""
    from mcl.studies.reproducibility import weights_digest
    from mcl.models.checkpoint import load_checkpoint
    from mcl.training.trainer import train

    def digest(params, arm):
        run = tmp_path / f"{arm}-{params.loss.beta}"
        train(params, arm, 0, run / "model", run / "metrics", progress=False, tensorboard=False)
        return weights_digest(load_checkpoint(run / "model" / "last.pt")["model"])

    default = make_tiny_params()
    assert default.loss.beta > 0
    baseline = digest(default, "baseline")
    assert digest(make_tiny_params({"loss.beta": 0.0}), "share") == baseline
    assert digest(default, "share") != baseline
