"""Ranking: a deep & cross network scoring (user, candidate) pairs.

The scorer (`Ranker`) is plain Keras and is what ships; `RankingModel` only adds TFRS's `Ranking`
task for training. Besides user and item features, the scorer computes the user's own history
with each candidate (times bought, days since the last time) from the user's purchase history
lists, so "buy it again" is learnable: in retail a large share of next month's purchases are
re-purchases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from models.features import (
    ALS_RANK,
    ALS_SCORE,
    FAVOURITE_CATEGORY,
    HISTORY_COUNTS,
    HISTORY_ITEMS,
    HISTORY_LAST_DAY,
    ITEM_CATEGORY,
    ITEM_ID,
    QUERY_HISTORY_LEN,
    RECENT_ITEMS,
    REQUEST_DAY,
    RETRIEVAL_RANK,
)
from models.towers import PAD, NumericBlock, id_embedding


@dataclass(frozen=True)
class ItemFactors:
    """ALS item factors the ranker reads a collaborative signal from: each candidate's score for
    the user, the user folded in from the purchase history (`models.baselines.fold_in_rows`).

    Attributes:
        item_ids: [I] the catalog the factors index.
        factors: [I, F] float32.
        regularization / alpha: ALS's, which the fold-in needs.
    """

    item_ids: np.ndarray
    factors: np.ndarray
    regularization: float
    alpha: float


def als_signal(scores: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """[B, N] ALS scores of each user's candidates -> (score / the row's best, rank: how many
    candidates score higher; ties share a rank, so the candidates' order does not matter)."""
    best = tf.reduce_max(tf.abs(scores), axis=-1, keepdims=True)
    ascending = tf.sort(scores, axis=-1)
    higher = tf.shape(scores)[-1] - tf.searchsorted(ascending, scores, side="right")
    return scores / (best + 1e-6), tf.cast(higher, tf.float32)


def rank_in_row(scores: tf.Tensor) -> tf.Tensor:
    """[B, N] scores -> [B, N] 0-based positions in descending order (ties broken by index)."""
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
    return tf.cast(tf.argsort(order, axis=-1, stable=True), tf.float32)


def _padding(ids: tf.Tensor) -> tf.Tensor:
    """The padding id of string ids ("") or of `Ranker.id_codes` (0): the dtype's zero."""
    return tf.zeros_like(ids)


def history_features(inputs: dict[str, tf.Tensor]) -> tf.Tensor:
    """[R, 3]: log1p(times bought), log1p(days since last bought), bought before (0/1).

    Args:
        inputs: `item_id` [R]; `user_history__items` [R, M] string ("" padded) or their
            `Ranker.id_codes` (0 padded), `user_history__counts` [R, M],
            `user_history__last_day` [R, M] (days since the epoch); `request_day` [R] (days since
            the epoch of the moment the ranking is for).
    """
    match = tf.cast(
        tf.logical_and(
            tf.equal(inputs[HISTORY_ITEMS], inputs[ITEM_ID][:, None]),
            tf.not_equal(inputs[HISTORY_ITEMS], _padding(inputs[HISTORY_ITEMS])),
        ),
        tf.float32,
    )
    times = tf.reduce_sum(match * tf.cast(inputs[HISTORY_COUNTS], tf.float32), axis=-1)
    last = tf.reduce_max(match * tf.cast(inputs[HISTORY_LAST_DAY], tf.float32) - (1 - match) * 1e6, axis=-1)
    since = tf.where(times > 0, tf.cast(inputs[REQUEST_DAY], tf.float32) - last, tf.fill(tf.shape(times), 3650.0))
    return tf.stack([tf.math.log1p(times), tf.math.log1p(tf.maximum(since, 0.0)), tf.cast(times > 0, tf.float32)], -1)


def recent_features(inputs: dict[str, tf.Tensor]) -> tf.Tensor:
    """[R, 2]: whether the candidate is among the user's latest acted-on items (views too), and
    1 / (1 + its position there) (0 when absent). Retail buys what was just viewed; ratings-like
    media never comes back to a title already seen: the ranker learns which.

    Args:
        inputs: `item_id` [R]; `user_recent__last_10_items` [R, 10] (newest first; "" padded,
            or `Ranker.id_codes` 0 padded).
    """
    recent = inputs[RECENT_ITEMS]
    match = tf.cast(
        tf.logical_and(tf.equal(recent, inputs[ITEM_ID][:, None]), tf.not_equal(recent, _padding(recent))), tf.float32
    )
    closeness = 1.0 / (1.0 + tf.cast(tf.range(tf.shape(recent)[1]), tf.float32))
    return tf.stack([tf.reduce_max(match, -1), tf.reduce_max(match * closeness[None, :], -1)], -1)


