"""Grid metrics, zero-shot evaluation sections and the summary file, on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mcl.data.generator import Episodes
from mcl.data.primitives import NAMES
from mcl.data.store import open_store
from mcl.evaluation.metrics import METRICS, copy_prediction, majority_prediction, per_episode, summarise
from mcl.evaluation.summary import summarize_runs
from mcl.data.dataset import DeviceSplit
from mcl.evaluation.forward import evaluate_split, forward_split
from mcl.evaluation.zero_shot import (breakdown, episode_arrays, evaluate_model, example_index, examples, reference_rows,
                                     split_values)
from mcl.models.build import build_model, load_trained

PRIMS = list(NAMES)


def grid(fill=0, cells=()) -> torch.Tensor:
    g = torch.full((8, 8), fill, dtype=torch.long)
    for (r, c), v in cells:
        g[r, c] = v
    return g


def episodes(program: list[list[int]], inputs=None, outputs=None) -> Episodes:
    """Hand-made Episodes: labels follow ``program`` (-1 padding); grids default to zeros, 2 pairs."""
    program = np.array(program, dtype=np.int16)
    n = len(program)
    labels = np.zeros((n, len(PRIMS)), np.uint8)
    for i, steps in enumerate(program):
        labels[i, steps[steps >= 0]] = 1
    inputs = np.zeros((n, 2, 8, 8), np.uint8) if inputs is None else np.asarray(inputs, np.uint8)
    outputs = np.zeros((n, 2, 8, 8), np.uint8) if outputs is None else np.asarray(outputs, np.uint8)
    return Episodes(inputs, outputs, labels, program, np.full((n, 3, 2), -1, np.int16))


# ---------------------------------------------------------------------------
# per_episode / summarise


def test_perfect_prediction_scores_one():
    target = torch.stack([grid(0, [((1, 1), 3), ((2, 2), 4)]), grid(5), grid(0)])
    m = per_episode(target.clone(), target)
    for name in METRICS:
        assert m[name].dtype == torch.float32 and m[name].shape == (3,)
        assert torch.equal(m[name], torch.ones(3)), name
    s = summarise(m)
    assert s == {"exact_match": 1.0, "cell_accuracy": 1.0, "iou": 1.0, "episodes": 3}


def test_copy_prediction_hand_computed():
    # target: a 1x4 bar of colour 1 on background; the query (copy prediction) has only half of it
    target = grid(0, [((0, c), 1) for c in range(4)])[None]
    query = grid(0, [((0, c), 1) for c in range(2)])[None]
    pred = copy_prediction(query.to(torch.uint8))
    assert pred.dtype == torch.long and torch.equal(pred, query)
    m = per_episode(pred, target)
    assert m["exact_match"].item() == 0.0
    assert m["cell_accuracy"].item() == pytest.approx(62 / 64)
    # colour 0: |pred=0 & t=0| = 60, |pred=0 | t=0| = 62; colour 1: 2 / 4; mean over the 2 colours present
    assert m["iou"].item() == pytest.approx((60 / 62 + 2 / 4) / 2)


def test_iou_averages_over_colours_in_prediction_or_target():
    target = grid(0, [((0, 0), 1)])[None]
    pred = grid(0, [((7, 7), 2)])[None]  # colour 2 only in the prediction, colour 1 only in the target
    m = per_episode(pred, target)
    assert m["cell_accuracy"].item() == pytest.approx(62 / 64)
    assert m["iou"].item() == pytest.approx((62 / 64 + 0 + 0) / 3)


def test_all_wrong_prediction_scores_zero():
    target = torch.stack([grid(0), grid(0, [((3, 3), 7)])])
    pred = torch.stack([grid(1), grid(2)])
    m = per_episode(pred, target)
    for name in METRICS:
        assert torch.equal(m[name], torch.zeros(2)), name


def test_summarise_mean_and_mask():
    values = {"exact_match": torch.tensor([1.0, 0.0, 0.0, 1.0]), "cell_accuracy": torch.tensor([1.0, 0.5, 0.25, 1.0]),
              "iou": torch.tensor([1.0, 0.4, 0.2, 0.9])}
    s = summarise(values)
    assert s["exact_match"] == pytest.approx(0.5) and s["iou"] == pytest.approx(0.625) and s["episodes"] == 4
    s = summarise(values, torch.tensor([False, True, True, False]))
    assert s["cell_accuracy"] == pytest.approx(0.375) and s["iou"] == pytest.approx(0.3) and s["episodes"] == 2
    empty = summarise(values, torch.zeros(4, dtype=torch.bool))
    assert empty["episodes"] == 0 and np.isnan(empty["iou"])


def test_majority_prediction():
    query = torch.stack([
        grid(0, [((r, c), 3) for r in range(6) for c in range(6)]),   # 36 cells of 3, 28 of 0
        grid(0, [((0, 0), 5)]),                                        # mostly background
        grid(9, [((1, 1), 2), ((1, 2), 2)]),
    ]).to(torch.uint8)
    pred = majority_prediction(query)
    assert pred.shape == (3, 8, 8) and pred.dtype == torch.long
    assert torch.equal(pred, torch.stack([grid(3), grid(0), grid(9)]))
    assert query[0, 0, 0] == 3  # the input is not modified


# ---------------------------------------------------------------------------
# breakdown and reference rows


def test_breakdown_by_length_and_primitive():
    # lengths 1, 2, 2, 3; primitives: rotate(0) in 0, 2, 3; flip(1) in 1, 3; recolor(2) in 2, 3; swap(3) in 1
    eps = episodes([[0, -1, -1], [1, 3, -1], [2, 0, -1], [0, 1, 2]])
    values = {"exact_match": torch.tensor([1.0, 0.0, 0.0, 1.0]), "cell_accuracy": torch.tensor([1.0, 0.5, 0.25, 1.0]),
              "iou": torch.tensor([1.0, 0.4, 0.2, 0.9])}
    out = breakdown(values, eps, PRIMS)
    assert out["iou"] == pytest.approx(0.625) and out["episodes"] == 4
    assert set(out["by_length"]) == {"1", "2", "3"}
    assert out["by_length"]["1"] == pytest.approx({"exact_match": 1.0, "cell_accuracy": 1.0, "iou": 1.0, "episodes": 1})
    assert out["by_length"]["2"] == pytest.approx({"exact_match": 0.0, "cell_accuracy": 0.375, "iou": 0.3, "episodes": 2})
    assert out["by_length"]["3"]["iou"] == pytest.approx(0.9)
    assert set(out["by_primitive"]) == {PRIMS[0], PRIMS[1], PRIMS[2], PRIMS[3]}  # absent primitives are left out
    byp = out["by_primitive"]
    assert byp[PRIMS[0]]["iou"] == pytest.approx((1.0 + 0.2 + 0.9) / 3) and byp[PRIMS[0]]["episodes"] == 3
    assert byp[PRIMS[1]]["iou"] == pytest.approx((0.4 + 0.9) / 2)
    assert byp[PRIMS[2]]["cell_accuracy"] == pytest.approx((0.25 + 1.0) / 2)
    assert byp[PRIMS[3]] == pytest.approx({"exact_match": 0.0, "cell_accuracy": 0.5, "iou": 0.4, "episodes": 1})
    # alone: only episode 0 is length 1 (rotate)
    assert out["by_primitive_alone"] == {PRIMS[0]: pytest.approx({"exact_match": 1.0, "cell_accuracy": 1.0,
                                                                  "iou": 1.0, "episodes": 1})}
    # label sets are unordered, named in label order: {flip, swap}, {rotate, recolor} (program recolor, rotate)
    sets = out["by_label_set"]
    assert list(sets) == sorted([PRIMS[0], f"{PRIMS[1]}+{PRIMS[3]}", f"{PRIMS[0]}+{PRIMS[2]}",
                                 f"{PRIMS[0]}+{PRIMS[1]}+{PRIMS[2]}"])
    assert sets[f"{PRIMS[0]}+{PRIMS[2]}"] == pytest.approx({"exact_match": 0.0, "cell_accuracy": 0.25, "iou": 0.2,
                                                            "episodes": 1})
    assert sets[f"{PRIMS[1]}+{PRIMS[3]}"]["cell_accuracy"] == pytest.approx(0.5)
    json.dumps(out)  # goes into the metrics JSON as is


def test_breakdown_groups_episodes_of_one_label_set():
    """Two length-1 swap episodes and one length-1 rotate: the swap label set and swap alone average both."""
    eps = episodes([[3, -1, -1], [3, -1, -1], [0, -1, -1]])
    values = {"exact_match": torch.tensor([1.0, 0.0, 1.0]), "cell_accuracy": torch.tensor([1.0, 0.5, 1.0]),
              "iou": torch.tensor([1.0, 0.5, 1.0])}
    out = breakdown(values, eps, PRIMS)
    assert out["by_label_set"][PRIMS[3]] == pytest.approx({"exact_match": 0.5, "cell_accuracy": 0.75, "iou": 0.75,
                                                           "episodes": 2})
    assert out["by_primitive_alone"][PRIMS[3]] == out["by_label_set"][PRIMS[3]]
    assert out["by_primitive_alone"][PRIMS[0]]["episodes"] == 1


def test_reference_rows_hand_made():
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 10, (3, 2, 8, 8), dtype=np.uint8)
    outputs = rng.integers(0, 10, (3, 2, 8, 8), dtype=np.uint8)
    outputs[0, -1] = inputs[0, -1]          # episode 0: copying the query is exactly right
    inputs[1, -1] = 4
    outputs[1, -1] = 4
    outputs[1, -1, 0, :] = 6                # episode 1: 8 cells differ from the query
    eps = episodes([[0, -1, -1], [1, -1, -1], [0, 1, -1]], inputs, outputs)
    ref = reference_rows(eps, PRIMS)
    assert set(ref) == {"copy", "majority"}

    query, target = torch.from_numpy(inputs[:, -1]), torch.from_numpy(outputs[:, -1]).long()
    direct = per_episode(query.long(), target)
    for name, value in summarise(direct).items():
        assert ref["copy"][name] == pytest.approx(value), name
    assert ref["copy"]["exact_match"] == pytest.approx(1 / 3)
    assert ref["copy"]["by_length"]["1"]["exact_match"] == pytest.approx(0.5)
    assert ref["copy"]["by_length"]["1"]["cell_accuracy"] == pytest.approx((1.0 + 56 / 64) / 2)
    assert ref["copy"] == breakdown(direct, eps, PRIMS)
    assert ref["majority"] == breakdown(per_episode(majority_prediction(query), target), eps, PRIMS)
    # episode 1's query is all 4: majority = copy there
    assert ref["majority"]["by_primitive"][PRIMS[1]]["episodes"] == 2


def test_reference_rows_on_a_store_split(tiny_store):
    store = open_store(tiny_store)
    eps = store.load("test")
    ref = reference_rows(eps, store.primitives)
    query, target = torch.from_numpy(eps.inputs[:, -1]), torch.from_numpy(eps.outputs[:, -1]).long()
    direct = summarise(per_episode(query.long(), target))
    for name in METRICS:
        assert ref["copy"][name] == pytest.approx(direct[name])
    assert ref["copy"]["episodes"] == len(eps)
    assert ref["copy"]["exact_match"] == 0.0  # the generator never emits a no-op pair
    assert set(ref["copy"]["by_length"]) == {"3"}


# ---------------------------------------------------------------------------
# evaluate_model


@pytest.mark.parametrize("trained", [False, True], ids=["untrained", "trained"])
def test_evaluate_model_sections(tiny_store, tiny_params, tiny_trained_run, trained):
    torch.manual_seed(0)
    model = load_trained(tiny_trained_run, tiny_params) if trained else build_model(tiny_params, "cpu")
    model.train()
    store = open_store(tiny_store)
    splits = {s: store.load(s) for s in ("val", "test")}
    result = evaluate_model(model, splits, store.primitives, 1000, torch.device("cpu"))
    assert model.training, "evaluate_model must restore the model's mode"

    assert set(result) == {"val", "test", "reference"}
    assert set(result["reference"]) == {"val", "test"}
    for name, eps in splits.items():
        section = result[name]
        for metric in METRICS:
            assert 0.0 <= section[metric] <= 1.0
        assert section["episodes"] == len(eps)
        model.eval()
        with torch.no_grad():
            x, y = torch.from_numpy(eps.inputs), torch.from_numpy(eps.outputs)
            pred = model(x, y).logits.argmax(dim=1)
        model.train()
        direct = summarise(per_episode(pred, y[:, -1].long()))
        for metric in METRICS:
            assert section[metric] == pytest.approx(direct[metric], abs=1e-6), (name, metric)
        assert result["reference"][name] == reference_rows(eps, store.primitives)
    assert set(result["val"]["by_length"]) <= {"1", "2"}
    assert set(result["test"]["by_length"]) == {"3"}
    small = evaluate_model(model, splits, store.primitives, 7, torch.device("cpu"))  # batching
    assert small["val"]["episodes"] == len(splits["val"])
    assert small["test"]["iou"] == pytest.approx(result["test"]["iou"], abs=2 / len(splits["test"]))
    json.dumps(result)


def test_forward_split_batches_in_order_in_eval_mode_and_restores_the_mode(tiny_store, tiny_params):
    torch.manual_seed(0)
    model = build_model(tiny_params, "cpu")
    eps = open_store(tiny_store).load("val")
    split = DeviceSplit(eps, "cpu")
    index = np.arange(len(eps))[::-1].copy()  # any order: batches follow index
    model.train()
    seen, outs = [], []
    for b, out in forward_split(model, split, index, 7):
        assert not model.training and not out.logits.requires_grad
        seen.append(b["inputs"])
        outs.append(out)
    assert model.training, "forward_split must restore the model's mode"
    assert [len(x) for x in seen] == [len(index[i:i + 7]) for i in range(0, len(index), 7)]
    assert torch.equal(torch.cat(seen), torch.from_numpy(eps.inputs[index]))
    assert set(outs[0].acts) >= {"h", "z"} and outs[0].aux_logits.shape == (7, len(PRIMS))
    gen = forward_split(model, split, index, 7)
    next(gen)
    gen.close()  # stopped early: the mode is restored too
    assert model.training
    model.eval()
    list(forward_split(model, split, index, 7))
    assert not model.training


def test_split_values_are_the_episodes_file_and_feed_evaluate_model(tiny_store, tiny_params):
    torch.manual_seed(0)
    model = build_model(tiny_params, "cpu")
    store = open_store(tiny_store)
    splits = {s: store.load(s) for s in ("val", "test")}
    values = split_values(model, splits, 7, torch.device("cpu"))
    for name, eps in splits.items():
        direct = evaluate_split(model, DeviceSplit(eps, "cpu"), np.arange(len(eps)), 7)
        for metric in METRICS:
            assert torch.equal(values[name][metric], direct[metric]), (name, metric)
    arrays = episode_arrays(values)
    assert set(arrays) == {f"{s}_{m}" for s in splits for m in METRICS}
    for key, a in arrays.items():
        assert a.dtype == np.float32 and a.shape == (len(splits[key.split("_", 1)[0]]),)
    assert evaluate_model(model, splits, store.primitives, 7, torch.device("cpu"), values=values) == \
        evaluate_model(model, splits, store.primitives, 7, torch.device("cpu"))


# ---------------------------------------------------------------------------
# summary.json


def _write_run(root, arm, seed, val_iou, gain=None):
    name = f"{arm}/seed{seed}"
    sec = lambda v: {"exact_match": v / 2, "cell_accuracy": v, "iou": v}  # noqa: E731
    (root / "eval" / arm).mkdir(parents=True, exist_ok=True)
    (root / "eval" / f"{name}.json").write_text(json.dumps({
        "val": sec(val_iou), "test": sec(val_iou / 4), "novel2": sec(val_iou / 2),
        "reference": {split: {"copy": sec(0.1), "majority": sec(0.02)} for split in ("val", "test", "novel2")}}))
    if gain is not None:
        (root / "finetune" / arm).mkdir(parents=True, exist_ok=True)
        (root / "finetune" / f"{name}.json").write_text(json.dumps({
            how: {"final_iou": 0.3, "gain_iou": g} for how, g in (("none", 0.0), ("lora", gain), ("full", 2 * gain))}))


def test_summarize_runs_means_over_seeds(tmp_path):
    _write_run(tmp_path, "share", 0, 0.4, 0.1)
    _write_run(tmp_path, "share", 1, 0.6, 0.3)
    _write_run(tmp_path, "baseline", 0, 0.2, 0.5)
    _write_run(tmp_path, "baseline", 1, 0.2, 0.5)
    _write_run(tmp_path, "oracle", 0, 0.8)
    out = summarize_runs([0, 1], [0], tmp_path / "eval", tmp_path / "finetune", "lora")
    assert set(out) == {"share", "baseline", "oracle", "copy", "majority", "seeds"}
    assert out["seeds"] == 2
    share = out["share"]
    assert set(share) == {"val_exact_match", "test_exact_match", "novel2_exact_match", "test_iou",
                          "fewshot_lora_gain_iou"}  # headline numbers only: dvc exp show stays readable
    assert share["val_exact_match"] == pytest.approx(0.25)
    assert share["test_iou"] == pytest.approx(0.125)
    assert share["novel2_exact_match"] == pytest.approx(0.125)
    assert share["fewshot_lora_gain_iou"] == pytest.approx(0.2)
    assert out["baseline"]["fewshot_lora_gain_iou"] == pytest.approx(0.5)
    assert out["oracle"] == {"val_exact_match": 0.4, "test_exact_match": 0.1, "novel2_exact_match": 0.2, "test_iou": 0.2}
    assert out["copy"] == {"val_exact_match": 0.05, "test_exact_match": 0.05, "novel2_exact_match": 0.05}
    assert out["majority"]["test_exact_match"] == pytest.approx(0.01)
    json.dumps(out)

    with pytest.raises(FileNotFoundError, match="seed2.json"):
        summarize_runs([0, 2], [0], tmp_path / "eval", tmp_path / "finetune", "lora")


def test_example_index_one_primitive_at_a_time():
    # lengths 1, 2, 1, 3, 2; rotate(0) in 0, 1, 3; flip(1) in 1, 4; recolor(2) in 2, 3, 4
    eps = episodes([[0, -1, -1], [0, 1, -1], [2, -1, -1], [0, 1, 2], [1, 2, -1]])
    rows, prims = example_index(eps, 2, alone=True)            # length-1 episodes only
    assert rows.tolist() == [0, 2] and prims.tolist() == [0, 2]
    rows, prims = example_index(eps, 2, alone=False)           # any containing it, each episode once
    assert rows.tolist() == [0, 1, 3, 4, 2] and prims.tolist() == [0, 0, 1, 1, 2]


def test_examples_hold_the_model_predictions(tiny_store, tiny_params):
    torch.manual_seed(0)
    model = build_model(tiny_params, "cpu")
    store = open_store(tiny_store)
    splits = {s: store.load(s) for s in ("val", "test")}
    out = examples(model, splits, 7, torch.device("cpu"), per_primitive=1)
    for name, eps in splits.items():
        index, prim = example_index(eps, 1, alone=name == "val")
        assert np.array_equal(out[f"{name}_primitive"], prim)
        assert np.array_equal(out[f"{name}_inputs"], eps.inputs[index])
        with torch.no_grad():
            pred = model.eval()(torch.from_numpy(eps.inputs[index]), torch.from_numpy(eps.outputs[index])).logits
        assert np.array_equal(out[f"{name}_prediction"], pred.argmax(1).numpy())
