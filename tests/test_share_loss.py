"""Shared-subspace loss: geometry, agreement with the naive reference, the match objective,
degenerate groups, EMA bank, manipulation-check metrics."""

import math

import pytest
import torch

from mcl.bench.share import naive_share_loss
from mcl.data.dataset import label_set_bitmask
from mcl.losses.share import EmaBasisBank, gram_eigh, group_bases, jaccard, label_keys, pairwise_similarity, share_loss
from mcl.measures import grassmann
from mcl.measures.geometry import (
    effective_rank,
    group_label_sets,
    label_variance_fraction,
    manipulation_metrics,
    subspace_geometry,
)

F64 = torch.float64


def orthonormal(d, k, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=dtype))
    return q


def random_batch(G, m, d, seed, P=8, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(G * m, d, generator=g, dtype=dtype)
    sets = (torch.rand(G, P, generator=g) < 0.4).to(torch.uint8)
    sets[:, 0] |= (sets.sum(1) == 0).to(torch.uint8)
    return h, sets.repeat_interleave(m, 0)


def data_in_subspace(U, m, seed, scales=None):
    """m points x = U a with well-separated variances along U's columns (rank k after centring)."""
    k = U.shape[1]
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor(scales if scales is not None else [3.0 - 2.0 * i / k for i in range(k)], dtype=U.dtype)
    a = torch.randn(m, k, generator=g, dtype=U.dtype)
    a = a - a.mean(0)
    q, _ = torch.linalg.qr(a)  # orthonormal columns: exact variances scales^2 along U's columns
    return (q * scales) @ U.T + torch.randn(U.shape[0], generator=g, dtype=U.dtype)  # plus a common offset


# ---------------------------------------------------------------------------
# projection distance


def projection_distance(U, V):
    """The loss's distance ``1 - sim`` of two bases [d, k] (:func:`pairwise_similarity`)."""
    return 1.0 - pairwise_similarity(U[None], V[None])[0, 0]


def test_torch_distance_equals_the_numpy_principal_angle_one():
    # the loss's torch formula (for autograd) and mcl.measures.grassmann's are pinned to each other
    for seed in range(5):
        U, V = orthonormal(9, 3, seed), orthonormal(9, 3, seed + 10)
        assert projection_distance(U, V).item() == pytest.approx(grassmann.projection_distance(U.numpy(), V.numpy()), abs=1e-12)


def test_distance_zero_for_identical_and_one_for_orthogonal():
    U = orthonormal(10, 3, 0)
    assert projection_distance(U, U).item() == pytest.approx(0.0, abs=1e-12)
    E = torch.eye(10, dtype=F64)
    assert projection_distance(E[:, :3], E[:, 3:6]).item() == pytest.approx(1.0, abs=1e-12)
    # half-overlapping: one shared direction out of two
    assert projection_distance(E[:, :2], E[:, 1:3]).item() == pytest.approx(0.5, abs=1e-12)


def test_distance_invariant_to_rotation_within_subspace():
    U, V = orthonormal(12, 3, 1), orthonormal(12, 3, 2)
    Q = orthonormal(3, 3, 3)
    d0 = projection_distance(U, V)
    assert 0.1 < d0.item() < 0.99
    torch.testing.assert_close(projection_distance(U @ Q, V), d0)
    torch.testing.assert_close(projection_distance(U, V @ Q.T), d0)


def test_distance_equals_mean_sin2_of_principal_angles():
    thetas = [0.3, 1.1, 0.7]
    E = torch.eye(8, dtype=F64)
    U = E[:, :3]
    V = torch.stack([math.cos(t) * E[:, i] + math.sin(t) * E[:, 3 + i] for i, t in enumerate(thetas)], 1)
    expected = sum(math.sin(t) ** 2 for t in thetas) / 3
    assert projection_distance(U, V).item() == pytest.approx(expected, abs=1e-12)
    # the same through the full pipeline: groups of points lying in U and V
    R = orthonormal(8, 8, 4)  # arbitrary global rotation changes nothing
    h = torch.cat([data_in_subspace(R @ U, 6, 5), data_in_subspace(R @ V, 6, 6)])
    labels = torch.ones(12, 8, dtype=torch.uint8)
    loss, stats = share_loss(h, labels, 2, 3, 1e-6, objective="attract")
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    assert stats["share_pairs"] == 1 and stats["share_fallbacks"] == 0
    # match with J = 1: (sim - 1)^2 = dist^2
    assert share_loss(h, labels, 2, 3, 1e-6)[0].item() == pytest.approx(expected**2, abs=1e-9)


# ---------------------------------------------------------------------------
# bases and the loss against the reference


def test_group_bases_orthonormal_and_span_top_k():
    h, _ = random_batch(4, 9, 20, 7)
    U, ok = group_bases(h.view(4, 9, 20), 3, 1e-6)
    assert ok.all()
    torch.testing.assert_close(U.mT @ U, torch.eye(3, dtype=F64).expand(4, 3, 3))
    for g in range(4):
        X = h.view(4, 9, 20)[g]
        X = X - X.mean(0)
        top = torch.linalg.eigh(X.T @ X).eigenvectors[:, -3:]
        assert projection_distance(U[g], top).item() < 1e-10


@pytest.mark.parametrize("G,m,d,k", [(2, 3, 5, 2), (4, 6, 10, 2), (6, 8, 32, 3), (3, 12, 7, 4), (5, 5, 3, 1)])
@pytest.mark.parametrize("objective,detach,repel", [("match", False, 0.0), ("match", True, 0.0),
                                                    ("attract", False, 0.0), ("attract", True, 0.0),
                                                    ("attract", False, 0.5)])
def test_share_loss_matches_naive(G, m, d, k, objective, detach, repel):
    h, labels = random_batch(G, m, d, seed=G * 100 + m * 10 + d + k)
    h1 = h.clone().requires_grad_(True)
    h2 = h.clone().requires_grad_(True)
    fast, stats = share_loss(h1, labels, G, k, 1e-8, detach=detach, repel=repel, objective=objective)
    slow = naive_share_loss(h2, labels, G, k, detach=detach, repel=repel, objective=objective)
    assert stats["share_fallbacks"] == 0
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    fast.backward()
    slow.backward()
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-7, atol=1e-10)


