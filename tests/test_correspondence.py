"""The correspondence embedding sees where cells went: its initial alignment finds the dihedral map and
cyclic shift of spatial tasks, gravity before or after a shift or a flip, also under a colour change, and its
features are the documented ones."""

import numpy as np
import pytest
import torch

from mcl.data.primitives import apply_primitive
from mcl.models.correspondence import (CorrespondenceEmbed, EvidenceMemo, boundary, correlate, dihedral_index,
                                       dihedral_spectra, direct_counts, first_copies, frequency_major, match_counts,
                                       one_hot, pack, packing, spectrum, weigh_spectra)


def demos(name, a, b, n=3, seed=0, then=None):
    """n demonstration pairs of one primitive (optionally followed by another), as long tensors [1, n, 8, 8]."""
    rng = np.random.default_rng(seed)
    grids = np.where(rng.random((n, 8, 8)) < 0.2, rng.integers(1, 4, (n, 8, 8)), 0).astype(np.uint8)
    out = apply_primitive(name, grids, a, b)
    if then is not None:
        out = apply_primitive(then[0], out, then[1], then[2])
    return torch.from_numpy(grids).long()[None], torch.from_numpy(out).long()[None]


def best_map(name, a, b, then=None):
    """(dihedral map, shift row, shift col, mass) of the symmetry the initial alignment prefers."""
    embed = CorrespondenceEmbed(d_model=8)
    pi = embed.alignment(*demos(name, a, b, then=then))["shifted"][:, :8].detach()
    d, sy, sx = np.unravel_index(int(pi.flatten().argmax()), pi.shape[1:])
    return int(d), int(sy), int(sx), float(pi.max())


@pytest.mark.parametrize("name, a, b, expected", [
    ("rotate", 1, -1, (1, 0, 0)), ("rotate", 2, -1, (2, 0, 0)), ("rotate", 3, -1, (3, 0, 0)),
    ("flip", 0, -1, (4, 0, 0)), ("flip", 1, -1, (5, 0, 0)), ("flip", 2, -1, (6, 0, 0)), ("flip", 3, -1, (7, 0, 0)),
    ("translate", 2, -1, (0, 2, 7)), ("translate", -2, 2, (0, 6, 2)),
])
def test_initial_alignment_finds_the_spatial_map(name, a, b, expected):
    d, sy, sx, mass = best_map(name, a, b)
    assert (d, sy, sx) == expected
    assert mass > 0.5


def best_candidate(name, a, b, then=None, seed=0):
    """The initial alignment's most likely candidate: ("shifted", base image, shift row, shift col) or
    ("packed", turned input 1..7, packing), with its mass and the largest mass of any other candidate."""
    embed = CorrespondenceEmbed(d_model=8)
    align = embed.alignment(*demos(name, a, b, then=then, seed=seed))
    pi = torch.cat([align["shifted"].flatten(1), align["packed"].flatten(1)], 1)[0].detach()
    top, second = pi.topk(2).values
    i = int(pi.argmax())
    where = ("shifted", *np.unravel_index(i, (12, 8, 8))) if i < 768 else ("packed", *np.unravel_index(i - 768, (7, 4)))
    return tuple(int(v) if j else v for j, v in enumerate(where)), float(top), float(second)


@pytest.mark.parametrize("direction", range(4))
def test_initial_alignment_prefers_packing_for_gravity(direction):
    where, mass, other = best_candidate("gravity", direction, -1, seed=direction)
    assert where == ("shifted", 8 + direction, 0, 0)
    assert mass > other


@pytest.mark.parametrize("first, then, expected", [
    (("gravity", 0, -1), ("translate", 0, 2), ("shifted", 8, 0, 2)),       # pack down, then shift right by 2
    (("gravity", 3, -1), ("translate", 2, 0), ("shifted", 11, 2, 0)),      # pack right, then shift down by 2
    (("translate", 0, 2), ("gravity", 1, -1), ("shifted", 9, 0, 2)),       # a column shift commutes with packing up
])
def test_initial_alignment_finds_gravity_and_translation(first, then, expected):
    where, mass, other = best_candidate(*first, then=then)
    assert where == expected
    assert mass > other


