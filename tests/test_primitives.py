"""The eight primitives: hand-worked examples, vectorised == reference, validation, parameter dataclasses."""

from __future__ import annotations

import numpy as np
import pytest

from mcl.data.primitives import (INDEX, NAMES, PRIMITIVES, BorderParams, FillBgParams, FlipParams, GravityParams,
                                 RecolorParams, RotateParams, SwapParams, TranslateParams, apply_primitive,
                                 apply_steps, run_program_reference, run_programs)


def grid(*rows: str) -> np.ndarray:
    """An 8x8 uint8 grid written as 8 strings of 8 digits."""
    assert len(rows) == 8 and all(len(r) == 8 for r in rows)
    return np.array([[int(c) for c in r] for r in rows], dtype=np.uint8)


# An asymmetric grid: distinct colours in distinct corners / rows / columns.
G = grid(
    "12000000",
    "03000004",
    "00000000",
    "00500000",
    "00000000",
    "00000600",
    "00000000",
    "70000008",
)

# Repeated colours, for recolor / swap.
H = grid(
    "11000000",
    "12200000",
    "00200300",
    "00000300",
    "00000000",
    "04400000",
    "00000000",
    "00000001",
)

# Several non-zero cells per row and column with gaps, for gravity.
K = grid(
    "10203000",
    "00000000",
    "04000000",
    "00000050",
    "60000000",
    "00000000",
    "07008000",
    "00900000",
)

HAND_WORKED = [
    # rotate: clockwise quarter turns
    ("rotate", G, 1, -1, grid(
        "70000001",
        "00000032",
        "00005000",
        "00000000",
        "00000000",
        "00600000",
        "00000000",
        "80000040")),
    ("rotate", G, 2, -1, grid(
        "80000007",
        "00000000",
        "00600000",
        "00000000",
        "00000500",
        "00000000",
        "40000030",
        "00000021")),
    ("rotate", G, 3, -1, grid(
        "04000008",
        "00000000",
        "00000600",
        "00000000",
        "00000000",
        "00050000",
        "23000000",
        "10000007")),
    # flip: 0 rows reversed, 1 columns reversed, 2 transpose, 3 anti-diagonal transpose
    ("flip", G, 0, -1, grid(
        "70000008",
        "00000000",
        "00000600",
        "00000000",
        "00500000",
        "00000000",
        "03000004",
        "12000000")),
    ("flip", G, 1, -1, grid(
        "00000021",
        "40000030",
        "00000000",
        "00000500",
        "00000000",
        "00600000",
        "00000000",
        "80000007")),
    ("flip", G, 2, -1, grid(
        "10000007",
        "23000000",
        "00050000",
        "00000000",
        "00000000",
        "00000600",
        "00000000",
        "04000008")),
    ("flip", G, 3, -1, grid(
        "80000040",
        "00000000",
        "00600000",
        "00000000",
        "00000000",
        "00005000",
        "00000032",
        "70000001")),
    # recolor a -> b
    ("recolor", H, 1, 2, grid(
        "22000000",
        "22200000",
        "00200300",
        "00000300",
        "00000000",
        "04400000",
        "00000000",
        "00000002")),
    ("recolor", H, 2, 0, grid(
        "11000000",
        "10000000",
        "00000300",
        "00000300",
        "00000000",
        "04400000",
        "00000000",
        "00000001")),
    # swap a <-> b (including background)
    ("swap", H, 1, 2, grid(
        "22000000",
        "21100000",
        "00100300",
        "00000300",
        "00000000",
        "04400000",
        "00000000",
        "00000002")),
    ("swap", H, 0, 3, grid(
        "11333333",
        "12233333",
        "33233033",
        "33333033",
        "33333333",
        "34433333",
        "33333333",
        "33333331")),
    # translate (dy, dx), cyclic
    ("translate", G, 1, 2, grid(
        "08700000",
        "00120000",
        "04030000",
        "00000000",
        "00005000",
        "00000000",
        "00000006",
        "00000000")),
    ("translate", G, -2, -1, grid(
        "00000000",
        "05000000",
        "00000000",
        "00006000",
        "00000000",
        "00000087",
        "20000001",
        "30000040")),
    # gravity: 0 down, 1 up, 2 left, 3 right; order of non-zero cells kept
    ("gravity", K, 0, -1, grid(
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "14203000",
        "67908050")),
    ("gravity", K, 1, -1, grid(
        "14203050",
        "67908000",
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "00000000",
        "00000000")),
    ("gravity", K, 2, -1, grid(
        "12300000",
        "00000000",
        "40000000",
        "50000000",
        "60000000",
        "00000000",
        "78000000",
        "90000000")),
    ("gravity", K, 3, -1, grid(
        "00000123",
        "00000000",
        "00000004",
        "00000005",
        "00000006",
        "00000000",
        "00000078",
        "00000009")),
    # border colour c
    ("border", G, 5, -1, grid(
        "55555555",
        "53000005",
        "50000005",
        "50500005",
        "50000005",
        "50000605",
        "50000005",
        "55555555")),
    # fill_bg colour c
    ("fill_bg", G, 9, -1, grid(
        "12999999",
        "93999994",
        "99999999",
        "99599999",
        "99999999",
        "99999699",
        "99999999",
        "79999998")),
]


