"""Demonstration pairs -> one token per pair, built from where each output cell comes from.

A spatial task moves cells; to see it, an encoder must compare an output cell with input cells
at *other* positions. This embedding compares them under candidate re-arrangements g of the
input: every symmetry of the 8x8 torus (the 8 dihedral maps, rotations and flips, times the 64
cyclic shifts: 512 maps) and the 4 packings of the non-background cells against a side, order
kept (what the executor's sort operator does):

1. for each g, match counts between g(input) and output, averaged over the pairs of an episode:
   cells of equal non-background colour, cells non-background in both, and cells on a colour
   boundary in both (boundaries survive any one-to-one colour map: recolor, swap, fill); for the
   symmetries these are cyclic cross-correlations, computed with a 2-D FFT per dihedral map;
2. a learned score of each g from its counts (initialised to the boundary plus colour matches)
   and a softmax over the 516 candidates give an alignment, shared by the pairs of the episode;
3. per pair: the alignment as learned embeddings of its dihedral part and shift, the colour
   co-occurrence between the aligned input and the output (counts and row-normalised: the
   colour map), colour histograms of input and output and of their outer rings, and how packed
   against each side the non-background cells are (gravity leaves them packed).

These features are normalised and projected to ``d_model``. Everything after the alignment is
differentiable; the match counts are fixed functions of the grids.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mcl.data.primitives import CELLS, COLOURS as NUM_COLOURS, SIZE as GRID

DIHEDRAL = 8
MATCHES = 7      # per map: equal colour, both non-background, both boundary, then 4 totals
PACKINGS = 4     # non-background cells packed down, up, left, right
GLOBAL = 4 * NUM_COLOURS + 2 * 4


def dihedral_index() -> torch.Tensor:
    """[8, 64] cell index tables: ``g.flatten()[table[d]]`` is dihedral map d of grid g (identity,
    rotations by 90/180/270 degrees clockwise, flip rows, flip columns, transpose, anti-transpose)."""
    g = torch.arange(CELLS).view(GRID, GRID)
    maps = [g, g.rot90(-1), g.rot90(-2), g.rot90(-3), g.flip(0), g.flip(1), g.t(), g.flip(0).flip(1).t()]
    return torch.stack([m.reshape(-1) for m in maps])


def boundary(grid: torch.Tensor) -> torch.Tensor:
    """1 where a cell's colour differs from one of its 4 cyclic neighbours: long [..., 8, 8] -> float."""
    edge = torch.zeros_like(grid, dtype=torch.bool)
    for shift, dim in ((1, -1), (-1, -1), (1, -2), (-1, -2)):
        edge |= grid != torch.roll(grid, shift, dim)
    return edge.float()


def packing(filled: torch.Tensor) -> torch.Tensor:
    """Fraction of non-background cells whose neighbour towards the bottom, top, right, left is
    non-background or the edge: [..., 8, 8] -> [..., 4] (1 on every side a gravity packed them to)."""
    one_row, one_col = torch.ones_like(filled[..., :1, :]), torch.ones_like(filled[..., :, :1])
    sides = (torch.cat([filled[..., 1:, :], one_row], -2), torch.cat([one_row, filled[..., :-1, :]], -2),
             torch.cat([filled[..., :, 1:], one_col], -1), torch.cat([one_col, filled[..., :, :-1]], -1))
    n = filled.sum((-1, -2)).clamp_min(1)
    return torch.stack([(filled * s).sum((-1, -2)) / n for s in sides], dim=-1)


def spectrum(grids: torch.Tensor) -> torch.Tensor:
    """2-D real FFT over the last two axes of [..., 8, 8]: [..., 8, 5] complex."""
    return torch.fft.rfft2(grids)


def correlate(fa: torch.Tensor, fb: torch.Tensor, dims: tuple[int, ...] = ()) -> torch.Tensor:
    """Cyclic cross-correlation ``c[s] = sum_p a[p - s] b[p]`` over all 64 shifts from spectra of a and b,
    summed over the batch axes ``dims`` (in the frequency domain: one inverse FFT per sum): [..., 8, 8]."""
    product = fa.conj() * fb
    return torch.fft.irfft2(product.sum(dims) if dims else product, s=(GRID, GRID))


