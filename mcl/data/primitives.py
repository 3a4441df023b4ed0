"""The eight grid primitives, vectorised over a batch of grids with per-grid parameters.

Grids are ``uint8`` arrays ``[N, 8, 8]`` with colours 0-9 (0 is background). Every
primitive takes two small integer parameters ``(a, b)`` per grid, ``-1`` where unused:

==========  =======================  ===============================================
name        params                   meaning
==========  =======================  ===============================================
rotate      k in {1,2,3}             clockwise by k quarter turns (``np.rot90(g, -k)``)
flip        axis in {0,1,2,3}        0 rows reversed, 1 columns reversed,
                                     2 transpose, 3 anti-diagonal transpose
recolor     a in 1..9, b in 0..9     every cell of colour a becomes b (a != b)
swap        a < b in 0..9            colours a and b exchanged
translate   dy, dx in -2..2          cyclic shift ``np.roll(g, (dy, dx), (0, 1))``
gravity     d in {0,1,2,3}           non-zero cells slide down / up / left / right
                                     within their column (0, 1) or row (2, 3),
                                     keeping their order
border      c in 1..9                the outermost ring becomes colour c
fill_bg     c in 1..9                background cells become colour c
==========  =======================  ===============================================

Each primitive has a parameter dataclass, a per-grid reference implementation
(``reference``, plain numpy, used by tests and the benchmark) and a vectorised
``apply(grids, a, b)`` with no Python loop over grids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SIZE = 8
COLOURS = 10
CELLS = SIZE * SIZE


# ---------------------------------------------------------------------------
# parameter dataclasses: (a, b) <-> named fields

@dataclass(frozen=True)
class RotateParams:
    k: int  # quarter turns clockwise, 1..3

    def args(self): return (self.k, -1)


@dataclass(frozen=True)
class FlipParams:
    axis: int  # 0 rows reversed, 1 columns reversed, 2 transpose, 3 anti-transpose

    def args(self): return (self.axis, -1)


@dataclass(frozen=True)
class RecolorParams:
    src: int  # 1..9
    dst: int  # 0..9, != src

    def args(self): return (self.src, self.dst)


@dataclass(frozen=True)
class SwapParams:
    a: int  # a < b
    b: int

    def args(self): return (self.a, self.b)


@dataclass(frozen=True)
class TranslateParams:
    dy: int  # -2..2
    dx: int  # -2..2, not both 0

    def args(self): return (self.dy, self.dx)


@dataclass(frozen=True)
class GravityParams:
    direction: int  # 0 down, 1 up, 2 left, 3 right

    def args(self): return (self.direction, -1)


@dataclass(frozen=True)
class BorderParams:
    colour: int  # 1..9

    def args(self): return (self.colour, -1)


@dataclass(frozen=True)
class FillBgParams:
    colour: int  # 1..9

    def args(self): return (self.colour, -1)


# ---------------------------------------------------------------------------
# per-grid reference implementations (readable, slow)

def _ref_rotate(g, a, b):
    return np.rot90(g, -a).copy()


def _ref_flip(g, a, b):
    return [g[::-1], g[:, ::-1], g.T, g[::-1, ::-1].T][a].copy()


def _ref_recolor(g, a, b):
    out = g.copy()
    out[g == a] = b
    return out


def _ref_swap(g, a, b):
    out = g.copy()
    out[g == a] = b
    out[g == b] = a
    return out


def _ref_translate(g, a, b):
    return np.roll(g, (a, b), axis=(0, 1))


def _ref_gravity(g, a, b):
    lines = g if a in (2, 3) else g.T  # rows for left/right, columns for down/up
    out = np.zeros_like(lines)
    for i, line in enumerate(lines):
        cells = [c for c in line if c != 0]
        if a in (0, 3):  # down / right: to the end of the line
            out[i, len(line) - len(cells):] = cells
        else:
            out[i, :len(cells)] = cells
    return out if a in (2, 3) else out.T.copy()


def _ref_border(g, a, b):
    out = g.copy()
    out[0, :] = out[-1, :] = out[:, 0] = out[:, -1] = a
    return out


def _ref_fill_bg(g, a, b):
    out = g.copy()
    out[g == 0] = a
    return out


# ---------------------------------------------------------------------------
# vectorised implementations

def _spatial_table(ref, params: np.ndarray) -> np.ndarray:
    """Gather indices [n_params, 64]: out.flat[i] = in.flat[table[p, i]] for each parameter row."""
    index = np.arange(SIZE * SIZE).reshape(SIZE, SIZE)
    return np.stack([ref(index, a, b).ravel() for a, b in params])


def _gather(grids, table, rows):
    """out[i].flat = grids[i].flat[table[rows[i]]]."""
    n = len(grids)
    return np.take_along_axis(grids.reshape(n, -1), table[rows], axis=1).reshape(n, SIZE, SIZE)


def _vec_recolor(g, a, b):
    return np.where(g == a[:, None, None].astype(np.uint8), b[:, None, None].astype(np.uint8), g)


def _vec_swap(g, a, b):
    a, b = a[:, None, None].astype(np.uint8), b[:, None, None].astype(np.uint8)
    return np.where(g == a, b, np.where(g == b, a, g))


def _vec_fill_bg(g, a, b):
    return np.where(g == 0, a[:, None, None].astype(np.uint8), g)


_RING = np.zeros((SIZE, SIZE), bool)
_RING[0, :] = _RING[-1, :] = _RING[:, 0] = _RING[:, -1] = True


def _vec_border(g, a, b):
    return np.where(_RING, a.astype(np.uint8)[:, None, None], g)


def _line_orders(to_end: bool) -> np.ndarray:
    """[256, 8] gather order of an 8-cell line per non-zero pattern (bit i: cell i non-zero)."""
    orders = np.empty((256, SIZE), np.intp)
    for pattern in range(256):
        filled = [i for i in range(SIZE) if pattern >> i & 1]
        empty = [i for i in range(SIZE) if not pattern >> i & 1]
        orders[pattern] = empty + filled if to_end else filled + empty
    return orders


_TO_END, _TO_START = _line_orders(True), _line_orders(False)


def _vec_gravity(g, a, b):
    # Bring every grid to "lines along the last axis" (rows for left/right, columns via
    # transpose for down/up); each line's non-zero pattern picks a precomputed gather order.
    vertical = ((a == 0) | (a == 1))[:, None, None]
    lines = np.where(vertical, g.transpose(0, 2, 1), g)
    pattern = np.packbits(lines != 0, axis=2, bitorder="little")[..., 0]  # [N, 8]
    to_end = ((a == 0) | (a == 3))[:, None]
    order = np.where(to_end[..., None], _TO_END[pattern], _TO_START[pattern])
    moved = np.take_along_axis(lines, order, axis=2)
    return np.where(vertical, moved.transpose(0, 2, 1), moved)


# ---------------------------------------------------------------------------
# the primitive registry

@dataclass(frozen=True)
class Primitive:
    """One primitive: its name, parameter dataclass, all valid ``(a, b)`` and implementations."""

    name: str
    params_cls: type
    meaning: str
    param_table: np.ndarray  # [n_params, 2] int16, every valid (a, b)
    reference: Callable  # (grid [8, 8], a, b) -> grid
    apply: Callable  # (grids [N, 8, 8], a [N], b [N]) -> grids [N, 8, 8]

    def params(self, a: int, b: int):
        """The parameter dataclass for ``(a, b)``."""
        values = [v for v in (a, b) if v != -1] if self.name != "translate" else [a, b]
        return self.params_cls(*values)


def _spatial(name, cls, meaning, params):
    params = np.array(params, dtype=np.int16)
    table = _spatial_table(_REFS[name], params)
    lookup = {tuple(p): i for i, p in enumerate(params.tolist())}
    # dense (a, b) -> row index, for the vectorised gather
    dense = np.full((12, 12), -1, dtype=np.intp)
    for (pa, pb), i in lookup.items():
        dense[pa + 2, pb + 2] = i

    def apply(g, a, b):
        return _gather(g, table, dense[a + 2, b + 2])

    return Primitive(name, cls, meaning, params, _REFS[name], apply)


_REFS = dict(rotate=_ref_rotate, flip=_ref_flip, recolor=_ref_recolor, swap=_ref_swap,
             translate=_ref_translate, gravity=_ref_gravity, border=_ref_border, fill_bg=_ref_fill_bg)

PRIMITIVES: tuple[Primitive, ...] = (
    _spatial("rotate", RotateParams, "rotate clockwise by k quarter turns (numpy.rot90(g, -k)); a = k in 1..3",
             [(k, -1) for k in (1, 2, 3)]),
    _spatial("flip", FlipParams, "a = axis: 0 rows reversed (upside down), 1 columns reversed (left-right), "
             "2 transpose (main diagonal), 3 anti-diagonal transpose", [(ax, -1) for ax in range(4)]),
    Primitive("recolor", RecolorParams, "every cell of colour a (1..9) becomes colour b (0..9, b != a)",
              np.array([(a, b) for a in range(1, 10) for b in range(10) if a != b], dtype=np.int16),
              _ref_recolor, _vec_recolor),
    Primitive("swap", SwapParams, "colours a and b (a < b, 0..9) exchanged",
              np.array([(a, b) for a in range(10) for b in range(a + 1, 10)], dtype=np.int16),
              _ref_swap, _vec_swap),
    _spatial("translate", TranslateParams, "cyclic shift numpy.roll(g, (a, b), axis=(0, 1)); a = dy, b = dx "
             "in -2..2, not both 0", [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)]),
    Primitive("gravity", GravityParams, "non-zero cells slide to one side of their column or row, keeping "
              "their order; a = 0 down, 1 up, 2 left, 3 right",
              np.array([(d, -1) for d in range(4)], dtype=np.int16), _ref_gravity, _vec_gravity),
    Primitive("border", BorderParams, "the outermost ring of cells becomes colour a (1..9)",
              np.array([(c, -1) for c in range(1, 10)], dtype=np.int16), _ref_border, _vec_border),
    Primitive("fill_bg", FillBgParams, "background cells (colour 0) become colour a (1..9)",
              np.array([(c, -1) for c in range(1, 10)], dtype=np.int16), _ref_fill_bg, _vec_fill_bg),
)

NAMES: tuple[str, ...] = tuple(p.name for p in PRIMITIVES)
INDEX: dict[str, int] = {name: i for i, name in enumerate(NAMES)}
NUM_PRIMITIVES = len(PRIMITIVES)
MAX_PARAMS = max(len(p.param_table) for p in PRIMITIVES)

# PARAM_INDEX[p, a + 2, b + 2] = row of (a, b) in PRIMITIVES[p].param_table, -1 if invalid
PARAM_INDEX = np.full((NUM_PRIMITIVES, 12, 12), -1, dtype=np.int64)
for _p, _prim in enumerate(PRIMITIVES):
    for _i, (_a, _b) in enumerate(_prim.param_table.tolist()):
        PARAM_INDEX[_p, _a + 2, _b + 2] = _i


def apply_primitive(name: str, grids: np.ndarray, a, b) -> np.ndarray:
    """Apply primitive ``name`` to ``grids`` [N, 8, 8] with per-grid params ``a``, ``b`` [N] (or scalars)."""
    grids = np.asarray(grids, dtype=np.uint8)
    n = len(grids)
    a = np.broadcast_to(np.asarray(a, dtype=np.int64), (n,))
    b = np.broadcast_to(np.asarray(b, dtype=np.int64), (n,))
    prim = PRIMITIVES[INDEX[name]]
    in_range = (a >= -2) & (a <= 9) & (b >= -2) & (b <= 9)
    valid = in_range & (PARAM_INDEX[INDEX[name], np.clip(a, -2, 9) + 2, np.clip(b, -2, 9) + 2] >= 0)
    if n and not valid.all():
        bad = int(np.flatnonzero(~valid)[0])
        raise ValueError(f"{name}: invalid parameters (a={a[bad]}, b={b[bad]})")
    return prim.apply(grids, a, b) if n else grids.copy()


def apply_steps(grids: np.ndarray, types: np.ndarray, args: np.ndarray) -> np.ndarray:
    """Apply one program step to each grid: ``types`` [N] primitive index (-1: no step), ``args`` [N, 2]."""
    out = grids.copy()
    for p, prim in enumerate(PRIMITIVES):
        rows = np.flatnonzero(types == p)
        if len(rows):
            out[rows] = prim.apply(grids[rows], args[rows, 0].astype(np.int64), args[rows, 1].astype(np.int64))
    return out


def run_programs(grids: np.ndarray, program: np.ndarray, args: np.ndarray) -> np.ndarray:
    """Apply programs to grids, vectorised.

    grids [N, 8, 8] uint8; program [N, 3] int (primitive index per step, -1 padding);
    args [N, 3, 2] int. Returns outputs [N, 8, 8] uint8.
    """
    out = np.asarray(grids, dtype=np.uint8)
    for t in range(program.shape[1]):
        out = apply_steps(out, program[:, t], args[:, t])
    return out


def run_program_reference(grid: np.ndarray, program, args) -> np.ndarray:
    """Per-grid reference of :func:`run_programs`: one grid, one program, plain numpy."""
    out = np.asarray(grid, dtype=np.uint8)
    for p, (a, b) in zip(program, args):
        if p >= 0:
            out = PRIMITIVES[p].reference(out, int(a), int(b)).astype(np.uint8)
    return out
