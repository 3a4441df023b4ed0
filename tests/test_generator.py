"""The generator rules, checked on a small generated dataset by replaying every program with the references."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mcl.data import generator
from mcl.config import ConfigError
from mcl.data.generator import (DEV_FRACTION, ALL_SPLITS, all_programs, balanced_holdout, episode_inputs,
                                feasible_label_sets, generate_dataset, generate_split, holdout_count,
                                label_set_partition, primitive_counts, probe_grids, run_programs, signature_table,
                                split_checksum)
from mcl.data.primitives import INDEX, NUM_PRIMITIVES, PARAM_INDEX, PRIMITIVES, run_program_reference

ROTATE, FLIP, RECOLOR, SWAP = INDEX["rotate"], INDEX["flip"], INDEX["recolor"], INDEX["swap"]
GRAVITY, FILL_BG, BORDER, TRANSLATE = INDEX["gravity"], INDEX["fill_bg"], INDEX["border"], INDEX["translate"]


def mask_of(types) -> int:
    """Label-set bitmask of a program's primitive types (computed here, not by the generator)."""
    return sum(1 << int(t) for t in set(int(t) for t in types if t >= 0))


def ids_of_labels(labels: np.ndarray) -> list[int]:
    return [sum(1 << p for p in range(labels.shape[1]) if row[p]) for row in labels]


def replay(eps) -> list[np.ndarray]:
    """Intermediate grids [N, S, 8, 8] after 0, 1, 2, 3 steps, replayed per grid with the references."""
    cur = np.array(eps.inputs)
    stages = [cur]
    n, s = cur.shape[:2]
    for t in range(3):
        nxt = cur.copy()
        for i in range(n):
            p = int(eps.program[i, t])
            if p < 0:
                continue
            a, b = int(eps.args[i, t, 0]), int(eps.args[i, t, 1])
            for k in range(s):
                nxt[i, k] = PRIMITIVES[p].reference(cur[i, k], a, b)
        stages.append(nxt)
        cur = nxt
    return stages


@pytest.fixture(scope="module")
def stages(small_splits):
    return {name: replay(eps) for name, eps in small_splits.items()}


@pytest.fixture(scope="module")
def short_outputs():
    """Brute force: probe-grid outputs (bytes) of every program of length 0, 1, 2 -> set of label masks."""
    probes = probe_grids()
    k = len(probes)
    table = {}
    for length in (0, 1, 2):
        prog, args = all_programs(length)
        out = run_programs(np.tile(probes, (len(prog), 1, 1)), np.repeat(prog, k, axis=0), np.repeat(args, k, axis=0))
        out = out.reshape(len(prog), -1)
        by_output: dict[bytes, set[int]] = {}
        for row, p in zip(out, prog):
            by_output.setdefault(row.tobytes(), set()).add(mask_of(p))
        table[length] = by_output
    return table


def probe_output(program, args) -> bytes:
    """Outputs of one program on the probe grids, replayed per grid with the references."""
    return np.stack([run_program_reference(g, program, args) for g in probe_grids()]).tobytes()


def brute_identifiable(short, program, args) -> bool:
    length = int((np.asarray(program) >= 0).sum())
    key = probe_output(program, args)
    if any(key in short[shorter] for shorter in range(length)):
        return False
    if length <= 2 and short[length][key] != {mask_of(program)}:
        return False
    return True


