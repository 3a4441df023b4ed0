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
    "data.probe_programs": 6,
    "data.probe_episodes": 4,
}


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
