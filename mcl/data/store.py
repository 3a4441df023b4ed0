"""Frozen episode stores: Zarr v3 (directory ``*.zarr``) or HDF5 (file ``*.h5``), same content.

Layout: one group per split (train, val, dev, test, fewshot, novel2, probe; older stores lack
dev and novel2, and a store generated with ``data.novel2_fraction: 0`` has no novel2) holding
``inputs``, ``outputs`` uint8 [N, S, 8, 8], ``labels`` uint8 [N, P], ``program`` int16 [N, 3],
``args`` int16 [N, 3, 2], each in a single chunk. Root attributes: ``schema_version``,
``primitives`` (label order), ``parameters`` (meaning of (a, b) per primitive), ``grid_size``,
``colours``, ``episode_pairs``, ``data`` (the params used), ``splits`` (counts), ``label_sets``
(bitmasks each split draws from: train, novel2, dev, test), ``holdout`` (the fixed rule's seed
and fractions), ``probe`` and ``checksums`` (SHA-256 per split, see
:func:`mcl.data.generator.split_checksum`).

Zarr keeps them as group attributes. HDF5 keeps each under its own name as a root attribute
(numbers and strings natively, lists of strings as string arrays, nested values as JSON
strings) so plain h5py / h5dump users see them, and all of them once more as one JSON string
in the root attribute ``mcl``: the record mcl reads (stores written before the named
attributes have only ``mcl``); the named attributes must agree with it.

Writes go to a temporary path that is renamed into place, so a killed writer never
leaves a partial store at the final path. Reads check the schema version, dtypes,
shapes and checksums and raise :class:`StoreError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from mcl.config import DataConfig, to_dict
from mcl.data.generator import DEV_FRACTION, HOLDOUT_RESTARTS, HOLDOUT_SEED, ALL_SPLITS, Episodes, split_checksum
from mcl.data.primitives import NAMES, PRIMITIVES, SIZE
from mcl.errors import StoreError, brief

SCHEMA_VERSION = 1
_DTYPES = dict(inputs=np.uint8, outputs=np.uint8, labels=np.uint8, program=np.int16, args=np.int16)


def store_format(path: str | os.PathLike) -> str:
    """'zarr' for ``*.zarr``, 'hdf5' for ``*.h5`` / ``*.hdf5``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".zarr":
        return "zarr"
    if suffix in (".h5", ".hdf5"):
        return "hdf5"
    raise StoreError(f"{path}: unknown store format (expected a .zarr directory or an .h5 file)")


def store_attrs(splits: dict[str, Episodes], cfg: DataConfig, label_sets: dict[str, list[int]] | None = None) -> dict:
    """Root attributes describing a dataset (JSON-serialisable)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "primitives": list(NAMES),
        "parameters": {p.name: p.meaning for p in PRIMITIVES},
        "grid_size": SIZE,
        "colours": 10,
        "episode_pairs": cfg.demos + 1,
        "data": to_dict(cfg),
        "splits": {name: len(episodes) for name, episodes in splits.items()},
        "label_sets": label_sets or {},
        "holdout": {"seed": HOLDOUT_SEED, "restarts": HOLDOUT_RESTARTS, "novel2_fraction": cfg.novel2_fraction,
                    "dev_fraction": DEV_FRACTION},
        "probe": {"programs": cfg.probe_programs, "episodes_per_program": cfg.probe_episodes},
        "checksums": {name: split_checksum(episodes) for name, episodes in splits.items()},
    }


def _h5_native(value):
    """``(stored, is_json)``: how a root attribute is written under its own name in HDF5."""
    import h5py

    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value, False
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return np.array(value, dtype=h5py.string_dtype()), False
    return json.dumps(value), True


def _h5_decode(raw, expected):
    """A named HDF5 root attribute as the Python value it encodes (JSON decoded where ``expected`` was encoded)."""
    if isinstance(raw, bytes):
        raw = raw.decode()
    if isinstance(raw, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else str(v) for v in raw.tolist()]
    if isinstance(raw, np.generic):
        raw = raw.item()
    return json.loads(raw) if _h5_native(expected)[1] else raw


def _write_h5_attrs(f, attrs: dict) -> None:
    for name, value in attrs.items():
        if name == "mcl":
            raise ValueError("store attribute name 'mcl' is reserved for the JSON record")
        f.attrs[name] = _h5_native(value)[0]
    f.attrs["mcl"] = json.dumps(attrs)


def _replace(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path``, replacing what is there (a file or a directory).

    A file is replaced by one atomic rename. A directory cannot be (rename refuses a non-empty
    target), so the old store is moved aside to ``.NAME.old-PID`` first and the new one moved in
    second: a kill between the two renames leaves nothing at ``path``, the old store complete at
    ``.NAME.old-PID`` and the new one complete at ``.NAME.tmp-PID``. The next ``write_store`` puts
    the old store back before anything else (:func:`_restore_moved_aside`), so ``path`` holds a
    complete store again while that run writes, even if it is killed too.
    """
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


