"""Zarr / HDF5 episode stores: equal content, checksums, corruption detection, atomic writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mcl.data.generator import DEV_FRACTION, HOLDOUT_RESTARTS, HOLDOUT_SEED, ALL_SPLITS, Episodes, split_checksum
from mcl.data.store import SCHEMA_VERSION, StoreError, open_store, store_attrs, store_format, write_store


@pytest.fixture(scope="module")
def h5_store(small_dataset, small_cfg, tmp_path_factory) -> Path:
    splits, label_sets = small_dataset
    path = tmp_path_factory.mktemp("h5") / "episodes.h5"
    write_store(path, splits, store_attrs(splits, small_cfg, label_sets))
    return path


def copy_store(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return dst


def load_everything(path) -> dict[str, Episodes]:
    store = open_store(path)
    return {name: store.load(name) for name in store.splits}


def assert_same_episodes(a: Episodes, b: Episodes):
    for field in Episodes.FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape, field
        np.testing.assert_array_equal(x, y, err_msg=field)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def zarr_chunk(store: Path, split: str, field: str) -> Path:
    chunks = [p for p in (store / split / field / "c").rglob("*") if p.is_file()]
    assert len(chunks) == 1, chunks  # one chunk per array
    return chunks[0]


# ---------------------------------------------------------------------------
# content


def test_zarr_equals_hdf5(small_zarr_store, h5_store, small_splits):
    z, h = open_store(small_zarr_store), open_store(h5_store)
    assert z.format == "zarr" and h.format == "hdf5"
    assert z.splits == h.splits == list(ALL_SPLITS)
    assert z.attrs == h.attrs
    assert z.attrs["schema_version"] == SCHEMA_VERSION
    for name in ALL_SPLITS:
        ez, eh = z.load(name), h.load(name)
        assert_same_episodes(ez, eh)
        assert_same_episodes(ez, small_splits[name])
        assert z.attrs["checksums"][name] == h.attrs["checksums"][name] == split_checksum(small_splits[name])
        assert split_checksum(ez) == split_checksum(eh)


def test_store_attrs(small_zarr_store, small_cfg, small_dataset):
    a = open_store(small_zarr_store).attrs
    assert a["primitives"] == ["rotate", "flip", "recolor", "swap", "translate", "gravity", "border", "fill_bg"]
    assert a["episode_pairs"] == small_cfg.demos + 1
    assert a["grid_size"] == 8 and a["colours"] == 10
    assert a["splits"] == {k: len(v) for k, v in small_dataset[0].items()}
    assert a["data"]["n_train"] == small_cfg.n_train and a["data"]["seed"] == small_cfg.seed
    assert a["label_sets"] == small_dataset[1]
    assert list(a["label_sets"]) == ["train", "novel2", "dev", "test"] and a["label_sets"]["novel2"]
    assert a["holdout"] == {"seed": HOLDOUT_SEED, "restarts": HOLDOUT_RESTARTS,
                            "novel2_fraction": small_cfg.novel2_fraction, "dev_fraction": DEV_FRACTION}
    assert set(a["parameters"]) == set(a["primitives"])
    assert list(a["splits"]) == list(ALL_SPLITS) and {"dev", "novel2"} <= set(a["checksums"])


def test_zarr_store_has_few_files(small_zarr_store):
    files = [p for p in small_zarr_store.rglob("*") if p.is_file()]
    assert 0 < len(files) < 80, len(files)


def test_store_format():
    assert store_format("a/b.zarr") == "zarr"
    assert store_format("b.h5") == "hdf5"
    assert store_format("b.hdf5") == "hdf5"
    with pytest.raises(StoreError, match="unknown store format"):
        store_format("b.npz")


def test_missing_store(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        open_store(tmp_path / "nothing.zarr")
    with pytest.raises(StoreError, match="not found"):
        open_store(tmp_path / "nothing.h5")


# ---------------------------------------------------------------------------
# corruption


def test_zarr_corrupt_chunk_byte(small_zarr_store, tmp_path):
    store = copy_store(small_zarr_store, tmp_path)
    chunk = zarr_chunk(store, "train", "inputs")
    flip_byte(chunk, chunk.stat().st_size // 2)
    s = open_store(store)
    with pytest.raises(StoreError, match=r"train"):
        s.load("train")
    s.load("val")  # other splits are untouched


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_zarr_corrupt_chunk_positions(small_zarr_store, small_splits, tmp_path, where):
    store = copy_store(small_zarr_store, tmp_path)
    chunk = zarr_chunk(store, "train", "outputs")
    size = chunk.stat().st_size
    flip_byte(chunk, dict(start=8, middle=size // 2, end=size - 8)[where])
    with pytest.raises(StoreError):
        open_store(store).load("train")


def test_zarr_truncated_chunk(small_zarr_store, tmp_path):
    store = copy_store(small_zarr_store, tmp_path)
    chunk = zarr_chunk(store, "test", "labels")
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="test"):
        open_store(store).load("test")


def test_zarr_missing_chunk(small_zarr_store, tmp_path):
    """A deleted chunk reads back as fill values in plain zarr; the checksum must catch it."""
    store = copy_store(small_zarr_store, tmp_path)
    zarr_chunk(store, "val", "args").unlink()
    with pytest.raises(StoreError, match="val"):
        open_store(store).load("val")


def test_zarr_corrupt_metadata(small_zarr_store, tmp_path):
    store = copy_store(small_zarr_store, tmp_path)
    (store / "zarr.json").write_text("{ not json")
    with pytest.raises(StoreError, match=str(store.name)):
        open_store(store)


def _h5_chunk(path: Path, split: str, field: str) -> tuple[int, int]:
    import h5py

    with h5py.File(path, "r") as f:
        dset = f[split][field]
        offset = dset.id.get_offset()
        if offset is not None:  # contiguous layout
            return offset, dset.id.get_storage_size()
        info = dset.id.get_chunk_info(0)
        return info.byte_offset, info.size


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_h5_corrupt_byte_in_inputs(h5_store, small_splits, tmp_path, where):
    path = copy_store(h5_store, tmp_path)
    offset, size = _h5_chunk(path, "train", "inputs")
    assert size > 100
    flip_byte(path, offset + int(size * where))
    try:
        loaded = load_everything(path)
    except StoreError as e:
        assert str(path) in str(e)
    else:  # the only acceptable success: the data did not change
        for name in ALL_SPLITS:
            assert_same_episodes(loaded[name], small_splits[name])


def test_h5_corrupt_byte_middle_of_file(h5_store, small_splits, tmp_path):
    path = copy_store(h5_store, tmp_path)
    flip_byte(path, path.stat().st_size // 2)
    try:
        loaded = load_everything(path)
    except StoreError:
        pass
    else:
        for name in ALL_SPLITS:
            assert_same_episodes(loaded[name], small_splits[name])


def test_h5_corrupt_inputs_chunk_raises(h5_store, tmp_path):
    """Overwriting a run of bytes inside the compressed chunk is always detected."""
    path = copy_store(h5_store, tmp_path)
    offset, size = _h5_chunk(path, "train", "inputs")
    with open(path, "r+b") as f:
        f.seek(offset + size // 3)
        f.write(bytes(range(64)))
    with pytest.raises(StoreError):
        open_store(path).load("train")


@pytest.mark.parametrize("fraction", [0.5, 0.02])
def test_h5_truncated(h5_store, tmp_path, fraction):
    path = copy_store(h5_store, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(StoreError, match=str(path.name)):
        load_everything(path)


def test_zarr_wrong_schema_version(small_zarr_store, tmp_path):
    store = copy_store(small_zarr_store, tmp_path)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = SCHEMA_VERSION + 1
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schema_version"):
        open_store(store)


def test_h5_wrong_schema_version(h5_store, tmp_path):
    import h5py

    path = copy_store(h5_store, tmp_path)
    with h5py.File(path, "r+") as f:
        attrs = json.loads(f.attrs["mcl"])
        attrs["schema_version"] = 0
        f.attrs["mcl"] = json.dumps(attrs)
    with pytest.raises(StoreError, match="schema_version"):
        open_store(path)


# ---------------------------------------------------------------------------
# HDF5 root attributes under their own names (issue 12), older stores


def test_h5_named_attributes_readable_with_plain_h5py(h5_store, small_zarr_store):
    import h5py

    expected = open_store(small_zarr_store).attrs
    with h5py.File(h5_store, "r") as f:
        assert set(f.attrs) == set(expected) | {"mcl"}
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert isinstance(f.attrs["grid_size"], np.integer) and f.attrs["grid_size"] == 8
        assert [str(p) for p in f.attrs["primitives"]] == expected["primitives"]  # a string array
        assert f.attrs["primitives"].dtype.kind == "O"
        for name in ("parameters", "data", "splits", "label_sets", "holdout", "probe", "checksums"):
            assert isinstance(f.attrs[name], str), name  # nested: a JSON string under its own name
            assert json.loads(f.attrs[name]) == expected[name], name
        assert json.loads(f.attrs["label_sets"])["novel2"] == expected["label_sets"]["novel2"]
        assert json.loads(f.attrs["mcl"]) == expected  # and the whole record, as before


def test_h5_old_style_store_opens(h5_store, small_splits, tmp_path):
    """A store written before the named attributes: only the JSON attribute `mcl`."""
    import h5py

    path = copy_store(h5_store, tmp_path)
    with h5py.File(path, "r+") as f:
        for name in [n for n in f.attrs if n != "mcl"]:
            del f.attrs[name]
        assert list(f.attrs) == ["mcl"]
    store = open_store(path)
    assert store.attrs == open_store(h5_store).attrs
    assert_same_episodes(store.load("novel2"), small_splits["novel2"])


def test_h5_named_attribute_edited_is_caught(h5_store, tmp_path):
    import h5py

    path = copy_store(h5_store, tmp_path)
    with h5py.File(path, "r+") as f:
        splits = json.loads(f.attrs["splits"])
        f.attrs["splits"] = json.dumps({**splits, "train": 1})
    with pytest.raises(StoreError, match="root attribute 'splits' disagrees with the 'mcl' attribute"):
        open_store(path)


@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_store_without_dev_and_novel2_opens(small_dataset, small_cfg, tmp_path, fmt):
    """A store from before the dev / novel2 splits (label sets train and test only, no holdout attribute)."""
    from mcl.data.card import format_info

    old = {k: v for k, v in small_dataset[0].items() if k not in ("dev", "novel2")}
    attrs = store_attrs(old, small_cfg, {k: small_dataset[1][k] for k in ("train", "test")})
    del attrs["holdout"]
    for key in ("n_dev", "novel2_fraction", "n_novel2"):
        del attrs["data"][key]
    path = tmp_path / f"episodes.{fmt}"
    write_store(path, old, attrs)
    store = open_store(path)
    assert store.splits == ["train", "val", "test", "fewshot", "probe"]
    for split in ("dev", "novel2"):
        with pytest.raises(StoreError, match=rf"split '{split}' missing \(has train, val, test, fewshot, probe\)"):
            store.load(split)
    store.load("test")
    text = format_info(store)
    assert "label sets drawn from: train" in text and "novel2" not in text
    if fmt == "zarr":  # the dataset card renders from it too
        from mcl.data.card import write_card

        write_card(store, tmp_path / "card.md", tmp_path / "figures")
        card = (tmp_path / "card.md").read_text()
        assert "| `test` | " in card and "| `novel2` |" not in card and "`novel2` rule" not in card


@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_missing_split(small_dataset, small_cfg, tmp_path, fmt):
    splits = {k: v for k, v in small_dataset[0].items() if k != "probe"}
    path = tmp_path / f"episodes.{fmt}"
    write_store(path, splits, store_attrs(splits, small_cfg))
    store = open_store(path)
    assert store.splits == ["train", "val", "dev", "test", "fewshot", "novel2"]
    with pytest.raises(StoreError, match="probe"):
        store.load("probe")
    store.load("val")


def test_split_group_deleted(small_zarr_store, tmp_path):
    store = copy_store(small_zarr_store, tmp_path)
    shutil.rmtree(store / "fewshot")
    s = open_store(store)
    with pytest.raises(StoreError, match="fewshot"):
        s.load("fewshot")


def _rewrite_zarr_array(store: Path, split: str, field: str, data: np.ndarray):
    import zarr

    group = zarr.open_group(str(store), mode="r+", zarr_format=3)[split]
    group.create_array(field, data=data, chunks=data.shape, overwrite=True)


def _rewrite_h5_array(path: Path, split: str, field: str, data: np.ndarray):
    import h5py

    with h5py.File(path, "r+") as f:
        del f[split][field]
        f[split].create_dataset(field, data=data)


@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_wrong_dtype(small_zarr_store, h5_store, small_splits, tmp_path, fmt):
    src = small_zarr_store if fmt == "zarr" else h5_store
    path = copy_store(src, tmp_path)
    rewrite = _rewrite_zarr_array if fmt == "zarr" else _rewrite_h5_array
    rewrite(path, "train", "labels", np.asarray(small_splits["train"].labels).astype(np.int32))
    store = open_store(path)
    with pytest.raises(StoreError, match=r"train/labels is int32"):
        store.load("train")
    # verify=False skips the checksum, not the dtype check
    with pytest.raises(StoreError, match="int32"):
        store.load("train", verify=False)


@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_wrong_shape(small_zarr_store, h5_store, small_splits, tmp_path, fmt):
    src = small_zarr_store if fmt == "zarr" else h5_store
    path = copy_store(src, tmp_path)
    rewrite = _rewrite_zarr_array if fmt == "zarr" else _rewrite_h5_array
    rewrite(path, "val", "program", np.asarray(small_splits["val"].program)[:-1].copy())
    with pytest.raises(StoreError, match=r"val/program"):
        open_store(path).load("val")


def test_changed_values_fail_checksum(small_zarr_store, small_splits, tmp_path):
    """Same dtype and shape but one value changed: only the checksum can notice."""
    path = copy_store(small_zarr_store, tmp_path)
    args = np.array(small_splits["test"].args)
    args[5, 0, 0] = args[5, 0, 0] + 1
    _rewrite_zarr_array(path, "test", "args", args)
    store = open_store(path)
    with pytest.raises(StoreError, match="checksum"):
        store.load("test")
    np.testing.assert_array_equal(store.load("test", verify=False).args, args)


# ---------------------------------------------------------------------------
# atomic writes


class Boom(RuntimeError):
    pass


def _fail_after(monkeypatch, cls, method: str, calls: int, exc=Boom):
    original = getattr(cls, method)
    count = {"n": 0}

    def wrapper(self, *args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise exc("injected failure")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, wrapper)
    return count


def _patch_writer(monkeypatch, fmt: str, exc=Boom):
    if fmt == "zarr":
        import zarr

        return _fail_after(monkeypatch, zarr.Group, "create_array", 7, exc)
    import h5py

    return _fail_after(monkeypatch, h5py.Group, "create_dataset", 7, exc)


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_write_failure_leaves_nothing(small_dataset, small_cfg, tmp_path, monkeypatch, fmt, exc):
    splits, label_sets = small_dataset
    out = tmp_path / "data"
    path = out / f"episodes.{fmt}"
    count = _patch_writer(monkeypatch, fmt, exc)
    with pytest.raises(exc):
        write_store(path, splits, store_attrs(splits, small_cfg, label_sets))
    assert count["n"] == 8  # it failed mid-way, after writing some arrays
    assert not path.exists()
    assert list(out.iterdir()) == []  # no temporary store left behind


@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_write_failure_keeps_existing_store(small_dataset, small_cfg, tmp_path, monkeypatch, fmt):
    splits, label_sets = small_dataset
    path = tmp_path / f"episodes.{fmt}"
    old = {k: v.take(np.arange(5)) for k, v in splits.items()}
    write_store(path, old, store_attrs(old, small_cfg))
    _patch_writer(monkeypatch, fmt)
    with pytest.raises(Boom):
        write_store(path, splits, store_attrs(splits, small_cfg, label_sets))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    loaded = load_everything(path)
    for name in ALL_SPLITS:
        assert_same_episodes(loaded[name], old[name])


@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_overwrite_replaces_store(small_dataset, small_cfg, tmp_path, fmt):
    splits, label_sets = small_dataset
    path = tmp_path / f"episodes.{fmt}"
    write_store(path, splits, store_attrs(splits, small_cfg, label_sets))
    new = {k: splits[k].take(np.arange(10, 20)) for k in ("train", "test")}
    write_store(path, new, store_attrs(new, small_cfg))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no leftovers
    store = open_store(path)
    assert store.splits == ["train", "test"]
    for name in ("train", "test"):
        assert_same_episodes(store.load(name), new[name])
    with pytest.raises(StoreError, match="val"):
        store.load("val")
    if fmt == "zarr":  # the old groups are gone from disk, not just from the attributes
        assert not (path / "val").exists() and not (path / "probe").exists()
