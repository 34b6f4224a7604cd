"""Top-K metrics and baselines against hand-computed values on tiny data."""

import numpy as np
import pytest
import scipy.sparse as sp

from models.baselines import TrainInteractions, item_neighbours, popularity_scores
from models.metrics import recall_curve, top_k, topk_metrics
from testsupport.baselines import history_first, knn_scores


def _truth(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    u = [i for i, items in enumerate(rows) for _ in items]
    v = [j for items in rows for j in items]
    return sp.csr_matrix((np.ones(len(u)), (u, v)), shape=(len(rows), n_items))


def test_recall_ndcg_mrr_by_hand() -> None:
    recs = np.array([[0, 1, 2, 3], [3, 2, -1, -1]])
    truth = _truth([[1, 5], [4]], 6)
    m = topk_metrics(recs, truth, n_catalog=6, ks=(1, 2, 4))
    assert m["recall@1"] == 0.0
    assert m["recall@2"] == pytest.approx((0.5 + 0) / 2)
    assert m["recall@4"] == pytest.approx(0.25)
    assert m["mrr"] == pytest.approx((1 / 2 + 0) / 2)
    ideal_first = 1 + 1 / np.log2(3)
    assert m["ndcg@10"] == pytest.approx((1 / np.log2(3) / ideal_first + 0) / 2)
    assert m["coverage@10"] == pytest.approx(4 / 6)


def test_users_without_truth_are_left_out() -> None:
    recs = np.array([[0, 1], [1, 0]])
    truth = _truth([[0], []], 2)
    assert topk_metrics(recs, truth, 2, ks=(1,))["recall@1"] == 1.0
    assert recall_curve(recs, truth).tolist() == [1.0, 1.0]


def test_top_k_orders_and_excludes() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7]])
    assert top_k(scores.copy(), 3).tolist() == [[1, 3, 2]]
    exclude = sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 4))
    assert top_k(scores.copy(), 3, exclude).tolist() == [[3, 2, 0]]
    assert top_k(np.array([[0.1, -np.inf]]), 2).tolist() == [[0, -1]]


@pytest.fixture
def history() -> TrainInteractions:
    # user 0 bought item 2 three times and item 0 once; user 1 bought items 0 and 1; item 3 only long ago.
    users = np.array([0, 0, 0, 0, 1, 1, 2])
    items = np.array([2, 2, 2, 0, 0, 1, 3])
    age = np.array([1.0, 2.0, 3.0, 10.0, 1.0, 1.0, 90.0])
    return TrainInteractions(users, items, age, np.ones(7), n_users=3, n_items=4)


def test_popularity_counts_the_recent_window_only(history: TrainInteractions) -> None:
    order = np.argsort(-popularity_scores(history, window_days=30), kind="stable")
    assert order[0] == 2 and order[-1] == 3  # item 3 was only bought 90 days ago


def test_history_first_puts_own_items_first_by_count_then_recency() -> None:
    scores, own = np.array([0.9, 0.1, 0.5, 0.7]), np.array([2, 0])

    def order(counts: list[float], days_since: list[float]) -> list[int]:
        return np.argsort(-history_first(scores, own, np.array(counts), np.array(days_since))).tolist()

    assert order([1.0, 3.0], [1.0, 9.0]) == [0, 2, 3, 1]  # own items by count, then the rest by score
    assert order([2.0, 2.0], [1.0, 9.0]) == [2, 0, 3, 1]  # same count: the more recent first


def test_item_neighbours_score_co_bought_items(history: TrainInteractions) -> None:
    # user 1 bought 0 and 1; user 0 bought 0 and 2 -> for someone who bought 1, item 0 is closest,
    # and for the basket {0, 1} the best item not in it is 2.
    rows, weights = item_neighbours(history)
    assert rows[1, 0] == 0
    scores = knn_scores(rows, weights, np.array([0, 1]), history.n_items)
    scores[[0, 1]] = -np.inf
    assert int(np.argmax(scores)) == 2


def test_per_user_values_average_to_the_metrics() -> None:
    from models.metrics import per_user

    recs = np.array([[0, 1, 2, 3], [3, 2, -1, -1], [5, 4, 0, 1]])
    truth = _truth([[1, 5], [], [4]], 6)
    values = per_user(recs, truth, ks=(2,))
    assert values["recall@2"].tolist() == [0.5, 1.0]  # the user without truth is left out
    assert topk_metrics(recs, truth, 6, ks=(2,))["recall@2"] == pytest.approx(0.75)


def test_bootstrap_intervals_cover_the_mean_and_pair_users() -> None:
    from models.metrics import interval

    rng = np.random.default_rng(0)
    a = rng.binomial(1, 0.3, 2000).astype(float)
    low, high = interval(a)
    assert low < a.mean() < high and high - low < 0.06
    # Paired: b is a with a few more hits; the difference's interval excludes 0 although the two
    # marginal intervals overlap.
    b = a.copy()
    b[rng.choice(np.flatnonzero(a == 0), 40, replace=False)] = 1.0
    d_low, d_high = interval(b - a)
    assert 0 < d_low < 0.02 < d_high
    assert interval(b)[0] < high
    assert interval(a) == interval(a)  # seeded: the same draws every time
