"""Demonstration pairs -> one token per pair, built from where each output cell comes from.

A spatial task moves cells; to see it, an encoder must compare an output cell with input cells
at *other* positions. This embedding compares them under candidate re-arrangements g of the
input. The candidates are base images of the input, each under all 64 cyclic shifts, plus packed
turned inputs without a shift (a packing slides the non-background cells against a side, order
kept, as gravity does; it commutes with a dihedral map up to relabelling the side):

- the 8 dihedral maps (rotations and flips) and the 4 packings, each with every shift (768 maps:
  every symmetry of the 8x8 torus, and gravity before or after a translation);
- the 4 packings of each of the 7 turned inputs (28 maps: gravity before or after a flip or turn).

1. for each g, match counts between g(input) and output, averaged over the pairs of an episode:
   cells of equal non-background colour, cells non-background in both, and cells on a colour
   boundary in both (boundaries survive any one-to-one colour map: recolor, swap, fill); under
   the shifts these are cyclic cross-correlations, computed in the frequency domain (the spectra
   of the turned inputs come from the input's own: :func:`dihedral_spectra`);
2. a learned score of each g from its counts (initialised to the boundary plus colour matches)
   and a softmax over the 796 candidates give an alignment, shared by the pairs of the episode.
   A compound map (a packing under a non-zero shift, a turned packing) pays a learned cost,
   initially ``COMPOUND_PRIOR`` nats, so that a plain map explaining the pairs as well wins; a
   turned packing whose grids equal an earlier candidate's on every pair is dropped
   (:func:`first_copies`), so that one re-arrangement is never split between two labels;
3. per pair: the alignment as learned embeddings of its dihedral part, packing and shift, the
   colour co-occurrence between the aligned input and the output (counts and row-normalised: the
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
BASES = DIHEDRAL + PACKINGS   # base images taken under every shift: the turned inputs, the packed input
SHIFTED = BASES * CELLS       # candidates that are a base image under a cyclic shift; then the turned packings
FREQUENCIES = GRID * (GRID // 2 + 1)   # of a real 8x8 grid's half spectrum
COMPOUND_PRIOR = 2.0   # initial cost, in nats, of a packing composed with a shift or a turn (see alignment)
GLOBAL = 4 * NUM_COLOURS + 2 * 4


def dihedral_index() -> torch.Tensor:
    """[8, 64] cell index tables: ``g.flatten()[table[d]]`` is dihedral map d of grid g (identity,
    rotations by 90/180/270 degrees clockwise, flip rows, flip columns, transpose, anti-transpose)."""
    g = torch.arange(CELLS).view(GRID, GRID)
    maps = [g, g.rot90(-1), g.rot90(-2), g.rot90(-3), g.flip(0), g.flip(1), g.t(), g.flip(0).flip(1).t()]
    return torch.stack([m.reshape(-1) for m in maps])


def dihedral_spectra() -> tuple[torch.Tensor, torch.Tensor]:
    """How a dihedral map acts on spectra: ``rfft2(turned_d)[f] = phase[f, d] * fft2(g).flatten()[source[f, d]]``
    over the 40 frequencies f of the half spectrum [8, 5]; long source [40, 8], complex phase [40, 8].

    Turning is ``turned[p] = g[R p + t]`` on the torus (R a signed permutation, t an offset), so the spectrum
    moves the same way, ``R f``, with the phase of the offset, ``exp(2 pi i (R f) . t / 8)``."""
    rows, cols = dihedral_index().view(DIHEDRAL, GRID, GRID).div(GRID, rounding_mode="floor"), \
        dihedral_index().view(DIHEDRAL, GRID, GRID) % GRID
    t = torch.stack([rows[:, 0, 0], cols[:, 0, 0]], -1)                          # [8, 2]
    R = torch.stack([torch.stack([rows[:, 1, 0], cols[:, 1, 0]], -1) - t,
                     torch.stack([rows[:, 0, 1], cols[:, 0, 1]], -1) - t], -1) % GRID   # [8, 2, 2]: columns R e_i
    u, v = torch.meshgrid(torch.arange(GRID), torch.arange(GRID // 2 + 1), indexing="ij")
    f = torch.stack([u.flatten(), v.flatten()])                                  # [2, 40]
    Rf = (R @ f) % GRID                                                          # [8, 2, 40]
    phase = torch.exp(2j * torch.pi * (Rf * t[:, :, None]).sum(1) / GRID)
    return (Rf[:, 0] * GRID + Rf[:, 1]).T.contiguous(), phase.T.to(torch.complex64).contiguous()


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


def one_hot(grids: torch.Tensor) -> torch.Tensor:
    """Colour planes of grids: long [..., 8, 8] -> float [..., 10, 8, 8]."""
    return (grids[..., None, :, :] == torch.arange(NUM_COLOURS, device=grids.device)[:, None, None]).float()


def weigh_grids(weights: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Sum of the colour planes of grids, weighted: ``sum_m weights[b, m] one_hot(grids[b, k, m])``, with
    weights [B, *M] and grids long [B, k, *M, 8, 8] -> [B, k, 10, 8, 8]; differentiable in the weights."""
    B, k = grids.shape[:2]
    cells = torch.arange(CELLS, device=grids.device)
    index = (grids.reshape(B, k, -1, CELLS) * CELLS + cells).flatten(2)              # colour-major cell index
    src = weights.reshape(B, 1, -1, 1).expand(B, k, -1, CELLS).flatten(2)
    return torch.zeros(B, k, NUM_COLOURS * CELLS, device=grids.device).scatter_add(2, index, src).view(
        B, k, NUM_COLOURS, GRID, GRID)