def test_share_loss_invariant_to_episode_order_within_groups():
    G, m, d = 4, 7, 12
    h, labels = random_batch(G, m, d, 11)
    g = torch.Generator().manual_seed(0)
    perm = torch.cat([i * m + torch.randperm(m, generator=g) for i in range(G)])
    for objective in ("match", "attract"):
        a, _ = share_loss(h, labels, G, 2, 1e-8, objective=objective)
        b, _ = share_loss(h[perm], labels[perm], G, 2, 1e-8, objective=objective)
        assert a.item() > 0.05
        assert b.item() == pytest.approx(a.item(), abs=1e-12)


def test_pair_weights_are_jaccard_and_stats():
    sets = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.uint8)
    w = jaccard(sets, sets)
    assert w[0, 1].item() == pytest.approx(1 / 3)
    assert w[0, 2].item() == 0.0 and w[2, 2].item() == 1.0
    assert label_keys(sets).tolist() == [3, 6, 8]
    # the loss's torch keys are the dataset's numpy bitmasks (one convention, pinned)
    assert label_keys(sets).tolist() == label_set_bitmask(sets.numpy()).tolist()
    # two empty label sets are identical: Jaccard 1 (mcl's one convention, also the analysis's)
    empty = torch.zeros(2, 4, dtype=torch.uint8)
    assert jaccard(empty, empty).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    # three groups: loss = w01 * d01 / w01 (only pair 0-1 shares a primitive)
    E = torch.eye(6, dtype=F64)
    h = torch.cat([data_in_subspace(E[:, [0, 1]], 5, 1), data_in_subspace(E[:, [1, 2]], 5, 2),
                   data_in_subspace(E[:, [3, 4]], 5, 3)])
    labels = sets.repeat_interleave(5, 0)
    loss, stats = share_loss(h, labels, 3, 2, 1e-6, objective="attract")
    assert loss.item() == pytest.approx(0.5, abs=1e-9)
    assert stats["share_pairs"] == 1 and stats["share_disjoint_pairs"] == 2
    assert stats["share_mean_dist"] == pytest.approx(0.5, abs=1e-9)
    # match: pair 0-1 has sim 1/2 against J 1/3, the disjoint pairs sim 0 = J
    loss, stats = share_loss(h, labels, 3, 2, 1e-6)
    assert loss.item() == pytest.approx((0.5 - 1 / 3) ** 2 / 3, abs=1e-9)
    assert stats["share_pairs"] == 1 and stats["share_disjoint_pairs"] == 2


