"""Baselines scored in the same run as the model: most-popular, repeat-purchase, item-kNN and
implicit ALS. Each returns `[n_eval_users, k]` item indices (see `models.metrics`).

All take the training interactions as index arrays (`users`, `items`, `days_before_cutoff`,
`weights`) so they see exactly what the model saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from models.metrics import top_k


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


def popularity_scores(data: TrainInteractions, window_days: float = 30.0) -> np.ndarray:
    """[n_items] interaction weight in the last `window_days` before the cutoff."""
    recent = data.age_days < window_days
    return np.bincount(data.items[recent], weights=data.weights[recent], minlength=data.n_items)


def most_popular(
    data: TrainInteractions,
    eval_users: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    window_days: float = 30.0,
) -> np.ndarray:
    pop = popularity_scores(data, window_days).astype(np.float64)
    scores = np.tile(pop, (len(eval_users), 1))
    return top_k(scores, k, exclude[eval_users] if exclude is not None else None)


def repeat_purchase(data: TrainInteractions, eval_users: np.ndarray, k: int, window_days: float = 30.0) -> np.ndarray:
    """The user's own most frequent items (recent first on ties), padded with popular items."""
    own = data.matrix().tocsr()[eval_users].toarray()
    row_of = np.full(data.n_users, -1)
    row_of[eval_users] = np.arange(len(eval_users))
    mine = row_of[data.users] >= 0
    recency = np.zeros_like(own)
    np.maximum.at(recency, (row_of[data.users[mine]], data.items[mine]), 1.0 / (1.0 + data.age_days[mine]))
    pop = popularity_scores(data, window_days)
    pop = pop / (pop.max() + 1.0)
    # Own items first (count, then recency), then popular items ordered by popularity.
    scores = np.where(own > 0, 1e3 + own + recency, pop[None, :])
    return top_k(scores, k)


def item_knn(
    data: TrainInteractions,
    eval_users: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    neighbours: int = 100,
    shrink: float = 10.0,
) -> np.ndarray:
    """Item-based kNN: cosine similarity of items over users (binary), keep each item's top
    `neighbours`, score = sum of similarities to the user's items."""
    binary = (data.matrix() > 0).astype(np.float32).tocsc()
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel())
    co = (binary.T @ binary).tocsr().astype(np.float32)
    co.setdiag(0)
    co.eliminate_zeros()
    denom = np.outer(norms, norms)  # dense: fine up to ~20k items
    sim = co.toarray() / (denom + shrink)
    if neighbours < sim.shape[1]:
        cut = -np.partition(-sim, neighbours - 1, axis=1)[:, neighbours - 1 : neighbours]
        sim = np.where(sim >= cut, sim, 0.0)
    history = (data.matrix() > 0).astype(np.float32).tocsr()[eval_users]
    scores = np.asarray(history @ sim, dtype=np.float64)
    return top_k(scores, k, exclude[eval_users] if exclude is not None else None)


def implicit_als(
    data: TrainInteractions,
    eval_users: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    factors: int = 64,
    iterations: int = 15,
    regularization: float = 0.05,
    alpha: float = 20.0,
    seed: int = 42,
) -> np.ndarray:
    """Implicit-feedback ALS (Hu, Koren, Volinsky) from the `implicit` package."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=factors,
        iterations=iterations,
        regularization=regularization,
        alpha=alpha,
        random_state=seed,
        num_threads=1,  # one thread: deterministic for a seed
    )
    user_items = data.matrix().tocsr()
    user_items.data = np.log1p(user_items.data)
    model.fit(user_items, show_progress=False)
    scores = model.user_factors[eval_users] @ model.item_factors.T
    return top_k(np.asarray(scores, dtype=np.float64), k, exclude[eval_users] if exclude is not None else None)