@pytest.mark.parametrize("first, then, expected", [
    (("flip", 1, -1), ("gravity", 0, -1), ("packed", 4, 0)),    # flip columns (dihedral 5), then pack down
    (("rotate", 1, -1), ("gravity", 2, -1), ("packed", 0, 0)),   # a quarter turn (dihedral 1), then pack left:
])                                                                # the turn of a packing down
def test_initial_alignment_finds_gravity_after_a_turn(first, then, expected):
    where, mass, other = best_candidate(*first, then=then)
    assert where == expected
    assert mass > other


def test_pack_is_gravity_and_direct_counts_match_the_fft_counts():
    rng = np.random.default_rng(3)
    grids = np.where(rng.random((5, 8, 8)) < 0.3, rng.integers(1, 10, (5, 8, 8)), 0).astype(np.uint8)
    packed = pack(torch.from_numpy(grids).long()).numpy()
    for d in range(4):
        assert np.array_equal(packed[:, d], apply_primitive("gravity", grids, d, -1))
    # the identity map's counts, once from the FFT cross-correlations, once directly
    embed = CorrespondenceEmbed(d_model=8)
    din, dout = demos("recolor", 1, 5)
    align = embed.alignment(din, dout)
    spectra = align["spectra"]
    colour_out = frequency_major(spectrum(one_hot(dout)[:, :, None]))
    edge_in = boundary(din.reshape(1, 3, 64)[:, :, embed.index].view(1, 3, 8, 8, 8))
    fft = match_counts(spectra[:, :, :8], colour_out, edge_in, boundary(dout)[:, :, None])[0, 0, 0, 0]
    assert torch.allclose(fft, direct_counts(din[:, :, None], dout, boundary(din[:, :, None]))[0, 0], atol=1e-4)
    # the turned packings are gravity after the turn: flip rows (dihedral 4) then gravity left (2) is the flip of
    # the packing left; a quarter turn (dihedral 1) then gravity left is the turn of the packing down (0)
    grids = din[0].numpy().astype(np.uint8)
    for (d, side), (name, a, then) in {(3, 2): ("flip", 0, 2), (0, 0): ("rotate", 1, 2)}.items():
        expected = apply_primitive("gravity", apply_primitive(name, grids, a, -1), then, -1)
        assert np.array_equal(align["packed_turned"][0, :, d, side].numpy(), expected)


def test_alignment_survives_a_colour_change():
    """Rotation then recolour 1 -> 7: colours no longer match, boundaries still do."""
    assert best_map("rotate", 1, -1, then=("recolor", 1, 7))[:3] == (1, 0, 0)


def test_dihedral_index_matches_the_primitives():
    g = np.arange(64).reshape(8, 8)
    index = dihedral_index().numpy()
    for k in (1, 2, 3):
        assert np.array_equal(g.ravel()[index[k]], np.rot90(g, -k).ravel())
    for axis in range(4):
        grids = g[None].astype(np.uint8)              # 0..63 fit uint8
        assert np.array_equal(g.ravel()[index[4 + axis]], apply_primitive("flip", grids, axis, -1)[0].ravel())


def test_boundary_and_packing_by_hand():
    grid = torch.zeros(8, 8, dtype=torch.long)
    grid[7, 0:3] = 5                                   # three cells on the bottom row, left
    edge = boundary(grid)
    assert edge[7, 1] == 1 and edge[3, 4] == 0 and edge[0, 0] == 1   # (0, 0) borders (7, 0) cyclically
    side = packing((grid != 0).float())
    assert torch.allclose(side, torch.tensor([1.0, 0.0, 2 / 3, 1.0]))  # packed down and left, not up


def test_tokens_have_the_model_width_and_follow_the_pairs():
    torch.manual_seed(0)
    embed = CorrespondenceEmbed(d_model=12)
    din, dout = demos("rotate", 1, -1)
    tokens = embed(din, dout)
    assert tokens.shape == (1, 3, 12)
    swapped = embed(din[:, [1, 0, 2]], dout[:, [1, 0, 2]])
    assert torch.allclose(swapped[:, 0], tokens[:, 1], atol=1e-5)   # a pair's token is its own


