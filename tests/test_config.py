"""params.yaml validation: every bad value is a ConfigError whose one-line message names the key path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mcl.config import ConfigError, DataConfig, Params, load_params, parse_params, to_dict

PARAMS = Path(__file__).parents[1] / "params.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def config_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_real_params_load():
    p = load_params(PARAMS)
    assert isinstance(p, Params) and isinstance(p.data, DataConfig)
    assert p.data.format in ("zarr", "hdf5")
    assert p.data.store.endswith(".zarr" if p.data.format == "zarr" else ".h5")
    assert p.train.batch_size == p.train.groups * p.train.group_size
    assert isinstance(p.loss.share.eps, float) and isinstance(p.train.lr, float)
    assert p.loss.share.k < p.train.group_size
    d = to_dict(p)
    assert d["data"]["demos"] == p.data.demos and d["loss"]["schedule"]["beta"]["kind"] == p.loss.schedule.beta.kind


def test_overrides_apply():
    p = load_params(PARAMS, {"data.n_train": 12, "loss.share.k": 3, "loss.schedule.beta.end": 7})
    assert p.data.n_train == 12 and p.loss.share.k == 3 and p.loss.schedule.beta.end == 7


def test_parse_params_does_not_mutate(raw):
    before = copy.deepcopy(raw)
    parse_params(raw, overrides={"data.demos": 2})
    assert raw == before


@pytest.mark.parametrize("key,value,expected", [
    ("data.demos", "three", "params.yaml: data.demos must be an integer >= 1 and <= 16, got 'three'"),
    ("data.demos", 0, "data.demos must be an integer >= 1 and <= 16, got 0"),
    ("data.demos", 3.0, "data.demos must be an integer"),
    ("data.demos", True, "data.demos must be an integer"),      # bool is not an int
    ("data.n_train", False, "data.n_train must be an integer"),
    ("model.encoder", "lstm", "model.encoder must be one of transformer, gru, oracle, got 'lstm'"),
    ("model.patch", 3, "model.patch must be one of 1, 2, 4, 8, got 3"),
    ("loss.beta", -0.1, "loss.beta must be a number >= 0.0, got -0.1"),
    ("loss.beta", True, "loss.beta must be a number"),
    ("loss.beta", "abc", "loss.beta must be a number"),
    ("loss.beta", float("nan"), "loss.beta must be a number"),
    ("loss.share.detach", "yes", "loss.share.detach must be a boolean"),
    ("loss.share.detach", 1, "loss.share.detach must be a boolean"),
    ("loss.share.eps", 1.0, "loss.share.eps must be a number > 0.0 and < 1.0"),
    ("loss.schedule.beta.kind", "step", "loss.schedule.beta.kind must be one of"),
    ("data.store", 5, "data.store must be a string"),
    ("train.seeds", [], "train.seeds must be a non-empty list of integers"),
    ("train.seeds", [0, "x"], "train.seeds[1] must be an integer"),
    ("data.format", "npz", "data.format must be one of zarr, hdf5"),
])
def test_bad_values(key, value, expected):
    msg = config_error(load_params, PARAMS, {key: value})
    assert expected in msg
    assert msg.startswith("params.yaml: ")
    assert key.split("[")[0] in msg


def test_missing_key(raw):
    bad = copy.deepcopy(raw)
    del bad["data"]["palette"]
    assert config_error(parse_params, bad) == "params.yaml: missing key data.palette"
    bad = copy.deepcopy(raw)
    del bad["loss"]["schedule"]["gamma"]
    assert "missing key loss.schedule.gamma" in config_error(parse_params, bad)
    bad = copy.deepcopy(raw)
    del bad["eval"]
    assert "missing key eval" in config_error(parse_params, bad)


def test_unknown_key(raw):
    bad = copy.deepcopy(raw)
    bad["data"]["foo"] = 1
    msg = config_error(parse_params, bad)
    assert msg.startswith("params.yaml: unknown key data.foo")
    bad = copy.deepcopy(raw)
    bad["extra"] = {}
    assert "unknown key extra" in config_error(parse_params, bad)


def test_section_not_a_mapping(raw):
    bad = copy.deepcopy(raw)
    bad["model"] = 3
    assert "model must be a mapping" in config_error(parse_params, bad)
    assert "top level must be a mapping" in config_error(parse_params, [1, 2])


@pytest.mark.parametrize("overrides,key", [
    ({"loss.share.k": 8}, "loss.share.k"),                    # == train.group_size
    ({"loss.share.k": 9}, "loss.share.k"),                    # > train.group_size
    ({"train.group_size": 2}, "loss.share.k"),                # k = 2 >= group size 2
    ({"data.format": "hdf5"}, "data.store"),                  # store still ends in .zarr
    ({"data.format": "zarr", "data.store": "data/e.h5"}, "data.store"),
    ({"data.min_shapes": 5, "data.max_shapes": 4}, "data.min_shapes"),
    ({"model.d_model": 66}, "model.d_model"),
    ({"model.sae_topk": 300}, "model.sae_topk"),
    ({"loss.schedule.beta.end": 0}, "loss.schedule.beta.end"),
    ({"train.seeds": [0, 0]}, "train.seeds"),
    ({"finetune.eval_every": 61}, "finetune.eval_every"),
])
def test_cross_key_rules(overrides, key):
    msg = config_error(load_params, PARAMS, overrides)
    assert msg.startswith(f"params.yaml: {key} must")


def test_share_k_consistent_values_pass():
    p = load_params(PARAMS, {"loss.share.k": 7, "train.group_size": 8})
    assert p.loss.share.k == 7
    p = load_params(PARAMS, {"data.format": "hdf5", "data.store": "data/episodes.h5"})
    assert p.data.format == "hdf5"


def test_format_hdf5_with_zarr_store_message():
    msg = config_error(load_params, PARAMS, {"data.format": "hdf5"})
    assert "data.store must end with .h5 when data.format is hdf5" in msg
    assert ".zarr" in msg


def test_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  seed: [0,\n  demos: 3\n")
    msg = config_error(load_params, path)
    assert msg.startswith("params.yaml: not valid YAML")


def test_unreadable_file(tmp_path):
    msg = config_error(load_params, tmp_path / "missing.yaml")
    assert "missing.yaml" in msg and "cannot read" in msg


def test_empty_yaml_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("")
    assert "p.yaml: top level must be a mapping" in config_error(load_params, path)


def test_source_name_is_the_file_name(tmp_path, raw):
    bad = copy.deepcopy(raw)
    bad["data"]["demos"] = "three"
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert config_error(load_params, path).startswith("other.yaml: data.demos must be")


@pytest.mark.parametrize("key", ["data.foo", "foo.bar", "loss.share.nothing", "nothing", "train.seeds.k"])
def test_unknown_override_rejected(key):
    msg = config_error(load_params, PARAMS, {key: 1})
    assert msg == f"override: unknown key {key}"


@pytest.mark.parametrize("key", ["data.seed.x", "data.format.z"])
def test_override_through_scalar_rejected(key):
    config_error(load_params, PARAMS, {key: 1})


def test_float_as_string_accepted(tmp_path, raw):
    p = load_params(PARAMS, {"train.lr": "1e-3", "loss.beta": "0.5"})
    assert p.train.lr == pytest.approx(1e-3) and isinstance(p.train.lr, float)
    assert p.loss.beta == 0.5
    # as written in a YAML file: PyYAML reads `1e-3` (no dot) as a string
    text = PARAMS.read_text().replace("lr: 3.0e-3", "lr: 1e-3")
    assert "lr: 1e-3" in text
    assert yaml.safe_load(text)["train"]["lr"] == "1e-3"
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert load_params(path).train.lr == pytest.approx(1e-3)
    # an int where a float is expected is fine, a string that is not a number is not
    assert load_params(PARAMS, {"train.lr": 1}).train.lr == 1.0
    assert isinstance(load_params(PARAMS, {"train.lr": 1}).train.lr, float)


def test_string_numbers_not_accepted_for_ints():
    assert "data.demos must be an integer" in config_error(load_params, PARAMS, {"data.demos": "3"})
