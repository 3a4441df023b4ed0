"""`mcl analyse`: the decision-rule wiring on constructed effects, and an end-to-end run on tiny trained models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mcl.analysis.run import HYPOTHESIS_KEYS, hypothesis_entry, jaccard_matrix, upper
from mcl.analysis.stats import VERDICTS


# ---------------------------------------------------------------------------
# decision rule

def _arms(shift, n_seeds=3, n_eps=200, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.6, size=(n_seeds, n_eps))
    share = base + shift + noise * rng.standard_normal((n_seeds, n_eps))
    return share, base


@pytest.mark.parametrize("shift,direction,expected", [
    (0.2, 1, "supported"),
    (-0.2, 1, "refuted"),
    (0.0, 1, "inconclusive"),
    (-0.2, -1, "supported"),
    (0.2, -1, "refuted"),
])
def test_entry_verdicts_per_episode(shift, direction, expected):
    s, b = _arms(shift)
    e = hypothesis_entry(s, b, direction, n_boot=2000, count_key="n_episodes")
    assert e["verdict"] == expected
    assert e["n_seeds"] == 3 and e["n_episodes"] == 200
    assert e["ci_low"] <= e["effect"] <= e["ci_high"]
    assert abs(e["effect"] - float((s - b).mean())) < 1e-12
    assert "bootstrap" in e["method"] and "n_boot=2000" in e["method"]
    if shift != 0.0:
        assert e["p_value"] is not None and e["p_value"] < 0.05


def test_entry_per_seed_scalars_and_nan_seeds():
    s = np.array([0.9, 0.8, np.nan, 0.85, 0.95])
    b = np.array([0.1, 0.2, 0.3, 0.15, 0.05])
    e = hypothesis_entry(s, b, 1, n_boot=2000, count_key="n_units")
    assert e["n_seeds"] == 4  # the NaN seed is dropped from both arms
    assert e["verdict"] == "supported" and e["ci_low"] > 0
    assert math.isclose(e["effect"], float(np.mean([0.8, 0.6, 0.7, 0.9])))


def test_entry_all_nan_is_inconclusive_with_nulls():
    e = hypothesis_entry(np.full(3, np.nan), np.zeros(3), 1, n_boot=100)
    assert e["verdict"] == "inconclusive" and e["effect"] is None and e["ci_low"] is None and e["n_seeds"] == 0


def test_entry_single_seed_has_no_p_value():
    s, b = _arms(0.3, n_seeds=1)
    e = hypothesis_entry(s, b, 1, n_boot=500)
    assert e["p_value"] is None and e["verdict"] == "supported"


def test_jaccard_and_upper():
    L = np.array([[1, 1, 0], [0, 1, 1], [1, 1, 0]])
    J = jaccard_matrix(L)
    assert np.allclose(np.diag(J), 1)
    assert math.isclose(J[0, 1], 1 / 3) and J[0, 2] == 1.0
    assert upper(J).tolist() == [J[0, 1], J[0, 2], J[1, 2]]


# ---------------------------------------------------------------------------
# end to end on tiny trained models

TINY_ANALYSE = {
    "train.seeds": [0, 1],
    "train.steps": 3,
    "train.eval_every": 3,
    "train.checkpoint_every": 3,
    "data.probe_programs": 4,
    "data.probe_episodes": 4,
    "analysis.probe_train_episodes": 128,
    "analysis.batch_size": 64,
    "analysis.n_boot": 500,
    "analysis.top_units": 2,
    "analysis.top_examples": 3,
}


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A tiny store + both arms x 2 seeds trained, evaluated and fine-tuned (through the real CLI code)."""
    import yaml
    from click.testing import CliRunner

    from conftest import tiny_raw_params
    from mcl.cli import cli
    from mcl.config import parse_params
    from mcl.data.generator import generate_dataset
    from mcl.data.store import store_attrs, write_store
    from mcl.training.trainer import ARMS, run_name, train

    root = tmp_path_factory.mktemp("analyse")
    store = root / "episodes.zarr"
    raw = tiny_raw_params({**TINY_ANALYSE, "data.store": str(store)})
    params = parse_params(raw)
    splits, label_sets = generate_dataset(params.data)
    write_store(store, splits, store_attrs(splits, params.data, label_sets))
    params_path = root / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    runner = CliRunner()
    for arm in ARMS:
        for seed in params.train.seeds:
            name = run_name(arm, seed)
            train(params, arm, seed, root / "models" / name, root / "metrics" / "train" / name, progress=False, tensorboard=False)
            for args in (["evaluate", "--out", str(root / "metrics" / "eval" / f"{name}.json")],
                         ["finetune", "--out-dir", str(root / "metrics" / "finetune")]):
                res = runner.invoke(cli, [args[0], "--params", str(params_path), "--arm", arm, "--seed", str(seed),
                                          "--models-dir", str(root / "models"), *args[1:]])
                assert res.exit_code == 0, res.output
    return root, params, params_path


@pytest.mark.slow
def test_analyse_end_to_end(tiny_pipeline):
    from mcl.analysis.run import analyse

    root, params, _ = tiny_pipeline
    hyp = analyse(params, root / "models", root / "metrics", root / "metrics" / "analysis")
    written = json.loads((root / "metrics" / "hypotheses.json").read_text())
    assert set(written) == set(HYPOTHESIS_KEYS)
    for key, e in written.items():
        assert e["verdict"] in VERDICTS, key
        assert e["hypothesis"] == HYPOTHESIS_KEYS[key][0]
        assert e["direction"] in (1, -1)
        assert isinstance(e["method"], str) and e["method"]
        if e["effect"] is not None:
            assert math.isfinite(e["ci_low"]) and math.isfinite(e["ci_high"]), key
            assert e["ci_low"] <= e["ci_high"]
            assert e["n_seeds"] >= 1
    # H1 and H2 are always defined: per-episode / per-task paired arrays over 2 seeds
    assert written["H1_exact_match"]["n_seeds"] == 2 and written["H1_exact_match"]["n_episodes"] == 32
    assert written["H2_final_iou"]["n_tasks"] == params.finetune.num_tasks
    assert written["H3_cka"]["n_pairs"] == 6
    assert hyp["H1_iou"]["effect"] == written["H1_iou"]["effect"]
    # H1 recomputed from the models agrees with the evaluate stage's means
    art = json.loads((root / "metrics" / "analysis" / "analysis.json").read_text())
    for arm in ("share", "baseline"):
        for i, seed in enumerate(params.train.seeds):
            ev = json.loads((root / "metrics" / "eval" / f"{arm}-seed{seed}.json").read_text())
            assert math.isclose(art["per_seed_test_means"][arm]["iou"][i], ev["test"]["iou"], abs_tol=1e-5)
    with np.load(root / "metrics" / "analysis" / "matrices.npz", allow_pickle=False) as m:
        L = len(art["layers"])
        assert art["layers"][-2:] == ["h", "z"]
        assert m["share_task_cka"].shape == (L, 4, 4) and m["layer_cka_share_vs_baseline"].shape == (L, L)
        assert m["jaccard"].shape == (4, 4)
        assert m["share_top_inputs"].shape[1:] == (3, params.data.demos + 1, 8, 8)
    assert art["task_cka_estimator"] == "debiased"  # 4 episodes per task << 10 x width