def _restore_moved_aside(path: Path) -> None:
    """Undo a directory swap of :func:`_replace` that a kill cut between its two renames.

    Nothing at ``path`` with both ``.NAME.old-PID`` and ``.NAME.tmp-PID`` present happens only in
    that window (the temporary is complete once renames start; the old store is untouched), so the
    old store is moved back. An ``.old-PID`` without its ``.tmp-PID`` is what a kill during the final
    ``rmtree`` leaves (the swap had finished): possibly partial, never restored, deleted as stale.
    """
    if path.exists() or path.is_symlink():
        return
    for old in sorted(path.parent.glob(f".{path.name}.old-*")):
        pid = old.name.rsplit("-", 1)[-1]
        if old.is_dir() and path.with_name(f".{path.name}.tmp-{pid}").exists():
            os.replace(old, path)
            return


def write_store(path: str | os.PathLike, splits: dict[str, Episodes], attrs: dict) -> None:
    """Write ``splits`` and root ``attrs`` to ``path`` atomically (temp path, then rename)."""
    path = Path(path)
    fmt = store_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _restore_moved_aside(path)  # before the stale copies below are deleted
    for stale in [*path.parent.glob(f".{path.name}.tmp-*"), *path.parent.glob(f".{path.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)  # killed writers
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if fmt == "zarr":
            import zarr

            root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            for name, episodes in splits.items():
                group = root.create_group(name)
                for field in Episodes.FIELDS:
                    arr = np.ascontiguousarray(getattr(episodes, field))
                    group.create_array(field, data=arr, chunks=arr.shape if arr.size else None)
            root.attrs.update(attrs)
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                for name, episodes in splits.items():
                    group = f.create_group(name)
                    for field in Episodes.FIELDS:
                        arr = np.ascontiguousarray(getattr(episodes, field))
                        group.create_dataset(field, data=arr, compression="gzip", compression_opts=4,
                                             chunks=arr.shape if arr.size else None)
                _write_h5_attrs(f, attrs)
        _replace(tmp, path)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()
        raise


class EpisodeStore:
    """Read access to a frozen store; every split read is validated against its checksum."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.format = store_format(self.path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: store not found (run `mcl generate` or `dvc repro generate`)")
        if self.format == "zarr" and not self.path.is_dir():
            raise StoreError(f"{self.path}: not a Zarr store (a file; expected a directory holding zarr.json)")
        if self.format == "zarr" and not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a Zarr v3 store (no zarr.json in the directory)")
        if self.format == "hdf5" and not self.path.is_file():
            raise StoreError(f"{self.path}: not an HDF5 file (a directory; expected a file)")
        named = {}  # HDF5: the root attributes stored under their own names
        try:
            if self.format == "zarr":
                import zarr

                self._root = zarr.open_group(str(self.path), mode="r", zarr_format=3)
                self.attrs = dict(self._root.attrs)
            else:
                import h5py

                if not h5py.is_hdf5(self.path):
                    raise StoreError(f"{self.path}: not an HDF5 file (no HDF5 signature)")
                with h5py.File(self.path, "r") as f:
                    if "mcl" not in f.attrs:
                        raise StoreError(f"{self.path}: not an mcl episode store (no 'mcl' attribute)")
                    self.attrs = json.loads(f.attrs["mcl"])
                    named = {name: f.attrs[name] for name in self.attrs if name in f.attrs}
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"{self.path}: unreadable store metadata ({brief(e)})") from None
        version = self.attrs.get("schema_version")
        if version is None:
            raise StoreError(f"{self.path}: not an mcl episode store (no schema_version attribute; "
                             f"this mcl reads {SCHEMA_VERSION})")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema_version {version!r} but this mcl reads {SCHEMA_VERSION}")
        if self.format == "hdf5":  # the named attributes (absent in older stores) must say what 'mcl' says
            for name, raw in named.items():
                try:
                    same = _h5_decode(raw, self.attrs[name]) == self.attrs[name]
                except (ValueError, TypeError, AttributeError):
                    same = False
                if not same:
                    raise StoreError(f"{self.path}: root attribute {name!r} disagrees with the 'mcl' attribute")
        for key in ("primitives", "checksums", "splits"):
            if key not in self.attrs:
                raise StoreError(f"{self.path}: attribute {key!r} missing")

    @property
    def splits(self) -> list[str]:
        return list(self.attrs["splits"])

    @property
    def primitives(self) -> list[str]:
        return list(self.attrs["primitives"])

    def _missing(self, group, split: str) -> None:
        """Raise if the split's group or one of its arrays is absent (listed in the attributes, not on disk)."""
        if split not in group:
            raise StoreError(f"{self.path}: split {split!r} is listed in the store attributes but its group is missing")
        for field in Episodes.FIELDS:
            if field not in group[split]:
                raise StoreError(f"{self.path}: array {split}/{field} is missing")

    def _read_arrays(self, split: str) -> dict[str, np.ndarray]:
        if self.format == "zarr":
            self._missing(self._root, split)
            group = self._root[split]
            return {field: np.asarray(group[field][...]) for field in Episodes.FIELDS}
        import h5py

        with h5py.File(self.path, "r") as f:
            self._missing(f, split)
            return {field: f[split][field][...] for field in Episodes.FIELDS}

    def load(self, split: str, verify: bool = True) -> Episodes:
        """Read one split, checking dtypes, shapes and (``verify``) its SHA-256."""
        if split not in self.attrs["splits"]:
            raise StoreError(f"{self.path}: split {split!r} missing (has {', '.join(self.splits)})")
        try:
            arrays = self._read_arrays(split)
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"{self.path}: cannot read split {split!r} ({brief(e)})") from None
        n, p = self.attrs["splits"][split], len(self.primitives)
        s = self.attrs.get("episode_pairs", arrays["inputs"].shape[1] if arrays["inputs"].ndim == 4 else -1)
        shapes = dict(inputs=(n, s, SIZE, SIZE), outputs=(n, s, SIZE, SIZE), labels=(n, p), program=(n, 3), args=(n, 3, 2))
        for field, arr in arrays.items():
            if arr.dtype != _DTYPES[field] or arr.shape != shapes[field]:
                raise StoreError(f"{self.path}: {split}/{field} is {arr.dtype}{list(arr.shape)}, "
                                 f"expected {np.dtype(_DTYPES[field])}{list(shapes[field])}")
        episodes = Episodes(**arrays)
        if verify:
            expected = self.attrs["checksums"].get(split)
            actual = split_checksum(episodes)
            if actual != expected:
                raise StoreError(f"{self.path}: split {split!r} fails its checksum "
                                 f"(stored {str(expected)[:12]}..., computed {actual[:12]}...): the store is corrupt")
        return episodes

    def load_all(self) -> dict[str, Episodes]:
        return {name: self.load(name) for name in self.splits}


def open_store(path: str | os.PathLike) -> EpisodeStore:
    return EpisodeStore(path)


__all__ = ["SCHEMA_VERSION", "ALL_SPLITS", "StoreError", "EpisodeStore", "open_store", "write_store", "store_attrs",
           "store_format"]


def generate_store(cfg: DataConfig, path: str | os.PathLike) -> DataConfig:
    """Generate the splits of ``cfg`` into a new store at ``path``; ``cfg`` with ``store`` set to it."""
    import dataclasses

    from mcl.data.generator import generate_dataset

    cfg = dataclasses.replace(cfg, store=str(path))
    splits, label_sets = generate_dataset(cfg)
    write_store(path, splits, store_attrs(splits, cfg, label_sets))
    return cfg
