"""Shared-subspace loss: groups whose label sets overlap should span similar subspaces.

A batch holds ``G`` groups of ``m`` episodes, each group sharing one label set. For
each group the top-``k`` principal directions of its (centred) task vectors form an
orthonormal basis ``U_g`` [d, k]. Subspaces are compared with the projection distance

    dist(U_i, U_j) = 1 - ||U_i^T U_j||_F^2 / k = ||P_i - P_j||_F^2 / (2k),

the mean of ``sin^2`` over the ``k`` principal angles (0: same subspace, 1: orthogonal
subspaces), and ``sim = 1 - dist``. The default objective (``match``) asks the
similarity of every pair of groups to equal the Jaccard overlap ``J`` of their label
sets, ``mean_{i<j} (sim_ij - J_ij)^2``: disjoint groups are pushed towards orthogonal
subspaces, overlapping ones towards partial alignment. The older ``attract`` form only
pulls overlapping groups together, and is minimised by collapsing every group onto one
subspace. Bases come from the ``m x m`` Gram matrix of each group, so nothing of size
``d x d`` is ever formed. The module also holds the manipulation-check metrics
(:func:`manipulation_metrics`) that measure whether ``h`` has that structure."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = [
    "GramEigh",
    "gram_eigh",
    "group_bases",
    "projection_distance",
    "pairwise_similarity",
    "jaccard",
    "label_keys",
    "label_set_ids",
    "OBJECTIVES",
    "pair_objective",
    "share_loss",
    "effective_rank",
    "label_variance_fraction",
    "subspace_geometry",
    "manipulation_metrics",
    "EmaBasisBank",
    "naive_share_loss",
    "bench_share",
]


# ---------------------------------------------------------------------------
# eigendecomposition with a backward that tolerates repeated eigenvalues


class GramEigh(torch.autograd.Function):
    """``torch.linalg.eigh`` of a symmetric matrix with a tie-safe backward.

    Forward: ``(lam, V)`` of ``(K + K^T) / 2``, eigenvalues ascending, ``K`` [..., n, n].
    Backward: the standard formula ``dK = V (diag(g_lam) + F * (V^T g_V)) V^T``
    (symmetrised), with ``F_ab = 1 / (lam_b - lam_a)``, except that ``F_ab = 0`` where
    ``|lam_b - lam_a| <= gap_tol * max|lam|``. Those entries multiply terms that vanish
    whenever the loss depends on the eigenvectors only through the span of a block
    separated by a real gap (e.g. the top-k subspace), so zeroing them keeps the
    gradient finite when eigenvalues repeat (duplicate episodes, zero groups).
    """

    @staticmethod
    def forward(ctx, K: torch.Tensor, gap_tol: float):
        lam, V = torch.linalg.eigh((K + K.mT) / 2)
        ctx.save_for_backward(lam, V)
        ctx.gap_tol = gap_tol
        return lam, V

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_lam, g_V):
        lam, V = ctx.saved_tensors
        inner = torch.zeros_like(V)
        if g_V is not None:
            diff = lam.unsqueeze(-2) - lam.unsqueeze(-1)  # diff[a, b] = lam_b - lam_a
            scale = lam.abs().amax(-1, keepdim=True).unsqueeze(-1)
            far = diff.abs() > ctx.gap_tol * scale
            inv = torch.where(far, 1.0 / torch.where(far, diff, torch.ones_like(diff)), torch.zeros_like(diff))
            inner = inv * (V.mT @ g_V)
        if g_lam is not None:
            inner = inner + torch.diag_embed(g_lam)
        gK = V @ inner @ V.mT
        return (gK + gK.mT) / 2, None


def gram_eigh(K: torch.Tensor, gap_tol: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of symmetric ``K`` [..., n, n], ascending; see :class:`GramEigh`.

    ``gap_tol`` (relative to ``max|lam|``) defaults to ``64 * finfo(K.dtype).eps``.
    """
    if gap_tol is None:
        gap_tol = 64 * torch.finfo(K.dtype).eps
    return GramEigh.apply(K, gap_tol)