def test_no_shared_primitive_gives_zero_attract_loss_with_zero_gradient():
    h, _ = random_batch(3, 5, 8, 3)
    labels = torch.eye(3, 8, dtype=torch.uint8).repeat_interleave(5, 0)
    h.requires_grad_(True)
    loss, stats = share_loss(h, labels, 3, 2, 1e-6, objective="attract")
    loss.backward()
    assert loss.item() == 0.0 and stats["share_pairs"] == 0
    assert h.grad is not None and torch.equal(h.grad, torch.zeros_like(h))


# ---------------------------------------------------------------------------
# the match objective: collapse is penalised, the intended structure is its optimum

# four groups over six primitives: A-B and B-C share one primitive (J = 1/3), all other pairs disjoint
SETS4 = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]],
                     dtype=torch.uint8)
# k = 3 directions per group; a shared primitive is one shared direction, so sim = 1/3 = J
STRUCTURED_DIRS = [[0, 1, 2], [0, 3, 4], [3, 5, 6], [7, 8, 9]]


def structured_batch(m=6, d=16):
    E = torch.eye(d, dtype=F64)
    h = torch.cat([data_in_subspace(E[:, dirs], m, g) for g, dirs in enumerate(STRUCTURED_DIRS)])
    return h, SETS4.repeat_interleave(m, 0)


def collapsed_batch(m=6, d=16, noise=0.0):
    """Every group spans the same top-3 subspace (plus optional small isotropic noise)."""
    E = torch.eye(d, dtype=F64)
    h = torch.cat([data_in_subspace(E[:, :3], m, g) for g in range(len(SETS4))])
    h = h + noise * torch.randn(h.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    return h, SETS4.repeat_interleave(m, 0)


def upper_jaccard(sets):
    i, j = torch.triu_indices(len(sets), len(sets), 1)
    return jaccard(sets, sets, F64)[i, j]


def test_collapsed_h_is_penalised_by_match_not_by_attract():
    h, labels = collapsed_batch()
    match, stats = share_loss(h, labels, 4, 3, 1e-6)
    attract, _ = share_loss(h, labels, 4, 3, 1e-6, objective="attract")
    J = upper_jaccard(SETS4)
    assert stats["share_fallbacks"] == 0
    assert match.item() == pytest.approx(float(((1 - J) ** 2).mean()), abs=1e-9)  # sim = 1 everywhere
    assert match.item() > 0.5
    assert attract.item() == pytest.approx(0.0, abs=1e-9)


def test_structured_h_is_the_match_optimum():
    h, labels = structured_batch()
    match, stats = share_loss(h, labels, 4, 3, 1e-6)
    assert stats["share_fallbacks"] == 0 and stats["share_pairs"] == 2 and stats["share_disjoint_pairs"] == 4
    assert match.item() == pytest.approx(0.0, abs=1e-12)
    # attract, by contrast, scores the structure worse than the collapse (its optimum)
    attract, _ = share_loss(h, labels, 4, 3, 1e-6, objective="attract")
    assert attract.item() > 0.5


def test_gradient_moves_collapsed_h_towards_the_structure():
    h, labels = collapsed_batch(noise=0.05)  # noise: exact collapse is a stationary point
    ids, sets = group_label_sets(labels)
    x = h.clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=1.0)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss, _ = share_loss(x, labels, 4, 3, 1e-6)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = share_loss(x.detach(), labels, 4, 3, 1e-6)[0].item()
    gap0 = subspace_geometry(h, ids, sets, 3, 1e-6)["gap"]
    gap1 = subspace_geometry(x.detach(), ids, sets, 3, 1e-6)["gap"]
    assert after < 0.6 * losses[0]
    assert abs(gap0) < 0.01 and gap1 > 0.1


# ---------------------------------------------------------------------------
# degenerate groups


