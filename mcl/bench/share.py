"""The share loss against a naive reference computed the obvious way: the reference and its benchmark."""

from __future__ import annotations

import statistics
import time

import torch

from mcl.losses.share import _check_objective, share_loss

__all__ = ["naive_share_loss", "bench_share"]


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