# ---------------------------------------------------------------------------
# per-pair and per-step rules


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_no_pair_is_noop(small_splits, split):
    eps = small_splits[split]
    same = (eps.outputs == eps.inputs).all(axis=(2, 3))
    assert not same.any(), f"{split}: {same.sum()} pairs with output == input"


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_outputs_equal_replayed_program(small_splits, stages, split):
    np.testing.assert_array_equal(stages[split][3], small_splits[split].outputs)


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_every_step_changes_every_grid(small_splits, stages, split):
    eps = small_splits[split]
    st = stages[split]
    for t in range(3):
        rows = np.flatnonzero(eps.program[:, t] >= 0)
        changed = (st[t + 1][rows] != st[t][rows]).any(axis=(2, 3))  # [rows, S]
        assert changed.all(), f"{split}: step {t} leaves a grid unchanged in episodes {rows[~changed.all(axis=1)][:5]}"


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_programs_well_formed(small_splits, split):
    eps = small_splits[split]
    assert eps.program.dtype == np.int16 and eps.args.dtype == np.int16
    assert eps.inputs.dtype == np.uint8 and eps.outputs.dtype == np.uint8 and eps.labels.dtype == np.uint8
    for prog, args in zip(eps.program.tolist(), eps.args.tolist()):
        steps = [p for p in prog if p >= 0]
        assert prog == steps + [-1] * (3 - len(steps)), prog  # padding only at the end
        assert len(set(steps)) == len(steps), prog  # distinct types
        for t, p in enumerate(prog):
            a, b = args[t]
            if p < 0:
                assert (a, b) == (-1, -1)
            else:
                assert PARAM_INDEX[p, a + 2, b + 2] >= 0, (PRIMITIVES[p].name, a, b)
                assert [a, b] in PRIMITIVES[p].param_table.tolist()


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_colour_params_present_in_every_grid_the_step_receives(small_splits, stages, split):
    eps = small_splits[split]
    st = stages[split]
    checked = 0
    for t in range(3):
        for i in np.flatnonzero(np.isin(eps.program[:, t], [RECOLOR, SWAP])):
            received = st[t][i]  # [S, 8, 8]: the grids this step gets, in every pair
            a, b = int(eps.args[i, t, 0]), int(eps.args[i, t, 1])
            colours = [a] if eps.program[i, t] == RECOLOR else [a, b]
            for c in colours:
                present = (received == c).any(axis=(1, 2))
                assert present.all(), f"{split} episode {i} step {t}: colour {c} missing from a grid"
            if eps.program[i, t] == RECOLOR:
                assert a != 0  # recolouring background would be fill_bg
            checked += 1
    if split in ("train", "test"):
        assert checked > 10  # the small dataset has plenty of recolor / swap steps


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_labels_are_multi_hot_of_program(small_splits, split):
    eps = small_splits[split]
    assert eps.labels.shape == (len(eps), NUM_PRIMITIVES)
    expected = np.zeros_like(eps.labels)
    for i, prog in enumerate(eps.program.tolist()):
        for p in prog:
            if p >= 0:
                expected[i, p] = 1
    np.testing.assert_array_equal(eps.labels, expected)


# ---------------------------------------------------------------------------
# identifiability


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_identifiable_brute_force(small_splits, short_outputs, split):
    """No stored program equals a shorter program (or, length <= 2, one of another label set) on the probe grids."""
    eps = small_splits[split]
    rows = np.random.default_rng(0).permutation(len(eps))[:120]
    for i in rows:
        prog, args = eps.program[i], eps.args[i]
        assert brute_identifiable(short_outputs, prog, args), f"{split} episode {i}: {prog.tolist()} {args.tolist()}"


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_identifiable_by_signature_table(small_splits, split):
    eps = small_splits[split]
    verdict = signature_table().identifiable(eps.program, eps.args)
    assert verdict.all()


def test_signature_table_agrees_with_brute_force(short_outputs):
    """Random programs of length 1-3 (every label set, random params): table verdict == brute force."""
    rng = np.random.default_rng(3)
    n = 300
    program = np.full((n, 3), -1, np.int16)
    args = np.full((n, 3, 2), -1, np.int16)
    for i in range(n):
        length = 1 + i % 3
        for t, p in enumerate(rng.permutation(NUM_PRIMITIVES)[:length]):
            table = PRIMITIVES[p].param_table
            program[i, t], args[i, t] = p, table[rng.integers(len(table))]
    verdict = signature_table().identifiable(program, args)
    expected = np.array([brute_identifiable(short_outputs, program[i], args[i]) for i in range(n)])
    assert expected.any() and not expected.all()  # the sample has both kinds
    mismatch = np.flatnonzero(verdict != expected)
    assert not len(mismatch), [(program[i].tolist(), args[i].tolist(), verdict[i]) for i in mismatch[:5]]