def test_gram_eigh_gradcheck():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))
    A = (Q * torch.tensor([0.5, 1.0, 2.0, 3.5, 5.0, 7.0], dtype=F64)) @ Q.T
    c = torch.tensor([0.0, 1.0, 3.0, 4.0, 7.0, 9.0], dtype=F64)

    def fn(A):  # sign-invariant function of the eigenpairs
        lam, V = gram_eigh(A)
        return lam, (V * c) @ V.T

    assert torch.autograd.gradcheck(fn, (A.requires_grad_(True),))


def test_gram_eigh_backward_finite_with_repeated_eigenvalues():
    # exactly repeated zero eigenvalues (torch.linalg.eigh's backward gives NaN here)
    K = torch.diag(torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 4.0], dtype=F64)).requires_grad_(True)
    W = torch.arange(36, dtype=F64).view(6, 6)

    def top2_projector(A, eigh):
        _, V = eigh(A)
        return (V[:, -2:] @ V[:, -2:].T * W).sum()

    top2_projector(K, torch.linalg.eigh).backward()
    assert not torch.isfinite(K.grad).all()
    K.grad = None
    top2_projector(K, gram_eigh).backward()
    assert torch.isfinite(K.grad).all()


def test_gram_eigh_gradient_exact_with_near_repeated_eigenvalues():
    # rotated 3-fold zero eigenvalue: computed eigenvalues differ only by rounding (~1e-16);
    # a function invariant to rotations inside the tied block has a well-defined gradient,
    # which the backward must reproduce (1 / (rounding gap) terms are dropped, not amplified)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=F64))
    A = (Q * torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 4.0], dtype=F64)) @ Q.T
    c = torch.tensor([5.0, 5.0, 5.0, 1.0, 2.0, 3.0], dtype=F64)  # equal weight on the tied block
    W = torch.arange(36, dtype=F64).view(6, 6)

    def fn(A):
        _, V = gram_eigh(A)
        return ((V * c) @ V.T * W).sum()

    assert torch.autograd.gradcheck(fn, (A.requires_grad_(True),))


def test_duplicate_episodes_keep_finite_gradients_matching_naive():
    G, m, d = 3, 8, 12
    h, labels = random_batch(G, m, d, 21)
    hv = h.view(G, m, d)
    hv[0, 1], hv[0, 3], hv[0, 5] = hv[0, 0], hv[0, 2], hv[0, 4]  # three duplicate pairs in group 0
    labels = torch.ones_like(labels)
    h1, h2 = h.clone().requires_grad_(True), h.clone().requires_grad_(True)
    fast, stats = share_loss(h1, labels, G, 2, 1e-8)
    fast.backward()
    assert stats["share_fallbacks"] == 0
    assert torch.isfinite(h1.grad).all() and h1.grad.abs().sum() > 0
    slow = naive_share_loss(h2, labels, G, 2)
    slow.backward()
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_identical_group_falls_back_with_finite_gradients(dtype):
    G, m, d = 3, 6, 10
    h, labels = random_batch(G, m, d, 5, dtype=dtype)
    h.view(G, m, d)[1] = h.view(G, m, d)[1, 0]  # every episode of group 1 identical
    labels = torch.ones_like(labels)
    h.requires_grad_(True)
    loss, stats = share_loss(h, labels, G, 2, 1e-4)
    loss.backward()
    assert stats["share_fallbacks"] == 1
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()
    assert h.grad.view(G, m, d)[1].abs().max() == 0  # the fallback basis carries no gradient
    assert h.grad.view(G, m, d)[0].abs().max() > 0


