"""The `mcl generate` / `mcl data info` / `mcl data card` commands, run as subprocesses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mcl.data.generator import ALL_SPLITS
from mcl.data.store import open_store

REPO = Path(__file__).parents[1]
PARAMS = REPO / "params.yaml"


def run(args, cwd, timeout=120, exe=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = ([exe] if exe else [sys.executable, "-m", "mcl.cli"]) + [str(a) for a in args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def write_params(path: Path, overrides: dict) -> Path:
    raw = yaml.safe_load(PARAMS.read_text())
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_overrides):
    """A project directory with a small params.yaml and the store `mcl generate` wrote from it."""
    root = tmp_path_factory.mktemp("cli")
    write_params(root / "params.yaml", small_overrides)
    proc = run(["generate", "--params", "params.yaml"], cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root, proc


@pytest.fixture(scope="module")
def store_path(workdir) -> Path:
    return workdir[0] / "data" / "episodes.zarr"


def test_console_script_exists(tmp_path):
    exe = shutil.which("mcl", path=str(Path(sys.executable).parent))
    assert exe is not None
    proc = run(["--help"], cwd=tmp_path, exe=exe)
    assert proc.returncode == 0, proc.stderr
    for word in ("generate", "data"):
        assert word in proc.stdout


def test_generate_writes_store(workdir, store_path, small_dataset):
    _, proc = workdir
    assert store_path.is_dir()
    splits, _ = small_dataset
    assert proc.stdout.strip() == "wrote data/episodes.zarr: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    store = open_store(store_path)
    assert store.splits == list(ALL_SPLITS)
    # same params in another process give the same bytes as the in-process session dataset
    from mcl.data.generator import split_checksum

    for name in ALL_SPLITS:
        assert store.attrs["checksums"][name] == split_checksum(splits[name])
        assert len(store.load(name)) == len(splits[name])
    # no temporary leftovers next to the store
    assert sorted(p.name for p in store_path.parent.iterdir()) == ["episodes.zarr"]


def test_generate_out_hdf5(tmp_path, small_overrides):
    write_params(tmp_path / "p.yaml", {**small_overrides, "data.n_train": 50, "data.n_val": 8, "data.n_test": 8,
                                       "data.n_fewshot": 8, "data.n_dev": 6, "data.n_novel2": 5})
    proc = run(["generate", "--params", "p.yaml", "--out", "out/eps.h5"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    store = open_store(tmp_path / "out" / "eps.h5")
    assert store.format == "hdf5"
    assert store.attrs["splits"] == dict(train=50, val=8, dev=6, test=8, fewshot=8, novel2=5, probe=24)
    store.load("train")
    store.load("novel2")
    assert not (tmp_path / "data").exists()  # --out wins over data.store


def test_generate_without_novel2(tmp_path, small_overrides):
    """data.novel2_fraction 0: nothing held out, no novel2 split in the store."""
    write_params(tmp_path / "params.yaml", {**small_overrides, "data.n_train": 50, "data.n_val": 8, "data.n_test": 8,
                                            "data.n_fewshot": 8, "data.n_dev": 8, "data.novel2_fraction": 0.0})
    proc = run(["generate", "--params", "params.yaml"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "novel2" not in proc.stdout
    store = open_store(tmp_path / "data" / "episodes.zarr")
    assert store.splits == [s for s in ALL_SPLITS if s != "novel2"]
    assert store.attrs["label_sets"]["novel2"] == []


def test_data_info(workdir, store_path):
    root, _ = workdir
    proc = run(["data", "info", store_path], cwd=root)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    attrs = open_store(store_path).attrs
    for name in ALL_SPLITS:
        count, checksum = attrs["splits"][name], attrs["checksums"][name]
        assert re.search(rf"^{name}\s+{count}\s+\d+\s+.*{checksum}$", out, re.M), f"{name} row missing:\n{out}"
    assert "schema_version 1" in out
    assert "rotate, flip, recolor, swap, translate, gravity, border, fill_bg" in out
    assert "train: label-set histogram" in out
    pools = attrs["label_sets"]
    assert (f"label sets drawn from: train {len(pools['train'])}, novel2 {len(pools['novel2'])}, "
            f"dev {len(pools['dev'])}, test {len(pools['test'])}") in out
    names = attrs["primitives"]
    held = ", ".join("+".join(p for i, p in enumerate(names) if m >> i & 1) for m in pools["novel2"])
    assert f"  novel2: {held}\n" in out


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory, small_overrides, small_zarr_store):
    """Bad-input runs as real subprocesses, started side by side (the CLI's error path imports heavy
    modules, so each run takes seconds)."""
    root = tmp_path_factory.mktemp("cli_errors")
    scenarios = {}

    bad = root / "bad_demos"
    bad.mkdir()
    write_params(bad / "params.yaml", {**small_overrides, "data.demos": "three"})
    scenarios["bad_demos"] = (bad, ["generate", "--params", "params.yaml"])

    corrupt = root / "corrupt_info"
    corrupt.mkdir()
    shutil.copytree(small_zarr_store, corrupt / "bad.zarr")
    chunk = next(p for p in (corrupt / "bad.zarr" / "train" / "inputs" / "c").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    scenarios["corrupt_info"] = (corrupt, ["data", "info", "bad.zarr"])

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    procs = {name: subprocess.Popen([sys.executable, "-m", "mcl.cli", *args], cwd=d, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (d, args) in scenarios.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (scenarios[name][0], subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_generate_bad_params(error_runs):
    d, proc = error_runs["bad_demos"]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert error_line(proc) == "Error: params.yaml: data.demos must be an integer >= 1 and <= 16, got 'three'"
    assert proc.stdout == ""
    assert sorted(p.name for p in d.iterdir()) == ["params.yaml"]  # nothing written, no data/ folder


def test_data_info_corrupt_store(error_runs):
    d, proc = error_runs["corrupt_info"]
    assert proc.returncode == 2
    line = error_line(proc)
    assert "bad.zarr" in line and "train" in line


# Further bad inputs, in-process through click's test runner (same command objects and error handling).


def invoke(args, cwd: Path, monkeypatch):
    from click.testing import CliRunner

    from mcl.cli import cli

    monkeypatch.chdir(cwd)
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="mcl")


def in_process_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("overrides,text,needle", [
    ({"data.format": "hdf5"}, None, "data.store must end with .h5 when data.format is hdf5"),
    ({"loss.share.k": 8}, None, "loss.share.k must be < train.group_size"),
    ({"data.foo": 1}, None, "unknown key data.foo"),
    (None, "data: [unclosed\n", "not valid YAML"),
])
def test_generate_bad_params_in_process(tmp_path, monkeypatch, small_overrides, overrides, text, needle):
    path = tmp_path / "params.yaml"
    if text is None:
        raw = yaml.safe_load(PARAMS.read_text())
        if "data.foo" in overrides:
            raw["data"]["foo"] = 1
            path.write_text(yaml.safe_dump(raw))
        else:
            write_params(path, {**small_overrides, **overrides})
    else:
        path.write_text(text)
    result = invoke(["generate", "--params", "params.yaml"], tmp_path, monkeypatch)
    line = in_process_error_line(result)
    assert line.startswith("Error: params.yaml: ") and needle in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_generate_bad_out_suffix(tmp_path, monkeypatch, small_overrides):
    write_params(tmp_path / "params.yaml", small_overrides)
    result = invoke(["generate", "--params", "params.yaml", "--out", "store.npz"], tmp_path, monkeypatch)
    assert "store.npz" in in_process_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_generate_missing_params_file(tmp_path, monkeypatch):
    result = invoke(["generate", "--params", "nope.yaml"], tmp_path, monkeypatch)
    assert "nope.yaml" in in_process_error_line(result)


def test_data_info_missing_store(tmp_path, monkeypatch):
    result = invoke(["data", "info", "none.zarr"], tmp_path, monkeypatch)
    assert "none.zarr" in in_process_error_line(result)


def test_data_card_missing_store(tmp_path, monkeypatch):
    result = invoke(["data", "card", "none.h5", "--out", "card.md", "--figures", "figs"], tmp_path, monkeypatch)
    assert "none.h5" in in_process_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_data_info_wrong_schema_in_process(small_zarr_store, tmp_path, monkeypatch):
    import json

    store = tmp_path / "old.zarr"
    shutil.copytree(small_zarr_store, store)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = 0
    (store / "zarr.json").write_text(json.dumps(meta))
    result = invoke(["data", "info", "old.zarr"], tmp_path, monkeypatch)
    line = in_process_error_line(result)
    assert "old.zarr" in line and "schema_version" in line


@pytest.fixture(scope="module")
def card(workdir, store_path):
    root, _ = workdir
    proc = run(["data", "card", store_path, "--out", "docs/dataset.md", "--figures", "docs/figures"], cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "docs" / "dataset.md"


def test_data_card(card, store_path):
    text = card.read_text()
    assert text.startswith("# Dataset card")
    attrs = open_store(store_path).attrs
    for name in ALL_SPLITS:
        assert f"| `{name}` | {attrs['splits'][name]} |" in text
        assert attrs["checksums"][name][:16] in text
    pools, data = attrs["label_sets"], attrs["data"]
    for name, sets in pools.items():
        assert f"| `{name}` | {len(sets)} |" in text  # the label-set pools
    pairs = len(pools["novel2"]) + sum(bin(m).count("1") == 2 for m in pools["train"])
    assert (f"round({data['novel2_fraction']} x {pairs}) = {len(pools['novel2'])}") in text
    assert f"fixed seed {attrs['holdout']['seed']}" in text
    assert f"`data.demos` = {data['demos']}:" in text
    assert f"{data['min_shapes']}-{data['max_shapes']} shapes of side <= {data['max_shape_size']}" in text
    assert f"`train` {data['n_train']} (~" in text and f"`novel2` {data['n_novel2']} (~" in text
    pngs = sorted((card.parent / "figures").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(f"primitive_{n}" for n in attrs["primitives"])
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every image link resolves relative to the card
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 8
    for link in links:
        assert (card.parent / link).is_file(), link
    assert not list(card.parent.glob(".*tmp*"))


def _run_script(code: str, cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "read_split.py"
    script.write_text(code)
    # a plain interpreter, no PYTHONPATH: the snippet must not need mcl
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def _check_snippet_output(proc, n_test, pairs):
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"({n_test}, {pairs}, 8, 8) ["), proc.stdout


def test_snippet_runs(workdir, store_path, tmp_path, small_cfg):
    from mcl.data.card import SNIPPET

    assert "import mcl" not in SNIPPET and "from mcl" not in SNIPPET
    root, _ = workdir
    proc = _run_script(SNIPPET, root, tmp_path)
    _check_snippet_output(proc, small_cfg.n_test, small_cfg.demos + 1)


def test_card_snippet_runs(card, workdir, tmp_path, small_cfg):
    blocks = re.findall(r"```python\n(.*?)```", card.read_text(), re.S)
    assert len(blocks) == 1
    assert "zarr.open_group" in blocks[0] and "h5py.File" in blocks[0]
    root, _ = workdir
    proc = _run_script(blocks[0], root, tmp_path)
    _check_snippet_output(proc, small_cfg.n_test, small_cfg.demos + 1)


@pytest.mark.parametrize("style", ["named", "json-only"])
def test_snippet_reads_hdf5(small_dataset, small_cfg, tmp_path, style):
    """The snippet's HDF5 branch, on a store with named attributes and on an older one with only `mcl`."""
    import h5py

    from mcl.data.card import SNIPPET
    from mcl.data.store import store_attrs, write_store

    splits, label_sets = small_dataset
    root = tmp_path / "project"
    write_store(root / "data" / "episodes.h5", splits, store_attrs(splits, small_cfg, label_sets))
    if style == "json-only":
        with h5py.File(root / "data" / "episodes.h5", "r+") as f:
            for name in [n for n in f.attrs if n != "mcl"]:
                del f.attrs[name]
    proc = _run_script(SNIPPET + "print(sorted(label_sets))\n", root, tmp_path)
    _check_snippet_output(proc, small_cfg.n_test, small_cfg.demos + 1)
    assert proc.stdout.splitlines()[-1] == str(sorted(label_sets))
