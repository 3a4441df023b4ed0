"""`mcl learnability` on tiny params: every variant trains, the table and the figure are written."""

from __future__ import annotations

import pytest

from mcl.analysis.learnability import VARIANTS, read_curve, render


@pytest.mark.slow
def test_learnability_command_writes_table_and_figure(write_tiny_params, run_mcl, tmp_path):
    params = write_tiny_params(tmp_path / "params.yaml", {"train.eval_every": 4})
    out, fig = tmp_path / "docs" / "learnability.md", tmp_path / "docs" / "figures" / "learnability.png"
    proc = run_mcl(["learnability", "--params", params, "--out", out, "--figure", fig, "--workers", "2",
                    "--work-dir", tmp_path / "runs"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "`uv run mcl learnability --params" in text
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![exact match against steps](figures/learnability.png)" in text
    for v in VARIANTS:
        curve = read_curve(tmp_path / "runs" / v.name / "metrics" / "metrics.csv")
        assert [r["step"] for r in curve] == [4, 8], v.name   # val and test scored at every evaluation
        assert f"| `{v.name}` | {v.what} | {curve[-1]['val']:.3f} |" in text
    # the dense-grids variant trained on a store of its own, with the denser data params
    assert (tmp_path / "runs" / "dense_grids" / "episodes.zarr").is_dir()


def test_render_reads_final_best_and_test_values():
    curves = {"a": [{"step": 10, "val": 0.2, "test": 0.05}, {"step": 20, "val": 0.1, "test": 0.07}]}

    class P:  # the few params the header names
        class train:
            steps, batch_size, lr, eval_every, val_episodes = 20, 64, 0.003, 10, 512

        class model:
            d_model, n_layers, executor_layers, patch = 64, 2, 2, 2

    from mcl.analysis.learnability import Variant

    text = render(curves, (Variant("a", "baseline", "what a is"),), P, "cmd", "fig.png")
    assert "| `a` | what a is | 0.100 | 0.200 | 0.070 |" in text
    assert "0.200 / 0.050 | 0.100 / 0.070" in text