# ---------------------------------------------------------------------------
# per-group bases


def _fallback_bases(n: int, d: int, k: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` random orthonormal bases [n, d, k] (QR of a Gaussian), no gradient."""
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    gauss = torch.randn(n, d, k, generator=generator, device=generator.device, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    return q.to(device=like.device, dtype=like.dtype)


def group_bases(
    h_groups: torch.Tensor, k: int, eps: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` principal directions of each group's task vectors.

    Each group is centred over its ``m`` episodes, ``X`` [m, d]; the eigenpairs
    ``(lam, V)`` (descending) of the Gram matrix ``K = X X^T`` [m, m] give the basis
    ``U = X^T V[:, :k] / sqrt(lam[:k])`` [d, k] with ``U^T U = I``.

    A group is degenerate when ``m < k + 1``, it holds a non-finite value, its spread is
    at rounding level (``lam_1 <= (64 eps_dtype)^2 * sum ||h||^2``), ``lam_k <= eps * lam_1``
    or ``lam_k - lam_{k+1} <= eps * lam_1`` (the top-k subspace is ill-defined).
    Degenerate groups get a random orthonormal basis (QR of a Gaussian drawn from
    ``generator``, or from a generator seeded with 0) that carries no gradient.

    Parameters
    ----------
    h_groups : [G, m, d]
    k : number of directions, ``1 <= k <= d``
    eps : relative eigenvalue floor / gap

    Returns
    -------
    U : [G, d, k] orthonormal columns
    ok : [G] bool, False for degenerate groups
    """
    G, m, d = h_groups.shape
    if k > d:
        raise ValueError(f"k ({k}) must be <= d ({d})")
    finite = torch.isfinite(h_groups).flatten(1).all(1)
    if m < k + 1:
        ok = torch.zeros(G, dtype=torch.bool, device=h_groups.device)
        return _fallback_bases(G, d, k, h_groups, generator), ok
    h_safe = torch.where(finite[:, None, None], h_groups, torch.zeros_like(h_groups))
    X = h_safe - h_safe.mean(1, keepdim=True)
    lam, V = gram_eigh(X @ X.mT)
    lam, V = lam.flip(-1), V.flip(-1)  # descending
    lam1, lamk, lamk1 = lam[:, 0], lam[:, k - 1], lam[:, k]
    energy = h_safe.detach().pow(2).flatten(1).sum(1)
    floor = (64 * torch.finfo(h_groups.dtype).eps) ** 2 * energy
    ok = finite & (lam1 > floor) & (lamk > eps * lam1) & (lamk - lamk1 > eps * lam1)
    lam_top = torch.where(ok[:, None], lam[:, :k], torch.ones_like(lam[:, :k]))
    U = (X.mT @ V[:, :, :k]) / lam_top.clamp_min(torch.finfo(lam.dtype).tiny).sqrt().unsqueeze(1)
    bad = int((~ok).sum())
    if bad:
        fb = torch.zeros_like(U)
        fb[~ok] = _fallback_bases(bad, d, k, U, generator)
        U = torch.where(ok[:, None, None], U, fb)
    return U, ok


def projection_distance(U_i: torch.Tensor, U_j: torch.Tensor) -> torch.Tensor:
    """Projection distance between subspaces with orthonormal bases ``U_i, U_j`` [..., d, k].

    ``1 - ||U_i^T U_j||_F^2 / k = ||P_i - P_j||_F^2 / (2k) = mean_t sin^2(theta_t)`` over
    the ``k`` principal angles; dimensionless, in [0, 1]. Returns shape [...].
    """
    k = U_i.shape[-1]
    return 1.0 - (U_i.mT @ U_j).pow(2).sum((-2, -1)) / k


def pairwise_similarity(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Subspace similarity ``||U_a^T V_b||_F^2 / k = 1 - dist(U_a, V_b)`` of every pair.

    ``U`` [n, d, k], ``V`` [r, d, k] orthonormal bases -> [n, r], in [0, 1].
    """
    return torch.einsum("adk,bdl->abkl", U, V).pow(2).sum((-2, -1)) / U.shape[-1]


# ---------------------------------------------------------------------------
# label sets


def label_keys(label_sets: torch.Tensor) -> torch.Tensor:
    """Bitmask key of each multi-hot label set [n, P] -> long [n] (bit p = primitive p)."""
    bits = (label_sets != 0).long()
    weights = 2 ** torch.arange(bits.shape[-1], device=bits.device)
    return (bits * weights).sum(-1)


def _keys_to_sets(keys: torch.Tensor, P: int) -> torch.Tensor:
    return (keys.unsqueeze(-1) >> torch.arange(P, device=keys.device)) & 1 == 1


def jaccard(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pairwise Jaccard overlap of multi-hot label sets ``a`` [n, P], ``b`` [r, P] -> [n, r].

    ``|a & b| / |a | b|``; 0 when both sets are empty.
    """
    a = (a != 0).to(dtype)
    b = (b != 0).to(dtype)
    inter = a @ b.T
    union = a.sum(-1, keepdim=True) + b.sum(-1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


# ---------------------------------------------------------------------------
# EMA bank of bases per label set


class EmaBasisBank:
    """Per-label-set moving average of subspace bases, used as share-loss targets.

    Keyed by the label-set bitmask (:func:`label_keys`). Update for a stored basis ``B``
    and a new basis ``U`` (both [d, k], orthonormal): align ``U`` to ``B`` with the
    orthogonal Procrustes rotation ``R = polar(U^T B)``, then
    ``B <- qr(momentum * B + (1 - momentum) * U R).Q`` (column signs fixed so that
    ``diag(R_qr) > 0``). The first sighting of a key stores ``U``. No gradient.
    """

    def __init__(self, d: int, k: int, momentum: float):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.d, self.k, self.momentum = d, k, float(momentum)
        self.keys: list[int] = []
        self.bases = torch.zeros(0, d, k)
        self._index: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: int) -> bool:
        return int(key) in self._index

    def get(self, key: int) -> torch.Tensor:
        """Stored basis [d, k] for a label-set key."""
        return self.bases[self._index[int(key)]]

    def targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All stored ``(keys long [S], bases [S, d, k])``."""
        return torch.tensor(self.keys, dtype=torch.long, device=self.bases.device), self.bases

    @torch.no_grad()
    def update(self, keys, U: torch.Tensor) -> None:
        """Fold new bases ``U`` [n, d, k] into the bank under ``keys`` (n ints).

        Keys repeated within one call are applied in order.
        """
        keys = [int(x) for x in (keys.tolist() if torch.is_tensor(keys) else keys)]
        U = U.detach()
        self.bases = self.bases.to(device=U.device, dtype=U.dtype)
        pending = list(range(len(keys)))
        while pending:  # rounds: each key at most once per round, so rows update in a batch
            seen, now, later = set(), [], []
            for i in pending:
                (later if keys[i] in seen else now).append(i)
                seen.add(keys[i])
            old = [i for i in now if keys[i] in self._index]
            new = [i for i in now if keys[i] not in self._index]
            if old:
                rows = torch.tensor([self._index[keys[i]] for i in old], device=self.bases.device)
                self.bases[rows] = self._blend(self.bases[rows], U[old])
            if new:
                for i in new:
                    self._index[keys[i]] = len(self.keys)
                    self.keys.append(keys[i])
                self.bases = torch.cat([self.bases, U[new]], 0)
            pending = later

    def _blend(self, B_old: torch.Tensor, U_new: torch.Tensor) -> torch.Tensor:
        w, _, zt = torch.linalg.svd(U_new.mT @ B_old)
        R = w @ zt  # polar factor: argmin_R ||U_new R - B_old||_F over orthogonal R
        mix = self.momentum * B_old + (1.0 - self.momentum) * (U_new @ R)
        q, r = torch.linalg.qr(mix)
        return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)

    def state_dict(self) -> dict:
        return {"d": self.d, "k": self.k, "momentum": self.momentum,
                "keys": torch.tensor(self.keys, dtype=torch.long), "bases": self.bases.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        if (state["d"], state["k"]) != (self.d, self.k):
            raise ValueError(f"bank shape mismatch: have d={self.d}, k={self.k}, got d={state['d']}, k={state['k']}")
        self.momentum = float(state["momentum"])
        self.keys = [int(x) for x in state["keys"].tolist()]
        self._index = {key: i for i, key in enumerate(self.keys)}
        self.bases = state["bases"].detach().clone()

    def to(self, device) -> "EmaBasisBank":
        self.bases = self.bases.to(device)
        return self


# ---------------------------------------------------------------------------
# the loss


OBJECTIVES = ("match", "attract")


def _check_objective(objective: str, repel: float) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if objective == "match" and repel > 0:
        raise ValueError("repel is an option of objective='attract'; 'match' already pushes disjoint groups apart")


def pair_objective(sim: torch.Tensor, w: torch.Tensor, live: torch.Tensor, objective: str = "match",
                   repel: float = 0.0) -> torch.Tensor:
    """Share objective over the live pairs of a pair table.

    Parameters
    ----------
    sim : [...] subspace similarity ``||U_i^T U_j||_F^2 / k = 1 - dist_ij`` per pair
    w : [...] Jaccard overlap ``J_ij`` of the pair's label sets
    live : [...] bool, pairs that take part (both bases well defined)
    objective : ``"match"``: ``mean_live (sim - J)^2``; ``"attract"``:
        ``sum_live J (1 - sim) / sum_live J + repel * mean_{live, J=0} sim``

    Returns
    -------
    scalar; 0 (finite zero gradient) when a mean or ratio has no pair.
    """
    zero = torch.zeros_like(sim)
    if objective == "match":
        return torch.where(live, (sim - w).pow(2), zero).sum() / live.sum().clamp_min(1)
    w_live = torch.where(live, w, zero)
    loss = (w_live * (1.0 - sim)).sum() / w_live.sum().clamp_min(1e-12)
    if repel > 0:
        disjoint = live & (w == 0)
        loss = loss + repel * torch.where(disjoint, sim, zero).sum() / disjoint.sum().clamp_min(1)
    return loss


def share_loss(
    h: torch.Tensor,
    labels: torch.Tensor,
    groups: int,
    k: int,
    eps: float,
    detach: bool = False,
    repel: float = 0.0,
    bank: EmaBasisBank | None = None,
    generator: torch.Generator | None = None,
    update_bank: bool = True,
    objective: str = "match",
) -> tuple[torch.Tensor, dict]:
    """Shared-subspace loss over the groups of one batch.

    ``h`` [B, d] and ``labels`` [B, P] are viewed as ``G = groups`` groups of
    ``m = B / G`` consecutive episodes; a group's label set is its first row. With
    bases ``U_g`` from :func:`group_bases`, ``J_ij = Jaccard(L_i, L_j)`` and
    ``sim_ij = ||U_i^T U_j||_F^2 / k = 1 - dist_ij`` (:func:`pairwise_similarity`), over
    the live pairs ``i < j`` (see :func:`pair_objective`)::

        match:   loss = mean_{i<j} (sim_ij - J_ij)^2
        attract: loss = sum_{i<j} J_ij dist_ij / sum_{i<j} J_ij
                        + repel * mean_{i<j, J_ij=0} sim_ij

    ``repel`` is only accepted with ``attract`` (ValueError otherwise). A pair is live
    unless one of its groups is degenerate (fallback basis): such pairs are left out of
    the sums and the normalisers, so a degenerate group changes neither the loss nor its
    gradient. With no live pair the loss is 0 with a finite zero gradient. ``detach`` stops
    the gradient through ``U_j`` (the later group of each pair). Half-precision ``h`` is
    computed in float32.

    With a ``bank`` (EMA mode), the pairs are (group i, stored label set s) for every
    stored ``s`` different from ``L_i``, with targets ``B_s`` (no gradient), the same
    objective and the same live rule (``detach`` has no effect); after the loss,
    non-degenerate groups are folded into the bank when ``update_bank``.

    Returns
    -------
    loss : scalar
    stats : dict of floats: ``share_fallbacks`` (degenerate groups), ``share_pairs``
        (live pairs with ``J > 0``), ``share_mean_dist`` (mean dist over those, NaN if
        none), ``share_disjoint_pairs`` (live pairs with ``J = 0``).
    """
    _check_objective(objective, repel)
    B, d = h.shape
    if B % groups:
        raise ValueError(f"batch size {B} is not divisible by groups={groups}")
    m = B // groups
    if h.dtype in (torch.float16, torch.bfloat16):  # eigh needs float32 or float64
        h = h.float()
    U, ok = group_bases(h.reshape(groups, m, d), k, eps, generator)
    sets = labels.reshape(groups, m, -1)[:, 0] != 0  # [G, P]

    if bank is None:
        w = jaccard(sets, sets, U.dtype)
        sim = pairwise_similarity(U, U.detach() if detach else U)  # [G, G]
        pair = torch.ones(groups, groups, dtype=torch.bool, device=h.device).triu(1)
        live = pair & ok[:, None] & ok[None, :]
    else:
        keys = label_keys(sets)
        if len(bank):
            bkeys, bases = bank.targets()
            bkeys = bkeys.to(U.device)
            w = jaccard(sets, _keys_to_sets(bkeys, sets.shape[-1]), U.dtype)
            sim = pairwise_similarity(U, bases.to(device=U.device, dtype=U.dtype))  # [G, S]
        else:
            bkeys = keys.new_zeros(0)
            w = sim = U.new_zeros(groups, 0)
        live = (keys[:, None] != bkeys[None, :]) & ok[:, None]  # stored bases are never fallbacks

    loss = pair_objective(sim, w, live, objective, repel)
    if h.requires_grad and not loss.requires_grad:  # no pair at all: keep a zero gradient path to h
        loss = loss + torch.where(torch.isfinite(h), h, torch.zeros_like(h)).sum() * 0.0

    with torch.no_grad():
        overlap = live & (w > 0)
        n_pairs = int(overlap.sum())
        stats = {
            "share_fallbacks": int((~ok).sum()),
            "share_pairs": n_pairs,
            "share_mean_dist": float(1.0 - sim[overlap].mean()) if n_pairs else float("nan"),
            "share_disjoint_pairs": int((live & (w == 0)).sum()),
        }
    if bank is not None and update_bank and bool(ok.any()):
        bank.update(keys[ok], U[ok].detach())
    return loss, stats


# ---------------------------------------------------------------------------
# manipulation-check metrics (no gradient, floats out)


def label_set_ids(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer id of each row's label set.

    Parameters
    ----------
    labels : [N, P] multi-hot

    Returns
    -------
    ids : long [N], in ``[0, n_ids)``
    sets : bool [n_ids, P], the distinct label sets (row ``s`` is the set of id ``s``)
    """
    sets, ids = torch.unique(labels != 0, dim=0, return_inverse=True)
    return ids, sets


def _analysis_copy(h: torch.Tensor) -> torch.Tensor | None:
    """``h`` detached in float64, or None when it holds a non-finite value."""
    h = h.detach().double()
    return h if bool(torch.isfinite(h).all()) else None


def _centred_energy(h: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Centred rows ``h - mean(h)`` and the rounding floor of their energy (as in :func:`group_bases`)."""
    floor = (64 * torch.finfo(h.dtype).eps) ** 2 * float(h.pow(2).sum())
    return h - h.mean(0), floor


@torch.no_grad()
def effective_rank(h: torch.Tensor) -> float:
    """Participation ratio of the singular values ``s`` of the centred ``h`` [N, d].

    ``(sum s^2)^2 / sum s^4``, in ``[1, min(N - 1, d)]``: ``r`` for ``r`` orthogonal
    directions of equal variance. NaN when ``h`` is constant (to rounding) or non-finite.
    """
    h = _analysis_copy(h)
    if h is None:
        return float("nan")
    x, floor = _centred_energy(h)
    s2 = torch.linalg.svdvals(x).pow(2)
    total = float(s2.sum())
    return total**2 / float(s2.pow(2).sum()) if total > floor else float("nan")


@torch.no_grad()
def label_variance_fraction(h: torch.Tensor, ids: torch.Tensor) -> float:
    """Fraction of the total variance of ``h`` explained by label-set identity.

    ``sum_g n_g ||mean_g - mean||^2 / sum_n ||h_n - mean||^2`` (between-group over total
    sum of squares, summed over dimensions; an R^2 in [0, 1]).

    Parameters
    ----------
    h : [N, d]
    ids : long [N], group of each row

    Returns
    -------
    float; NaN when ``h`` is constant (to rounding) or non-finite.
    """
    h = _analysis_copy(h)
    if h is None:
        return float("nan")
    x, floor = _centred_energy(h)
    _, inv, counts = torch.unique(ids.to(h.device), return_inverse=True, return_counts=True)
    means = x.new_zeros(len(counts), x.shape[1]).index_add_(0, inv, x) / counts[:, None]
    total = float(x.pow(2).sum())
    between = float((counts[:, None] * means.pow(2)).sum())
    return between / total if total > floor else float("nan")


def _spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties) of [n] and [n]; NaN if undefined."""
    if x.numel() < 2:
        return float("nan")
    rx, ry = rankdata(x.cpu().numpy()), rankdata(y.cpu().numpy())
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _mean_or_nan(x: torch.Tensor) -> float:
    return float(x.mean()) if x.numel() else float("nan")


def _group_pair_tables(h: torch.Tensor, ids: torch.Tensor, sets: torch.Tensor, k: int,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sim, J)`` [n_pairs] over the pairs ``i < j`` of the usable id groups of ``h``."""
    h = _analysis_copy(h)
    empty = torch.zeros(0, dtype=torch.float64)
    if h is None:
        return empty, empty
    ids = ids.to(h.device)
    gids, bases = [], []
    for g in torch.unique(ids).tolist():
        U, ok = group_bases(h[ids == g][None], k, eps)  # fewer than k + 1 rows: degenerate
        if bool(ok[0]):
            gids.append(g)
            bases.append(U[0])
    if len(bases) < 2:
        return empty, empty
    U = torch.stack(bases)
    group_sets = sets.to(h.device)[torch.tensor(gids, device=h.device)]
    i, j = torch.triu_indices(len(gids), len(gids), 1, device=h.device)
    return pairwise_similarity(U, U)[i, j], jaccard(group_sets, group_sets, torch.float64)[i, j]


@torch.no_grad()
def subspace_geometry(h: torch.Tensor, ids: torch.Tensor, sets: torch.Tensor, k: int, eps: float) -> dict:
    """Do groups that share primitives span closer subspaces than disjoint ones?

    Groups are the distinct ``ids``; each gets its top-``k`` basis from :func:`group_bases`
    (float64). Groups with fewer than ``k + 1`` rows or a degenerate basis are skipped.
    Over the pairs ``i < j`` of the remaining groups, with ``dist`` the
    :func:`projection_distance` and ``J`` the Jaccard overlap of their label sets:

    - ``overlap_dist``: mean ``dist`` over pairs with ``J > 0``; ``disjoint_dist``: over ``J = 0``
    - ``gap = disjoint_dist - overlap_dist`` (positive: the intended structure)
    - ``jaccard_spearman``: Spearman correlation of ``J`` and ``sim = 1 - dist`` over all pairs
    - ``n_overlap``, ``n_disjoint``: pair counts

    Means over no pair, and correlations over fewer than 2 pairs or constant ranks, are NaN.

    Parameters
    ----------
    h : [N, d]
    ids : long [N], label-set id of each row, indexing ``sets``
    sets : [n_ids, P] multi-hot label set of each id
    k : directions per group
    eps : relative eigenvalue floor / gap of :func:`group_bases`

    Returns
    -------
    dict of floats with the keys above.
    """
    sim, J = _group_pair_tables(h, ids, sets, k, eps)
    overlap, disjoint = J > 0, J == 0
    o, dj = _mean_or_nan(1.0 - sim[overlap]), _mean_or_nan(1.0 - sim[disjoint])
    return {"overlap_dist": o, "disjoint_dist": dj, "gap": dj - o, "jaccard_spearman": _spearman(J, sim),
            "n_overlap": float(overlap.sum()), "n_disjoint": float(disjoint.sum())}


def _grouped_match_objective(h: torch.Tensor, labels: torch.Tensor, groups: int, k: int, eps: float) -> float:
    """The ``match`` :func:`share_loss` on the ``groups`` layout; NaN if rows of a group differ in
    label set, ``B`` is not divisible by ``groups``, or no pair is live."""
    B = h.shape[0]
    if groups < 2 or B % groups:
        return float("nan")
    sets = (labels != 0).reshape(groups, B // groups, -1)
    if not bool((sets == sets[:, :1]).all()):
        return float("nan")
    loss, stats = share_loss(h.detach(), labels, groups, k, eps, objective="match")
    live = stats["share_pairs"] + stats["share_disjoint_pairs"]
    return float(loss) if live else float("nan")


@torch.no_grad()
def manipulation_metrics(h: torch.Tensor, labels: torch.Tensor, groups: int, k: int, eps: float) -> dict[str, float]:
    """Manipulation checks of the share loss on one training batch.

    Parameters
    ----------
    h : [B, d] task vectors
    labels : [B, P] multi-hot label sets
    groups : ``G`` of the grouped layout (``G`` consecutive groups of ``m = B / G`` rows)
    k, eps : as in :func:`share_loss`

    Returns
    -------
    dict of floats: ``share_objective`` (the ``match`` :func:`share_loss` on the ``G``-groups
    layout; NaN when the layout does not hold, i.e. rows of a group differ in label set,
    as with random sampling), the :func:`subspace_geometry` keys ``overlap_dist``,
    ``disjoint_dist``, ``gap``, ``jaccard_spearman`` over groups formed by label-set
    identity (not position, so it also works for random sampling), ``effective_rank``
    (:func:`effective_rank`) and ``label_r2`` (:func:`label_variance_fraction` by label set).
    """
    ids, sets = label_set_ids(labels)
    geo = subspace_geometry(h, ids, sets, k, eps)
    return {
        "share_objective": _grouped_match_objective(h, labels, groups, k, eps),
        **{key: geo[key] for key in ("overlap_dist", "disjoint_dist", "gap", "jaccard_spearman")},
        "effective_rank": effective_rank(h),
        "label_r2": label_variance_fraction(h, ids),
    }


# ---------------------------------------------------------------------------
# reference implementation and benchmark


def naive_share_loss(
    h: torch.Tensor, labels: torch.Tensor, groups: int, k: int, detach: bool = False, repel: float = 0.0,
    objective: str = "match",
) -> torch.Tensor:
    """Reference for :func:`share_loss` (no bank, no fallback), computed the obvious way.

    Per group: ``d x d`` covariance, ``torch.linalg.eigh``, top-``k`` eigenvectors ``U``,
    projector ``P = U U^T``; per pair: ``dist = ||P_i - P_j||_F^2 / (2k)``,
    ``sim = 1 - dist`` and the Jaccard overlap ``J`` in a Python loop; then ``match``:
    ``mean (sim - J)^2`` over all pairs, or ``attract``: ``sum J dist / sum J`` plus
    ``repel * mean_{J=0} sim``. Slow (``O(G d^3 + G^2 d^2)``); for tests and the benchmark only.
    """
    _check_objective(objective, repel)
    B, d = h.shape
    m = B // groups
    hg = h.reshape(groups, m, d)
    sets = labels.reshape(groups, m, -1)[:, 0] != 0
    projectors = []
    for g in range(groups):
        X = hg[g] - hg[g].mean(0)
        _, vecs = torch.linalg.eigh(X.T @ X)
        U = vecs[:, -k:]
        projectors.append(U @ U.T)
    sq, n_pairs = h.new_zeros(()), 0
    num = h.new_zeros(())
    den = 0.0
    rep, n_rep = h.new_zeros(()), 0
    for i in range(groups):
        for j in range(i + 1, groups):
            a, b = sets[i], sets[j]
            union = int((a | b).sum())
            wij = int((a & b).sum()) / union if union else 0.0
            Pj = projectors[j].detach() if detach else projectors[j]
            dist = (projectors[i] - Pj).pow(2).sum() / (2 * k)
            sq = sq + (1.0 - dist - wij) ** 2
            n_pairs += 1
            if wij > 0:
                num = num + wij * dist
                den += wij
            else:
                rep = rep + (1.0 - dist)
                n_rep += 1
    if objective == "match":
        return sq / n_pairs if n_pairs else sq
    loss = num / den if den > 0 else num
    if repel > 0 and n_rep:
        loss = loss + repel * rep / n_rep
    return loss


def _random_batch(G: int, m: int, d: int, P: int, device, dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(G * m, d, generator=gen, dtype=dtype)
    sets = (torch.rand(G, P, generator=gen) < 0.35).to(torch.uint8)
    sets[:, 0] |= (sets.sum(1) == 0).to(torch.uint8)
    labels = sets.repeat_interleave(m, 0)
    return h.to(device), labels.to(device)


def bench_share(
    h_dim: int = 128, groups: int = 8, group_size: int = 8, k: int = 2, device: str = "cpu", repeats: int = 5
) -> list[dict]:
    """Time forward + backward of :func:`share_loss` vs :func:`naive_share_loss`.

    Sizes: ``(G, m, d) = (groups, group_size, h_dim)`` and ``(64, 32, 256)``; float32,
    random ``h``. One warm-up call, then the median of ``repeats`` timed calls
    (``time.perf_counter``, CUDA synchronised).

    Returns
    -------
    rows : list of dicts with ``G, m, d, k, device, fast_ms, naive_ms, ratio``
        (``ratio = naive_ms / fast_ms``; ms per forward+backward call).
    """
    device = torch.device(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn, h, labels, G):
        times = []
        for r in range(repeats + 1):
            x = h.detach().clone().requires_grad_(True)
            sync()
            t0 = time.perf_counter()
            loss = fn(x, labels, G)
            loss.backward()
            sync()
            if r:  # first call is the warm-up
                times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)

    rows = []
    for G, m, d in ((groups, group_size, h_dim), (64, 32, 256)):
        h, labels = _random_batch(G, m, d, 8, device, torch.float32)
        fast = timed(lambda x, lab, g: share_loss(x, lab, g, k, 1e-4)[0], h, labels, G)
        naive = timed(lambda x, lab, g: naive_share_loss(x, lab, g, k), h, labels, G)
        rows.append({"G": G, "m": m, "d": d, "k": k, "device": str(device),
                     "fast_ms": fast, "naive_ms": naive, "ratio": naive / fast})
    return rows
