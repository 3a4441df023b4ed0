"""Shared fixtures for the dataset-layer tests: a small dataset generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

PARAMS_PATH = Path(__file__).parents[1] / "params.yaml"

# Small sizes so the whole suite runs in seconds; every other value comes from the real params.yaml.
SMALL_OVERRIDES = {
    "data.n_train": 400,
    "data.n_val": 64,
    "data.n_test": 64,
    "data.n_fewshot": 64,
    "data.n_dev": 64,
    "data.n_novel2": 64,
    "data.probe_programs": 6,
    "data.probe_episodes": 4,
}


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Test tensors are tiny: one intra-op thread avoids oversubscribing the 2-core CI machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def params_path() -> Path:
    return PARAMS_PATH


@pytest.fixture(scope="session")
def small_overrides() -> dict:
    return dict(SMALL_OVERRIDES)


@pytest.fixture(scope="session")
def small_params():
    from mcl.config import load_params

    return load_params(PARAMS_PATH, SMALL_OVERRIDES)


@pytest.fixture(scope="session")
def small_cfg(small_params):
    return small_params.data


@pytest.fixture(scope="session")
def small_dataset(small_cfg):
    """(splits, label_sets) of the small dataset; tests must not modify the arrays."""
    from mcl.data.generator import generate_dataset

    splits, label_sets = generate_dataset(small_cfg)
    for eps in splits.values():  # guard against accidental in-place edits by a test
        for name in eps.FIELDS:
            getattr(eps, name).setflags(write=False)
    return splits, label_sets


@pytest.fixture(scope="session")
def small_splits(small_dataset):
    return small_dataset[0]


@pytest.fixture(scope="session")
def small_zarr_store(small_dataset, small_cfg, tmp_path_factory) -> Path:
    """The small dataset written once to a Zarr store (read-only use: copy it before corrupting)."""
    from mcl.data.store import store_attrs, write_store

    splits, label_sets = small_dataset
    path = tmp_path_factory.mktemp("store") / "episodes.zarr"
    write_store(path, splits, store_attrs(splits, small_cfg, label_sets))
    return path


# ---------------------------------------------------------------------------
# Tiny end-to-end settings for the training / evaluation / finetune / pipeline tests.
# Every other value comes from the real params.yaml; data.store is set per use.

TINY_OVERRIDES = {
    "data.n_train": 400,
    "data.n_val": 32,
    "data.n_test": 32,
    "data.n_fewshot": 300,       # ~32 length-3 label sets x ~9 episodes: room for shots + queries
    "data.n_dev": 128,           # ~13 dev label sets x ~10 episodes: room for shots + queries too
    "data.n_novel2": 32,
    "data.probe_programs": 4,
    "data.probe_episodes": 2,
    "model.d_model": 16,
    "model.n_heads": 2,
    "model.n_layers": 1,
    "model.executor_layers": 1,
    "model.h_dim": 24,
    "model.sae_dim": 32,
    "model.sae_topk": 8,
    "train.seeds": [0],
    "train.oracle_seeds": [0],
    "train.device": "cpu",
    "train.steps": 8,
    "train.groups": 2,
    "train.cotrain_episodes": 4,
    "train.group_size": 3,
    "train.warmup_steps": 2,
    "train.log_every": 2,
    "train.eval_every": 4,
    "train.checkpoint_every": 4,
    "train.val_episodes": 16,
    "loss.share.k": 2,
    "eval.batch_size": 64,
    "finetune.num_tasks": 2,
    "finetune.shots": 2,
    "finetune.queries": 4,
    "finetune.steps": 4,
    "finetune.eval_every": 2,
}


def tiny_raw_params(overrides: dict | None = None) -> dict:
    """The real params.yaml as a raw dict with TINY_OVERRIDES, then ``overrides``, applied."""
    import copy

    import yaml

    raw = yaml.safe_load(PARAMS_PATH.read_text())
    for dotted, value in {**TINY_OVERRIDES, **(overrides or {})}.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        assert leaf in node, f"unknown params key {dotted}"
        node[leaf] = copy.deepcopy(value)
    return raw


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """A tiny Zarr store generated once from TINY_OVERRIDES (read-only use)."""
    from mcl.config import parse_params
    from mcl.data.generator import generate_dataset
    from mcl.data.store import store_attrs, write_store

    cfg = parse_params(tiny_raw_params()).data
    splits, label_sets = generate_dataset(cfg)
    path = tmp_path_factory.mktemp("tiny_store") / "episodes.zarr"
    write_store(path, splits, store_attrs(splits, cfg, label_sets))
    return path


@pytest.fixture(scope="session")
def tiny_params(tiny_store):
    """Validated tiny Params reading ``tiny_store``; derive variants with ``make_tiny_params``."""
    from mcl.config import parse_params

    return parse_params(tiny_raw_params({"data.store": str(tiny_store)}))


@pytest.fixture(scope="session")
def make_tiny_params(tiny_store):
    """``make(overrides) -> Params``: tiny params (reading ``tiny_store``) with extra dotted overrides."""
    from mcl.config import parse_params

    def make(overrides: dict | None = None):
        return parse_params(tiny_raw_params({"data.store": str(tiny_store), **(overrides or {})}))

    return make


@pytest.fixture(scope="session")
def write_tiny_params(tiny_store):
    """``write(path, overrides) -> path``: a tiny params.yaml (data.store = ``tiny_store`` unless overridden)."""
    import yaml

    def write(path, overrides: dict | None = None):
        path = Path(path)
        path.write_text(yaml.safe_dump(tiny_raw_params({"data.store": str(tiny_store), **(overrides or {})}),
                                       sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def mcl_env() -> dict:
    """Environment for `mcl` / `dvc` subprocesses: this checkout's code first, the venv's scripts on PATH,
    one thread per process (the CI machine has 2 cores)."""
    import os
    import sys

    repo = str(Path(__file__).parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="session")
def run_mcl(mcl_env):
    """``run(args, cwd, timeout=180) -> CompletedProcess`` for ``python -m mcl.cli ARGS``."""
    import subprocess
    import sys

    def run(args, cwd, timeout=180, env=None):
        return subprocess.run([sys.executable, "-m", "mcl.cli", *map(str, args)], cwd=cwd, env=env or mcl_env,
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def tiny_trained_run(tiny_params, tmp_path_factory) -> Path:
    """Run directory of a tiny share-arm model trained in-process for 8 steps (read-only use)."""
    from mcl.training.trainer import train

    root = tmp_path_factory.mktemp("tiny_run")
    train(tiny_params, "share", 0, root / "models" / "share/seed0", root / "metrics" / "share/seed0",
          progress=False, tensorboard=False)
    return root / "models" / "share/seed0"


def pytest_addoption(parser):
    parser.addoption("--update-docs", action="store_true", default=False,
                     help="Rewrite generated docs (docs/reliability.md) instead of failing when they are stale.")


@pytest.fixture(scope="session")
def update_docs(request) -> bool:
    """True under ``--update-docs``: doc-producing tests rewrite their file instead of comparing."""
    return bool(request.config.getoption("--update-docs"))


@pytest.fixture(scope="session")
def reproduced_repo(tmp_path_factory, write_tiny_params, mcl_env):
    """``(repo, runs)``: a tiny copy of this checkout after `dvc repro generate` then `dvc repro`, outputs
    committed; ``runs`` maps "generate" / "repro" to the CompletedProcess of each. Shared by the pipeline
    and sharing tests: read it, or work on ``repo_tools.clone_with_cache(repo, ...)``; never change it."""
    from repo_tools import dvc, git, repo_env, tiny_repo

    repo = tiny_repo(tmp_path_factory.mktemp("reproduced") / "repo", write_tiny_params)
    env = repo_env(mcl_env)
    runs = {"generate": dvc(repo, env, "repro", "generate"), "repro": dvc(repo, env, "repro")}
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pipeline outputs")
    return repo, runs