def _prog(*steps):
    program = np.full((1, 3), -1, np.int16)
    args = np.full((1, 3, 2), -1, np.int16)
    for t, (p, a, b) in enumerate(steps):
        program[0, t], args[0, t] = p, (a, b)
    return program, args


DEGENERATE = {
    # rotate(2) then flip(0) (rows reversed) is flip(1) (columns reversed)
    "rotate2_flip0": ((ROTATE, 2, -1), (FLIP, 0, -1)),
    # after fill_bg no background is left, so gravity does nothing
    "fill_bg_gravity": ((FILL_BG, 4, -1), (GRAVITY, 0, -1)),
    # recolor(1 -> 2) then swap(1, 2) is recolor(2 -> 1)
    "recolor_swap": ((RECOLOR, 1, 2), (SWAP, 1, 2)),
    # a length-3 program containing a rotate+flip pair is a length-2 program
    "rotate1_flip0_border": ((ROTATE, 1, -1), (FLIP, 0, -1), (BORDER, 5, -1)),
}


@pytest.mark.parametrize("name", DEGENERATE)
def test_degenerate_programs_rejected(name, short_outputs):
    program, args = _prog(*DEGENERATE[name])
    assert not signature_table().identifiable(program, args)[0]
    assert not brute_identifiable(short_outputs, program[0], args[0])


def test_degenerate_equalities_hold_on_probe_grids():
    """The equalities behind the degenerate cases, checked literally on the probe grids."""
    def out(*steps):
        return probe_output(*(x[0] for x in _prog(*steps)))

    assert out((ROTATE, 2, -1), (FLIP, 0, -1)) == out((FLIP, 1, -1),)
    assert out((FILL_BG, 4, -1), (GRAVITY, 0, -1)) == out((FILL_BG, 4, -1),)
    assert out((RECOLOR, 1, 2), (SWAP, 1, 2)) == out((RECOLOR, 2, 1),)


@pytest.mark.parametrize("steps", [
    ((ROTATE, 1, -1),),
    ((ROTATE, 1, -1), (RECOLOR, 3, 5)),
    ((TRANSLATE, 1, 2), (BORDER, 5, -1)),
    ((GRAVITY, 0, -1), (SWAP, 2, 7), (FILL_BG, 9, -1)),
])
def test_normal_programs_identifiable(steps, short_outputs):
    program, args = _prog(*steps)
    assert signature_table().identifiable(program, args)[0]
    assert brute_identifiable(short_outputs, program[0], args[0])


def test_rotate_flip_not_feasible(small_dataset, small_cfg, small_splits):
    _, label_sets = small_dataset
    rotate_flip = (1 << ROTATE) | (1 << FLIP)
    assert rotate_flip not in label_sets["train"]
    assert rotate_flip not in feasible_label_sets((2,), small_cfg, signature_table()).tolist()
    assert rotate_flip not in ids_of_labels(small_splits["train"].labels)
    # while plenty of other length-2 label sets are feasible
    assert sum(bin(m).count("1") == 2 for m in label_sets["train"]) >= 20


# ---------------------------------------------------------------------------
# splits


@pytest.mark.parametrize("split,lengths", [("train", {1, 2}), ("val", {1, 2}), ("dev", {3}), ("test", {3}),
                                           ("fewshot", {3}), ("novel2", {2})])
def test_split_program_lengths(small_splits, split, lengths):
    got = set((small_splits[split].program >= 0).sum(axis=1).tolist())
    assert got == lengths