def history_similarity(candidate: tf.Tensor, history: tf.Tensor, items: tf.Tensor, counts: tf.Tensor) -> tf.Tensor:
    """[R, 2]: count-weighted mean dot product and max cosine similarity of the candidate's
    embedding with the embeddings of the user's other history items (an item-to-item signal for
    items never bought; the cosine keeps the max from following embedding norms alone).

    Args:
        candidate: [R, D] candidate embeddings; history: [R, M, D] history item embeddings;
        items: [R, M] history ids ("" padded, or codes 0 padded); counts: [R, M] times bought.
    """
    dots = tf.einsum("rd,rmd->rm", candidate, history)
    cosines = tf.einsum("rd,rmd->rm", tf.math.l2_normalize(candidate, -1), tf.math.l2_normalize(history, -1))
    valid = tf.cast(tf.not_equal(items, _padding(items)), tf.float32)
    weights = valid * tf.math.log1p(tf.maximum(tf.cast(counts, tf.float32), 0.0))
    mean = tf.reduce_sum(dots * weights, -1) / (tf.reduce_sum(weights, -1) + 1e-6)
    best = tf.reduce_max(cosines * valid - (1.0 - valid) * 2.0, -1)
    best = tf.where(tf.reduce_sum(valid, -1) > 0, best, tf.zeros_like(best))
    return tf.stack([mean, best], -1)


