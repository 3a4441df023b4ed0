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
``d x d`` is ever formed. The manipulation-check metrics that measure whether ``h`` has that
structure are in :mod:`mcl.measures.geometry`; a naive reference and the benchmark in
:mod:`mcl.bench.share`."""

from __future__ import annotations

import torch

__all__ = [
    "GramEigh",
    "gram_eigh",
    "group_bases",
    "pairwise_similarity",
    "jaccard",
    "label_keys",
    "OBJECTIVES",
    "pair_objective",
    "share_loss",
    "EmaBasisBank",
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

    ``|a & b| / |a | b|``; 1 when both sets are empty (identical sets: mcl's one convention).
    """
    a = (a != 0).to(dtype)
    b = (b != 0).to(dtype)
    inter = a @ b.T
    union = a.sum(-1, keepdim=True) + b.sum(-1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


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