def match_counts(colour_in: torch.Tensor, colour_out: torch.Tensor, edge_in: torch.Tensor,
                 edge_out: torch.Tensor) -> torch.Tensor:
    """Match counts per map g = (dihedral d, shift) of the inputs onto the outputs, mean over the pairs.

    colour_in: spectra of the one-hot turned inputs [B, k, 8, 10, 8, 5] (dihedral, colour);
    colour_out: spectra of the one-hot outputs [B, k, 1, 10, 8, 5]; edge_in [B, k, 8, 8, 8] and
    edge_out [B, k, 1, 8, 8]: boundary maps (:func:`boundary`). Returns [B, 8, 8, 8, 7] over
    (d, shift row, shift col): cells of equal non-background colour, non-background in both, on a
    boundary in both, then the input's and output's non-background and boundary totals; counts / 16.
    """
    k = colour_in.shape[1]
    same = correlate(colour_in[:, :, :, 1:], colour_out[:, :, :, 1:], dims=(1, 3))  # [B, 8, 8, 8], summed over pairs
    ones = torch.zeros_like(colour_in[:, :, :, 0])
    ones[..., 0, 0] = CELLS                                                      # spectrum of a grid of ones
    filled_in, filled_out = ones - colour_in[:, :, :, 0], ones[:, :, :1] - colour_out[:, :, :, 0]
    both = correlate(filled_in, filled_out, dims=(1,))
    edges = correlate(spectrum(edge_in), spectrum(edge_out), dims=(1,))
    totals = [filled_in[..., 0, 0].real, filled_out[..., 0, 0].real, edge_in.sum((-1, -2)), edge_out.sum((-1, -2))]
    totals = [t.sum(1)[..., None, None].expand_as(same) for t in totals]
    return torch.stack([same, both, edges, *totals], dim=-1) / (16 * k)


def pack(grids: torch.Tensor) -> torch.Tensor:
    """Non-background cells packed against each side, their order kept: long [..., 8, 8] -> [..., 4, 8, 8]
    for down, up, left, right (the order of gravity's parameter)."""
    def to_end(lines: torch.Tensor, end: bool) -> torch.Tensor:   # along the last axis, a stable sort
        return torch.gather(lines, -1, torch.sort(((lines != 0) == end).long(), dim=-1, stable=True).indices)

    cols = grids.transpose(-1, -2)
    return torch.stack([to_end(cols, True).transpose(-1, -2), to_end(cols, False).transpose(-1, -2),
                        to_end(grids, False), to_end(grids, True)], dim=-3)


def direct_counts(moved: torch.Tensor, demo_out: torch.Tensor) -> torch.Tensor:
    """:func:`match_counts` for re-arranged inputs given as grids, without a shift: moved long
    [B, k, M, 8, 8], demo_out long [B, k, 8, 8] -> [B, M, 7]."""
    out = demo_out[:, :, None]
    filled_in, filled_out = moved != 0, out != 0
    edge_in, edge_out = boundary(moved), boundary(out)
    counts = [((moved == out) & filled_out).sum((-1, -2)), (filled_in & filled_out).sum((-1, -2)),
              (edge_in * edge_out).sum((-1, -2)), filled_in.sum((-1, -2)), filled_out.sum((-1, -2)).expand_as(
                  filled_in[..., 0, 0]), edge_in.sum((-1, -2)), edge_out.sum((-1, -2)).expand_as(filled_in[..., 0, 0])]
    return torch.stack([c.float() for c in counts], dim=-1).mean(1) / 16