def test_split_sizes(small_splits, small_cfg):
    assert {k: len(v) for k, v in small_splits.items()} == dict(
        train=small_cfg.n_train, val=small_cfg.n_val, dev=small_cfg.n_dev, test=small_cfg.n_test,
        fewshot=small_cfg.n_fewshot, novel2=small_cfg.n_novel2, probe=small_cfg.probe_programs * small_cfg.probe_episodes)
    assert list(small_splits) == list(ALL_SPLITS)
    for eps in small_splits.values():
        assert eps.inputs.shape[1:] == (small_cfg.demos + 1, 8, 8)
        assert eps.outputs.shape == eps.inputs.shape


def test_label_sets_test_disjoint_from_train(small_dataset):
    splits, label_sets = small_dataset
    train = set(ids_of_labels(splits["train"].labels))
    test = set(ids_of_labels(splits["test"].labels))
    assert not train & test
    assert not set(label_sets["train"]) & set(label_sets["test"])
    assert train <= set(label_sets["train"])
    assert test <= set(label_sets["test"])
    assert set(ids_of_labels(splits["fewshot"].labels)) <= set(label_sets["test"])


def test_val_label_sets_subset_of_train(small_splits):
    assert set(ids_of_labels(small_splits["val"].labels)) <= set(ids_of_labels(small_splits["train"].labels))


def test_val_label_sets_subset_of_train_when_train_is_tiny(small_cfg):
    splits, _ = generate_dataset(dataclasses.replace(small_cfg, n_train=20, n_val=64, n_test=8, n_fewshot=8,
                                                     probe_programs=2, probe_episodes=1))
    assert set(ids_of_labels(splits["val"].labels)) <= set(ids_of_labels(splits["train"].labels))


def _episode_bytes(eps) -> set[bytes]:
    return {eps.inputs[i].tobytes() + eps.outputs[i].tobytes() for i in range(len(eps))}


def test_val_not_in_train_and_fewshot_not_in_test(small_splits):
    assert not _episode_bytes(small_splits["val"]) & _episode_bytes(small_splits["train"])
    assert not _episode_bytes(small_splits["fewshot"]) & _episode_bytes(small_splits["test"])