def _id(case):
    name, _, a, b, _ = case
    return f"{name}({a},{b})"


@pytest.mark.parametrize("case", HAND_WORKED, ids=[_id(c) for c in HAND_WORKED])
def test_hand_worked_vectorised(case):
    name, g, a, b, expected = case
    out = apply_primitive(name, g[None], a, b)
    assert out.dtype == np.uint8 and out.shape == (1, 8, 8)
    np.testing.assert_array_equal(out[0], expected)


@pytest.mark.parametrize("case", HAND_WORKED, ids=[_id(c) for c in HAND_WORKED])
def test_hand_worked_reference(case):
    name, g, a, b, expected = case
    np.testing.assert_array_equal(PRIMITIVES[INDEX[name]].reference(g, a, b), expected)


def test_hand_worked_cover_every_primitive():
    assert {c[0] for c in HAND_WORKED} == set(NAMES)
    assert {c[2] for c in HAND_WORKED if c[0] == "flip"} == {0, 1, 2, 3}
    assert {c[2] for c in HAND_WORKED if c[0] == "gravity"} == {0, 1, 2, 3}


def test_apply_does_not_modify_input():
    g = np.stack([G, H, K])
    before = g.copy()
    for prim in PRIMITIVES:
        a, b = prim.param_table[0].tolist()
        apply_primitive(prim.name, g, a, b)
    np.testing.assert_array_equal(g, before)


def test_primitive_registry():
    assert NAMES == ("rotate", "flip", "recolor", "swap", "translate", "gravity", "border", "fill_bg")
    expected_counts = dict(rotate=3, flip=4, recolor=81, swap=45, translate=24, gravity=4, border=9, fill_bg=9)
    for prim in PRIMITIVES:
        assert len(prim.param_table) == expected_counts[prim.name], prim.name
        assert len({tuple(r) for r in prim.param_table.tolist()}) == len(prim.param_table), prim.name


# ---------------------------------------------------------------------------
# vectorised == reference on random batches


