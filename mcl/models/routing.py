"""The routing executor: applies a task vector to a query grid one program step per pass.

The grid state is a distribution over colours per cell, ``x [B, 64, 10]`` (cell ``8 * row + col``).
The task vector ``h`` is read as ``steps`` slots, one per pass; every pass maps its slot to the
parameters of four differentiable operators (shared weights across passes) and applies them in
order, each blended with the identity by a gate ``u`` in [0, 1]:

    gather    x[p] <- sum_q A[p, q] x[q],  A = softmax over source rows x softmax over source cols,
              both linear in the output cell's exact coordinates (one-hot row, one-hot col):
              every rotation, flip, cyclic shift and their compositions is one such A
    sort      x[p] <- attention over the cells of p's column and row (or "empty"), scored by
              p's coordinates against each cell's counts of non-background cells up to the
              grid edge in the four directions: packing cells against a side (gravity)
    recolour  x[p] <- x[p] K, K [10, 10] row-stochastic: any colour map (recolor, swap, fill)
    paint     x[p] <- (1 - m_p) x[p] + m_p c, m_p in [0, 1] linear in p's coordinates (a ring,
              rows, columns), c a colour distribution (border)

The operator parameters are explicit tensors (:class:`StepParams`), so each primitive can be
written down by hand (``tests/test_routing.py``); the executor learns a map from slots to them.
The output is ``log x`` as logits [B, 10, 8, 8].
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from mcl.data.primitives import CELLS, COLOURS as NUM_COLOURS, SIZE as GRID

POS = 2 * GRID + 1          # position features of a cell: one-hot row, one-hot col, constant 1
COUNTS = 4 * (GRID + 1) + 1  # content features of a cell: 4 directional counts (one-hot 0..8), non-background
GATES = ("gather", "sort", "recolour")


def position_features() -> torch.Tensor:
    """Exact coordinates of the 64 cells: [64, 17] = one-hot row, one-hot col, 1."""
    cell = torch.arange(CELLS)
    return torch.cat([F.one_hot(cell // GRID, GRID), F.one_hot(cell % GRID, GRID),
                      torch.ones(CELLS, 1, dtype=torch.long)], dim=1).float()


def triangle_onehot(x: torch.Tensor, n: int) -> torch.Tensor:
    """Soft one-hot of real ``x [...]`` over 0..n-1 (exact for integers): [..., n]."""
    return (1 - (x[..., None] - torch.arange(n, dtype=x.dtype, device=x.device)).abs()).clamp_min(0)


def count_features(x: torch.Tensor) -> torch.Tensor:
    """Content features of every cell, [B, 64, 37]: how many non-background cells lie between it and
    the bottom, top, right and left edge (inclusive), each as a one-hot over 0..8, then its own
    non-background probability. ``x`` [B, 64, 10] colour distributions."""
    filled = (1 - x[..., 0]).view(-1, GRID, GRID)                       # [B, 8, 8]
    down = filled.flip(1).cumsum(1).flip(1)
    up = filled.cumsum(1)
    right = filled.flip(2).cumsum(2).flip(2)
    left = filled.cumsum(2)
    counts = torch.stack([down, up, right, left], dim=-1).view(-1, CELLS, 4)
    return torch.cat([triangle_onehot(counts, GRID + 1).flatten(2), filled.view(-1, CELLS, 1)], dim=-1)


@dataclass
class StepParams:
    """Operator parameters of one pass, per episode (B leading). Logits unless said otherwise.

    gather_row, gather_col [B, 17, 8]: source row / column of output cell p = pos(p) @ these.
    sort [B, 17, 37]: score of source cell q for output cell p = pos(p) @ sort @ counts(q);
    sort_line [B, 2]: bonus for q in p's column, in p's row; sort_empty [B, 17]: score of "empty".
    recolour [B, 10, 10]: row a = distribution of the new colour of colour a.
    mask [B, 17]: paint probability of p = sigmoid(pos(p) @ mask); paint [B, 10]: the colour.
    gates [B, 3]: gate logits of gather, sort, recolour.
    """

    gather_row: torch.Tensor
    gather_col: torch.Tensor
    sort: torch.Tensor
    sort_line: torch.Tensor
    sort_empty: torch.Tensor
    recolour: torch.Tensor
    mask: torch.Tensor
    paint: torch.Tensor
    gates: torch.Tensor


SHAPES = {"gather_row": (POS, GRID), "gather_col": (POS, GRID), "sort": (POS, COUNTS), "sort_line": (2,),
          "sort_empty": (POS,), "recolour": (NUM_COLOURS, NUM_COLOURS), "mask": (POS,), "paint": (NUM_COLOURS,),
          "gates": (len(GATES),)}


def softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the short last axis of [..., n, 8], taken over the axis before it in a transposed view:
    the same values, about 6x faster on CPU (PyTorch's kernel for a last axis of 8 is slow; f+b of
    [80, 64, 8] 1.2 ms vs 0.2 ms on one thread)."""
    return logits.transpose(-1, -2).softmax(-2).transpose(-1, -2)


