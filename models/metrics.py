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


def topk_metrics(
    recs: np.ndarray, truth: sp.csr_matrix, n_catalog: int, ks: tuple[int, ...] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@K for each K, NDCG@10, MRR and catalog coverage@10 (and @max K).

    Args:
        recs: [n_users, K_max] recommended item indices, best first; -1 pads short lists.
        truth: [n_users, n_items] holdout items per user (any positive value counts).
        n_catalog: number of recommendable items, for coverage.
    """
    n_truth = np.asarray((truth > 0).sum(axis=1)).ravel()
    users = n_truth > 0
    if not users.any():
        raise ValueError("no user has a holdout item: widen the holdout or check the cutoff")
    hits = hits_matrix(recs, truth)[users]
    n_truth = n_truth[users]
    out: dict[str, float] = {"users": float(users.sum())}
    for k in ks:
        out[f"recall@{k}"] = float((hits[:, :k].sum(axis=1) / n_truth).mean())
    discounts = 1.0 / np.log2(np.arange(2, 12))
    dcg = (hits[:, :10] * discounts[: hits[:, :10].shape[1]]).sum(axis=1)
    ideal = np.array([discounts[: min(int(n), 10)].sum() for n in n_truth])
    out["ndcg@10"] = float((dcg / ideal).mean())
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    out["mrr"] = float((1.0 / first).mean())
    for k in (10, max(ks)):
        shown = recs[users][:, :k]
        out[f"coverage@{k}"] = float(len(np.unique(shown[shown >= 0])) / max(n_catalog, 1))
    return out


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
