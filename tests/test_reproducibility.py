"""Same params and seed -> same bytes on disk and the same metrics; the `mcl reproducibility` study."""

from __future__ import annotations

import math

import pytest
from repo_tools import tree_bytes

from mcl.studies.reproducibility import HEADLINE, spreads, weights_digest


@pytest.mark.parametrize("name", ["episodes.zarr", "episodes.h5"])
def test_generate_twice_gives_byte_identical_store_files(tmp_path, small_cfg, name):
    from mcl.data.generator import generate_dataset
    from mcl.data.store import open_store, store_attrs, write_store

    for run in ("a", "b"):
        splits, label_sets = generate_dataset(small_cfg)
        write_store(tmp_path / run / name, splits, store_attrs(splits, small_cfg, label_sets))
    a, b = tmp_path / "a" / name, tmp_path / "b" / name
    if a.is_dir():
        files_a, files_b = tree_bytes(a), tree_bytes(b)
        assert sorted(files_a) == sorted(files_b) and len(files_a) > 10
        assert [k for k in files_a if files_a[k] != files_b[k]] == []
    else:  # HDF5: the file as a whole
        assert a.read_bytes() == b.read_bytes()
    assert open_store(a).attrs["checksums"] == open_store(b).attrs["checksums"]


def test_spreads_known_values():
    keys = [f"{s}/{m}" for s, m in HEADLINE]
    rows = [{"seed": 0, **{k: 0.5 for k in keys}}, {"seed": 0, **{k: 0.5 for k in keys}},
            {"seed": 1, **{k: 0.7 for k in keys}}, {"seed": 1, **{k: 0.8 for k in keys}}]
    s = spreads(rows)["val/iou"]
    assert s["run_to_run"] == pytest.approx(0.1)  # seed 1: 0.8 - 0.7
    assert s["seed_range"] == pytest.approx(0.25)  # means 0.5 and 0.75
    assert s["seed_sd"] == pytest.approx(0.25 / math.sqrt(2))
    assert math.isnan(spreads(rows[:2])["val/iou"]["seed_sd"])  # one seed: no seed-to-seed spread


def test_weights_digest_sees_one_changed_value():
    import torch

    state = {"a.weight": torch.arange(6.0).reshape(2, 3), "b.bias": torch.zeros(3)}
    same = {k: v.clone() for k, v in reversed(list(state.items()))}
    assert weights_digest(state) == weights_digest(same)
    same["b.bias"][1] = 1e-7
    assert weights_digest(state) != weights_digest(same)


@pytest.mark.slow
def test_reproducibility_command_two_runs_per_seed(tmp_path, write_tiny_params, run_mcl):
    write_tiny_params(tmp_path / "params.yaml")
    proc = run_mcl(["reproducibility", "--seed", "0", "--seed", "1", "--out", "docs/repro.md",
                    "--work-dir", "runs"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "docs" / "repro.md").read_text()
    assert "`uv run mcl reproducibility --seed 0 --seed 1`" in text
    assert "bitwise identical across the runs of every seed: **yes**" in text

    runs = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert [(r[0].strip(), r[1].strip()) for r in runs] == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]
    # same seed: every metric and the weights equal; other seed: other weights
    assert runs[0][2:] == runs[1][2:] and runs[2][2:] == runs[3][2:]
    assert runs[0][-1] != runs[2][-1]
    spread_rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith(("| val/", "| test/"))]
    assert len(spread_rows) == len(HEADLINE)
    assert all(float(r[1]) == 0.0 for r in spread_rows), "run-to-run spread on the CPU must be exactly 0"
    # the kept runs are the study's own: two trained copies of each seed
    for run in ("run1", "run2"):
        for seed in (0, 1):
            assert (tmp_path / "runs" / run / "models" / f"share/seed{seed}" / "best.pt").is_file()
