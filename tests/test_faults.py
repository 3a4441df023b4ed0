"""Fault injection with a real SIGKILL: `mcl train` and `mcl generate` killed at chosen points.

Each victim is a real subprocess, ``python -c DRIVER SPEC ARGS...``: the driver wraps one
function as the code under test sees it (``torch.save`` inside mcl.models.checkpoint, the
loss call of one training step, the metrics.csv write, the store writer's array creation or
its rename), lets the wrapped call write part of its bytes, flushes them to disk, then
sends SIGKILL to its own process, and otherwise runs ``mcl.cli.main()`` unchanged. No hook
lives in production code. After the kill the files on disk are checked as another process
would find them, then an ordinary `mcl train --resume` / `mcl generate` must finish and
equal an uninterrupted run. The random kill points come from a fixed-seed RNG.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mcl.data.generator import Episodes
from mcl.data.store import open_store
from mcl.errors import CheckpointError
from mcl.models.checkpoint import load_checkpoint

TIMING = {"step_time_ms", "wall_time_s"}
STEPS = 12  # checkpoints (last.pt) at steps 4, 8, 12; evaluations (maybe best.pt) at 4, 8, 12; logs every 2
TRAIN_OVERRIDES = {"train.steps": STEPS, "train.checkpoint_every": 4, "train.eval_every": 4, "train.log_every": 2,
                   "train.warmup_steps": 2, "model.dropout": 0.1}  # dropout: the torch RNG state must resume too
TRAIN_ARGS = ["train", "--arm", "share", "--seed", "0", "--models-dir", "models", "--metrics-dir", "metrics",
              "--no-tensorboard"]
RUN, METRICS = Path("models") / "share/seed0", Path("metrics") / "share/seed0"

DRIVER = r'''
import inspect, io, json, os, signal, sys
from pathlib import Path

spec = json.loads(sys.argv[1])
sys.argv = ["mcl", *sys.argv[2:]]
mode = spec.get("mode")
events = open(spec["events"], "a")


def note(**event):
    events.write(json.dumps(event) + "\n")
    events.flush()


def die(**event):
    note(kill=True, **event)
    os.kill(os.getpid(), signal.SIGKILL)


def write_part(f, data, fraction):
    """Write the first ``fraction`` of ``data`` to ``f`` and push it to disk."""
    f.write(data[: int(len(data) * fraction)])
    f.flush()
    os.fsync(f.fileno())


if sys.argv[1] == "train":
    import torch
    import mcl.models.checkpoint as checkpoint

    real_save, saves = torch.save, {}

    def save(obj, f, *args, **kwargs):
        name = Path(f.name).name  # the file written: "last.pt", or its temporary ".last.pt.tmp-<pid>"
        name = name[1:].rsplit(".tmp-", 1)[0] if name.startswith(".") and ".tmp-" in name else name
        saves[name] = saves.get(name, 0) + 1
        saves["*"] = saves.get("*", 0) + 1
        if mode == "save" and spec.get("file", name) == name and saves[spec.get("file", "*")] == spec["nth"]:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            write_part(f, buf.getvalue(), spec["fraction"])
            die(file=name, step=obj["step"], tmp=Path(f.name).name)
        real_save(obj, f, *args, **kwargs)
        note(save=name, step=obj["step"])

    class TorchAsSeenByCheckpoint:  # torch itself stays untouched
        def __getattr__(self, attr):
            return getattr(torch, attr)

    TorchAsSeenByCheckpoint.save = staticmethod(save)
    checkpoint.torch = TorchAsSeenByCheckpoint()

    if mode == "step":  # mid-step: after the forward pass of loop step spec["step"]
        from mcl.losses.manager import LossManager

        real_call = LossManager.__call__
        signature = inspect.signature(real_call)

        def call(self, *args, **kwargs):
            if signature.bind(self, *args, **kwargs).arguments["step"] == spec["step"]:
                die(step=spec["step"])
            return real_call(self, *args, **kwargs)

        LossManager.__call__ = call

    if mode == "log":  # inside the nth rewrite of metrics.csv
        import mcl.io

        real_write_text, logs = mcl.io.write_text, [0]

        def write_text(path, text):
            if Path(path).name == "metrics.csv":
                logs[0] += 1
                if logs[0] == spec["nth"]:
                    with mcl.io.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
                        write_part(f, text, spec["fraction"])
                        die(file="metrics.csv", nth=logs[0], tmp=tmp.name)
            return real_write_text(path, text)

        mcl.io.write_text = write_text

if mode == "arrays":  # after the nth array of the store is written
    if spec["format"] == "zarr":
        import zarr

        cls, method = zarr.Group, "create_array"
    else:
        import h5py

        cls, method = h5py.Group, "create_dataset"
    real_create, created = getattr(cls, method), [0]

    def create(self, *args, **kwargs):
        out = real_create(self, *args, **kwargs)
        created[0] += 1
        if created[0] == spec["nth"]:
            if hasattr(self, "file"):
                self.file.flush()
            die(arrays=created[0])
        return out

    setattr(cls, method, create)

if mode == "swap":  # right after the old store is moved aside, before the new one is moved in
    import mcl.data.store as store

    class OsAsSeenByStore:
        def __getattr__(self, attr):
            return getattr(os, attr)

        @staticmethod
        def replace(src, dst):
            os.replace(src, dst)
            if ".old-" in Path(dst).name:
                die(moved_aside=Path(dst).name)

    store.os = OsAsSeenByStore()

from mcl.cli import main

main()
'''


@pytest.fixture(scope="module")
def env(mcl_env, tmp_path_factory) -> dict:
    """mcl_env, plus a private bytecode cache where the environment forbids writing one: otherwise every
    subprocess recompiles torch._dynamo from source (~7 s each) and this file takes minutes."""
    env = dict(mcl_env)
    if env.pop("PYTHONDONTWRITEBYTECODE", None):
        env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    return env


def run_victim(cwd: Path, env: dict, spec: dict, args: list[str]) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run the driver with ``spec`` on ``mcl ARGS``; return the process and its events (saves done, the kill)."""
    events = cwd / f"events-{len(list(cwd.glob('events-*')))}.jsonl"
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps({**spec, "events": str(events)}), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return proc, [json.loads(line) for line in events.read_text().splitlines()] if events.exists() else []