def weigh_spectra(weights: torch.Tensor, spectra: torch.Tensor) -> torch.Tensor:
    """``sum_m weights[b, m, f] spectra[b, f, m, n]`` for spectra of weights [B, M, 8, 5] and frequency-major
    spectra [B, 40, M, n]: [B, 40, n]."""
    B, M = weights.shape[:2]
    return (weights.view(B, M, FREQUENCIES).transpose(1, 2)[:, :, None] @ spectra).squeeze(2)


def spectrum(grids: torch.Tensor) -> torch.Tensor:
    """2-D real FFT over the last two axes of [..., 8, 8]: [..., 8, 5] complex."""
    return torch.fft.rfft2(grids)


def frequency_major(spectra: torch.Tensor) -> torch.Tensor:
    """Spectra of planes, frequencies first: [B, k, M, C, 8, 5] -> [B, 40, M, k * C]: for each frequency a
    matrix over (map, pair and plane), so that sums over pairs and planes are matrix products."""
    B, k, M, C = spectra.shape[:4]
    return spectra.permute(0, 4, 5, 2, 1, 3).reshape(B, FREQUENCIES, M, k * C)


def correlate(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """Cyclic cross-correlations ``c[m, s] = sum_n sum_p a[m, n][p - s] b[n][p]`` over all 64 shifts s, summed
    over n, from frequency-major spectra fa [B, 40, M, n] and fb [B, 40, 1, n]: [B, M, 8, 8]."""
    B, M = fa.shape[0], fa.shape[2]
    products = (fa @ fb.conj().transpose(-1, -2)).conj()                       # [B, 40, M, 1]: sum_n conj(a) b
    return torch.fft.irfft2(products.view(B, GRID, -1, M).permute(0, 3, 1, 2), s=(GRID, GRID))


def match_counts(colour_in: torch.Tensor, colour_out: torch.Tensor, edge_in: torch.Tensor,
                 edge_out: torch.Tensor) -> torch.Tensor:
    """Match counts per map g = (base image m, shift) of the inputs onto the outputs, mean over the k pairs.

    colour_in [B, 40, M, k * 10] and colour_out [B, 40, 1, k * 10]: frequency-major spectra of the colour
    planes of the base images of the inputs and of the outputs; edge_in [B, k, M, 8, 8] and edge_out
    [B, k, 1, 8, 8]: boundary maps (:func:`boundary`). Returns [B, M, 8, 8, 7] over (base image, shift row,
    shift col): cells of equal non-background colour, non-background in both, on a boundary in both, then
    the input's and output's non-background and boundary totals; counts / 16.
    """
    B, M, k = colour_in.shape[0], colour_in.shape[2], edge_in.shape[1]
    background_in = colour_in.view(B, FREQUENCIES, M, k, NUM_COLOURS)[..., 0]     # [B, 40, M, k]
    background_out = colour_out.view(B, FREQUENCIES, 1, k, NUM_COLOURS)[..., 0]
    same = correlate(colour_in, colour_out) - correlate(background_in, background_out)  # non-background colours
    ones = torch.zeros_like(background_in)
    ones[:, 0] = CELLS                                                           # spectrum of a grid of ones
    filled_in, filled_out = ones - background_in, ones[:, :, :1] - background_out
    both = correlate(filled_in, filled_out)
    edges = correlate(frequency_major(spectrum(edge_in[:, :, :, None])),
                      frequency_major(spectrum(edge_out[:, :, :, None])))
    totals = [filled_in[:, 0].real.sum(-1), filled_out[:, 0].real.sum(-1), edge_in.sum((1, 3, 4)),
              edge_out.sum((1, 3, 4))]                                           # [B, M or 1], summed over pairs
    totals = [t[..., None, None].expand_as(same) for t in totals]
    return torch.stack([same, both, edges, *totals], dim=-1) / (16 * k)


def pack(grids: torch.Tensor) -> torch.Tensor:
    """Non-background cells packed against each side, their order kept: long [..., 8, 8] -> [..., 4, 8, 8]
    for down, up, left, right (the order of gravity's parameter; gravity itself)."""
    def to_end(lines: torch.Tensor, end: bool) -> torch.Tensor:   # along the last axis, a stable sort
        return torch.gather(lines, -1, torch.sort(((lines != 0) == end).long(), dim=-1, stable=True).indices)

    cols = grids.transpose(-1, -2)
    return torch.stack([to_end(cols, True).transpose(-1, -2), to_end(cols, False).transpose(-1, -2),
                        to_end(grids, False), to_end(grids, True)], dim=-3)


def grid_codes(grids: torch.Tensor) -> torch.Tensor:
    """Each grid as 4 integers, 4 bits per cell (equal codes, equal grids): long [..., 8, 8] -> [..., 4]."""
    nibbles = 4 * torch.arange(16, device=grids.device)
    return (grids.reshape(*grids.shape[:-2], 4, 16) << nibbles).sum(-1)      # int64 wraps: bits, not a number


def first_copies(candidates: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
    """Whether each candidate's grids differ from those of every earlier candidate and of every grid in
    ``earlier``, on all pairs: candidates long [B, k, M, 8, 8], earlier [B, k, E, 8, 8] -> bool [B, M]."""
    M, E = candidates.shape[2], earlier.shape[2]
    codes = grid_codes(torch.cat([earlier, candidates], dim=2)).transpose(1, 2).flatten(2)   # [B, E + M, k * 4]
    same = (codes[:, E:, None] == codes[:, None]).all(-1)                       # [B, M, E + M]
    before = torch.ones(M, E + M, dtype=torch.bool, device=same.device).tril(E - 1)
    return ~(same & before).any(-1)


def direct_counts(moved: torch.Tensor, demo_out: torch.Tensor, edge_in: torch.Tensor) -> torch.Tensor:
    """:func:`match_counts` for re-arranged inputs given as grids, without a shift: moved long
    [B, k, M, 8, 8], demo_out long [B, k, 8, 8] and edge_in, the boundary of moved [B, k, M, 8, 8] -> [B, M, 7]."""
    out = demo_out[:, :, None]
    filled_in, filled_out = moved != 0, out != 0
    edge_out = boundary(out)
    counts = [((moved == out) & filled_out).sum((-1, -2)), (filled_in & filled_out).sum((-1, -2)),
              (edge_in * edge_out).sum((-1, -2)), filled_in.sum((-1, -2)), filled_out.sum((-1, -2)).expand_as(
                  filled_in[..., 0, 0]), edge_in.sum((-1, -2)), edge_out.sum((-1, -2)).expand_as(filled_in[..., 0, 0])]
    return torch.stack([c.float() for c in counts], dim=-1).mean(1) / 16


class EvidenceMemo:
    """Each episode's :meth:`CorrespondenceEmbed.evidence`, computed once: it is a fixed function of the
    episode's grids, so an episode seen again (every epoch) looks it up by the bytes of its pairs. Holds at
    most ``capacity`` episodes (about 22 KB each), stored only while the module trains (evaluation sees an
    episode once); copies of the module share it."""

    def __init__(self, capacity: int = 1 << 15):
        self.capacity, self.rows = capacity, {}

    def __deepcopy__(self, memo):
        return self

    def lookup(self, pairs: torch.Tensor, compute, store: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Evidence of the episodes with ``pairs`` long [B, 2k, 8, 8]: each tensor of ``compute(i)`` (the
        evidence of episodes ``i``, an index tensor or ``slice(None)`` for all) stacked per episode, in order;
        the computed rows are kept for later lookups if ``store``."""
        keys = [row.tobytes() for row in pairs.to(torch.uint8).flatten(1).cpu().numpy()]
        missing = [b for b, key in enumerate(keys) if key not in self.rows]
        found = {}
        if missing:
            index = slice(None) if len(missing) == len(keys) else torch.tensor(missing, device=pairs.device)
            computed = compute(index)
            for j, b in enumerate(missing):
                found[keys[b]] = tuple(t[j] for t in computed)   # views: the rows of one batch stay together
                if store and len(self.rows) < self.capacity:
                    self.rows[keys[b]] = found[keys[b]]
        rows = [self.rows[key] if key in self.rows else found[key] for key in keys]
        return tuple(torch.stack(column).to(pairs.device) for column in zip(*rows))


class CorrespondenceEmbed(nn.Module):
    """Demonstration pairs long [B, k, 8, 8] -> tokens [B, k, d]: one per pair (see the module docstring)."""

    def __init__(self, d_model: int, embed: int = 32, hidden: int = 16):
        super().__init__()
        self.register_buffer("index", dihedral_index(), persistent=False)
        source, phase = dihedral_spectra()
        self.register_buffer("source", source, persistent=False)
        self.register_buffer("phase", phase, persistent=False)
        is_compound = torch.ones(SHIFTED + (DIHEDRAL - 1) * PACKINGS)
        is_compound[:DIHEDRAL * CELLS] = is_compound[DIHEDRAL * CELLS::CELLS][:PACKINGS] = 0   # symmetries, packings
        self.register_buffer("is_compound", is_compound, persistent=False)
        self.memo = EvidenceMemo()
        self.score = nn.Linear(MATCHES, 1)                 # starts as boundary + colour matches
        self.score_mlp = nn.Sequential(nn.Linear(MATCHES, hidden), nn.GELU(), nn.Linear(hidden, 1))  # starts near 0
        self.compound = nn.Parameter(torch.zeros(()))    # score of a packing composed with a shift or a turn
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
            self.compound.fill_(-COMPOUND_PRIOR)
            self.score_mlp[-1].weight.normal_(0.0, 1e-3)   # near 0, but not 0: its first layer gets gradients
            self.score_mlp[-1].bias.zero_()

    def alignment(self, demo_in: torch.Tensor, demo_out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The episode's alignment of inputs onto outputs, together a distribution: ``shifted`` [B, 12, 8, 8]
        over (base image: 8 dihedral maps then 4 packings, shift row, shift col) and ``packed`` [B, 7, 4] over
        (dihedral map 1..7, packing before it); with the frequency-major ``spectra`` of the colour planes of the
        base images [B, 40, 12, k * 10] and the turned packed inputs ``packed_turned`` [B, k, 7, 4, 8, 8]."""
        B, k = demo_in.shape[:2]
        turned = demo_in.reshape(B, k, CELLS).index_select(-1, self.index.flatten()).view(B, k, DIHEDRAL, GRID, GRID)
        packed = pack(demo_in)                                                   # [B, k, 4, 8, 8]
        packed_turned = self.turn(packed)                                        # [B, k, 7, 4, 8, 8]
        base = torch.cat([turned, packed], dim=2)                                # [B, k, 12, 8, 8]
        full = torch.fft.fft2(one_hot(demo_in)).permute(0, 3, 4, 1, 2).reshape(B, CELLS, k * NUM_COLOURS)
        spectra = full.new_empty(B, FREQUENCIES, BASES, k * NUM_COLOURS)         # written in place, not concatenated
        torch.mul(full.index_select(1, self.source.flatten()).view(B, FREQUENCIES, DIHEDRAL, -1), self.phase[..., None],
                  out=spectra[:, :, :DIHEDRAL])                                  # the turned inputs
        spectra[:, :, DIHEDRAL:].unflatten(1, (GRID, -1)).unflatten(-1, (k, NUM_COLOURS)).copy_(
            spectrum(one_hot(packed)).permute(0, 4, 5, 2, 1, 3))                # the packings
        with torch.no_grad():
            counts, copy = self.memo.lookup(torch.cat([demo_in, demo_out], dim=1), lambda i: self.evidence(
                base[i], spectra[i], packed[i], packed_turned[i], demo_out[i]), store=self.training)
        scores = (self.score(counts) + self.score_mlp(counts)).squeeze(-1) + self.compound * self.is_compound
        pi = scores.masked_fill(copy, float("-inf")).softmax(-1)                # [B, 796]
        return {"shifted": pi[:, :SHIFTED].view(B, BASES, GRID, GRID),
                "packed": pi[:, SHIFTED:].view(B, DIHEDRAL - 1, PACKINGS),
                "spectra": spectra, "packed_turned": packed_turned}

    def evidence(self, base: torch.Tensor, spectra: torch.Tensor, packed: torch.Tensor, packed_turned: torch.Tensor,
                 demo_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The match counts of the 796 candidates [B, 796, 7] and which are dropped as a copy of an earlier one,
        bool [B, 796], from the base images [B, k, 12, 8, 8], their ``spectra``, the packed inputs [B, k, 4, 8, 8],
        the turned packed inputs [B, k, 7, 4, 8, 8] and the outputs [B, k, 8, 8] (fixed functions of the grids)."""
        B = base.shape[0]
        colour_out = frequency_major(spectrum(one_hot(demo_out)[:, :, None]))
        edges = boundary(base)                            # a boundary turns with its grid: turn the packings' own
        counts = torch.cat([match_counts(spectra, colour_out, edges, boundary(demo_out)[:, :, None]).view(B, -1, MATCHES),
                            direct_counts(packed_turned.flatten(2, 3), demo_out,
                                          self.turn(edges[:, :, DIHEDRAL:]).flatten(2, 3))], dim=1)
        copy = torch.zeros(B, counts.shape[1], dtype=torch.bool, device=counts.device)
        copy[:, SHIFTED:] = ~first_copies(packed_turned.flatten(2, 3), packed)   # a turned packing seen before
        return counts, copy

    def turn(self, grids: torch.Tensor) -> torch.Tensor:
        """The 7 dihedral maps other than the identity of each of M grids: [B, k, M, 8, 8] -> [B, k, 7, M, 8, 8].
        A turn of a packing is a packing of the turn (against the turned side): gravity after a turn."""
        B, k, M = grids.shape[:3]
        return grids.reshape(B, k, M, CELLS).index_select(-1, self.index[1:].flatten()).view(
            B, k, M, DIHEDRAL - 1, CELLS).transpose(2, 3).reshape(B, k, DIHEDRAL - 1, M, GRID, GRID)

    def where(self, shifted: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """The alignment [B, 12, 8, 8] + [B, 7, 4] as the sum of the embeddings of each candidate's dihedral
        part, packing and shift, weighted by its mass: [B, 3 * embed]."""
        base, unshifted = shifted.sum((2, 3)), packed.sum((1, 2))[:, None]      # [B, 12], [B, 1]
        turn = base[:, :DIHEDRAL] + F.pad(packed.sum(2), (1, 0)) + F.pad(base[:, DIHEDRAL:].sum(1, keepdim=True),
                                                                        (0, DIHEDRAL - 1))
        side = base[:, DIHEDRAL:] + packed.sum(1)
        rows = shifted.sum((1, 3)) + F.pad(unshifted, (0, GRID - 1))              # the turned packings: shift 0
        cols = shifted.sum((1, 2)) + F.pad(unshifted, (0, GRID - 1))
        return (torch.cat([turn @ self.dihedral.weight, rows @ self.shift_row.weight, cols @ self.shift_col.weight],
                          dim=-1) + side @ self.packing.weight)

    def forward(self, demo_in: torch.Tensor, demo_out: torch.Tensor) -> torch.Tensor:
        B, k = demo_in.shape[:2]
        a = self.alignment(demo_in, demo_out)
        onehot_in = F.one_hot(demo_in, NUM_COLOURS).float()                      # [B, k, 8, 8, 10]
        onehot_out = F.one_hot(demo_out, NUM_COLOURS).float()
        # the inputs moved by the alignment: sum_g pi_g g(input); under the shifts a cyclic convolution
        # per base image
        moved = torch.fft.irfft2(weigh_spectra(spectrum(a["shifted"]), a["spectra"]).view(
            B, GRID, -1, k, NUM_COLOURS).permute(0, 3, 4, 1, 2), s=(GRID, GRID))
        moved = moved + weigh_grids(a["packed"], a["packed_turned"])               # [B, k, 10, 8, 8]
        pairs = torch.einsum("bkcyx,bkyxe->bkce", moved, onehot_out) / CELLS     # [B, k, 10, 10]
        colour_map = pairs / pairs.sum(-1, keepdim=True).clamp_min(1e-3)
        ring = boundary_ring(demo_in.device)
        glob = torch.cat([onehot_in.mean((2, 3)), onehot_out.mean((2, 3)), onehot_in[:, :, ring].mean(2),
                          onehot_out[:, :, ring].mean(2), packing((demo_in != 0).float()),
                          packing((demo_out != 0).float())], dim=-1)             # [B, k, 48]
        where = self.where(a["shifted"], a["packed"])[:, None].expand(B, k, -1)
        feats = torch.cat([where, 10 * pairs.flatten(2), colour_map.flatten(2), glob], -1)
        return self.proj(self.norm(feats))


def boundary_ring(device=None) -> torch.Tensor:
    """[8, 8] bool: the outermost ring of cells."""
    ring = torch.zeros(GRID, GRID, dtype=torch.bool, device=device)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    return ring