def test_dihedral_spectra_turn_the_spectrum():
    """The spectrum of each turned grid, from the grid's own spectrum by the index and phase tables."""
    g = torch.rand(8, 8)
    source, phase = dihedral_spectra()
    turned = g.flatten()[dihedral_index()].view(8, 8, 8)
    from_tables = (torch.fft.fft2(g).flatten()[source] * phase).T.reshape(8, 8, 5)
    assert torch.allclose(from_tables, torch.fft.rfft2(turned), atol=1e-4)


def test_correlate_and_weigh_spectra_match_their_real_space_sums():
    """correlate: c[m, s] = sum_n sum_p a[n, m][p - s] b[n][p]; weigh_spectra then an inverse FFT:
    sum_m sum_s w[m, s] a[n, m][p - s], the grids moved by a weighted mixture of shifts."""
    torch.manual_seed(0)
    a, b, w = torch.rand(1, 3, 2, 1, 8, 8), torch.rand(1, 3, 1, 1, 8, 8), torch.rand(1, 2, 8, 8)
    shifts = [(sy, sx) for sy in range(8) for sx in range(8)]
    fa = frequency_major(spectrum(a))                                    # [1, 40, 2, 3]
    c = correlate(fa, frequency_major(spectrum(b)))
    expected = torch.tensor([[sum(float((torch.roll(a[0, n, m, 0], s, (0, 1)) * b[0, n, 0, 0]).sum()) for n in range(3))
                              for s in shifts] for m in range(2)]).view(1, 2, 8, 8)
    assert torch.allclose(c, expected, atol=1e-4)
    moved = torch.fft.irfft2(weigh_spectra(spectrum(w), fa).view(1, 8, 5, 3).permute(0, 3, 1, 2), s=(8, 8))
    expected = sum(w[0, m, sy, sx] * torch.roll(a[0, :, m, 0], (sy, sx), (1, 2)) for m in range(2) for sy, sx in shifts)
    assert torch.allclose(moved[0], expected, atol=1e-4)


def test_first_copies_drops_grids_seen_before():
    torch.manual_seed(0)
    earlier, candidates = torch.randint(0, 3, (2, 3, 2, 8, 8)), torch.randint(0, 3, (2, 3, 4, 8, 8))
    candidates[0, :, 1] = earlier[0, :, 0]        # a copy of an earlier grid, on every pair
    candidates[0, :, 3] = candidates[0, :, 2]     # a copy of an earlier candidate
    candidates[1, 0, 2] = earlier[1, 0, 1]        # equal on one pair only: not a copy
    assert first_copies(candidates, earlier).tolist() == [[True, False, True, False], [True, True, True, True]]


def test_a_turned_packing_equal_to_a_packing_gets_no_mass():
    """Gravity down on grids whose columns hold one colour each: flipping rows after packing up gives the same
    grids as packing down, so that turned packing (flip rows = dihedral 4, packing up) is dropped."""
    grids = torch.zeros(1, 3, 8, 8, dtype=torch.long)
    for pair, (row, col) in enumerate([(1, 2), (0, 5), (3, 0)]):
        grids[0, pair, row:row + 2, col:col + 3] = pair + 1
    out = torch.from_numpy(apply_primitive("gravity", grids[0].numpy().astype(np.uint8), 0, -1)).long()[None]
    with torch.no_grad():
        a = CorrespondenceEmbed(d_model=8).alignment(grids, out)
    turned = a["packed_turned"][0, :, 3, 1]
    assert torch.equal(turned, out[0])
    assert float(a["packed"][0, 3, 1]) == 0.0 and float(a["shifted"][0, 8, 0, 0]) > 0.5


