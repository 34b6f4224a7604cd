"""Small Keras pieces the retrieval and ranking models are built from.

Every tower takes raw values (string ids, text, numbers) and does its own lookups, so a SavedModel
built from them accepts what the gateway has: ids and feature values, no preprocessing outside.
Import this module only with `TF_USE_LEGACY_KERAS=1` set (see `models.tf_env`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from models.features import (
    DAY_OF_WEEK,
    HISTORY_COUNTS,
    HISTORY_ITEMS,
    HOUR_OF_DAY,
    QUERY_HISTORY_LEN,
    RECENT_ITEMS,
    USER_ID,
)

PAD = ""  # padding of string lists (recent items, history)


def id_embedding(vocabulary: Sequence[str] | np.ndarray, dim: int, name: str, oov_buckets: int = 1) -> tf.keras.Model:
    """`StringLookup` -> `Embedding`; unknown ids share `oov_buckets` learned rows, "" is masked.

    Args:
        vocabulary: known ids (no duplicates, without "").
        dim: embedding size.
    Returns:
        A model mapping string ids of any shape [...] to [..., dim].
    """
    lookup = tf.keras.layers.StringLookup(
        vocabulary=list(vocabulary), mask_token=PAD, num_oov_indices=oov_buckets, name=f"{name}_lookup"
    )
    embed = tf.keras.layers.Embedding(lookup.vocabulary_size(), dim, name=f"{name}_embedding")
    return tf.keras.Sequential([lookup, embed], name=name)


def embed(model: tf.keras.Model, ids: tf.Tensor) -> tf.Tensor:
    """An `id_embedding` of string ids, or of their `lookup_indices` (integers: the lookup done
    once before training instead of hashing every batch's strings)."""
    if ids.dtype == tf.string:
        return model(ids)
    return model.layers[1](ids)


def lookup_indices(model: tf.keras.Model, values: np.ndarray | tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """String ids (an array, or distinct values and int codes into them) -> the int32 rows the
    `id_embedding`'s own lookup gives them ("" -> 0, unknown ids -> the out-of-vocabulary row)."""
    if isinstance(values, tuple):
        distinct, codes = values
    else:
        codes, distinct = pd.factorize(values.ravel(), use_na_sentinel=False)
        codes = codes.reshape(values.shape)
    rows = model.layers[0](tf.constant(np.asarray(distinct, dtype=object).astype(str))).numpy().astype(np.int32)
    return rows[codes]


class MaskedMean(tf.keras.layers.Layer):
    """Mean of embeddings over the non-padding positions of a list: [B, L, D] -> [B, D]. The ids
    are strings ("" pads) or `lookup_indices` (0 pads)."""

    def call(self, embeddings: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        mask = tf.cast(tf.not_equal(ids, tf.zeros_like(ids)), embeddings.dtype)[..., None]
        return tf.reduce_sum(embeddings * mask, axis=-2) / (tf.reduce_sum(mask, axis=-2) + 1e-6)


class NumericBlock(tf.keras.layers.Layer):
    """Named numeric features -> log1p of the magnitude (sign kept) -> normalized [B, F].

    Counts and prices are heavy-tailed; log1p then a mean/variance normalization learned from the
    training data (`adapt`) keeps them on one scale. Missing values (NaN) become 0 before that.
    """

    def __init__(self, names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = list(names)
        self.norm = tf.keras.layers.Normalization(axis=-1)

    def stack(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        columns = []
        for name in self.names:
            value = tf.cast(features[name], tf.float32)
            value = tf.where(tf.math.is_finite(value), value, tf.zeros_like(value))
            columns.append(tf.sign(value) * tf.math.log1p(tf.abs(value)))
        return tf.stack(columns, axis=-1)

    def adapt(self, features: dict[str, np.ndarray]) -> None:
        self.norm.adapt(self.stack({k: tf.constant(v) for k, v in features.items()}))

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        if not self.names:
            return tf.zeros([tf.shape(next(iter(features.values())))[0], 0])
        return self.norm(self.stack(features))

    def get_config(self) -> dict:
        return {**super().get_config(), "names": self.names}


class QueryTower(tf.keras.Model):
    """The user side: user id, the last items acted on, the items bought most over time, numeric
    user features, time context.

    The recent items make fresh events move the query without retraining; the purchase history
    carries long-term taste for users who have been away; an unknown user falls back to an OOV
    row plus whatever items and features it has.

    Inputs (dict): `user_id` [B] string, `user_recent__last_10_items` [B, L] string ("" padded),
    `user_history__items` [B, M] string and `user_history__counts` [B, M] (the first
    `history_len` are read), `hour_of_day` [B] int, `day_of_week` [B] int, and each name in
    `numeric` [B]. Training may pass the three id inputs as their `lookup_indices` in
    `user_embedding` and `recent_embedding` (the same embedding).
    Output: [B, dim].
    """

    def __init__(
        self,
        users: Sequence[str],
        items: Sequence[str],
        numeric: Sequence[str],
        dim: int = 64,
        history_len: int = QUERY_HISTORY_LEN,
    ) -> None:
        super().__init__(name="query_tower")
        self.history_len = history_len
        self.user_embedding = id_embedding(users, dim, "user")
        self.recent_embedding = id_embedding(items, dim, "recent_item")
        for lookup in (self.user_embedding, self.recent_embedding):  # built now: `embed` of indices skips the lookup
            lookup(tf.constant([PAD]))
        self.mean = MaskedMean()
        self.numeric = NumericBlock(numeric, name="user_numeric")
        self.hour = tf.keras.layers.Embedding(24, 4, name="hour")
        self.weekday = tf.keras.layers.Embedding(7, 4, name="weekday")
        self.out = tf.keras.Sequential(
            [tf.keras.layers.Dense(2 * dim, activation="relu"), tf.keras.layers.Dense(dim)], name="query_mlp"
        )

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        recent = inputs[RECENT_ITEMS]
        history = inputs[HISTORY_ITEMS][:, : self.history_len]
        weights = tf.math.log1p(tf.maximum(tf.cast(inputs[HISTORY_COUNTS][:, : self.history_len], tf.float32), 0.0))
        parts = [
            embed(self.user_embedding, inputs[USER_ID]),
            self.mean(embed(self.recent_embedding, recent), recent),
            self.mean(embed(self.recent_embedding, history) * weights[..., None], history),
            self.numeric(inputs),
            self.hour(tf.cast(inputs[HOUR_OF_DAY], tf.int32) % 24),
            self.weekday(tf.cast(inputs[DAY_OF_WEEK], tf.int32) % 7),
        ]
        return self.out(tf.concat(parts, axis=-1))


class CandidateTower(tf.keras.Model):
    """The item side: id, category, price bucket, description text and age.

    A new item's id is out of vocabulary, but its category, price and words are not, so it gets a
    meaningful embedding and can be retrieved before anyone has touched it.

    Inputs (dict): `item_id`, `category`, `description` [B] string; `price`, `age_days` [B] float.
    Output: [B, dim].
    """

    def __init__(
        self,
        items: Sequence[str] | np.ndarray,
        categories: Sequence[str],
        descriptions: Sequence[str] | np.ndarray,
        prices: np.ndarray,
        dim: int = 64,
        max_tokens: int = 5_000,
    ) -> None:
        super().__init__(name="candidate_tower")
        self.item_embedding = id_embedding(items, dim, "item")
        self.category_embedding = id_embedding(categories, 16, "category")
        edges: np.ndarray | list[float] = (
            np.unique(np.quantile(prices[np.isfinite(prices)], np.linspace(0, 1, 11)[1:-1])) if len(prices) else []
        )
        self.price_bucket = tf.keras.layers.Discretization(bin_boundaries=list(map(float, edges)))
        self.price_embedding = tf.keras.layers.Embedding(len(edges) + 1, 8, name="price_bucket")
        self.text = tf.keras.layers.TextVectorization(max_tokens=max_tokens, output_mode="tf_idf", name="words")
        self.text.adapt(tf.constant(list(descriptions) or [""]))
        self.text_dense = tf.keras.layers.Dense(32, name="text_dense")
        self.out = tf.keras.Sequential(
            [tf.keras.layers.Dense(2 * dim, activation="relu"), tf.keras.layers.Dense(dim)],
            name="candidate_mlp",
        )
        self.id_weight = tf.keras.layers.Dense(dim, use_bias=False, name="id_projection")

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        price = tf.cast(inputs["price"], tf.float32)
        age = tf.cast(inputs["age_days"], tf.float32)
        content = tf.concat(
            [
                self.category_embedding(inputs["category"]),
                self.price_embedding(self.price_bucket(tf.where(tf.math.is_finite(price), price, 0.0))),
                self.text_dense(self.text(inputs["description"])),
                tf.math.log1p(tf.maximum(tf.where(tf.math.is_finite(age), age, 0.0), 0.0))[:, None] / 5.0,
            ],
            axis=-1,
        )
        # Content alone produces a usable vector; the id adds what only interactions can tell.
        return self.out(content) + self.id_weight(self.item_embedding(inputs["item_id"]))