def test_fallback_counts_and_bases():
    # m < k + 1: every group degenerate
    h, labels = random_batch(4, 3, 10, 1)
    U, ok = group_bases(h.view(4, 3, 10), 3, 1e-4, torch.Generator().manual_seed(3))
    assert not ok.any()
    torch.testing.assert_close(U.mT @ U, torch.eye(3, dtype=F64).expand(4, 3, 3))
    h.requires_grad_(True)
    loss, stats = share_loss(h, labels, 4, 3, 1e-4)
    assert stats["share_fallbacks"] == 4
    loss.backward()  # nothing depends on h, yet backward works and gives a zero gradient
    assert torch.equal(h.grad, torch.zeros_like(h))
    # one all-zero group, one non-finite group, one rank-1 group (lam_2 = 0 < eps lam_1)
    h, labels = random_batch(5, 6, 10, 2)
    hv = h.view(5, 6, 10)
    hv[1] = 0.0
    hv[2, 3, 4] = float("nan")
    hv[3] = torch.linspace(-1, 1, 6, dtype=F64)[:, None] * torch.randn(10, dtype=F64)
    U, ok = group_bases(hv, 2, 1e-4)
    assert ok.tolist() == [True, False, False, False, True]
    assert torch.isfinite(U).all()
    torch.testing.assert_close(U.mT @ U, torch.eye(2, dtype=F64).expand(5, 2, 2))
    # deterministic fallback without a generator
    U2, _ = group_bases(hv, 2, 1e-4)
    torch.testing.assert_close(U, U2)


@pytest.mark.parametrize("objective", ["match", "attract"])
def test_pair_with_fallback_side_contributes_nothing(objective):
    G, m, d = 5, 6, 10
    h, labels = random_batch(G, m, d, 8)
    labels.view(G, m, -1)[:, :, 0] = 1  # pairs of every kind: groups overlap through primitive 0, ...
    labels.view(G, m, -1)[3] = 0
    labels.view(G, m, -1)[3, :, 7] = 1  # ... group 3 is disjoint from the others
    h.view(G, m, d)[2] = h.view(G, m, d)[2, 0]  # group 2 degenerate (identical episodes)
    keep = torch.cat([torch.arange(g * m, (g + 1) * m) for g in range(G) if g != 2])
    x, y = h.clone().requires_grad_(True), h[keep].clone().requires_grad_(True)
    full, stats = share_loss(x, labels, G, 2, 1e-4, objective=objective)
    without, ref = share_loss(y, labels[keep], G - 1, 2, 1e-4, objective=objective)
    full.backward()
    without.backward()
    assert stats["share_fallbacks"] == 1 and ref["share_fallbacks"] == 0
    assert full.item() > 0.01
    torch.testing.assert_close(full, without, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad[keep], y.grad, rtol=1e-8, atol=1e-12)
    assert x.grad.view(G, m, d)[2].abs().max() == 0
    for key in ("share_pairs", "share_disjoint_pairs", "share_mean_dist"):
        assert stats[key] == pytest.approx(ref[key])
    # only fallback pairs: zero loss with a zero gradient
    z = h[: 2 * m].clone().requires_grad_(True)
    z.data.view(2, m, d)[1] = z.data.view(2, m, d)[1, 0]
    loss, st = share_loss(z, labels[: 2 * m], 2, 2, 1e-4, objective=objective)
    loss.backward()
    assert loss.item() == 0.0 and st["share_pairs"] + st["share_disjoint_pairs"] == 0
    assert torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize("objective", ["match", "attract"])
def test_bank_pairs_of_a_fallback_group_contribute_nothing(objective):
    E = torch.eye(6, dtype=F64)
    bank = EmaBasisBank(6, 2, 0.5)
    bank.update([0b011, 0b110], torch.stack([E[:, [0, 1]], E[:, [2, 3]]]))
    good = data_in_subspace(E[:, [0, 4]], 5, 0)
    bad = torch.ones(5, 6, dtype=F64)  # degenerate group
    labels = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.uint8).repeat_interleave(5, 0)
    x, y = torch.cat([good, bad]).requires_grad_(True), good.clone().requires_grad_(True)
    full, stats = share_loss(x, labels, 2, 2, 1e-4, bank=bank, update_bank=False, objective=objective)
    alone, ref = share_loss(y, labels[:5], 1, 2, 1e-4, bank=bank, update_bank=False, objective=objective)
    full.backward()
    alone.backward()
    assert stats["share_fallbacks"] == 1 and alone.item() > 0.01
    torch.testing.assert_close(full, alone)
    torch.testing.assert_close(x.grad[:5], y.grad)
    assert stats["share_pairs"] == ref["share_pairs"] == 2