def test_no_episode_in_two_splits(small_splits):
    names = [n for n in ALL_SPLITS if n != "probe"]  # probe shares inputs across its programs by design
    seen = {n: _episode_bytes(small_splits[n]) for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not seen[a] & seen[b], (a, b)


def test_exclusion_removes_forced_overlap(monkeypatch, small_cfg):
    """With every split on one random stream, val would repeat train and fewshot would repeat test; the
    exclusion rule must still make them disjoint."""
    cfg = dataclasses.replace(small_cfg, n_train=100, n_val=100, n_test=40, n_fewshot=40, probe_programs=2,
                              probe_episodes=1)
    monkeypatch.setattr(generator, "split_rng", lambda seed, split: np.random.default_rng([seed, 77]))
    table = signature_table()
    sets = label_set_partition(cfg, table)["train"]
    # sanity: without exclusion, the same stream gives the same episodes
    a = generate_split("train", 100, cfg, table, sets)
    b = generate_split("val", 100, cfg, table, sets)
    assert _episode_bytes(a) == _episode_bytes(b)
    splits, _ = generate_dataset(cfg)
    np.testing.assert_array_equal(splits["train"].inputs, a.inputs)
    assert not _episode_bytes(splits["val"]) & _episode_bytes(splits["train"])
    assert not _episode_bytes(splits["fewshot"]) & _episode_bytes(splits["test"])
    assert len(splits["val"]) == 100 and len(splits["fewshot"]) == 40


def test_exclusion_removes_forced_overlap_for_dev_and_novel2(monkeypatch, small_cfg):
    """Pools rigged so novel2 draws train's label sets and dev test's, every split on one random stream:
    without the exclusion novel2 would repeat train and dev would repeat test."""
    cfg = dataclasses.replace(small_cfg, n_train=100, n_val=8, n_test=40, n_fewshot=8, n_dev=40, n_novel2=100,
                              probe_programs=2, probe_episodes=1)
    real = label_set_partition(cfg)
    rigged = dict(train=real["train"], novel2=real["train"], dev=real["test"], test=real["test"])
    monkeypatch.setattr(generator, "label_set_partition", lambda cfg, table=None: rigged)
    monkeypatch.setattr(generator, "split_rng", lambda seed, split: np.random.default_rng([seed, 77]))
    table = signature_table()
    a = generate_split("train", 100, cfg, table, rigged["train"])
    b = generate_split("novel2", 100, cfg, table, rigged["novel2"])
    assert _episode_bytes(a) == _episode_bytes(b)  # sanity: the same stream repeats itself
    splits, _ = generate_dataset(cfg)
    assert not _episode_bytes(splits["novel2"]) & _episode_bytes(splits["train"])
    assert not _episode_bytes(splits["dev"]) & _episode_bytes(splits["test"])
    assert len(splits["novel2"]) == 100 and len(splits["dev"]) == 40


# ---------------------------------------------------------------------------
# label-set pools: novel2 and dev hold-outs


def _pairs(sets) -> list[int]:
    return [m for m in sets if bin(m).count("1") == 2]


def test_pools_partition_the_feasible_label_sets(small_dataset, small_cfg):
    _, pools = small_dataset
    assert list(pools) == ["train", "novel2", "dev", "test"]
    table = signature_table()
    short = feasible_label_sets((1, 2), small_cfg, table).tolist()
    long = feasible_label_sets((3,), small_cfg, table).tolist()
    assert sorted(pools["train"] + pools["novel2"]) == short
    assert sorted(pools["dev"] + pools["test"]) == long
    for name, sets in pools.items():
        assert sets == sorted(set(sets)), name
        for other in pools:
            if other != name:
                assert not set(sets) & set(pools[other]), (name, other)
    assert all(bin(m).count("1") == 2 for m in pools["novel2"])
    assert len(pools["novel2"]) == holdout_count(small_cfg.novel2_fraction, len(_pairs(short))) > 0
    assert len(pools["dev"]) == holdout_count(DEV_FRACTION, len(long)) > 0
    assert pools["test"] and _pairs(pools["train"])  # test and train keep label sets


def test_split_label_sets_respect_pools(small_dataset):
    splits, pools = small_dataset
    got = {name: set(ids_of_labels(eps.labels)) for name, eps in splits.items()}
    assert got["train"] <= set(pools["train"]) and got["val"] <= got["train"]
    assert got["novel2"] == set(pools["novel2"])  # 64 episodes cycle through every held-out pair
    assert got["dev"] == set(pools["dev"])
    assert got["test"] <= set(pools["test"]) and got["fewshot"] <= got["test"]
    for held in ("novel2", "dev"):
        for name in ("train", "val", "test", "fewshot"):
            assert not got[held] & got[name], (held, name)
    assert not got["novel2"] & got["dev"]
    assert not got["probe"] & (got["novel2"] | got["dev"])  # probe: train and test label sets only


def test_novel2_and_dev_balanced_over_primitives(small_dataset):
    _, pools = small_dataset
    for name in ("novel2", "dev"):
        counts = primitive_counts(np.array(pools[name]))
        assert counts.max() - counts.min() <= 1, (name, counts)
        assert counts.min() >= 1  # every primitive is in some held-out label set


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 0.3, 0.5, 0.8])
def test_novel2_balanced_for_any_fraction(small_cfg, fraction):
    pools = label_set_partition(dataclasses.replace(small_cfg, novel2_fraction=fraction))
    pairs = len(pools["novel2"]) + len(_pairs(pools["train"]))
    assert len(pools["novel2"]) == max(1, int(np.floor(fraction * pairs + 0.5)))
    counts = primitive_counts(pools["novel2"])
    assert counts.max() - counts.min() <= 1, counts


