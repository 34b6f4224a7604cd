"""Numpy references of the served baselines (models/baselines.py): what the retrieval graphs of
`models.export.baseline_module` must compute, for tests."""

from __future__ import annotations

import numpy as np

from models.baselines import ALSParams


def fold_in(item_factors: np.ndarray, items: np.ndarray, counts: np.ndarray, params: ALSParams) -> np.ndarray:
    """One user's ALS factors from their items and counts, as ALS's user step solves them:
    `(Y'Y + reg I + sum (c - 1) y y') u = sum c y` with confidence `c = alpha * log1p(count)`."""
    yty = item_factors.T @ item_factors
    y = item_factors[items]
    confidence = params.alpha * np.log1p(np.maximum(counts, 0.0))
    a = yty + params.regularization * np.eye(yty.shape[0]) + (y.T * (confidence - 1.0)) @ y
    return np.linalg.solve(a, y.T @ confidence)


def knn_scores(
    neighbour_rows: np.ndarray, neighbour_weights: np.ndarray, items: np.ndarray, n_items: int
) -> np.ndarray:
    """[n_items] sum of similarities to `items` (distinct item indices)."""
    out = np.zeros(n_items)
    rows, weights = neighbour_rows[items].ravel(), neighbour_weights[items].ravel()
    np.add.at(out, rows[rows >= 0], weights[rows >= 0])
    return out


def history_first(scores: np.ndarray, items: np.ndarray, counts: np.ndarray, days_since: np.ndarray) -> np.ndarray:
    """`scores` squeezed into [0, 1), with the user's own items above all (times bought, then
    recency: `1000 + count + 1 / (1 + days since)`)."""
    span = scores.max() - scores.min()
    out = (scores - scores.min()) / (span + 1e-9) * 0.999 if span > 0 else np.zeros_like(scores, dtype=np.float64)
    out = out.astype(np.float64)
    out[items] = 1e3 + counts + 1.0 / (1.0 + np.maximum(days_since, 0.0))
    return out
