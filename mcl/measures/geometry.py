"""The manipulation check: does h have the structure the share loss asks for (no gradient, floats out)."""

from __future__ import annotations

import torch

from mcl.losses.share import group_bases, jaccard, pairwise_similarity, share_loss
from mcl.measures.rank import spearman

__all__ = ["group_label_sets", "effective_rank", "label_variance_fraction", "subspace_geometry", "manipulation_metrics"]


def group_label_sets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
    return {"overlap_dist": o, "disjoint_dist": dj, "gap": dj - o, "jaccard_spearman": spearman(J.cpu().numpy(), sim.cpu().numpy()),
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
    ids, sets = group_label_sets(labels)
    geo = subspace_geometry(h, ids, sets, k, eps)
    return {
        "share_objective": _grouped_match_objective(h, labels, groups, k, eps),
        **{key: geo[key] for key in ("overlap_dist", "disjoint_dist", "gap", "jaccard_spearman")},
        "effective_rank": effective_rank(h),
        "label_r2": label_variance_fraction(h, ids),
    }
