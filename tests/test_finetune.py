"""Few-shot adaptation: task selection, the three ways to adapt, censoring, and the mean curve."""

from __future__ import annotations

import copy
import dataclasses
import types

import numpy as np
import pytest
import torch

from mcl.data.dataset import DeviceSplit, label_set_bitmask
from mcl.data.store import open_store
from mcl.models.adapters import Adapter, LoRALinear, inserted_parameters
from mcl.training import finetune as ft
from mcl.training.finetune import (
    adapt,
    curve_statistics,
    fewshot_tasks,
    finetune_model,
    gains,
    mean_curve,
    relative_target,
    restricted_mean_time,
    rmst_to_target,
    summarise_method,
    time_to_reach,
)
from mcl.models.build import load_trained


@pytest.fixture(scope="module")
def fewshot(tiny_store):
    store = open_store(tiny_store)
    return store.load("fewshot"), store.primitives


@pytest.fixture(scope="module")
def split(fewshot):
    return DeviceSplit(fewshot[0], "cpu")


@pytest.fixture(scope="module")
def model(tiny_trained_run, tiny_params):
    return load_trained(tiny_trained_run, tiny_params)


@pytest.fixture(scope="module")
def task(fewshot, tiny_params):
    cfg = tiny_params.finetune
    return fewshot_tasks(fewshot[0], 1, cfg.shots, cfg.queries)[0]


def with_finetune(params, **changes):
    return dataclasses.replace(params, finetune=dataclasses.replace(params.finetune, **changes))


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------
# fewshot_tasks


def test_fewshot_tasks_picks_disjoint_episodes_of_one_label_set(fewshot):
    eps = fewshot[0]
    ids = label_set_bitmask(eps.labels)
    keys, counts = np.unique(ids, return_counts=True)
    shots, queries = 2, 4
    tasks = fewshot_tasks(eps, 5, shots, queries)
    assert len(tasks) == 5
    assert len({key for key, _, _ in tasks}) == 5, "a label set was picked twice"
    for key, support, query in tasks:
        assert counts[keys == key][0] >= shots + queries
        assert len(support) == shots and len(query) == queries
        assert set(support.tolist()).isdisjoint(query.tolist())
        assert (ids[support] == key).all() and (ids[query] == key).all()
        assert eps.labels[support].sum(axis=1).min() == 3  # fewshot label sets are length-3 compositions
    again = fewshot_tasks(eps, 5, shots, queries)
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2]) for a, b in zip(tasks, again))