def test_balanced_holdout_reaches_the_smallest_spread(small_cfg):
    """Exhaustively, over every k-subset of the feasible pairs: no subset has a smaller spread of per-primitive
    counts than the rule's choice."""
    import itertools

    pairs = np.array(_pairs(feasible_label_sets((1, 2), small_cfg, signature_table()).tolist()), np.int64)
    member = (pairs[:, None] >> np.arange(NUM_PRIMITIVES)) & 1
    for k in range(1, 6):
        combos = np.array(list(itertools.combinations(range(len(pairs)), k)))
        counts = member[combos].sum(axis=1)
        best = (counts.max(axis=1) - counts.min(axis=1)).min()
        chosen = primitive_counts(balanced_holdout(pairs, k))
        assert chosen.max() - chosen.min() == best, (k, chosen)


def test_holdout_rule_is_seed_independent(small_cfg):
    base = label_set_partition(small_cfg)
    for seed in (1, 12345):
        other = label_set_partition(dataclasses.replace(small_cfg, seed=seed))
        for name in base:
            np.testing.assert_array_equal(other[name], base[name])
    # a function of the candidate set only: the order it is given in does not matter
    pairs = np.array(_pairs(base["train"].tolist() + base["novel2"].tolist()))
    for perm in (pairs[::-1], np.random.default_rng(4).permutation(pairs)):
        np.testing.assert_array_equal(balanced_holdout(perm, len(base["novel2"])), base["novel2"])
    # a different fraction changes the hold-out, of course
    assert label_set_partition(dataclasses.replace(small_cfg, novel2_fraction=0.4))["novel2"].size > base["novel2"].size


def test_holdout_count():
    assert holdout_count(0.0, 27) == 0
    assert holdout_count(0.2, 27) == 5  # 5.4
    assert holdout_count(0.25, 50) == 13  # 12.5 rounds up
    assert holdout_count(0.01, 27) == 1  # any positive fraction holds out at least one
    assert holdout_count(0.5, 0) == 0


def test_novel2_fraction_zero_writes_no_novel2(small_cfg):
    cfg = dataclasses.replace(small_cfg, novel2_fraction=0.0, n_train=60, n_val=8, n_test=8, n_fewshot=8, n_dev=8,
                              probe_programs=2, probe_episodes=1)
    done = []
    splits, pools = generate_dataset(cfg, progress=done.append)
    assert list(splits) == [s for s in ALL_SPLITS if s != "novel2"]
    assert sorted(done) == sorted(ALL_SPLITS)  # a progress bar over ALL_SPLITS still completes
    assert pools["novel2"] == []
    assert pools["train"] == feasible_label_sets((1, 2), cfg, signature_table()).tolist()


def test_novel2_fraction_holding_out_every_pair_is_an_error(small_cfg):
    with pytest.raises(ConfigError, match=r"data.novel2_fraction 0.99 would hold out all \d+ feasible length-2"):
        label_set_partition(dataclasses.replace(small_cfg, novel2_fraction=0.99))


def test_online_source_never_draws_held_out_label_sets(small_cfg, small_dataset):
    from mcl.data.dataset import OnlineSource

    _, pools = small_dataset
    online = OnlineSource(dataclasses.replace(small_cfg, online_buffer=300, source="online"))
    assert online.label_sets.tolist() == pools["train"]
    ids = set()
    for r in range(2):
        ids |= set(ids_of_labels(online.buffer(r).labels))
    assert ids == set(pools["train"])  # 300 episodes cycle through every train label set
    assert not ids & set(pools["novel2"] + pools["dev"] + pools["test"])


# ---------------------------------------------------------------------------
# probe split