def test_repeated_eigenvalue_at_cut_falls_back():
    E = torch.eye(6, dtype=F64)
    # equal variances along three directions, k = 2: the top-2 subspace is not defined
    h = data_in_subspace(E[:, :3], 7, 0, scales=[1.0, 1.0, 1.0])
    _, ok = group_bases(h.unsqueeze(0), 2, 1e-4)
    assert not ok.any()
    h = data_in_subspace(E[:, :3], 7, 0, scales=[2.0, 1.5, 1.0])
    _, ok = group_bases(h.unsqueeze(0), 2, 1e-4)
    assert ok.all()


# ---------------------------------------------------------------------------
# detach and repel


def test_detach_stops_gradient_to_later_group():
    h, _ = random_batch(2, 6, 10, 4)
    labels = torch.ones(12, 8)
    for detach in (False, True):
        x = h.clone().requires_grad_(True)
        loss, _ = share_loss(x, labels, 2, 2, 1e-8, detach=detach)
        loss.backward()
        g = x.grad.view(2, 6, 10)
        assert g[0].abs().max() > 1e-6
        assert (g[1].abs().max() == 0) == detach


def test_repel_sign():
    E = torch.eye(6, dtype=F64)
    labels = torch.tensor([[1, 0], [0, 1]], dtype=torch.uint8).repeat_interleave(5, 0)  # disjoint label sets
    same = torch.cat([data_in_subspace(E[:, :2], 5, 1), data_in_subspace(E[:, :2], 5, 2)])
    ortho = torch.cat([data_in_subspace(E[:, :2], 5, 1), data_in_subspace(E[:, 2:4], 5, 2)])
    attract = dict(objective="attract")
    assert share_loss(same, labels, 2, 2, 1e-6, **attract)[0].item() == 0.0  # no repel: disjoint pairs ignored
    assert share_loss(same, labels, 2, 2, 1e-6, repel=0.3, **attract)[0].item() == pytest.approx(0.3)
    assert share_loss(ortho, labels, 2, 2, 1e-6, repel=0.3, **attract)[0].item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):  # repel belongs to attract; match already separates disjoint groups
        share_loss(same, labels, 2, 2, 1e-6, repel=0.3)
    with pytest.raises(ValueError):
        share_loss(same, labels, 2, 2, 1e-6, objective="pull")
    # a gradient step on the repel term increases the distance between the two groups
    x = torch.cat([data_in_subspace(E[:, :2], 5, 1), data_in_subspace(orthonormal(6, 2, 9), 5, 2)])
    x.requires_grad_(True)
    loss, before = share_loss(x, labels, 2, 2, 1e-6, repel=1.0, **attract)
    loss.backward()
    with torch.no_grad():
        U, _ = group_bases((x - 1e-2 * x.grad).view(2, 5, 6), 2, 1e-6)
        U0, _ = group_bases(x.view(2, 5, 6), 2, 1e-6)
    assert projection_distance(U[0], U[1]) > projection_distance(U0[0], U0[1])


# ---------------------------------------------------------------------------
# EMA bank


def test_bank_first_sighting_stores_and_procrustes_alignment():
    bank = EmaBasisBank(8, 2, 0.9)
    U = orthonormal(8, 2, 0)
    bank.update([5], U[None])
    torch.testing.assert_close(bank.get(5), U)
    # the same subspace in another basis leaves the stored basis unchanged (aligned, not averaged away)
    Q = orthonormal(2, 2, 1)
    bank.update(torch.tensor([5]), (U @ Q)[None])
    torch.testing.assert_close(bank.get(5), U)
    # a sign-flipped basis would cancel without alignment
    bank.update([5], (-U)[None])
    torch.testing.assert_close(bank.get(5), U)


def test_bank_stays_orthonormal_and_converges():
    d, k = 10, 3
    target = orthonormal(d, k, 0)
    bank = EmaBasisBank(d, k, 0.8)
    bank.update([1, 2], torch.stack([orthonormal(d, k, 1), orthonormal(d, k, 2)]))
    start = projection_distance(bank.get(1), target).item()
    g = torch.Generator().manual_seed(0)
    for step in range(60):
        noisy = [torch.linalg.qr(target @ orthonormal(k, k, 100 + step + i) + 0.05 * torch.randn(d, k, generator=g,
                 dtype=F64))[0] for i in range(2)]
        bank.update([1, 1], torch.stack(noisy))  # repeated key in one call: applied in order
        B = bank.get(1)
        torch.testing.assert_close(B.T @ B, torch.eye(k, dtype=F64))
    assert start > 0.3
    assert projection_distance(bank.get(1), target).item() < 0.01
    assert projection_distance(bank.get(2), orthonormal(d, k, 2)).item() < 1e-12  # untouched key