def assert_sigkilled(proc: subprocess.CompletedProcess, events: list[dict]) -> dict:
    assert proc.returncode == -signal.SIGKILL, (
        f"expected death by SIGKILL at the injected point, got exit code {proc.returncode}:\n{proc.stderr[-3000:]}")
    assert events and events[-1].get("kill"), events
    return events[-1]


def temp_files(*dirs: Path) -> list[str]:
    return sorted(p.name for d in dirs if d.exists() for p in d.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# ---------------------------------------------------------------------------
# training


def read_csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def run_outputs(root: Path) -> dict:
    """Everything a finished run wrote that must not depend on having been killed (timings dropped)."""
    metrics = root / METRICS
    live = json.loads((metrics / "metrics.json").read_text())
    for key in TIMING:
        live.pop(key, None)
    plots = {str(p.relative_to(metrics)): p.read_text() for p in sorted((metrics / "plots").rglob("*.tsv"))
             if p.stem not in TIMING}
    out = {"csv": read_csv_rows(metrics / "metrics.csv"), "live": live, "plots": plots,
           "sae_log_density": (metrics / "sae_log_density.csv").read_text()}
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(root / RUN / name)
        out[name] = {k: state[k] for k in ("step", "best_val_iou", "skipped")}
        out[name + " tensors"] = state["model"]
    return out


def assert_same_outputs(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    assert [r["step"] for r in got["csv"]] == [str(s) for s in range(2, STEPS + 1, 2)]
    for g, w in zip(got["csv"], want["csv"], strict=True):
        assert g == w, f"metrics.csv row at step {w['step']} differs"
    assert want["plots"], "no DVCLive plot series to compare"
    for key in want:
        if key.endswith(" tensors"):
            assert got[key].keys() == want[key].keys()
            for name in want[key]:
                assert torch.equal(got[key][name], want[key][name]), f"{key}: {name} differs"
        else:
            assert got[key] == want[key], f"{key} differs"


@pytest.fixture(scope="module")
def train_root(tmp_path_factory, write_tiny_params) -> Path:
    """A folder holding the tiny params.yaml of these training runs; copy it per run."""
    root = tmp_path_factory.mktemp("train_params")
    write_tiny_params(root / "params.yaml", TRAIN_OVERRIDES)
    return root


def new_run_dir(tmp_path: Path, train_root: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "params.yaml").write_bytes((train_root / "params.yaml").read_bytes())
    return d


@pytest.fixture(scope="module")
def uninterrupted(train_root, tmp_path_factory, run_mcl, env) -> dict:
    """Outputs of the same training, never killed (plain `mcl train`)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    (root / "params.yaml").write_bytes((train_root / "params.yaml").read_bytes())
    proc = run_mcl(TRAIN_ARGS, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr
    assert temp_files(root / RUN, root / METRICS) == []
    return run_outputs(root)


def check_after_kill(root: Path, events: list[dict]) -> None:
    """What a killed run leaves: last.pt / best.pt are the last ones fully written (or absent), and load."""
    import yaml

    model_config = yaml.safe_load((root / RUN / "config.yaml").read_text())["model"]
    done = [e for e in events if "save" in e]
    for name in ("last.pt", "best.pt"):
        steps = [e["step"] for e in done if e["save"] == name]
        path = root / RUN / name
        if not steps:
            assert not path.exists(), f"{name} exists but no {name} was completed before the kill"
            continue
        state = load_checkpoint(path, model_config)  # raises on a partial file
        assert state["step"] == steps[-1], f"{name} holds step {state['step']}, the last good one was {steps[-1]}"
        assert all(torch.isfinite(t).all() for t in state["model"].values())


def resume_and_compare(root: Path, run_mcl, env: dict, uninterrupted: dict, monkeypatch=None) -> None:
    """`mcl train --resume` in ``root`` (a subprocess; in this process with ``monkeypatch``, ~8 s faster),
    then its outputs must equal the uninterrupted run's and no temporary file may be left."""
    if monkeypatch is None:
        proc = run_mcl([*TRAIN_ARGS, "--resume"], cwd=root, env=env)
        assert proc.returncode == 0, proc.stderr
    else:
        from mcl.cli import cli

        monkeypatch.chdir(root)
        cli.main([*TRAIN_ARGS, "--resume"], prog_name="mcl", standalone_mode=False)
    assert_same_outputs(run_outputs(root), uninterrupted)
    assert temp_files(root / RUN, root / METRICS) == [], "the resumed run left temporary files behind"


@pytest.mark.slow
@pytest.mark.parametrize("spec, killed_save", [
    # the 2nd write of last.pt (step 8): last.pt at step 4 must survive, and best.pt written before it
    ({"mode": "save", "file": "last.pt", "nth": 2, "fraction": 0.5}, ("last.pt", 8)),
    # the very first checkpoint write of the run (best.pt at step 4): nothing good exists yet
    ({"mode": "save", "nth": 1, "fraction": 0.3}, ("best.pt", 4)),
], ids=["second-last.pt", "first-checkpoint"])
def test_sigkill_during_checkpoint_write(tmp_path, train_root, uninterrupted, run_mcl, env, spec, killed_save):
    root = new_run_dir(tmp_path, train_root, "killed")
    proc, events = run_victim(root, env, spec, TRAIN_ARGS)
    kill = assert_sigkilled(proc, events)
    assert (kill["file"], kill["step"]) == killed_save

    # the interrupted write went to a temporary sibling, which holds a partial (unloadable) checkpoint
    stale = root / RUN / kill["tmp"]
    assert stale.is_file() and stale.stat().st_size > 0
    with pytest.raises(CheckpointError):
        load_checkpoint(stale)
    check_after_kill(root, events)
    if killed_save == ("best.pt", 4):  # nothing to resume from: --resume starts from scratch
        assert not (root / RUN / "last.pt").exists() and not (root / RUN / "best.pt").exists()
    else:
        assert load_checkpoint(root / RUN / "last.pt")["step"] == 4

    resume_and_compare(root, run_mcl, env, uninterrupted)


def random_kill_points(seed: int = 20240611) -> list[dict]:
    """One kill point of each kind, placed by a fixed-seed RNG (the same points on every run)."""
    rng = random.Random(seed)
    return [
        {"mode": "step", "step": rng.randrange(1, STEPS)},  # mid-step (after the forward pass)
        # inside a checkpoint write: the nth of the (at least 4) checkpoint saves, cut at a random byte
        {"mode": "save", "nth": rng.randint(1, 4), "fraction": round(rng.uniform(0.02, 0.98), 3)},
        # inside a metrics.csv rewrite (one per log, STEPS / log_every of them)
        {"mode": "log", "nth": rng.randint(1, STEPS // 2), "fraction": round(rng.uniform(0.02, 0.98), 3)},
    ]


@pytest.mark.slow
@pytest.mark.parametrize("spec", random_kill_points(), ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_sigkill_at_random_point_then_resume(tmp_path, train_root, uninterrupted, run_mcl, env, spec, monkeypatch):
    root = new_run_dir(tmp_path, train_root, "killed")
    proc, events = run_victim(root, env, spec, TRAIN_ARGS)
    kill = assert_sigkilled(proc, events)
    check_after_kill(root, events)
    if spec["mode"] == "log":  # metrics.csv still holds the rows of the previous log, complete
        csv_path = root / METRICS / "metrics.csv"
        assert csv_path.exists() == (kill["nth"] > 1)
        rows = read_csv_rows(csv_path) if kill["nth"] > 1 else []
        assert [r["step"] for r in rows] == [str(s) for s in range(2, 2 * kill["nth"], 2)]
        assert (root / METRICS / kill["tmp"]).is_file()
    resume_and_compare(root, run_mcl, env, uninterrupted, monkeypatch)  # in-process: same code, less start-up


# ---------------------------------------------------------------------------
# generation


def store_content(path: Path) -> dict:
    """Attributes (with per-split checksums) and every array of every split, each split read and verified."""
    store = open_store(path)
    return {"attrs": store.attrs,
            "arrays": {name: {f: getattr(eps, f) for f in Episodes.FIELDS} for name, eps in store.load_all().items()}}


def assert_same_content(got: dict, want: dict) -> None:
    assert got["attrs"] == want["attrs"]
    assert got["arrays"].keys() == want["arrays"].keys()
    for split, fields in want["arrays"].items():
        for f, arr in fields.items():
            other = got["arrays"][split][f]
            assert other.dtype == arr.dtype and np.array_equal(other, arr), f"{split}/{f} differs"


FORMATS = {"zarr": {"data.format": "zarr", "data.store": "data/episodes.zarr"},
           "hdf5": {"data.format": "hdf5", "data.store": "data/episodes.h5"}}
OLD = {"data.seed": 1}  # another dataset: the store a regeneration replaces


@pytest.fixture(scope="module")
def reference_stores(tmp_path_factory, write_tiny_params, run_mcl, env) -> dict:
    """Content of stores written by uninterrupted `mcl generate` runs: {(format, 'new' | 'old'): content}."""
    out = {}
    for fmt, overrides in FORMATS.items():
        for which, extra in (("new", {}), ("old", OLD)):
            root = tmp_path_factory.mktemp(f"ref-{fmt}-{which}")
            write_tiny_params(root / "params.yaml", {**overrides, **extra})
            proc = run_mcl(["generate"], cwd=root, env=env)
            assert proc.returncode == 0, proc.stderr
            assert sorted(p.name for p in (root / "data").iterdir()) == [Path(overrides["data.store"]).name]
            out[fmt, which] = store_content(root / overrides["data.store"])
    assert out["zarr", "new"]["attrs"]["checksums"] != out["zarr", "old"]["attrs"]["checksums"]
    return out


def generate_ok(root: Path, run_mcl, env) -> None:
    proc = run_mcl(["generate"], cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_sigkill_during_generate_leaves_no_store(tmp_path, write_tiny_params, reference_stores, run_mcl, env, fmt):
    path = tmp_path / FORMATS[fmt]["data.store"]
    write_tiny_params(tmp_path / "params.yaml", FORMATS[fmt])
    proc, events = run_victim(tmp_path, env, {"mode": "arrays", "format": fmt, "nth": 7}, ["generate"])
    assert_sigkilled(proc, events)
    assert not path.exists(), "a partial store is at the final path"
    assert [p.name.startswith(f".{path.name}.tmp-") for p in path.parent.iterdir()] == [True]  # the partial write

    generate_ok(tmp_path, run_mcl, env)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "the stale temporary store was not removed"
    assert_same_content(store_content(path), reference_stores[fmt, "new"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_sigkill_during_regenerate_keeps_old_store(tmp_path, write_tiny_params, reference_stores, run_mcl, env, fmt):
    path = tmp_path / FORMATS[fmt]["data.store"]
    write_tiny_params(tmp_path / "params.yaml", {**FORMATS[fmt], **OLD})
    generate_ok(tmp_path, run_mcl, env)
    assert_same_content(store_content(path), reference_stores[fmt, "old"])

    write_tiny_params(tmp_path / "params.yaml", FORMATS[fmt])  # params changed: regenerate
    proc, events = run_victim(tmp_path, env, {"mode": "arrays", "format": fmt, "nth": 13}, ["generate"])
    assert_sigkilled(proc, events)
    assert_same_content(store_content(path), reference_stores[fmt, "old"])  # the old store, intact

    generate_ok(tmp_path, run_mcl, env)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert_same_content(store_content(path), reference_stores[fmt, "new"])


@pytest.mark.slow
def test_sigkill_between_renames_of_zarr_swap(tmp_path, write_tiny_params, reference_stores, run_mcl, env):
    """A directory store cannot be swapped by one rename: the old one is moved aside first. A kill right
    after that leaves no store at the final path; the next run must put the old store back before it
    writes, so that a second kill (mid-write) leaves the old store in place, and a third run succeeds."""
    path = tmp_path / FORMATS["zarr"]["data.store"]
    write_tiny_params(tmp_path / "params.yaml", {**FORMATS["zarr"], **OLD})
    generate_ok(tmp_path, run_mcl, env)

    write_tiny_params(tmp_path / "params.yaml", FORMATS["zarr"])
    proc, events = run_victim(tmp_path, env, {"mode": "swap"}, ["generate"])
    kill = assert_sigkilled(proc, events)
    assert not path.exists()
    aside = tmp_path / "aside.zarr"  # open_store wants a .zarr name; look at the moved-aside store through one
    aside.symlink_to(path.parent / kill["moved_aside"])
    assert_same_content(store_content(aside), reference_stores["zarr", "old"])
    aside.unlink()

    proc, events = run_victim(tmp_path, env, {"mode": "arrays", "format": "zarr", "nth": 7}, ["generate"])
    assert_sigkilled(proc, events)
    assert path.is_dir(), "the store moved aside by the killed swap was not put back"
    assert_same_content(store_content(path), reference_stores["zarr", "old"])

    generate_ok(tmp_path, run_mcl, env)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert_same_content(store_content(path), reference_stores["zarr", "new"])


# ---------------------------------------------------------------------------
# stale temporaries


def test_atomic_write_removes_only_temporaries_of_dead_writers(tmp_path):
    """A temporary whose writer was killed goes at the next write of the same file; a live writer's stays."""
    from mcl.io import write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {f".out.csv.tmp-{dead_pid}": False,  # False: must be removed
                 f".out.csv.tmp-{live.pid}": True, f".out.csv.tmp-{os.getpid()}-x": True,
                 f".out.csv.tmp-{dead_pid}.png": True, f".other.csv.tmp-{dead_pid}": True, ".out.csv.tmp-abc": True}
        for name in names:
            (tmp_path / name).write_text("partial")
        write_text(tmp_path / "out.csv", "a,b\n")
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {"out.csv", *(name for name, keep in names.items() if keep)}
        assert (tmp_path / "out.csv").read_text() == "a,b\n"
    finally:
        live.kill()
        live.wait()
