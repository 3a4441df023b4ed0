"""`mcl learnability` on tiny params: every variant trains; the table, per-primitive curves and figures are written."""

from __future__ import annotations

import math

import pytest

from mcl.studies.learnability import VARIANTS, Variant, first_reaching, read_curve, render_learnability
from mcl.data.primitives import NAMES

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_learnability_command_writes_table_curves_and_figures(write_tiny_params, run_mcl, tmp_path):
    params = write_tiny_params(tmp_path / "params.yaml", {"train.eval_every": 4})
    out, fig = tmp_path / "docs" / "learnability.md", tmp_path / "docs" / "figures" / "learnability.png"
    proc = run_mcl(["learnability", "--params", params, "--out", out, "--figure", fig, "--workers", "2",
                    "--work-dir", tmp_path / "runs"], cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "`uv run mcl learnability --params" in text
    assert fig.read_bytes()[:8] == PNG
    assert (fig.parent / "learnability_primitives.png").read_bytes()[:8] == PNG
    assert "![exact match against steps](figures/learnability.png)" in text
    assert "(figures/learnability_primitives.png)" in text
    for v in VARIANTS:
        curve = read_curve(tmp_path / "runs" / v.name / "metrics")
        assert [r["step"] for r in curve] == [4, 8], v.name   # val, test and per primitive at every evaluation
        assert all(r["minutes"] > 0 for r in curve)
        assert f"| `{v.name}` | {v.what} | {curve[-1]['val']:.3f} |" in text
        assert any(not math.isnan(curve[-1][p]) for p in NAMES)   # some primitive alone among the scored episodes


def test_render_reads_final_best_test_thresholds_and_primitives():
    prims = {p: 0.0 for p in NAMES}
    curves = {"a": [{"step": 10, "val": 0.6, "test": 0.05, "minutes": 0.5, **prims},
                    {"step": 20, "val": 0.85, "test": 0.07, "minutes": 1.0, **prims, "rotate": 1.0}]}

    class P:  # the few params the header names
        class train:
            steps, batch_size, lr, lr_decay, eval_every, val_episodes = 20, 64, 0.003, 0.25, 10, 512

        class model:
            demo_embed, encoder, executor, executor_steps, d_model, h_dim = "correspondence", "transformer", \
                "routing", 3, 64, 192

    text = render_learnability(curves, (Variant("a", "baseline", "what a is"),), P, "cmd", ("fig.png", "prims.png"), 2)
    # final 0.85, best 0.85, test 0.07; 0.5 reached at step 10 (0.5 min), 0.8 at step 20, 0.95 never; 3000 ms/step
    assert "| `a` | what a is | 0.850 | 0.850 | 0.070 | 10 / 0.5 | 20 / 1.0 | not reached | 3000 |" in text
    assert "| `a` | 1.00 | 0.00 |" in text          # rotate, then flip: the per-primitive table
    assert "0.600 / 0.050 | 0.850 / 0.070" in text
    assert first_reaching(curves["a"], 0.8)["step"] == 20 and first_reaching(curves["a"], 0.9) is None