def test_share_loss_with_bank_uses_other_label_sets_without_gradient():
    E = torch.eye(6, dtype=F64)
    bank = EmaBasisBank(6, 2, 0.5)
    # empty bank (first step): zero loss, zero gradient, then the bank is filled
    x = data_in_subspace(E[:, [0, 1]], 5, 0).requires_grad_(True)
    loss, stats = share_loss(x, torch.ones(5, 3), 1, 2, 1e-6, bank=bank)
    loss.backward()
    assert loss.item() == 0.0 and stats["share_pairs"] == 0 and torch.equal(x.grad, torch.zeros_like(x))
    assert bank.keys == [0b111]
    bank = EmaBasisBank(6, 2, 0.5)
    key_a, key_b = 0b011, 0b110  # {0, 1} and {1, 2}: Jaccard 1/3
    Ba, Bb = E[:, [0, 1]].clone(), E[:, [2, 3]].clone()
    bank.update([key_a, key_b], torch.stack([Ba, Bb]))
    h = data_in_subspace(E[:, [0, 1]], 5, 0).requires_grad_(True)  # one group, label set a
    labels = torch.tensor([[1, 1, 0]], dtype=torch.uint8).repeat(5, 1)
    loss, stats = share_loss(h, labels, 1, 2, 1e-6, bank=bank, update_bank=False, objective="attract")
    # its own label set is excluded; the only target is b, at distance 1
    assert loss.item() == pytest.approx(1.0, abs=1e-9)
    assert stats["share_pairs"] == 1
    # match: sim 0 against J 1/3
    match, _ = share_loss(h, labels, 1, 2, 1e-6, bank=bank, update_bank=False)
    assert match.item() == pytest.approx(1 / 9, abs=1e-9)
    loss.backward()
    assert torch.isfinite(h.grad).all()
    assert not bank.bases.requires_grad
    torch.testing.assert_close(bank.get(key_a), Ba)
    # with update_bank the group's basis is folded into the bank
    h2 = data_in_subspace(E[:, [0, 4]], 5, 1)
    share_loss(h2, labels, 1, 2, 1e-6, bank=bank)
    assert 0.0 < projection_distance(bank.get(key_a), Ba).item() < 0.5


def test_bank_state_dict_round_trip():
    bank = EmaBasisBank(6, 2, 0.7)
    bank.update([3, 9], torch.stack([orthonormal(6, 2, 0), orthonormal(6, 2, 1)]))
    other = EmaBasisBank(6, 2, 0.1)
    other.load_state_dict(bank.state_dict())
    assert other.keys == [3, 9] and other.momentum == 0.7
    new = orthonormal(6, 2, 5)[None]
    bank.update([9], new)
    other.update([9], new)
    torch.testing.assert_close(other.bases, bank.bases)
    with pytest.raises(ValueError):
        EmaBasisBank(7, 2, 0.5).load_state_dict(bank.state_dict())


# ---------------------------------------------------------------------------
# manipulation-check metrics


@pytest.mark.parametrize("r", [1, 2, 5])
def test_effective_rank_of_equal_orthogonal_directions(r):
    h = data_in_subspace(orthonormal(12, r, r), 20, 0, scales=[1.5] * r)
    assert effective_rank(h) == pytest.approx(r, abs=1e-9)


def test_effective_rank_unequal_variances_and_undefined():
    E = torch.eye(6, dtype=F64)
    h = data_in_subspace(E[:, :2], 10, 0, scales=[2.0, 1.0])  # s^2 proportional to 4 and 1
    assert effective_rank(h) == pytest.approx(25 / 17, abs=1e-9)
    assert math.isnan(effective_rank(torch.ones(5, 3, dtype=F64)))