def gather(x: torch.Tensor, row: torch.Tensor, col: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Move cells: x [B, 64, 10], source-row / source-col logits [B, 17, 8], pos [64, 17] -> [B, 64, 10]."""
    p_row = softmax_rows(pos @ row)                                      # [B, 64, 8]
    p_col = softmax_rows(pos @ col)
    routing = (p_row[..., :, None] * p_col[..., None, :]).flatten(2)     # [B, 64, 64]
    return routing @ x


def sort(x: torch.Tensor, score: torch.Tensor, line: torch.Tensor, empty: torch.Tensor,
         pos: torch.Tensor) -> torch.Tensor:
    """Content-addressed move along columns and rows (gravity); shapes as in :class:`StepParams`."""
    B = x.shape[0]
    query = (pos @ score).view(B, GRID, GRID, COUNTS)                    # [B, r, c, 37] per output cell
    keys = count_features(x).view(B, GRID, GRID, COUNTS)                  # [B, r', c', 37] per source cell
    in_col = torch.einsum("brcj,bqcj->brcq", query, keys) + line[:, 0, None, None, None]   # source (q, c)
    in_row = torch.einsum("brcj,brqj->brcq", query, keys) + line[:, 1, None, None, None]   # source (r, q)
    nothing = (pos @ empty[..., None]).view(B, GRID, GRID, 1)
    attn = torch.cat([in_col, in_row, nothing], dim=-1).softmax(-1)      # [B, 8, 8, 17]
    cells = x.view(B, GRID, GRID, NUM_COLOURS)
    moved = (torch.einsum("brcq,bqce->brce", attn[..., :GRID], cells)
             + torch.einsum("brcq,brqe->brce", attn[..., GRID:2 * GRID], cells)).reshape(B, CELLS, NUM_COLOURS)
    background = F.pad(attn[..., -1].reshape(B, CELLS, 1), (0, NUM_COLOURS - 1))
    return moved + background


def recolour(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Colour map: x [B, 64, 10] @ softmax(logits [B, 10, 10]) over the new colour."""
    return x @ logits.softmax(-1)


def paint(x: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Overwrite cells: mask logits [B, 17] over positions, colour logits [B, 10]."""
    m = torch.sigmoid(pos @ mask[..., None])                             # [B, 64, 1]
    return (1 - m) * x + m * colour.softmax(-1)[:, None, :]


def apply_step(x: torch.Tensor, p: StepParams, pos: torch.Tensor) -> torch.Tensor:
    """One pass: gather, sort, recolour (each gated against the identity), then paint. [B, 64, 10]."""
    u = torch.sigmoid(p.gates)[:, None, :]                               # [B, 1, 3]
    x = torch.lerp(x, gather(x, p.gather_row, p.gather_col, pos), u[..., 0:1])
    x = torch.lerp(x, sort(x, p.sort, p.sort_line, p.sort_empty, pos), u[..., 1:2])
    x = torch.lerp(x, recolour(x, p.recolour), u[..., 2:3])
    return paint(x, p.mask, p.paint, pos)


class RoutingExecutor(nn.Module):
    """Apply a task vector ``h [B, h_dim]``, read as ``steps`` slots, to a query grid; one pass per slot.

    A pass maps its slot through ``control`` (LayerNorm, Linear + GELU, width d) and ``to_params`` (Linear) to
    :class:`StepParams`, added to learned biases: gates start at -1 (mostly identity), the paint mask
    at -3 (a paint probability of 5%: closed enough not to blur, open enough to learn; at -6 single
    border colours stayed unlearned), the "empty" score closed at -6, everything else at 0.
    """

    def __init__(self, h_dim: int, d_model: int, steps: int):
        super().__init__()
        if h_dim % steps:
            raise ValueError(f"h_dim ({h_dim}) must be divisible by the executor's steps ({steps})")
        self.steps = steps
        self.sizes = {name: int(torch.tensor(shape).prod()) for name, shape in SHAPES.items()}
        self.control = nn.Sequential(nn.LayerNorm(h_dim // steps), nn.Linear(h_dim // steps, d_model), nn.GELU())
        self.to_params = nn.Linear(d_model, sum(self.sizes.values()))
        self.bias = nn.ParameterDict({name: nn.Parameter(torch.zeros(shape)) for name, shape in SHAPES.items()})
        self.register_buffer("pos", position_features(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``control`` as PyTorch initialises it, ``to_params`` N(0, 0.02) with zero bias, the biases above."""
        self.control[0].reset_parameters()
        self.control[1].reset_parameters()
        nn.init.normal_(self.to_params.weight, std=0.02)
        nn.init.zeros_(self.to_params.bias)
        closed = torch.zeros(POS).index_fill_(0, torch.tensor([POS - 1]), -6.0)  # constant feature -> logit -6
        mask = torch.zeros(POS).index_fill_(0, torch.tensor([POS - 1]), -3.0)    # paints 5% at first: learns fast
        with torch.no_grad():
            for name, value in self.bias.items():
                value.copy_({"gates": torch.full(value.shape, -1.0), "mask": mask,
                             "sort_empty": closed}.get(name, torch.zeros(value.shape)))

    def step_params(self, slot: torch.Tensor) -> StepParams:
        """Operator parameters of one pass from its slot [B, h_dim / steps]."""
        B = slot.shape[0]
        raw = self.to_params(self.control(slot)).split(list(self.sizes.values()), dim=-1)
        return StepParams(**{f.name: self.bias[f.name] + r.view(B, *SHAPES[f.name])
                             for f, r in zip(fields(StepParams), raw)})

    def forward(self, query: torch.Tensor, task: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """query long [B, 8, 8], task [B, h_dim] -> logits [B, 10, 8, 8] (log colour probabilities).

        ``present`` bool [B, steps], if given, skips the passes of absent program steps (the grid passes
        through unchanged): the oracle-task control knows its program's length.
        """
        B = query.shape[0]
        x = F.one_hot(query.reshape(B, CELLS), NUM_COLOURS).to(task.dtype)   # [B, 64, 10]
        slots = task.view(B, self.steps, -1)
        for t in range(self.steps):
            stepped = apply_step(x, self.step_params(slots[:, t]), self.pos.to(x.dtype))
            x = stepped if present is None else torch.where(present[:, t, None, None], stepped, x)
        logits = torch.log(x.clamp_min(1e-6))                                   # [B, 64, 10]
        return logits.transpose(1, 2).reshape(B, NUM_COLOURS, GRID, GRID)
