"""Decision statistics for the share-vs-baseline comparison.

Conventions
-----------
Per-seed results of the two arms are paired by seed: row ``i`` of ``share`` and row ``i`` of
``baseline`` come from the same seed (same data, same initialisation stream). Values are
either per-seed scalars ``[n_seeds]`` or per-episode values ``[n_seeds, n_episodes]``. The
effect is always *share minus baseline*; a hypothesis predicts its sign (``direction``
``+1``: share higher, ``-1``: share lower), and :func:`verdict` reads a confidence interval
against that prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.stats

from mcl.analysis.arrays import as_matrix

__all__ = ["paired_bootstrap_ci", "paired_t_test", "verdict", "spearman", "VERDICTS"]

VERDICTS = ("supported", "refuted", "inconclusive")

# Bootstrap replicates are drawn in chunks of at most this many indexed values.
_CHUNK_ELEMS = 2_000_000


def _as_arm(a: np.ndarray, name: str) -> np.ndarray:
    a = as_matrix(a, name, "[n_seeds] or [n_seeds, n_episodes]", column=True)
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    return a


def _boot_means(values: np.ndarray, seed_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two-level bootstrap means for given resampled seeds.

    ``values`` ``[S, E]``; ``seed_idx`` ``[B, S]`` resampled seed rows. Within each resampled
    seed, ``E`` episodes are drawn with replacement; a replicate is the mean over seeds of
    the per-seed episode means. Returns ``[B]``. With ``E == 1`` the episode level is skipped.
    """
    B, S = seed_idx.shape
    E = values.shape[1]
    if E == 1:
        return values[seed_idx, 0].mean(axis=1)
    out = np.empty(B)
    chunk = max(1, _CHUNK_ELEMS // (S * E))
    for lo in range(0, B, chunk):
        hi = min(B, lo + chunk)
        ep = rng.integers(0, E, size=(hi - lo, S, E))
        out[lo:hi] = values[seed_idx[lo:hi, :, None], ep].mean(axis=(1, 2))
    return out


def paired_bootstrap_ci(
    share: np.ndarray,
    baseline: np.ndarray,
    n_boot: int = 10000,
    alpha: float = 0.05,
    seed: int = 0,
    paired_episodes: bool | None = None,
) -> dict[str, Any]:
    """Hierarchical paired bootstrap CI for the mean effect ``share - baseline``.

    Parameters
    ----------
    share, baseline : arrays ``[n_seeds]`` (per-seed scalars) or ``[n_seeds, n_episodes]``
        (per-episode values); row ``i`` of both is seed ``i``. All values must be finite.
    n_boot : number of bootstrap replicates
    alpha : the CI is the central ``1 - alpha`` percentile interval
    seed : seed of the ``numpy`` generator (the result is deterministic given it)
    paired_episodes : whether column ``j`` of both arms is the same episode. ``None``
        (default): paired when both arms have the same shape. Must be False when the episode
        counts differ.

    Returns
    -------
    dict
        ``effect``: the point estimate -- the mean over seeds of the per-seed mean of
        ``share - baseline`` (episodes paired), or of ``mean(share) - mean(baseline)``
        (episodes unpaired); every seed weighs equally. ``ci_low``, ``ci_high``: percentile
        bootstrap interval; ``n_seeds``; ``n_episodes`` (per arm: an int when both arms agree,
        else a ``(share, baseline)`` tuple; 1 for per-seed scalars); ``n_boot``; ``alpha``;
        ``se``: standard deviation of the bootstrap replicates; ``method``: a description.

    Notes
    -----
    Each replicate resamples ``n_seeds`` seeds with replacement (the same seeds for both
    arms: the pairing), then, within each resampled seed, ``n_episodes`` episodes with
    replacement -- the same episode indices for both arms when paired (so the per-episode
    differences are resampled), independently per arm otherwise. Per-seed scalars use the
    seed level only. With few seeds the seed-level resampling has few distinct outcomes
    (e.g. 10 multisets for 3 seeds) and percentile intervals are too narrow; with one seed
    only episode variability is represented. Report ``n_seeds`` with the interval.
    """
    s = _as_arm(share, "share")
    b = _as_arm(baseline, "baseline")
    if s.shape[0] != b.shape[0]:
        raise ValueError(f"share and baseline must have the same number of seeds, got {s.shape[0]} and {b.shape[0]}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    scalar = np.ndim(share) == 1 and np.ndim(baseline) == 1
    same_shape = s.shape == b.shape
    if paired_episodes is None:
        paired_episodes = same_shape
    if paired_episodes and not same_shape:
        raise ValueError(f"paired episodes need equal shapes, got {s.shape} and {b.shape}")
    S = s.shape[0]
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, S, size=(n_boot, S))
    if paired_episodes:
        diff = s - b
        effect = float(diff.mean(axis=1).mean())
        boot = _boot_means(diff, seed_idx, rng)
    else:
        effect = float(s.mean(axis=1).mean() - b.mean(axis=1).mean())
        boot = _boot_means(s, seed_idx, rng) - _boot_means(b, seed_idx, rng)
    lo, hi = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0])
    if scalar:
        method = "paired bootstrap over seeds (per-seed scalars), percentile CI"
    elif paired_episodes:
        method = "hierarchical paired bootstrap (seeds, then episodes within seed; paired by seed and episode), percentile CI"
    else:
        method = "hierarchical paired bootstrap (seeds, then episodes within seed per arm; paired by seed only), percentile CI"
    n_eps: int | tuple[int, int] = s.shape[1] if s.shape[1] == b.shape[1] else (s.shape[1], b.shape[1])
    return {
        "effect": effect,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n_seeds": int(S),
        "n_episodes": n_eps,
        "n_boot": int(n_boot),
        "alpha": float(alpha),
        "se": float(np.std(boot, ddof=1)) if n_boot > 1 else float("nan"),
        "method": f"{method}, n_boot={n_boot}, alpha={alpha}",
    }


