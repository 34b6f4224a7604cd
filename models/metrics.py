"""Top-K metrics over a time-based holdout, vectorized over users.

Recommendations are a dense `[n_users, K]` array of item indices (-1 = no item); the truth is a
sparse user x item matrix of holdout items. Recall@K is hits / |truth| per user, averaged over
users with at least one truth item; NDCG@10 uses binary gains; MRR is over the full list.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

DEFAULT_KS = (10, 50, 100)


def hits_matrix(recs: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """[n_users, K] booleans: is recs[u, k] one of user u's holdout items."""
    n_users, k = recs.shape
    truth = truth.tocsr()
    truth.sort_indices()
    n_items = truth.shape[1]
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(truth.indptr))
    truth_codes = rows * n_items + truth.indices.astype(np.int64)
    valid = recs >= 0
    codes = np.where(valid, np.arange(n_users, dtype=np.int64)[:, None] * n_items + recs, -1)
    return np.isin(codes, truth_codes) & valid


def per_user(recs: np.ndarray, truth: sp.csr_matrix, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Recall@K for each K, NDCG@10 and reciprocal rank of each user with a holdout item.

    Args:
        recs: [n_users, K_max] recommended item indices, best first; -1 pads short lists.
        truth: [n_users, n_items] holdout items per user (any positive value counts).

    Returns:
        {metric: [n_users_with_truth] values}, users in row order (the same users for any `recs`
        scored against the same `truth`, so two recommenders' values pair up by position).

    Raises:
        ValueError: no user has a holdout item.
    """
    n_truth = np.asarray((truth > 0).sum(axis=1)).ravel()
    users = n_truth > 0
    if not users.any():
        raise ValueError("no user has a holdout item: widen the holdout or check the cutoff")
    hits = hits_matrix(recs, truth)[users]
    n_truth = n_truth[users]
    out = {f"recall@{k}": hits[:, :k].sum(axis=1) / n_truth for k in ks}
    discounts = 1.0 / np.log2(np.arange(2, 12))
    dcg = (hits[:, :10] * discounts[: hits[:, :10].shape[1]]).sum(axis=1)
    ideal = np.array([discounts[: min(int(n), 10)].sum() for n in n_truth])
    out["ndcg@10"] = dcg / ideal
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    out["mrr"] = 1.0 / first
    return out


def topk_metrics(
    recs: np.ndarray, truth: sp.csr_matrix, n_catalog: int, ks: tuple[int, ...] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@K for each K, NDCG@10, MRR (means over users with a holdout item) and catalog
    coverage@10 (and @max K).

    Args:
        recs: [n_users, K_max] recommended item indices, best first; -1 pads short lists.
        truth: [n_users, n_items] holdout items per user (any positive value counts).
        n_catalog: number of recommendable items, for coverage.
    """
    values = per_user(recs, truth, ks)
    users = np.asarray((truth > 0).sum(axis=1)).ravel() > 0
    out: dict[str, float] = {"users": float(users.sum())}
    out.update({name: float(v.mean()) for name, v in values.items()})
    for k in (10, max(ks)):
        shown = recs[users][:, :k]
        out[f"coverage@{k}"] = float(len(np.unique(shown[shown >= 0])) / max(n_catalog, 1))
    return out


#: Bootstrap resamples for confidence intervals, and their level.
RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples] means of `values` resampled over users with replacement.

    The draws depend only on `seed` and `len(values)`, so two recommenders' per-user values
    (paired by user) are resampled identically: `bootstrap_means(a - b)` is the paired difference.
    """
    rng = np.random.default_rng(seed)
    n = len(values)
    out = np.empty(resamples)
    step = max(1, 2_000_000 // max(n, 1))  # bounded memory: `step` resamples at a time
    for start in range(0, resamples, step):
        stop = min(resamples, start + step)
        out[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def interval(values: np.ndarray, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """[low, high]: the percentile bootstrap interval of the mean of `values` (per-user values,
    or paired per-user differences of two recommenders)."""
    if len(values) == 0:
        return [float("nan"), float("nan")]
    means = bootstrap_means(np.asarray(values, dtype=np.float64), resamples, seed)
    tail = (1.0 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))]


def recall_curve(recs: np.ndarray, truth: sp.csr_matrix, max_k: int | None = None) -> np.ndarray:
    """Recall@k for k = 1..max_k, for plotting."""
    n_truth = np.asarray((truth > 0).sum(axis=1)).ravel()
    users = n_truth > 0
    hits = hits_matrix(recs, truth)[users][:, : max_k or recs.shape[1]]
    return (np.cumsum(hits, axis=1) / n_truth[users][:, None]).mean(axis=0)


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Indices of the k best scores per row, best first; excluded (row, item) pairs never appear.

    Args:
        scores: [n_users, n_items] scores (modified in place when `exclude` is given).
        exclude: [n_users, n_items] pairs to leave out (e.g. items seen before the cutoff).
    """
    if exclude is not None:
        exclude = exclude.tocoo()
        scores[exclude.row, exclude.col] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    best = np.take_along_axis(part, order, axis=1)
    return np.where(np.isfinite(np.take_along_axis(scores, best, axis=1)), best, -1)
