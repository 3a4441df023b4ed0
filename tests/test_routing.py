"""The routing executor can represent every primitive exactly: operator parameters written by hand
give the primitive's output on random grids (and the identity leaves a grid alone)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mcl.data.primitives import INDEX, PRIMITIVES, apply_primitive, run_programs
from mcl.models.routing import (COUNTS, GRID, NUM_COLOURS, POS, RoutingExecutor, SHAPES, StepParams, apply_step,
                                count_features, position_features, softmax_rows, triangle_onehot)

BIG = 30.0
ROW, COL, ONE = 0, GRID, 2 * GRID  # offsets of the position features: one-hot row, one-hot col, constant


def identity_params(batch: int = 1) -> StepParams:
    """Every operator off: gates closed, paint mask closed."""
    p = {name: torch.zeros(batch, *shape) for name, shape in SHAPES.items()}
    p["gates"][:] = -BIG
    p["mask"][:, ONE] = -BIG
    return StepParams(**p)


def gather_params(source_row, source_col) -> StepParams:
    """Gather with source row / column given as (feature offset, map from 0..7 to 0..7) pairs."""
    p = identity_params()
    for table, (offset, f) in ((p.gather_row, source_row), (p.gather_col, source_col)):
        for i in range(GRID):
            table[0, offset + i, f(i)] = BIG
    p.gates[0, 0] = BIG
    return p


def spatial_params(name: str, a: int, b: int) -> StepParams:
    """Hand-written operator parameters of one spatial primitive (out[r, c] = in[source])."""
    if name == "rotate":   # k quarter turns clockwise
        maps = {1: ((COL, lambda c: GRID - 1 - c), (ROW, lambda r: r)),
                2: ((ROW, lambda r: GRID - 1 - r), (COL, lambda c: GRID - 1 - c)),
                3: ((COL, lambda c: c), (ROW, lambda r: GRID - 1 - r))}
        return gather_params(*maps[a])
    if name == "flip":
        maps = {0: ((ROW, lambda r: GRID - 1 - r), (COL, lambda c: c)),
                1: ((ROW, lambda r: r), (COL, lambda c: GRID - 1 - c)),
                2: ((COL, lambda c: c), (ROW, lambda r: r)),
                3: ((COL, lambda c: GRID - 1 - c), (ROW, lambda r: GRID - 1 - r))}
        return gather_params(*maps[a])
    if name == "translate":
        return gather_params((ROW, lambda r: (r - a) % GRID), (COL, lambda c: (c - b) % GRID))
    raise ValueError(name)


def gravity_params(direction: int) -> StepParams:
    """Gravity: output cell p takes the non-background cell of its line whose count towards the side
    equals p's distance from the far edge; "empty" when there is none."""
    p = identity_params()
    side = {0: (ROW, 0, lambda r: GRID - r), 1: (ROW, 1, lambda r: r + 1),
            2: (COL, 3, lambda c: c + 1), 3: (COL, 2, lambda c: GRID - c)}  # feature block per direction
    offset, block, target = side[direction]
    for i in range(GRID):
        p.sort[0, offset + i, block * (GRID + 1) + target(i)] = BIG
    p.sort[0, ONE, COUNTS - 1] = BIG                               # non-background source
    line = 0 if direction in (0, 1) else 1                         # same column for down / up
    p.sort_line[0, line], p.sort_line[0, 1 - line] = BIG, -BIG
    p.sort_empty[0, ONE] = 2.5 * BIG
    p.gates[0, 1] = BIG
    return p


def colour_params(name: str, a: int, b: int) -> StepParams:
    p = identity_params()
    if name == "border":
        for offset in (ROW, COL):
            p.mask[0, offset] = p.mask[0, offset + GRID - 1] = BIG
        p.mask[0, ONE] = -BIG / 2
        p.paint[0, a] = BIG
        return p
    new = list(range(NUM_COLOURS))
    if name == "recolor":
        new[a] = b
    elif name == "swap":
        new[a], new[b] = b, a
    elif name == "fill_bg":
        new[0] = a
    p.recolour[0] = BIG * F.one_hot(torch.tensor(new), NUM_COLOURS).float()
    p.gates[0, 2] = BIG
    return p


def hand_params(name, a, b):
    if name in ("rotate", "flip", "translate"):
        return spatial_params(name, a, b)
    if name == "gravity":
        return gravity_params(a)
    return colour_params(name, a, b)


def run(grids: np.ndarray, params: StepParams) -> np.ndarray:
    x = F.one_hot(torch.from_numpy(grids).long().reshape(len(grids), -1), NUM_COLOURS).double()
    batch = StepParams(**{k: v.double().expand(len(grids), *v.shape[1:]) for k, v in vars(params).items()})
    return apply_step(x, batch, position_features().double()).argmax(-1).reshape(-1, GRID, GRID).numpy()