class CorrespondenceEmbed(nn.Module):
    """Demonstration pairs long [B, k, 8, 8] -> tokens [B, k, d]: one per pair (see the module docstring)."""

    def __init__(self, d_model: int, embed: int = 32, hidden: int = 16):
        super().__init__()
        self.register_buffer("index", dihedral_index(), persistent=False)
        self.score = nn.Linear(MATCHES, 1)                 # starts as boundary + colour matches
        self.score_mlp = nn.Sequential(nn.Linear(MATCHES, hidden), nn.GELU(), nn.Linear(hidden, 1))  # starts near 0
        self.dihedral = nn.Embedding(DIHEDRAL, embed)
        self.shift_row = nn.Embedding(GRID, embed)
        self.shift_col = nn.Embedding(GRID, embed)
        self.packing = nn.Embedding(PACKINGS, 3 * embed)
        width = 3 * embed + 2 * NUM_COLOURS ** 2 + GLOBAL
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The alignment score's initial form (the model's weight init must not overwrite it)."""
        with torch.no_grad():
            self.score.weight.zero_()
            self.score.weight[0, 0] = self.score.weight[0, 2] = 16.0   # one matching cell = 1 nat
            self.score.bias.zero_()
            self.score_mlp[-1].weight.normal_(0.0, 1e-3)   # near 0, but not 0: its first layer gets gradients
            self.score_mlp[-1].bias.zero_()

    def alignment(self, demo_in: torch.Tensor, demo_out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The episode's alignment of inputs onto outputs: ``symmetry`` [B, 8, 8, 8] over (dihedral map,
        shift row, shift col) and ``packing`` [B, 4], together a distribution; with ``spectra`` of the turned
        one-hot inputs [B, k, 8, 10, 8, 5] and the ``packed`` inputs [B, k, 4, 8, 8]."""
        B, k = demo_in.shape[:2]
        onehot_in = F.one_hot(demo_in.reshape(B, k, CELLS), NUM_COLOURS).float()[:, :, self.index]  # [B, k, 8, 64, 10]
        spectra = spectrum(onehot_in.view(B, k, DIHEDRAL, GRID, GRID, NUM_COLOURS).permute(0, 1, 2, 5, 3, 4))
        packed = pack(demo_in)                                                   # [B, k, 4, 8, 8]
        with torch.no_grad():
            colour_out = spectrum(F.one_hot(demo_out, NUM_COLOURS).float().permute(0, 1, 4, 2, 3))[:, :, None]
            edge_in = boundary(demo_in.reshape(B, k, CELLS)[:, :, self.index].view(B, k, DIHEDRAL, GRID, GRID))
            counts = torch.cat([match_counts(spectra, colour_out, edge_in, boundary(demo_out)[:, :, None]).view(B, -1, MATCHES),
                                direct_counts(packed, demo_out)], dim=1)            # [B, 516, 7]
        pi = (self.score(counts) + self.score_mlp(counts)).squeeze(-1).softmax(-1)  # [B, 516]
        return {"symmetry": pi[:, :-PACKINGS].view(B, DIHEDRAL, GRID, GRID), "packing": pi[:, -PACKINGS:],
                "spectra": spectra, "packed": packed}

    def forward(self, demo_in: torch.Tensor, demo_out: torch.Tensor) -> torch.Tensor:
        B, k = demo_in.shape[:2]
        a = self.alignment(demo_in, demo_out)
        pi, packing_pi = a["symmetry"], a["packing"]
        onehot_in = F.one_hot(demo_in, NUM_COLOURS).float()                      # [B, k, 8, 8, 10]
        onehot_out = F.one_hot(demo_out, NUM_COLOURS).float()
        where = torch.cat([pi.sum((2, 3)) @ self.dihedral.weight, pi.sum((1, 3)) @ self.shift_row.weight,
                           pi.sum((1, 2)) @ self.shift_col.weight], dim=-1) + packing_pi @ self.packing.weight
        # the inputs moved by the alignment: sum_g pi_g g(input); for the symmetries a cyclic convolution
        # per dihedral map
        moved = torch.fft.irfft2((a["spectra"] * spectrum(pi)[:, None, :, None]).sum(2), s=(GRID, GRID))  # [B, k, 10, 8, 8]
        moved = moved + torch.einsum("bm,bkmyxc->bkcyx", packing_pi, F.one_hot(a["packed"], NUM_COLOURS).float())
        pairs = torch.einsum("bkcyx,bkyxe->bkce", moved, onehot_out) / CELLS     # [B, k, 10, 10]
        colour_map = pairs / pairs.sum(-1, keepdim=True).clamp_min(1e-3)
        ring = boundary_ring(demo_in.device)
        glob = torch.cat([onehot_in.mean((2, 3)), onehot_out.mean((2, 3)), onehot_in[:, :, ring].mean(2),
                          onehot_out[:, :, ring].mean(2), packing((demo_in != 0).float()),
                          packing((demo_out != 0).float())], dim=-1)             # [B, k, 48]
        feats = torch.cat([where[:, None].expand(B, k, -1), 10 * pairs.flatten(2), colour_map.flatten(2), glob], -1)
        return self.proj(self.norm(feats))


def boundary_ring(device=None) -> torch.Tensor:
    """[8, 8] bool: the outermost ring of cells."""
    ring = torch.zeros(GRID, GRID, dtype=torch.bool, device=device)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    return ring