def episodes(n, seed=0):
    """n episodes of 3 random pairs, long [n, 3, 8, 8] each; outputs: some pairs' inputs shifted, the others'
    random (so that every episode has its own evidence)."""
    rng = np.random.default_rng(seed)
    grids = np.where(rng.random((2, n, 3, 8, 8)) < 0.25, rng.integers(1, 10, (2, n, 3, 8, 8)), 0)
    out = np.where(rng.random((n, 3, 1, 1)) < 0.5, np.roll(grids[0], 2, -1), grids[1])
    return torch.from_numpy(grids[0]).long(), torch.from_numpy(out).long()


def test_the_memo_gives_the_same_bytes_as_computing_the_evidence_again():
    """An episode's remembered evidence equals its evidence computed in any other batch: the tokens and their
    gradients are the same bytes with the memo cold, warm, partly warm, or off; copies share the memo."""
    import copy

    din, dout = episodes(12)
    torch.manual_seed(0)
    off = CorrespondenceEmbed(d_model=8)
    off.memo.capacity = 0
    on = copy.deepcopy(off)
    on.memo = type(off.memo)()

    def tokens_and_grad(embed, index):
        embed.zero_grad()
        y = embed(din[index], dout[index])
        y.square().sum().backward()
        return y.detach(), embed.score_mlp[0].weight.grad.clone()

    everything = torch.arange(12)
    want = tokens_and_grad(off, everything)
    assert len(off.memo.rows) == 0
    alone = CorrespondenceEmbed(d_model=8)                         # each episode's evidence, computed on its own
    for i in range(12):
        tokens_and_grad(alone, torch.tensor([i]))
    tokens_and_grad(on, torch.tensor([7, 2, 9]))                   # partly warm
    assert len(on.memo.rows) == 3
    for _ in range(2):                                             # then warm
        got = tokens_and_grad(on, everything)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert len(on.memo.rows) == 12 and on.memo.rows.keys() == alone.memo.rows.keys()
    for key, row in on.memo.rows.items():                          # evidence does not depend on the batch
        assert all(torch.equal(a, b) for a, b in zip(row, alone.memo.rows[key]))
    assert copy.deepcopy(on).memo is on.memo


def test_a_full_memo_still_answers_every_episode():
    din, dout = episodes(6, seed=1)
    embed = CorrespondenceEmbed(d_model=8)
    embed.memo.capacity = 2
    with torch.no_grad():
        first, again = embed(din, dout), embed(din, dout)
    assert len(embed.memo.rows) == 2 and torch.equal(first, again)


def test_the_memo_stores_only_while_the_module_trains():
    """Evaluation sees each episode once: an embedding in eval mode looks episodes up but keeps none."""
    din, dout = episodes(4, seed=2)
    embed = CorrespondenceEmbed(d_model=8).eval()
    with torch.no_grad():
        first = embed(din, dout)
        assert len(embed.memo.rows) == 0
        embed.train()
        assert torch.equal(embed(din, dout), first) and len(embed.memo.rows) == 4


def test_the_memo_answers_each_episode_with_its_own_evidence():
    """Rows come back in the order of the episodes asked for, cold, partly warm or warm; ``compute`` sees only
    the episodes not yet remembered."""
    pairs = torch.arange(5 * 6 * 64).view(5, 6, 8, 8) % 7 + torch.arange(5).view(5, 1, 1, 1)   # 5 distinct episodes
    number = torch.arange(5.0)
    seen = []

    def compute(index):
        seen.append(number[index].tolist())
        return number[index], -number[index]

    memo = EvidenceMemo()
    order = torch.tensor([3, 0])
    assert [t.tolist() for t in memo.lookup(pairs[order], lambda i: compute(order[i]))] == [[3, 0], [-3, 0]]
    assert [t.tolist() for t in memo.lookup(pairs, compute)] == [[0, 1, 2, 3, 4], [0, -1, -2, -3, -4]]
    assert seen[-1] == [1, 2, 4]
    order = torch.tensor([4, 2, 2, 1])
    assert [t.tolist() for t in memo.lookup(pairs[order], compute)] == [[4, 2, 2, 1], [-4, -2, -2, -1]]
    assert len(seen) == 2