def test_label_variance_fraction_known_values():
    ids = torch.tensor([0, 0, 1, 1])
    # group means 1 and 2 around 1.5: between 4 * 0.25 = 1, total 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert label_variance_fraction(torch.tensor([[0.0], [2.0], [1.0], [3.0]], dtype=F64), ids) == pytest.approx(0.2)
    h, labels = random_batch(3, 4, 5, 0)
    ids3 = torch.arange(3).repeat_interleave(4)
    assert label_variance_fraction(h.view(3, 4, 5)[:, :1].expand(3, 4, 5).reshape(12, 5), ids3) == pytest.approx(1.0)
    same_rows = h[:4].repeat(3, 1)  # every group holds the same rows: identity explains nothing
    assert label_variance_fraction(same_rows, ids3) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(label_variance_fraction(torch.zeros(4, 2), ids))


def test_subspace_geometry_collapsed_vs_structured():
    for make, gap in ((collapsed_batch, 0.0), (structured_batch, 1 / 3)):
        h, labels = make()
        ids, sets = group_label_sets(labels)
        geo = subspace_geometry(h, ids, sets, 3, 1e-6)
        assert geo["n_overlap"] == 2 and geo["n_disjoint"] == 4
        assert geo["gap"] == pytest.approx(gap, abs=1e-9)
        assert geo["gap"] == pytest.approx(geo["disjoint_dist"] - geo["overlap_dist"])
    assert geo["overlap_dist"] == pytest.approx(2 / 3, abs=1e-9) and geo["disjoint_dist"] == pytest.approx(1.0)
    assert geo["jaccard_spearman"] > 0.5


def test_subspace_geometry_skips_small_and_degenerate_groups():
    h, labels = structured_batch()
    ids, sets = group_label_sets(labels)
    ref = subspace_geometry(h, ids, sets, 3, 1e-6)
    # an extra label set seen only 3 times (< k + 1 rows), and one with identical rows
    extra_sets = torch.cat([sets, torch.eye(2, sets.shape[1], dtype=sets.dtype)])
    extra_h = torch.cat([h, torch.randn(3, h.shape[1], dtype=F64), torch.ones(6, h.shape[1], dtype=F64)])
    extra_ids = torch.cat([ids, torch.full((3,), len(sets)), torch.full((6,), len(sets) + 1)])
    assert subspace_geometry(extra_h, extra_ids, extra_sets, 3, 1e-6) == pytest.approx(ref, nan_ok=True)
    none = subspace_geometry(h[:6], ids[:6], sets, 3, 1e-6)  # one group: no pairs
    assert math.isnan(none["gap"]) and math.isnan(none["jaccard_spearman"]) and none["n_overlap"] == 0


def test_manipulation_metrics_collapsed_vs_structured_and_random_order():
    keys = {"share_objective", "overlap_dist", "disjoint_dist", "gap", "jaccard_spearman", "effective_rank", "label_r2"}
    hc, labels = collapsed_batch()
    hs, _ = structured_batch()
    mc = manipulation_metrics(hc, labels, 4, 3, 1e-6)
    ms = manipulation_metrics(hs.clone().requires_grad_(True), labels, 4, 3, 1e-6)
    assert set(mc) == set(ms) == keys and all(isinstance(v, float) for v in ms.values())
    assert mc["share_objective"] == pytest.approx(share_loss(hc, labels, 4, 3, 1e-6)[0].item())
    assert mc["share_objective"] > 0.5 and ms["share_objective"] == pytest.approx(0.0, abs=1e-12)
    assert abs(mc["gap"]) < 1e-9 and ms["gap"] > 0.3
    assert ms["effective_rank"] > mc["effective_rank"]
    ids, _ = group_label_sets(labels)
    assert ms["label_r2"] == pytest.approx(label_variance_fraction(hs, ids))
    assert ms["effective_rank"] == pytest.approx(effective_rank(hs))
    # random (non-grouped) order: label-set groups are found by identity, the grouped objective is undefined
    perm = torch.randperm(len(hs), generator=torch.Generator().manual_seed(0))
    mr = manipulation_metrics(hs[perm], labels[perm], 4, 3, 1e-6)
    assert math.isnan(mr["share_objective"])
    for key in keys - {"share_objective"}:
        assert mr[key] == pytest.approx(ms[key], abs=1e-9)