class Ranker(tf.keras.Model):
    """Scores flat rows of (user, candidate) features; one logit per row.

    Inputs (dict, each [R] unless noted): `item_id`, `retrieval_rank` (0-based position in the
    user's retrieval list), with `collaborative` `als_score` and `als_rank` (see `als_signal`),
    `item_features__category`,
    `user_features__favourite_category`, the history lists (see `history_features`), the latest
    items (`user_recent__last_10_items`, see `recent_features`), and each
    name in `numeric`.
    `id_features`: whether the item id embedding goes to the MLP as well (it always feeds the
    candidate-to-history similarity). `layers`: the MLP's widths after the cross layer.
    `history_len`: how much of the history the candidate-to-history similarity reads.
    `item_categories`: item id -> category over the catalog (items the ranker has no embedding
    for included: a history bought after training still has its categories); given, the ranker
    also reads the user's affinity for the candidate's category (`category_affinity`).
    Training may pass `item_id`, `user_history__items` and `user_recent__last_10_items` as their
    `id_codes` instead of strings (the same scores, without hashing [R, M] strings every step).
    Output: [R] logits.
    """

    def __init__(
        self,
        items: Sequence[str],
        numeric: Sequence[str],
        layers: Sequence[int] = (128, 64),
        id_features: bool = True,
        collaborative: bool = False,
        history_len: int = QUERY_HISTORY_LEN,
        item_categories: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name="ranker")
        self.history_len = history_len
        self.id_features = id_features
        #: Whether rows carry `als_score` / `als_rank` (computed from `als`, set after training).
        self.collaborative = collaborative
        self.als: ItemFactors | None = None
        self.item_embedding = id_embedding(items, 16, "rank_item")
        self.item_embedding(tf.constant([PAD]))  # built now: `embed` of id codes bypasses its lookup
        named = {str(i): c for i, c in (item_categories or {}).items() if isinstance(c, str) and c}
        #: Whether the ranker reads `category_affinity` (some item has a category).
        self.by_category = bool(named)
        if named:
            catalog = sorted(named)
            self.category_lookup = tf.keras.layers.StringLookup(
                vocabulary=sorted(set(named.values())), mask_token=None, num_oov_indices=1, name="rank_category_lookup"
            )
            self.category_items = tf.keras.layers.StringLookup(
                vocabulary=catalog, mask_token=None, num_oov_indices=1, name="rank_category_items"
            )
            codes = self.category_lookup(tf.constant(["", *(named[i] for i in catalog)])).numpy()
            #: The category code (0: unknown) of each row of `category_items` (0: not in the catalog).
            self.item_category = tf.constant(codes, tf.int64)
            vocabulary = self.item_embedding.layers[0].get_vocabulary()
            #: The same for each row of the item lookup: what `id_codes` (training) map to.
            self.row_category = tf.constant(
                self.category_lookup(tf.constant([named.get(word, "") for word in vocabulary])).numpy(), tf.int64
            )
        self.numeric = NumericBlock(numeric, name="rank_numeric")
        self.cross = tfrs.layers.dcn.Cross(name="cross")
        self.mlp = tf.keras.Sequential(
            [tf.keras.layers.Dense(n, activation="relu") for n in layers] + [tf.keras.layers.Dense(1)],
            name="rank_mlp",
        )

    def id_codes(self, *ids: np.ndarray) -> list[np.ndarray]:
        """Arrays of item ids (any shapes, "" padded) -> int64 codes, equal exactly when the ids
        are (across all the arrays): the id's row of the item embedding (0 for "") when the
        vocabulary has it, else a code of its own past the table, which `embed` reads as the
        out-of-vocabulary row."""
        lookup = self.item_embedding.layers[0]
        if lookup.num_oov_indices != 1:
            raise ValueError("id codes need a single out-of-vocabulary row")
        vocabulary = lookup.get_vocabulary()
        index = {word: n for n, word in enumerate(vocabulary) if n > lookup.num_oov_indices}
        index[PAD] = 0
        flat = np.concatenate([np.asarray(a, dtype=object).ravel() for a in ids]).astype(str)
        distinct, inverse = np.unique(flat, return_inverse=True)
        known = np.array([index.get(word, -1) for word in distinct], np.int64)
        unknown = known < 0
        known[unknown] = len(vocabulary) + np.arange(unknown.sum())
        codes = known[inverse.ravel()]
        bounds = np.cumsum([0, *(np.size(a) for a in ids)])
        return [codes[a:b].reshape(np.shape(x)) for a, b, x in zip(bounds[:-1], bounds[1:], ids, strict=True)]

    def rows(self, ids: tf.Tensor) -> tf.Tensor:
        """Rows of the item lookup (0: "", `num_oov_indices`: unknown) of string ids or of their
        `id_codes`."""
        lookup = self.item_embedding.layers[0]
        if ids.dtype == tf.string:
            return lookup(ids)
        rows = lookup.vocabulary_size()
        return tf.where(ids < rows, ids, tf.ones_like(ids) * lookup.num_oov_indices)

    def embed(self, ids: tf.Tensor) -> tf.Tensor:
        """[..., 16] item embeddings of string ids or of their `id_codes`."""
        return self.item_embedding.layers[1](self.rows(ids))

    def category_affinity(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """[R, 2]: the count-weighted share of the user's history (items of known category) in
        the candidate's category, and log1p(history items) / 5, how much that share rests on.
        A taste for a genre reaches items nobody in the history bought with them."""
        history = inputs[HISTORY_ITEMS]
        valid = tf.cast(tf.not_equal(history, _padding(history)), tf.float32)
        if history.dtype == tf.string:  # the whole catalog's categories, items newer than the ranker too
            history_category = tf.gather(self.item_category, self.category_items(history))
        else:  # training's id codes: its histories hold only items the ranker knows
            history_category = tf.gather(self.row_category, self.rows(history))
        known = valid * tf.cast(history_category > 0, tf.float32)
        weights = known * tf.math.log1p(tf.maximum(tf.cast(inputs[HISTORY_COUNTS], tf.float32), 0.0))
        candidate = self.category_lookup(inputs[ITEM_CATEGORY])
        same = tf.logical_and(tf.equal(history_category, candidate[:, None]), candidate[:, None] > 0)
        match = tf.cast(same, tf.float32)
        share = tf.reduce_sum(weights * match, -1) / (tf.reduce_sum(weights, -1) + 1e-6)
        return tf.stack([share, tf.math.log1p(tf.reduce_sum(known, -1)) / 5.0], -1)

    def features(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        same_category = tf.cast(
            tf.logical_and(
                tf.equal(inputs[ITEM_CATEGORY], inputs[FAVOURITE_CATEGORY]),
                tf.not_equal(inputs[ITEM_CATEGORY], PAD),
            ),
            tf.float32,
        )[:, None]
        # The position in the retrieval list, not the raw score: the ranker is trained on one
        # retrieval model's candidates and serves another's, whose scores have another scale.
        rank = tf.math.log1p(tf.cast(inputs[RETRIEVAL_RANK], tf.float32))
        item = self.embed(inputs[ITEM_ID])
        history = inputs[HISTORY_ITEMS][:, : self.history_len]
        # Similarity to the rest of the history: the candidate itself, when bought before, is
        # masked out (the history features already say so).
        others = tf.where(tf.equal(history, inputs[ITEM_ID][:, None]), _padding(history), history)
        counts = inputs[HISTORY_COUNTS][:, : self.history_len]
        similarity = history_similarity(item, self.embed(others), others, counts)
        collaborative = []
        if self.collaborative:
            collaborative = [
                tf.cast(inputs[ALS_SCORE], tf.float32)[:, None],
                tf.math.log1p(tf.cast(inputs[ALS_RANK], tf.float32))[:, None] / 7.0,
            ]
        return tf.concat(
            [
                rank[:, None] / 7.0,
                *collaborative,
                history_features(inputs),
                recent_features(inputs),
                similarity,
                same_category,
                *([self.category_affinity(inputs)] if self.by_category else []),
                self.numeric(inputs),
            ]
            + ([item] if self.id_features else []),
            axis=-1,
        )

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.squeeze(self.mlp(self.cross(self.features(inputs))), -1)


class RankingModel(tfrs.models.Model):
    """Training wrapper: binary cross-entropy of the ranker's logits against `label`."""

    def __init__(self, ranker: Ranker) -> None:
        super().__init__()
        self.ranker = ranker
        self.task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc")],
        )

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        labels = features["label"]
        return self.task(labels=labels, predictions=self.ranker(features))