def random_batch(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random grids with lots of background and every colour possible."""
    g = rng.integers(1, 10, (n, 8, 8)).astype(np.uint8)
    g[rng.random(g.shape) < rng.uniform(0.2, 0.8, (n, 1, 1))] = 0
    g[: n // 8] = 0  # a few empty grids
    g[n // 8: n // 4, :4] = 0  # a few half-empty grids
    return g


@pytest.mark.parametrize("name", NAMES)
def test_vectorised_matches_reference_every_param(name):
    """Every parameter choice, per-grid params mixed within one batch."""
    prim = PRIMITIVES[INDEX[name]]
    rng = np.random.default_rng(INDEX[name])
    table = prim.param_table.astype(np.int64)
    rows = rng.permutation(np.repeat(np.arange(len(table)), 12))  # every choice 12 times, shuffled
    grids = random_batch(rng, len(rows))
    a, b = table[rows, 0], table[rows, 1]
    before = grids.copy()
    out = apply_primitive(name, grids, a, b)
    assert out.dtype == np.uint8 and out.shape == grids.shape
    np.testing.assert_array_equal(grids, before)
    for i in range(len(grids)):
        expected = prim.reference(grids[i], int(a[i]), int(b[i]))
        np.testing.assert_array_equal(out[i], expected, err_msg=f"{name}({a[i]}, {b[i]}) grid {i}")
    # the raw vectorised implementation agrees too
    np.testing.assert_array_equal(prim.apply(grids, a, b), out)


@pytest.mark.parametrize("name", NAMES)
def test_vectorised_scalar_params_broadcast(name):
    prim = PRIMITIVES[INDEX[name]]
    rng = np.random.default_rng(100 + INDEX[name])
    grids = random_batch(rng, 16)
    a, b = prim.param_table[len(prim.param_table) // 2].tolist()
    out = apply_primitive(name, grids, a, b)
    for i in range(len(grids)):
        np.testing.assert_array_equal(out[i], prim.reference(grids[i], a, b))


def test_apply_primitive_empty_batch():
    out = apply_primitive("rotate", np.zeros((0, 8, 8), np.uint8), np.zeros(0, int), np.zeros(0, int))
    assert out.shape == (0, 8, 8)


def random_programs(rng: np.random.Generator, n: int):
    """n random programs of length 0-3 (distinct types, valid params), padded with -1."""
    program = np.full((n, 3), -1, np.int16)
    args = np.full((n, 3, 2), -1, np.int16)
    lengths = rng.integers(0, 4, n)
    for i in range(n):
        types = rng.permutation(len(PRIMITIVES))[: lengths[i]]
        for t, p in enumerate(types):
            table = PRIMITIVES[p].param_table
            program[i, t] = p
            args[i, t] = table[rng.integers(len(table))]
    return program, args


def test_run_programs_matches_reference():
    rng = np.random.default_rng(5)
    n = 600
    grids = random_batch(rng, n)
    program, args = random_programs(rng, n)
    out = run_programs(grids, program, args)
    assert out.dtype == np.uint8 and out.shape == grids.shape
    for i in range(n):
        np.testing.assert_array_equal(out[i], run_program_reference(grids[i], program[i], args[i]),
                                      err_msg=f"program {program[i]} args {args[i].tolist()}")
    # length-0 programs are the identity
    empty = (program < 0).all(axis=1)
    assert empty.any()
    np.testing.assert_array_equal(out[empty], grids[empty])


def test_run_program_reference_order_matters():
    """Step 0 is applied first: rotate(1) then translate(0, 1) is not translate then rotate."""
    g = G
    prog = [INDEX["rotate"], INDEX["translate"], -1]
    args = [[1, -1], [0, 1], [-1, -1]]
    expected = np.roll(np.rot90(g, -1), 1, axis=1)
    assert not np.array_equal(expected, np.rot90(np.roll(g, 1, axis=1), -1))
    np.testing.assert_array_equal(run_program_reference(g, prog, args), expected)
    np.testing.assert_array_equal(run_programs(g[None], np.array([prog]), np.array([args]))[0], expected)


def test_apply_steps_no_step_is_identity():
    rng = np.random.default_rng(9)
    grids = random_batch(rng, 10)
    types = np.array([-1, 0, -1, 5, 7, -1, 1, 2, 3, 4])
    args = np.array([[-1, -1], [1, -1], [-1, -1], [0, -1], [3, -1], [-1, -1], [2, -1], [1, 2], [0, 1], [1, 1]])
    out = apply_steps(grids, types, args)
    for i in range(10):
        if types[i] < 0:
            np.testing.assert_array_equal(out[i], grids[i])
        else:
            np.testing.assert_array_equal(out[i], PRIMITIVES[types[i]].reference(grids[i], *args[i].tolist()))


# ---------------------------------------------------------------------------
# validation

INVALID = [
    ("rotate", 0, -1), ("rotate", 4, -1), ("rotate", 1, 0),
    ("flip", 4, -1), ("flip", -1, -1),
    ("recolor", 1, 1), ("recolor", 0, 5),
    ("swap", 2, 2), ("swap", 3, 1),
    ("translate", 0, 0), ("translate", 3, 0), ("translate", 0, -3),
    ("gravity", 4, -1), ("gravity", 0, 0),
    ("border", 0, -1), ("border", 3, 3),
    ("fill_bg", 0, -1),
]

# Values outside the -2..9 range that PARAM_INDEX covers.
OUT_OF_RANGE = [
    ("border", -3, -1),     # wraps to PARAM_INDEX[.., 11, ..] = border(9): accepted, paints colour 253
    ("fill_bg", -11, -1),   # wraps to fill_bg(1): accepted, fills with colour 245
    ("recolor", -3, 5),     # wraps to recolor(9, 5): accepted, silently a no-op
    ("recolor", 1, 10),     # IndexError instead of ValueError
    ("fill_bg", 10, -1),    # IndexError instead of ValueError
    ("rotate", 99, -1),     # IndexError instead of ValueError
]


@pytest.mark.parametrize("name,a,b", INVALID)
def test_invalid_params_raise_value_error(name, a, b):
    g = np.stack([G, H])
    with pytest.raises(ValueError, match=name):
        apply_primitive(name, g, a, b)
    # one bad grid among valid ones is enough
    good_a, good_b = PRIMITIVES[INDEX[name]].param_table[0].tolist()
    with pytest.raises(ValueError):
        apply_primitive(name, g, [good_a, a], [good_b, b])


@pytest.mark.parametrize("name,a,b", OUT_OF_RANGE)
def test_out_of_range_params_raise_value_error(name, a, b):
    with pytest.raises(ValueError):
        apply_primitive(name, G[None], a, b)


# ---------------------------------------------------------------------------
# parameter dataclasses


@pytest.mark.parametrize("name", NAMES)
def test_params_round_trip(name):
    prim = PRIMITIVES[INDEX[name]]
    for a, b in prim.param_table.tolist():
        p = prim.params(a, b)
        assert isinstance(p, prim.params_cls)
        assert p.args() == (a, b)


def test_params_field_names():
    P = {p.name: p for p in PRIMITIVES}
    assert P["rotate"].params(3, -1) == RotateParams(k=3)
    assert P["flip"].params(2, -1) == FlipParams(axis=2)
    assert P["recolor"].params(4, 0) == RecolorParams(src=4, dst=0)
    assert P["swap"].params(0, 7) == SwapParams(a=0, b=7)
    assert P["translate"].params(-1, 0) == TranslateParams(dy=-1, dx=0)
    assert P["translate"].params(0, -2) == TranslateParams(dy=0, dx=-2)
    assert P["gravity"].params(1, -1) == GravityParams(direction=1)
    assert P["border"].params(9, -1) == BorderParams(colour=9)
    assert P["fill_bg"].params(1, -1) == FillBgParams(colour=1)
