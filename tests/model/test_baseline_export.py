"""Servable baselines: each exported retrieval graph ranks items as its numpy reference does, and
the pass-through ranker keeps retrieval's order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.baselines import BASELINES, TrainInteractions, fit_baselines
from models.features import HISTORY_COUNTS, HISTORY_ITEMS, HISTORY_LAST_DAY, HISTORY_LEN, REQUEST_DAY, USER_ID
from testsupport.baselines import fold_in, history_first, knn_scores

N_USERS, N_ITEMS = 60, 40


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(3)
    # Two tastes: users 0..29 like items 0..19, users 30..59 items 20..39, with repeats.
    users, items = [], []
    for u in range(N_USERS):
        pool = np.arange(20) if u < 30 else np.arange(20, 40)
        for item in rng.choice(pool, 8):
            users.append(u)
            items.append(int(item))
    users, items = np.array(users), np.array(items)
    data = TrainInteractions(users, items, rng.uniform(0, 60, len(users)), np.ones(len(users)), N_USERS, N_ITEMS)
    return data, fit_baselines(data)


def _inputs(user: str, items: list[int], counts: list[float], last_day: list[float], day: float) -> dict:
    pad = HISTORY_LEN - len(items)
    return {
        USER_ID: np.array([user.encode()], dtype=object),
        HISTORY_ITEMS: np.array([[f"i{i}".encode() for i in items] + [b""] * pad], dtype=object),
        HISTORY_COUNTS: np.array([counts + [0.0] * pad], np.float32),
        HISTORY_LAST_DAY: np.array([last_day + [0.0] * pad], np.float32),
        REQUEST_DAY: np.array([day], np.float32),
    }


def _serve(module, inputs: dict) -> tuple[list[str], np.ndarray]:
    import tensorflow as tf

    out = module.serve({k: tf.constant(v) for k, v in inputs.items()})
    return [i.decode() for i in out["item_ids"].numpy()[0]], out["scores"].numpy()[0]


@pytest.mark.parametrize("name", BASELINES)
def test_an_exported_baseline_ranks_as_its_reference(fitted, name: str) -> None:
    from models.export import baseline_module

    data, fit = fitted
    item_ids = [f"i{i}" for i in range(N_ITEMS)]
    user_ids = [f"u{u}" for u in range(N_USERS)]
    module = baseline_module(name, fit, item_ids, user_ids, k=10)
    history, counts, last = [3, 7, 12], [2.0, 1.0, 5.0], [18_000.0, 18_010.0, 18_005.0]
    day = 18_020.0
    for user in ("u5", "stranger"):  # a training user, and one ALS must fold in
        ids, scores = _serve(module, _inputs(user, history, counts, last, day))
        pop = fit.popularity / (fit.popularity.max() + 1.0)
        if name in ("popular", "repeat_purchase"):
            base = pop.astype(np.float64)
        elif name == "item_knn":
            base = knn_scores(fit.neighbour_rows, fit.neighbour_weights, np.array(history), N_ITEMS)
        elif user == "u5":
            base = fit.user_factors[5] @ fit.item_factors.T
        else:
            base = fold_in(fit.item_factors, np.array(history), np.array(counts), fit.als) @ fit.item_factors.T
        base = base + pop * 1e-6
        if name in ("repeat_purchase", "repeat_als"):
            base = history_first(base, np.array(history), np.array(counts), day - np.array(last))
        expected = np.argsort(-base, kind="stable")[:10]
        assert ids[:3] == [item_ids[i] for i in expected[:3]], (name, user, ids, expected)
        assert np.all(np.diff(scores) <= 1e-6)
    if name in ("repeat_purchase", "repeat_als"):
        assert set(ids[:3]) == {"i3", "i7", "i12"} and ids[0] == "i12"  # bought most first


def test_als_serves_a_users_own_taste(fitted) -> None:
    from models.export import baseline_module

    _, fit = fitted
    module = baseline_module("als", fit, [f"i{i}" for i in range(N_ITEMS)], [f"u{u}" for u in range(N_USERS)], k=10)
    ids, _ = _serve(module, _inputs("stranger", [21, 25, 30], [1.0, 1.0, 2.0], [0.0] * 3, 1.0))
    assert sum(int(i[1:]) >= 20 for i in ids) >= 8, ids


def test_the_pass_through_ranker_keeps_retrievals_order(tmp_path: Path) -> None:
    from models.export import passthrough_module, save
    from scoring.local import SavedModelPair

    save(passthrough_module("als"), tmp_path / "ranking", {})
    pair = SavedModelPair({"ranking": tmp_path / "ranking"})
    assert set(pair.specs("ranking")) == {"item_id", "retrieval_score"}
    out = pair.predict(
        "ranking",
        {"item_id": np.array([[b"a", b"b"]], dtype=object), "retrieval_score": np.array([[0.5, 0.75]], np.float32)},
    )
    assert out["scores"].tolist() == [[0.5, 0.75]] and out["recommender"].tolist() == [b"als"]
