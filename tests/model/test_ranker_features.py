"""The ranker's derived features read what they say: the user's share of history in the
candidate's category, and whether (and how recently) the user acted on the candidate."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.features import HISTORY_COUNTS, HISTORY_ITEMS, ITEM_CATEGORY, ITEM_ID, RECENT_ITEMS
from models.ranking import Ranker, recent_features


def test_category_affinity_is_the_count_weighted_history_share_in_the_candidates_category() -> None:
    # "e" is in the catalog but newer than the ranker's items (no embedding): its category counts.
    categories = {"a": "drama", "b": "drama", "c": "comedy", "d": "", "e": "drama"}
    ranker = Ranker(["a", "b", "c", "d"], [], layers=(4,), item_categories=categories)
    # Row 0: a (3 times) and c (once), candidate in drama; row 1: only an unknown item and one of
    # no category; row 2: the candidate's category unknown to the ranker; row 3: "e" and c.
    history = np.array([["a", "c", ""], ["x", "d", ""], ["a", "b", "c"], ["e", "c", ""]], dtype=object)
    counts = np.array([[3.0, 1.0, 0.0], [2.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], np.float32)
    inputs = {
        HISTORY_ITEMS: tf.constant(history),
        HISTORY_COUNTS: tf.constant(counts),
        ITEM_CATEGORY: tf.constant(np.array(["drama", "drama", "horror", "drama"], dtype=object)),
    }
    share, amount = ranker.category_affinity(inputs).numpy().T
    assert share[0] == pytest.approx(np.log1p(3) / (np.log1p(3) + np.log1p(1)), rel=1e-5)
    assert share[1] == 0.0 and amount[1] == 0.0  # nothing of known category to go on
    assert share[2] == pytest.approx(0.0, abs=1e-6)
    assert share[3] == pytest.approx(0.5, rel=1e-5)
    np.testing.assert_allclose(amount[[0, 2, 3]], np.log1p([2, 3, 2]) / 5.0, rtol=1e-6)


def test_a_ranker_without_categories_leaves_the_affinity_out() -> None:
    assert Ranker(["a", "b"], [], layers=(4,), item_categories={"a": "k", "b": "m"}).by_category
    assert not Ranker(["a", "b"], [], layers=(4,)).by_category
    assert not Ranker(["a", "b"], [], layers=(4,), item_categories={"a": "", "b": ""}).by_category


def test_recent_features_mark_the_candidate_and_its_position_among_the_latest_items() -> None:
    inputs = {
        ITEM_ID: tf.constant(np.array(["b", "z", ""], dtype=object)),
        RECENT_ITEMS: tf.constant(np.array([["a", "b", "c"], ["a", "b", "c"], ["", "", ""]], dtype=object)),
    }
    np.testing.assert_allclose(recent_features(inputs).numpy(), [[1.0, 0.5], [0.0, 0.0], [0.0, 0.0]])