def random_grids(n=64, seed=0, density=0.3):
    rng = np.random.default_rng(seed)
    colours = rng.integers(1, NUM_COLOURS, (n, GRID, GRID))
    return np.where(rng.random((n, GRID, GRID)) < density, colours, 0).astype(np.uint8)


@pytest.mark.parametrize("prim", PRIMITIVES, ids=lambda p: p.name)
def test_every_primitive_is_one_hand_set_step(prim):
    grids = random_grids(seed=INDEX[prim.name])
    for a, b in prim.param_table.tolist():
        expected = apply_primitive(prim.name, grids, a, b)
        assert np.array_equal(run(grids, hand_params(prim.name, a, b)), expected), (prim.name, a, b)


def test_identity_step_leaves_grids_alone():
    grids = random_grids(seed=9)
    assert np.array_equal(run(grids, identity_params()), grids)


def test_a_wrong_map_is_not_the_primitive():
    """The check above can fail: rotation by one quarter turn is not rotation by three."""
    grids = random_grids(seed=10)
    assert not np.array_equal(run(grids, spatial_params("rotate", 1, -1)), apply_primitive("rotate", grids, 3, -1))


def test_count_features_are_exact_counts():
    grid = torch.zeros(1, 64, NUM_COLOURS)
    grid[0, :, 0] = 1
    for cell in (8 * 2 + 3, 8 * 5 + 3, 8 * 5 + 6):            # (2, 3), (5, 3), (5, 6)
        grid[0, cell] = F.one_hot(torch.tensor(4), NUM_COLOURS)
    feats = count_features(grid)[0]                            # [64, 37]
    down = feats[:, :GRID + 1].argmax(-1).view(GRID, GRID)
    left = feats[:, 3 * (GRID + 1):4 * (GRID + 1)].argmax(-1).view(GRID, GRID)
    assert down[2, 3] == 2 and down[5, 3] == 1 and down[6, 3] == 0 and down[0, 3] == 2
    assert left[5, 6] == 2 and left[5, 3] == 1 and left[5, 2] == 0
    assert torch.equal(triangle_onehot(torch.tensor([2.0]), 4), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


def test_three_hand_set_passes_compose_a_program():
    """Passes apply steps in order: rotate, then recolor, then border, as the generator's programs do."""
    grids = random_grids(seed=11)
    steps = [("rotate", 1, -1), ("recolor", 4, 7), ("border", 2, -1)]
    out = grids
    for step in steps:
        out = run(out, hand_params(*step))
    program = np.array([[INDEX[s[0]] for s in steps]] * len(grids))
    args = np.array([[s[1:] for s in steps]] * len(grids))
    assert np.array_equal(out, run_programs(grids, program, args))


def test_executor_reads_one_slot_per_pass_and_returns_log_probabilities():
    torch.manual_seed(0)
    ex = RoutingExecutor(h_dim=12, d_model=8, steps=3)
    query = torch.randint(0, NUM_COLOURS, (5, GRID, GRID))
    logits = ex(query, torch.randn(5, 12))
    assert logits.shape == (5, NUM_COLOURS, GRID, GRID)
    assert torch.allclose(logits.exp().sum(1), torch.ones(5, GRID, GRID), atol=1e-3)
    with pytest.raises(ValueError, match="divisible"):
        RoutingExecutor(h_dim=10, d_model=8, steps=3)
    assert POS == 17


def test_absent_steps_pass_the_grid_through():
    """``present`` skips passes: with only the first step present the output is that one pass; with none, the query."""
    torch.manual_seed(1)
    ex = RoutingExecutor(h_dim=12, d_model=8, steps=3)
    query, task = torch.randint(0, NUM_COLOURS, (4, GRID, GRID)), torch.randn(4, 12)
    with torch.no_grad():
        x = F.one_hot(query.view(4, -1), NUM_COLOURS).float()
        one_pass = apply_step(x, ex.step_params(task.view(4, 3, -1)[:, 0]), ex.pos).clamp_min(1e-6).log()
        first_only = ex(query, task, torch.tensor([[True, False, False]] * 4))
        none = ex(query, task, torch.zeros(4, 3, dtype=torch.bool))
        every = ex(query, task, torch.ones(4, 3, dtype=torch.bool))
    assert torch.equal(first_only, one_pass.transpose(1, 2).reshape(4, NUM_COLOURS, GRID, GRID))
    assert torch.equal(none.argmax(1), query) and torch.equal(every, ex(query, task))
    assert not torch.equal(first_only, every)


def test_softmax_rows_is_the_softmax_over_the_last_axis():
    logits = torch.randn(5, 64, 8) * 4
    assert torch.allclose(softmax_rows(logits), logits.softmax(-1), atol=1e-6)
