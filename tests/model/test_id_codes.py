"""The ranker and the query tower give the same outputs whether ids come as strings (serving) or
as the integer codes training batches carry (`Ranker.id_codes`, `towers.lookup_indices`),
out-of-vocabulary ids and padding included."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.features import (
    FAVOURITE_CATEGORY,
    HISTORY_COUNTS,
    HISTORY_ITEMS,
    HISTORY_LAST_DAY,
    ITEM_CATEGORY,
    ITEM_ID,
    RECENT_ITEMS,
    REQUEST_DAY,
    RETRIEVAL_RANK,
)
from models.ranking import Ranker
from models.towers import QueryTower, lookup_indices


def test_id_codes_score_as_strings_do() -> None:
    tf.keras.utils.set_random_seed(3)
    ranker = Ranker(
        ["a", "b", "c", "d"],
        ["price"],
        layers=(8,),
        id_features=True,
        history_len=3,
        item_categories={"a": "k", "b": "m", "c": "k", "d": ""},
    )
    # Known ids, unknown ones ("x", "y" share the out-of-vocabulary row but are not equal), padding;
    # candidates bought before ("a" in row 0, "x" in row 2) and not.
    history = np.array([["a", "b", "", ""], ["x", "y", "c", ""], ["x", "d", "a", "b"]], dtype=object)
    candidates = np.array(["a", "y", "x"], dtype=object)
    recent = np.array([["b", "a", ""], ["y", "", ""], ["c", "z", "x"]], dtype=object)
    rows = len(candidates)
    inputs = {
        ITEM_ID: candidates,
        HISTORY_ITEMS: history,
        RECENT_ITEMS: recent,
        HISTORY_COUNTS: np.arange(12, dtype=np.float32).reshape(rows, 4) + 1,
        HISTORY_LAST_DAY: np.full((rows, 4), 100.0, np.float32),
        REQUEST_DAY: np.full(rows, 110.0, np.float32),
        RETRIEVAL_RANK: np.arange(rows, dtype=np.float32),
        ITEM_CATEGORY: np.array(["k", "k", "m"], dtype=object),
        FAVOURITE_CATEGORY: np.array(["k", "m", "m"], dtype=object),
        "price": np.array([1.0, 2.0, 3.0], np.float32),
    }
    history_codes, recent_codes, candidate_codes = ranker.id_codes(history, recent, candidates)
    assert history_codes.shape == history.shape and history_codes.dtype == np.int64
    assert (history_codes == 0).sum() == 3  # the padding
    assert history_codes[1, 0] != history_codes[1, 1] == candidate_codes[1]  # "x" != "y" == "y"
    as_strings = ranker({k: tf.constant(v) for k, v in inputs.items()}).numpy()
    assert recent_codes[1, 0] == candidate_codes[1] and recent_codes[2, 2] == candidate_codes[2]
    coded = {**inputs, HISTORY_ITEMS: history_codes, RECENT_ITEMS: recent_codes, ITEM_ID: candidate_codes}
    np.testing.assert_allclose(ranker({k: tf.constant(v) for k, v in coded.items()}).numpy(), as_strings, rtol=1e-6)
    strings = ranker.features({k: tf.constant(v) for k, v in inputs.items()}).numpy()
    codes = ranker.features({k: tf.constant(v) for k, v in coded.items()}).numpy()
    np.testing.assert_allclose(codes, strings, rtol=1e-6)


def test_lookup_indices_embed_as_strings_do() -> None:
    tf.keras.utils.set_random_seed(4)
    tower = QueryTower(["u1", "u2"], ["a", "b", "c"], ["n"], dim=8, history_len=3)
    users = np.array(["u2", "u9", "u1"], dtype=object)  # u9: unknown
    recent = np.array([["a", "", ""], ["x", "b", ""], ["", "", ""]], dtype=object)
    history = np.array([["c", "a", "y", ""], ["", "", "", ""], ["b", "b", "x", "a"]], dtype=object)
    inputs = {
        "user_id": users,
        RECENT_ITEMS: recent,
        HISTORY_ITEMS: history,
        HISTORY_COUNTS: np.arange(12, dtype=np.float32).reshape(3, 4),
        "hour_of_day": np.array([1, 2, 3]),
        "day_of_week": np.array([0, 5, 6]),
        "n": np.array([0.5, 1.0, 2.0], np.float32),
    }
    distinct, codes = np.unique(history.astype(str), return_inverse=True)
    indexed = {
        **inputs,
        "user_id": lookup_indices(tower.user_embedding, users),
        RECENT_ITEMS: lookup_indices(tower.recent_embedding, recent),
        HISTORY_ITEMS: lookup_indices(tower.recent_embedding, (distinct.astype(object), codes.reshape(3, 4))),
    }
    assert indexed[RECENT_ITEMS].dtype == np.int32 and (indexed[RECENT_ITEMS] == 0).sum() == 6
    as_strings = tower({k: tf.constant(v) for k, v in inputs.items()}).numpy()
    np.testing.assert_allclose(tower({k: tf.constant(v) for k, v in indexed.items()}).numpy(), as_strings, rtol=1e-6)
