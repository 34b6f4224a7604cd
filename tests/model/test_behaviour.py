"""Model tests beyond shapes: minimum functionality, invariance and directional expectations,
run through the exported SavedModels (what serves)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.features import (
    HISTORY_COUNTS,
    HISTORY_ITEMS,
    HISTORY_LAST_DAY,
    ITEM_ID,
    REQUEST_DAY,
    RETRIEVAL_SCORE,
)

pytestmark = pytest.mark.training


def _signatures(trained):
    from scoring.local import SavedModelPair

    pair = SavedModelPair(trained.staged)
    return (pair, "retrieval"), (pair, "ranking")


def _query(world, users: list[str], recent: list[list[str]]) -> dict[str, np.ndarray]:
    from models.data import query_inputs

    frame = pd.DataFrame({"user_id": users, "user_recent__last_10_items": recent})
    return query_inputs(frame, pd.Timestamp(world.cutoff))


def _call(signature, inputs):
    pair, model = signature
    return pair.predict(model, inputs)


def _rank_inputs(world, query, candidates: np.ndarray, history: list[list[str]] | None = None, scores=None):
    n = len(query["user_id"])
    hist = np.full((n, 50), "", dtype=object)
    counts = np.zeros((n, 50), np.float32)
    last = np.zeros((n, 50), np.float32)
    for row, items in enumerate(history or []):
        hist[row, : len(items)] = items
        counts[row, : len(items)] = 1
        last[row, : len(items)] = pd.Timestamp(world.cutoff).timestamp() / 86_400 - 3
    index = world.catalog.index()
    rows = np.vectorize(index.get)(candidates)
    from models.features import FAVOURITE_CATEGORY, ITEM_CATEGORY, ITEM_NUMERIC

    return {
        **query,
        FAVOURITE_CATEGORY: np.full(n, "", dtype=object),
        HISTORY_ITEMS: hist,
        HISTORY_COUNTS: counts,
        HISTORY_LAST_DAY: last,
        REQUEST_DAY: np.full(n, pd.Timestamp(world.cutoff).timestamp() / 86_400, np.float32),
        ITEM_ID: candidates,
        RETRIEVAL_SCORE: scores if scores is not None else np.zeros(candidates.shape, np.float32),
        ITEM_CATEGORY: world.catalog.category[rows],
        **{name: np.zeros(candidates.shape, np.float32) for name in ITEM_NUMERIC},
    }


def _category_items(world, category: str, n: int) -> list[str]:
    bought = world.examples[world.examples["action"] == "purchase"]["item_id"].value_counts()
    members = [i for i, c in zip(world.catalog.item_ids, world.catalog.category, strict=True) if c == category]
    return sorted(members, key=lambda i: -bought.get(i, 0))[:n]


def test_a_one_category_buyer_gets_that_category(world, trained) -> None:
    retrieval, ranking = _signatures(trained)
    categories = pd.Series(world.catalog.category).value_counts()
    hits = []
    for category in categories.index[:4]:
        recent = _category_items(world, category, 10)
        query = _query(world, ["someone-new"], [recent])
        top = _call(retrieval, query)
        ids = top["item_ids"].astype(str)[0]
        ranked = _call(
            ranking, _rank_inputs(world, query, ids[None, :100].astype(object), [recent], top["scores"][:, :100])
        )["scores"][0]
        top10 = ids[:100][np.argsort(-ranked)[:10]]
        share = np.mean([world.catalog.category[world.catalog.index()[i]] == category for i in top10])
        hits.append(share)
    # On average at least half the top 10 come from the only category they bought; each category
    # well above its share of the catalog. A single category's share moves by a tenth between
    # optimizers and seeds on a world this small, so no one category carries the test.
    assert np.mean(hits) >= 0.5 and min(hits) >= 0.3, hits


def test_ranking_does_not_depend_on_candidate_order(world, trained) -> None:
    retrieval, ranking = _signatures(trained)
    query = _query(world, [world.examples["user_id"].iloc[0]], [list(world.catalog.item_ids[:3])])
    candidates = world.catalog.item_ids[:60].astype(object)[None, :]
    retrieval_scores = np.linspace(1.0, 0.0, 60, dtype=np.float32)[None, :]
    scores = _call(ranking, _rank_inputs(world, query, candidates, scores=retrieval_scores))["scores"][0]
    order = np.random.default_rng(0).permutation(60)
    shuffled = _call(ranking, _rank_inputs(world, query, candidates[:, order], scores=retrieval_scores[:, order]))[
        "scores"
    ][0]
    np.testing.assert_allclose(shuffled, scores[order], rtol=1e-5, atol=1e-5)


def test_a_users_results_do_not_depend_on_who_else_is_in_the_batch(world, trained) -> None:
    retrieval, _ = _signatures(trained)
    users = list(world.examples["user_id"].unique()[:5])
    recent = [list(world.catalog.item_ids[i : i + 4]) for i in range(5)]
    alone = _call(retrieval, _query(world, users[:1], recent[:1]))
    together = _call(retrieval, _query(world, users, recent))
    assert (alone["item_ids"][0] == together["item_ids"][0]).all()
    np.testing.assert_allclose(alone["scores"][0], together["scores"][0], rtol=1e-5, atol=1e-5)


def test_a_purchase_of_x_raises_xs_neighbours(world, trained) -> None:
    retrieval, _ = _signatures(trained)
    bought = world.examples[world.examples["action"] == "purchase"]
    baskets = bought.groupby("user_id")["item_id"].apply(set)
    x = bought["item_id"].value_counts().index[0]
    together = pd.Series([i for basket in baskets if x in basket for i in basket if i != x]).value_counts()
    neighbours = list(together.index[:10])
    others = [i for i in world.catalog.item_ids if i not in together.index][:30]

    def scores(recent: list[str]) -> dict[str, float]:
        out = _call(retrieval, _query(world, ["someone-new"], [recent]))
        return dict(zip(out["item_ids"].astype(str)[0], out["scores"][0], strict=True))

    start = [i for i in world.catalog.item_ids[::37] if i != x][:3]
    before, after = scores(start), scores([x, *start])
    lift = np.mean([after[i] - before[i] for i in neighbours]) - np.mean([after[i] - before[i] for i in others])
    assert lift > 0, lift