def test_probe_structure(small_splits, small_dataset, small_cfg):
    eps = small_splits["probe"]
    _, label_sets = small_dataset
    p, e = small_cfg.probe_programs, small_cfg.probe_episodes
    assert len(eps) == p * e
    for i in range(p):
        block = slice(i * e, (i + 1) * e)
        # one step order per program
        assert (eps.program[block] == eps.program[i * e]).all(), f"program {i} changes its step order"
        for j in range(e):
            # episode j of every program has the inputs of episode j of program 0
            np.testing.assert_array_equal(eps.inputs[i * e + j], eps.inputs[j])
    # the episodes of a program have different inputs
    assert len({eps.inputs[j].tobytes() for j in range(e)}) == e
    # half train label sets, half test label sets
    ids = ids_of_labels(eps.labels[::e])
    assert all(m in label_sets["train"] for m in ids[: p // 2])
    assert all(m in label_sets["test"] for m in ids[p // 2:])
    assert len({eps.program[i * e].tobytes() for i in range(p)}) > 1


# ---------------------------------------------------------------------------
# determinism


def test_same_params_same_bytes(small_splits, small_cfg, small_dataset):
    again, label_sets = generate_dataset(small_cfg)
    assert label_sets == small_dataset[1]
    for name in ALL_SPLITS:
        for field in small_splits[name].FIELDS:
            a, b = getattr(small_splits[name], field), getattr(again[name], field)
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), f"{name}/{field}"
        assert split_checksum(small_splits[name]) == split_checksum(again[name])


def test_other_seed_other_data(small_splits, small_cfg, small_dataset):
    other, label_sets = generate_dataset(dataclasses.replace(small_cfg, seed=small_cfg.seed + 1))
    assert label_sets == small_dataset[1]  # feasibility does not depend on data.seed
    for name in ALL_SPLITS:
        assert not np.array_equal(other[name].inputs, small_splits[name].inputs), name
        assert split_checksum(other[name]) != split_checksum(small_splits[name])


def test_split_checksum_sensitive(small_cfg):
    eps = generate_split("train", 8, small_cfg, signature_table(), np.array([1 << ROTATE, 1 << RECOLOR]))
    before = split_checksum(eps)
    assert split_checksum(eps.take(np.arange(8))) == before
    eps.outputs[3, 1, 2, 2] ^= 1
    assert split_checksum(eps) != before


# ---------------------------------------------------------------------------
# input grids


@pytest.mark.parametrize("split", ALL_SPLITS)
def test_inputs_structured(small_splits, small_cfg, split):
    x = small_splits[split].inputs
    background = (x == 0).mean()
    assert 0.3 < background < 0.95, background
    # an episode's inputs draw on a palette of cfg.palette colours
    for ep in x:
        assert len(set(np.unique(ep).tolist()) - {0}) <= small_cfg.palette
    # shapes, not noise: horizontally adjacent foreground cells mostly share a colour
    left, right = x[..., :, :-1], x[..., :, 1:]
    both = (left != 0) & (right != 0)
    same = (left == right) & both
    assert same.sum() / both.sum() > 0.6
    # and foreground cells cluster: most have a foreground 4-neighbour
    fg = x != 0
    pad = np.pad(fg, [(0, 0), (0, 0), (1, 1), (1, 1)])
    neighbour = pad[..., :-2, 1:-1] | pad[..., 2:, 1:-1] | pad[..., 1:-1, :-2] | pad[..., 1:-1, 2:]
    assert (neighbour & fg).sum() / fg.sum() > 0.7


def test_every_input_grid_has_foreground(small_splits, small_cfg):
    for name, eps in small_splits.items():
        empty = (eps.inputs == 0).all(axis=(2, 3))
        assert not empty.any(), f"{name}: {empty.sum()} empty input grids"
    x = episode_inputs(np.random.default_rng(0), 5000, small_cfg)
    assert not (x == 0).all(axis=(2, 3)).any()
