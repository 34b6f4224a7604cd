"""Baselines: most-popular, repeat-purchase, item-kNN and implicit ALS, fitted on what the model saw.

Each baseline is a servable recommender, not only a row in a report: `fit_baselines` fits them
on the training interactions, `models.export.baseline_module` turns each into a retrieval
SavedModel in the same TF Serving layout as the two-tower (a pass-through ranker completes the
pair), and evaluation scores them through the gateway's own path. So when no trained model beats
them, the best one is published instead, and what it serves is what it scored.

- `popular`: interaction weight in the last 30 days before the cutoff.
- `repeat_purchase`: the user's own history first (times bought, then recency), then popular.
- `item_knn`: the sum of cosine similarities (top 100 neighbours per item) to the user's items.
- `als`: implicit-feedback ALS (Hu, Koren, Volinsky); a user unknown at training time is folded
  in from the purchase history, as `implicit` recalculates a user.
- `repeat_als`: the user's own history first, then ALS (what `repeat_purchase` is to `popular`).

The numpy references the exported graphs are tested against live in testsupport/baselines.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: Every servable baseline, and the ones that put the user's own history first.
BASELINES = ("popular", "repeat_purchase", "item_knn", "als", "repeat_als")
HISTORY_FIRST = {"repeat_purchase": "popular", "repeat_als": "als"}


@dataclass(frozen=True)
class TrainInteractions:
    """Interactions before the cutoff, as indices.

    Attributes:
        users: [n] user index per interaction.
        items: [n] item index per interaction.
        age_days: [n] days between the interaction and the cutoff (>= 0).
        weights: [n] interaction strength (e.g. 1 view, 2 click, 4 purchase).
        n_users: size of the user index.
        n_items: size of the item index.
    """

    users: np.ndarray
    items: np.ndarray
    age_days: np.ndarray
    weights: np.ndarray
    n_users: int
    n_items: int

    def matrix(self, weights: np.ndarray | None = None) -> sp.csr_matrix:
        w = self.weights if weights is None else weights
        return sp.csr_matrix((w.astype(np.float32), (self.users, self.items)), shape=(self.n_users, self.n_items))


@dataclass(frozen=True)
class ALSParams:
    factors: int = 64
    iterations: int = 15
    regularization: float = 0.05
    alpha: float = 20.0
    seed: int = 42


@dataclass(frozen=True)
class FittedBaselines:
    """What the servable baselines need, fitted on one training set.

    Attributes:
        popularity: [n_items] interaction weight in the popularity window.
        user_factors: [n_users, F] ALS user factors (rows of the training user index).
        item_factors: [n_items, F] ALS item factors.
        neighbour_rows: [n_items, N] item-kNN neighbours of each item (-1 pads).
        neighbour_weights: [n_items, N] their similarities (0 on pads).
        als: the ALS settings (fold-in needs the regularization and alpha).
    """

    popularity: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    neighbour_rows: np.ndarray
    neighbour_weights: np.ndarray
    als: ALSParams


def popularity_scores(data: TrainInteractions, window_days: float = 30.0) -> np.ndarray:
    """[n_items] interaction weight in the last `window_days` before the cutoff."""
    recent = data.age_days < window_days
    return np.bincount(data.items[recent], weights=data.weights[recent], minlength=data.n_items)


def fit_als(data: TrainInteractions, params: ALSParams = ALSParams()) -> tuple[np.ndarray, np.ndarray]:
    """(user factors [n_users, F], item factors [n_items, F]) of implicit ALS on log1p weights."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=params.factors,
        iterations=params.iterations,
        regularization=params.regularization,
        alpha=params.alpha,
        random_state=params.seed,
        num_threads=1,  # one thread: deterministic for a seed
    )
    user_items = data.matrix().tocsr()
    user_items.data = np.log1p(user_items.data)
    model.fit(user_items, show_progress=False)
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def item_neighbours(
    data: TrainInteractions, neighbours: int = 100, shrink: float = 10.0, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's `neighbours` most similar items: cosine over users (binary), shrunk.

    Computed `block` items at a time, so memory grows with the catalog, not its square.

    Returns:
        (rows [n_items, N] int32 with -1 pads, similarities [n_items, N] float32).
    """
    binary = (data.matrix() > 0).astype(np.float32).tocsc()
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel())
    n_items = data.n_items
    n = min(neighbours, max(n_items - 1, 1))
    rows = np.full((n_items, n), -1, dtype=np.int32)
    weights = np.zeros((n_items, n), dtype=np.float32)
    transposed = binary.T.tocsr()
    for start in range(0, n_items, block):
        stop = min(n_items, start + block)
        co = np.asarray((transposed[start:stop] @ binary).todense(), dtype=np.float32)
        co[np.arange(stop - start), np.arange(start, stop)] = 0.0
        sim = co / (np.outer(norms[start:stop], norms) + shrink)
        top = np.argpartition(-sim, n - 1, axis=1)[:, :n]
        values = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        top, values = np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)
        keep = values > 0
        rows[start:stop] = np.where(keep, top, -1)
        weights[start:stop] = np.where(keep, values, 0.0)
    return rows, weights


def fit_baselines(
    data: TrainInteractions, als: ALSParams = ALSParams(), popularity_window_days: float = 30.0
) -> FittedBaselines:
    """Fit every servable baseline on the training interactions."""
    user_factors, item_factors = fit_als(data, als)
    rows, weights = item_neighbours(data)
    return FittedBaselines(
        popularity_scores(data, popularity_window_days).astype(np.float32),
        user_factors,
        item_factors,
        rows,
        weights,
        als,
    )


def fold_in_rows(
    item_factors: np.ndarray, rows: np.ndarray, counts: np.ndarray, params: ALSParams, block: int = 512
) -> np.ndarray:
    """[U, F] ALS factors of many users from their history (`rows` [U, M] catalog rows, -1
    pads; `counts` [U, M]), as ALS's user step solves them; the ranking graph does the same."""
    factors = np.asarray(item_factors, np.float64)
    gram = factors.T @ factors + params.regularization * np.eye(factors.shape[1])
    out = np.zeros((len(rows), factors.shape[1]))
    for start in range(0, len(rows), block):
        r, c = rows[start : start + block], counts[start : start + block]
        mask = (r >= 0) & (c > 0)
        y = factors[np.maximum(r, 0)] * mask[..., None]
        confidence = params.alpha * np.log1p(np.maximum(c, 0.0)) * mask
        a = gram[None] + np.einsum("bm,bmf,bmg->bfg", (confidence - 1.0) * mask, y, y)
        b = np.einsum("bm,bmf->bf", confidence, y)
        out[start : start + block] = np.linalg.solve(a, b[..., None])[..., 0]
    return out.astype(np.float32)