def paired_t_test(
    share_per_seed: np.ndarray, baseline_per_seed: np.ndarray, alternative: str = "two-sided"
) -> tuple[float, float]:
    """Paired t-test over seeds (:func:`scipy.stats.ttest_rel`) of ``share - baseline``.

    Parameters
    ----------
    share_per_seed, baseline_per_seed : arrays ``[n_seeds]``; a 2-D ``[n_seeds, n_episodes]``
        input is first averaged over episodes.
    alternative : ``"two-sided"``, ``"greater"`` (share > baseline) or ``"less"``

    Returns
    -------
    (t, p) : floats; both NaN when there are fewer than 2 seeds or the per-seed
        differences have zero variance.
    """
    s = np.asarray(share_per_seed, dtype=np.float64)
    b = np.asarray(baseline_per_seed, dtype=np.float64)
    if s.ndim == 2:
        s = s.mean(axis=1)
    if b.ndim == 2:
        b = b.mean(axis=1)
    if s.ndim != 1 or s.shape != b.shape:
        raise ValueError(f"need matching per-seed arrays, got shapes {s.shape} and {b.shape}")
    d = s - b
    if d.size < 2 or not np.all(np.isfinite(d)):
        return float("nan"), float("nan")
    if np.ptp(d) <= 1e-12 * max(1.0, float(np.max(np.abs(d)))):
        return float("nan"), float("nan")
    res = scipy.stats.ttest_rel(s, b, alternative=alternative)
    return float(res.statistic), float(res.pvalue)


def verdict(ci_low: float, ci_high: float, direction: int) -> str:
    """Read a confidence interval for ``share - baseline`` against a predicted sign.

    Parameters
    ----------
    ci_low, ci_high : interval bounds
    direction : ``+1`` (hypothesis predicts share > baseline) or ``-1`` (share < baseline)

    Returns
    -------
    ``"supported"`` when the interval excludes 0 on the predicted side (strictly: ``ci_low > 0``
    for ``+1``, ``ci_high < 0`` for ``-1``), ``"refuted"`` when it excludes 0 on the other side,
    ``"inconclusive"`` otherwise (including an interval touching 0 or a NaN bound).
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    lo, hi = float(ci_low), float(ci_high)
    if np.isnan(lo) or np.isnan(hi):
        return "inconclusive"
    if lo > hi:
        raise ValueError(f"ci_low {lo} > ci_high {hi}")
    if lo > 0.0:
        return "supported" if direction == 1 else "refuted"
    if hi < 0.0:
        return "supported" if direction == -1 else "refuted"
    return "inconclusive"


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (:func:`scipy.stats.spearmanr`), NaN-safe.

    Pairs where either value is NaN are dropped. Returns NaN when fewer than 3 pairs remain
    or either variable is constant.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(scipy.stats.spearmanr(x, y).statistic)
