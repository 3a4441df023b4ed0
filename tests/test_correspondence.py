"""The correspondence embedding sees where cells went: its initial alignment finds the dihedral map and
cyclic shift of spatial tasks, also under a colour change, and its features are the documented ones."""

import numpy as np
import pytest
import torch

from mcl.data.primitives import apply_primitive
from mcl.models.correspondence import (CorrespondenceEmbed, boundary, dihedral_index, direct_counts, match_counts,
                                       pack, packing, spectrum)


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
    pi = embed.alignment(*demos(name, a, b, then=then))["symmetry"].detach()
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


@pytest.mark.parametrize("direction", range(4))
def test_initial_alignment_prefers_packing_for_gravity(direction):
    embed = CorrespondenceEmbed(d_model=8)
    a = embed.alignment(*demos("gravity", direction, -1, seed=direction))
    assert int(a["packing"].argmax()) == direction
    assert float(a["packing"].max().detach()) > float(a["symmetry"].max().detach())


def test_pack_is_gravity_and_direct_counts_match_the_fft_counts():
    rng = np.random.default_rng(3)
    grids = np.where(rng.random((5, 8, 8)) < 0.3, rng.integers(1, 10, (5, 8, 8)), 0).astype(np.uint8)
    packed = pack(torch.from_numpy(grids).long()).numpy()
    for d in range(4):
        assert np.array_equal(packed[:, d], apply_primitive("gravity", grids, d, -1))
    # the identity map's counts, once from the FFT cross-correlations, once directly
    embed = CorrespondenceEmbed(d_model=8)
    din, dout = demos("recolor", 1, 5)
    spectra = embed.alignment(din, dout)["spectra"]
    colour_out = spectrum(torch.nn.functional.one_hot(dout, 10).float().permute(0, 1, 4, 2, 3))[:, :, None]
    edge_in = boundary(din.reshape(1, 3, 64)[:, :, embed.index].view(1, 3, 8, 8, 8))
    fft = match_counts(spectra, colour_out, edge_in, boundary(dout)[:, :, None])[0, 0, 0, 0]
    assert torch.allclose(fft, direct_counts(din[:, :, None], dout)[0, 0], atol=1e-4)


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