def test_fewshot_tasks_skips_label_sets_that_are_too_small(fewshot):
    eps = fewshot[0]
    ids = label_set_bitmask(eps.labels)
    keys, counts = np.unique(ids, return_counts=True)
    need = int(np.sort(counts)[len(counts) // 2])  # about half the label sets have this many episodes
    eligible = set(keys[counts >= need].tolist())
    tasks = fewshot_tasks(eps, len(eligible), need - 1, 1)
    assert {key for key, _, _ in tasks} == eligible


def test_fewshot_tasks_raises_when_too_few(fewshot):
    eps = fewshot[0]
    counts = np.unique(label_set_bitmask(eps.labels), return_counts=True)[1]
    with pytest.raises(ValueError, match="num_tasks"):
        fewshot_tasks(eps, len(counts) + 1, 1, 1)
    with pytest.raises(ValueError, match="n_fewshot"):
        fewshot_tasks(eps, 1, int(counts.max()), 1)


# ---------------------------------------------------------------------------
# adapt


def test_adapt_none_is_one_point_and_trains_nothing(model, split, task, tiny_params):
    _, support, query = task
    before = state(model)
    r = adapt(model, split, support, query, "none", tiny_params, seed=0)
    assert [c["step"] for c in r["curve"]] == [0]
    assert r["trainable_parameters"] == 0
    assert r["final_iou"] == r["curve"][0]["iou"] and r["final_exact_match"] == r["curve"][0]["exact_match"]
    for k, v in state(model).items():
        assert torch.equal(v, before[k]), k


@pytest.fixture
def captured_copies(monkeypatch):
    """Record the model copies adapt() trains (it adapts copy.deepcopy(base))."""
    copies = []

    def deepcopy(obj, *args, **kwargs):
        out = copy.deepcopy(obj, *args, **kwargs)
        if isinstance(obj, torch.nn.Module):
            copies.append(out)
        return out

    monkeypatch.setattr(ft, "copy", types.SimpleNamespace(deepcopy=deepcopy))
    return copies


@pytest.mark.parametrize("how, wrapper", [("lora", LoRALinear), ("adapter", Adapter)])
def test_adapt_inserted_trains_only_inserted_parameters(model, split, task, tiny_params, captured_copies, how, wrapper):
    _, support, query = task
    params = with_finetune(tiny_params, steps=5, eval_every=2)
    before = state(model)
    r = adapt(model, split, support, query, how, params, seed=0)

    assert [c["step"] for c in r["curve"]] == [0, 2, 4, 5]
    for k, v in state(model).items():  # the base model is untouched
        assert torch.equal(v, before[k]), k
    assert not any(isinstance(m, wrapper) for m in model.modules())

    (adapted,) = captured_copies
    inserted = inserted_parameters(adapted)
    assert inserted and any(isinstance(m, wrapper) for m in adapted.modules())
    assert r["trainable_parameters"] == sum(p.numel() for p in inserted) > 0
    inserted_ids = {id(p) for p in inserted}
    names = {n for n, p in adapted.named_parameters() if id(p) in inserted_ids}
    after = dict(adapted.named_parameters())
    base_names = [n for n in after if n not in names]
    assert len(base_names) == len(before), "every original parameter is still there"
    for n in base_names:  # inserted layers wrap the originals: `x.to_h.weight` becomes `x.to_h.base.weight`
        orig = n.replace(".base.", ".")
        assert torch.equal(after[n].detach(), before[orig]), f"{n} changed"
        assert not after[n].requires_grad
    # LoRA B and the adapter's up projection start at zero: training must have moved them
    zero_init = [n for n in names if n.endswith("lora_B") or ".up." in n]
    assert zero_init and any(after[n].detach().abs().sum() > 0 for n in zero_init), "no inserted parameter trained"


def test_adapt_full_trains_every_parameter_of_a_copy(model, split, task, tiny_params, captured_copies):
    _, support, query = task
    before = state(model)
    r = adapt(model, split, support, query, "full", tiny_params, seed=0)
    assert r["trainable_parameters"] == sum(p.numel() for p in model.parameters())
    assert [c["step"] for c in r["curve"]] == [0, 2, 4]
    for k, v in state(model).items():
        assert torch.equal(v, before[k]), k
    (adapted,) = captured_copies
    changed = [k for k, v in adapted.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "full fine-tuning changed nothing"


@pytest.mark.parametrize("how", ["lora", "full"])
def test_threshold_censoring(model, split, task, tiny_params, how):
    _, support, query = task
    steps = tiny_params.finetune.steps
    never = adapt(model, split, support, query, how, with_finetune(tiny_params, threshold=1.0), seed=0)
    assert max(c["iou"] for c in never["curve"]) < 1.0  # precondition: a tiny model never gets every query right
    assert never["steps_to_threshold"] == steps + 1 and never["reached"] is False
    at_once = adapt(model, split, support, query, how, with_finetune(tiny_params, threshold=1e-6), seed=0)
    assert at_once["curve"][0]["iou"] >= 1e-6
    assert at_once["steps_to_threshold"] == 0 and at_once["reached"] is True
    # the relative target never counts step 0, whatever the absolute threshold
    assert at_once["steps_to_target"] > 0
    gap = tiny_params.finetune.gap_fraction
    assert at_once["target"] == pytest.approx(relative_target(at_once["curve"][0]["iou"], gap))


def test_threshold_is_first_scored_step_at_or_above(split, task, tiny_params):
    # the threshold logic needs a curve that moves: an untrained model with the transformer executor, which
    # starts near copying the query (the tiny routing models predict all background for the first steps)
    import dataclasses

    from mcl.models.build import build_model

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_params, model=dataclasses.replace(tiny_params.model,
                                                                                  executor="transformer")), "cpu")
    _, support, query = task
    params = with_finetune(tiny_params, steps=10, eval_every=5, lr=3e-2, threshold=1.0)
    curve = adapt(model, split, support, query, "full", params, seed=0)["curve"]
    assert [c["step"] for c in curve] == [0, 5, 10]
    best = max(c["iou"] for c in curve)
    assert best > curve[0]["iou"], "precondition: full fine-tuning moves the query IoU"
    first = next(c["step"] for c in curve if c["iou"] >= best)
    r = adapt(model, split, support, query, "full", with_finetune(params, threshold=best), seed=0)
    assert r["curve"] == curve
    assert r["steps_to_threshold"] == first > 0 and r["reached"] is True


def test_adapt_is_deterministic(model, split, task, tiny_params):
    _, support, query = task
    a = adapt(model, split, support, query, "lora", tiny_params, seed=3)
    b = adapt(model, split, support, query, "lora", tiny_params, seed=3)
    assert a["curve"] == b["curve"]


# ---------------------------------------------------------------------------
# finetune_model / mean_curve


def test_finetune_model_and_mean_curve(model, fewshot, tiny_params):
    eps, primitives = fewshot
    params = with_finetune(tiny_params, num_tasks=2, steps=4, eval_every=2)
    seen = []
    result = finetune_model(model, eps, primitives, params, torch.device("cpu"), progress=seen.append)
    assert result["methods"] == ["none", "lora", "full"]
    assert len(result["tasks"]) == 2 and seen == list(result["tasks"])
    for name, runs in result["tasks"].items():
        assert len(name.split("+")) == 3 and set(name.split("+")) <= set(primitives)
        assert set(runs) == {"none", "lora", "full"}
    for how in result["methods"]:
        s = result["summary"][how]
        assert s["tasks"] == 2
        assert s["final_iou"] == pytest.approx(np.mean([r[how]["final_iou"] for r in result["tasks"].values()]))
        assert s["steps_to_threshold"] == pytest.approx(
            np.mean([r[how]["steps_to_threshold"] for r in result["tasks"].values()]))
        for key in ("gain_iou", "gain_exact_match", "target", "steps_to_target", "reached_target"):
            assert s[key] == pytest.approx(np.mean([r[how][key] for r in result["tasks"].values()])), key
        assert s["rmst_limit"] == 5
        assert s["rmst_to_target"] == pytest.approx(restricted_mean_time(
            [r[how]["steps_to_target"] for r in result["tasks"].values()],
            [r[how]["reached_target"] for r in result["tasks"].values()], 5))
    for runs in result["tasks"].values():
        none = runs["none"]
        assert none["gain_iou"] == 0.0 and none["gain_exact_match"] == 0.0
        assert none["steps_to_target"] == 5 and none["reached_target"] is False  # never trains: censored
        for how in ("lora", "full"):
            assert runs[how]["gain_iou"] == pytest.approx(runs[how]["final_iou"] - none["final_iou"])
            assert runs[how]["gain_exact_match"] == pytest.approx(
                runs[how]["final_exact_match"] - none["final_exact_match"])
            assert runs[how]["target"] == pytest.approx(none["target"])  # same starting model, same target
            assert runs[how]["steps_to_target"] in (2, 4, 5)

    rows = mean_curve(result)
    assert [r["step"] for r in rows] == [0, 2, 4]
    for r in rows:
        assert {"step", "iou_none", "iou_adapted", "iou_full", "exact_match_none", "exact_match_adapted",
                "exact_match_full"} <= set(r)
    assert len({r["iou_none"] for r in rows}) == 1, "iou_none must be flat"
    assert len({r["exact_match_none"] for r in rows}) == 1
    runs = list(result["tasks"].values())
    assert rows[0]["iou_none"] == pytest.approx(np.mean([t["none"]["curve"][0]["iou"] for t in runs]))
    for i, r in enumerate(rows):
        assert r["iou_adapted"] == pytest.approx(np.mean([t["lora"]["curve"][i]["iou"] for t in runs]))
        assert r["iou_full"] == pytest.approx(np.mean([t["full"]["curve"][i]["iou"] for t in runs]))
    # all three start from the same model: identical step-0 scores
    assert rows[0]["iou_none"] == pytest.approx(rows[0]["iou_adapted"]) == pytest.approx(rows[0]["iou_full"])


def test_finetune_model_adapter_column(model, fewshot, tiny_params):
    eps, primitives = fewshot
    params = with_finetune(tiny_params, method="adapter", num_tasks=1, steps=2, eval_every=1)
    result = finetune_model(model, eps, primitives, params, torch.device("cpu"))
    assert result["methods"] == ["none", "adapter", "full"]
    rows = mean_curve(result)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all("iou_adapted" in r for r in rows)


# ---------------------------------------------------------------------------
# statistics of constructed curves (hand-worked values)


def curve(*rows):
    return [{"step": s, "iou": i, "exact_match": e} for s, i, e in rows]


# already above the absolute threshold (0.35) at step 0; the relative target 0.5 + 0.25 * 0.5 = 0.625
# is first reached at step 20 (0.625 exactly: >= counts)
ABOVE_AT_START = curve((0, 0.5, 0.25), (10, 0.55, 0.25), (20, 0.625, 0.5), (30, 0.7, 0.5))
# below both at step 0; crosses the threshold at step 20 but never the target 0.2 + 0.25 * 0.8 = 0.4
CENSORED = curve((0, 0.2, 0.0), (10, 0.3, 0.0), (20, 0.39, 0.125), (30, 0.38, 0.125))


def test_relative_target_hand_values():
    assert relative_target(0.5, 0.25) == 0.625
    assert relative_target(0.2, 0.25) == pytest.approx(0.4)
    assert relative_target(0.0, 0.5) == 0.5
    assert relative_target(1.0, 0.25) == 1.0
    with pytest.raises(ValueError):
        relative_target(1.2, 0.25)
    with pytest.raises(ValueError):
        relative_target(0.5, 1.0)


def test_curve_statistics_above_threshold_at_step0_reaches_target_at_k():
    r = curve_statistics(ABOVE_AT_START, threshold=0.35, gap_fraction=0.25, censor_at=31)
    assert r == {"final_iou": 0.7, "final_exact_match": 0.5,
                 "steps_to_threshold": 0, "reached": True,  # absolute: restates the zero-shot score
                 "target": 0.625, "steps_to_target": 20, "reached_target": True}


def test_curve_statistics_censored():
    r = curve_statistics(CENSORED, threshold=0.35, gap_fraction=0.25, censor_at=31)
    assert r["steps_to_threshold"] == 20 and r["reached"] is True
    assert r["target"] == pytest.approx(0.4)
    assert r["steps_to_target"] == 31 and r["reached_target"] is False
    # no adaptation: a single step-0 row is always censored, even at a perfect score
    none = curve_statistics(curve((0, 1.0, 1.0)), threshold=0.35, gap_fraction=0.25, censor_at=31)
    assert none["steps_to_threshold"] == 0 and none["steps_to_target"] == 31 and none["reached_target"] is False


def test_step0_never_reaches_the_target():
    perfect = curve((0, 1.0, 1.0), (10, 1.0, 1.0))  # target 1.0 already met at step 0
    r = curve_statistics(perfect, threshold=0.35, gap_fraction=0.25, censor_at=11)
    assert r["target"] == 1.0 and r["steps_to_target"] == 10 and r["reached_target"] is True
    assert time_to_reach([0, 5], [0.9, 0.1], 0.5, 6) == (6, False)
    assert time_to_reach([0, 5], [0.9, 0.1], 0.5, 6, count_step0=True) == (0, True)
    with pytest.raises(ValueError):
        time_to_reach([0, 5, 5], [0.1, 0.2, 0.3], 0.5, 6)
    with pytest.raises(ValueError):
        curve_statistics(curve((10, 0.5, 0.0)), 0.35, 0.25, 11)


def test_gains_over_no_adaptation():
    runs = {"none": {"final_iou": 0.5, "final_exact_match": 0.25},
            "lora": {"final_iou": 0.7, "final_exact_match": 0.5},
            "full": {"final_iou": 0.4, "final_exact_match": 0.25}}
    g = gains(runs)
    assert g["none"] == {"gain_iou": 0.0, "gain_exact_match": 0.0}
    assert g["lora"]["gain_iou"] == pytest.approx(0.2) and g["lora"]["gain_exact_match"] == pytest.approx(0.25)
    assert g["full"]["gain_iou"] == pytest.approx(-0.1) and g["full"]["gain_exact_match"] == 0.0


def test_summarise_method_on_constructed_runs():
    a = {**curve_statistics(ABOVE_AT_START, 0.35, 0.25, 31), "wall_time_s": 1.0,
         "gain_iou": 0.2, "gain_exact_match": 0.25}
    b = {**curve_statistics(CENSORED, 0.35, 0.25, 31), "wall_time_s": 3.0,
         "gain_iou": 0.0, "gain_exact_match": -0.5}
    s = summarise_method([a, b], 31)
    assert s["steps_to_target"] == pytest.approx((20 + 31) / 2)
    assert s["reached_target"] == 0.5 and s["reached"] == 1.0 and s["steps_to_threshold"] == 10.0
    assert s["target"] == pytest.approx((0.625 + 0.4) / 2)
    assert s["gain_iou"] == pytest.approx(0.1) and s["gain_exact_match"] == pytest.approx(-0.125)
    assert s["wall_time_s"] == 2.0 and s["tasks"] == 2 and s["rmst_limit"] == 31.0
    # KM: S = 1 on [0, 20), 1/2 on [20, 31): 20 + 11 / 2
    assert s["rmst_to_target"] == pytest.approx(25.5)
    assert rmst_to_target([a, b], 31) == s["rmst_to_target"]


# ---------------------------------------------------------------------------
# restricted mean time (Kaplan-Meier)


def test_rmst_hand_worked_kaplan_meier_with_censoring():
    # times 2 3 3+ 5 6+ 8+ (+ censored). At risk / events: t=2: 6/1 -> S=5/6; t=3: 5/1 (the tied
    # censoring is still at risk) -> S=2/3; t=5: 3/1 -> S=4/9. Up to 7:
    # 2*1 + 1*5/6 + 2*2/3 + 2*4/9 = 91/18
    times = [3, 2, 3, 5, 6, 8]
    events = [False, True, True, True, False, False]
    assert restricted_mean_time(times, events, 7) == pytest.approx(91 / 18)
    # up to 10: the tail from 5 on is 4/9 (later times are censorings)
    assert restricted_mean_time(times, events, 10) == pytest.approx(2 + 5 / 6 + 4 / 3 + 5 * 4 / 9)
    # up to 4: events after the limit do not count
    assert restricted_mean_time(times, events, 4) == pytest.approx(2 + 5 / 6 + 2 / 3)


def test_rmst_special_cases():
    assert restricted_mean_time([31, 31, 31], [False] * 3, 31) == 31.0
    assert restricted_mean_time([10, 20, 30], [True] * 3, 31) == pytest.approx(20.0)  # no censoring: the mean
    # all censoring at the limit: equals mean(min(t, limit))
    assert restricted_mean_time([10, 31, 20, 31], [1, 0, 1, 0], 31) == pytest.approx((10 + 31 + 20 + 31) / 4)
    assert np.isnan(restricted_mean_time([], [], 5))
    with pytest.raises(ValueError):
        restricted_mean_time([1, 2], [True], 5)
    with pytest.raises(ValueError):
        restricted_mean_time([1, -2], [True, True], 5)
    with pytest.raises(ValueError):
        restricted_mean_time([1, 2], [True, True], 0)
    with pytest.raises(ValueError):
        restricted_mean_time([1, 2], [2, 1], 5)
