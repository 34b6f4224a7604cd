"""Export in TF Serving's layout: what ships is only what serves.

- `retrieval`: the query tower plus the candidate tower's embeddings of the whole catalog (the
  brute-force index) inside the SavedModel; signature `serving_default`:
  user inputs -> `item_ids` [B, K], `scores` [B, K], `item_rows` int32 [B, K] (the items'
  positions in this version's catalog: the gateway remembers where each row's features are, so
  it need not look 1,000 ids up per request).
- `ranking`: the ranker; signature `serving_default`: user inputs [B] (and history lists
  [B, M]) + candidates `item_id` [B, N], `retrieval_score` [B, N] and item features [B, N] ->
  `scores` [B, N].

Input names are feature names (`models.features`), so the gateway binds them from the online
store by name. Loading needs neither TFRS nor `TF_USE_LEGACY_KERAS`.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from models.features import (
    DAY_OF_WEEK,
    FAVOURITE_CATEGORY,
    HISTORY_COUNTS,
    HISTORY_ITEMS,
    HISTORY_LAST_DAY,
    HISTORY_LEN,
    HOUR_OF_DAY,
    ITEM_CATEGORY,
    ITEM_ID,
    ITEM_NUMERIC,
    RECENT_ITEMS,
    RECENT_LEN,
    REQUEST_DAY,
    RETRIEVAL_RANK,
    RETRIEVAL_SCORE,
    USER_ID,
    USER_NUMERIC,
)
from models.tf_env import tensorflow
from models.topk import top_k

RETRIEVAL_K = 1000


def _user_specs(tf) -> dict[str, Any]:
    return {
        USER_ID: tf.TensorSpec([None], tf.string, name=USER_ID),
        **{name: tf.TensorSpec([None], tf.float32, name=name) for name in USER_NUMERIC},
    }


def retrieval_module(retrieval, at: datetime, k: int = RETRIEVAL_K):
    """A `tf.Module` answering top-k catalog items for user inputs.

    Args:
        retrieval: a trained `models.train.RetrievalModel`.
        at: the moment item ages are computed for (the export time).
        k: items returned per query (capped at the catalog size).
    """
    tf = tensorflow()
    embeddings = retrieval.candidate_embeddings(at)
    k = min(k, len(embeddings))
    specs = {
        **_user_specs(tf),
        RECENT_ITEMS: tf.TensorSpec([None, RECENT_LEN], tf.string, name=RECENT_ITEMS),
        HISTORY_ITEMS: tf.TensorSpec([None, HISTORY_LEN], tf.string, name=HISTORY_ITEMS),
        HISTORY_COUNTS: tf.TensorSpec([None, HISTORY_LEN], tf.float32, name=HISTORY_COUNTS),
        HOUR_OF_DAY: tf.TensorSpec([None], tf.int64, name=HOUR_OF_DAY),
        DAY_OF_WEEK: tf.TensorSpec([None], tf.int64, name=DAY_OF_WEEK),
    }

    ids = retrieval.catalog.item_ids.astype(str)
    boost = retrieval.history_candidates

    class Retrieval(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = retrieval.model.query
            # Stored [dim, items]: q @ E^T then reads E in memory order (Eigen's GEMV over a
            # transposed operand was ~20% slower at 100k x 64 on a 2-core VM).
            self.item_embeddings_t = tf.Variable(embeddings.T.copy(), trainable=False, name="item_embeddings_t")
            self.item_ids = tf.Variable(ids, trainable=False, name="item_ids")
            self.rows = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.range(len(ids), dtype=tf.int64)), -1
            )

        @tf.function(input_signature=[specs])
        def serve(self, inputs):
            scores = tf.matmul(self.query(inputs), self.item_embeddings_t)
            if boost:  # history items first, as models.train.boost_history
                history = self.rows.lookup(inputs[HISTORY_ITEMS])
                where = tf.where(history >= 0)
                at = tf.stack([where[:, 0], tf.gather_nd(history, where)], axis=1)
                hit = tf.scatter_nd(at, tf.ones([tf.shape(at)[0]]), tf.shape(scores, out_type=tf.int64)) > 0
                span = tf.reduce_max(scores, axis=1, keepdims=True) - tf.reduce_min(scores, axis=1, keepdims=True)
                scores = scores + tf.where(hit, span + 1.0, 0.0)
            values, indices = top_k(tf, scores, k)
            return {"item_ids": tf.gather(self.item_ids, indices), "scores": values, "item_rows": indices}

    return Retrieval()


def ranking_module(ranker):
    """A `tf.Module` scoring [B, N] candidates for B users with the ranker."""
    tf = tensorflow()
    from models.ranking import rank_in_row

    specs = {
        **_user_specs(tf),
        FAVOURITE_CATEGORY: tf.TensorSpec([None], tf.string, name=FAVOURITE_CATEGORY),
        HISTORY_ITEMS: tf.TensorSpec([None, HISTORY_LEN], tf.string, name=HISTORY_ITEMS),
        HISTORY_COUNTS: tf.TensorSpec([None, HISTORY_LEN], tf.float32, name=HISTORY_COUNTS),
        HISTORY_LAST_DAY: tf.TensorSpec([None, HISTORY_LEN], tf.float32, name=HISTORY_LAST_DAY),
        REQUEST_DAY: tf.TensorSpec([None], tf.float32, name=REQUEST_DAY),
        ITEM_ID: tf.TensorSpec([None, None], tf.string, name=ITEM_ID),
        RETRIEVAL_SCORE: tf.TensorSpec([None, None], tf.float32, name=RETRIEVAL_SCORE),
        ITEM_CATEGORY: tf.TensorSpec([None, None], tf.string, name=ITEM_CATEGORY),
        **{name: tf.TensorSpec([None, None], tf.float32, name=name) for name in ITEM_NUMERIC},
    }
    per_candidate = {ITEM_ID, RETRIEVAL_SCORE, ITEM_CATEGORY, *ITEM_NUMERIC}

    class Ranking(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ranker = ranker

        @tf.function(input_signature=[specs])
        def serve(self, inputs):
            shape = tf.shape(inputs[ITEM_ID])
            flat = {RETRIEVAL_RANK: tf.reshape(rank_in_row(inputs[RETRIEVAL_SCORE]), [-1])}
            for name, value in inputs.items():
                if name in per_candidate:
                    flat[name] = tf.reshape(value, [-1])
                else:  # one value (or list) per user: repeat it for each of its candidates
                    flat[name] = tf.repeat(value, shape[1], axis=0)
            return {"scores": tf.reshape(self.ranker(flat), shape)}

    return Ranking()


def save(module, target: Path, metadata: dict[str, Any]) -> Path:
    """Save `module` with its `serving_default` signature into `target` (replaced if present),
    plus `assets.extra/towerflow.json` with the run's metadata."""
    tf = tensorflow()
    if target.exists():
        shutil.rmtree(target)
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve})
    extra = target / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / "towerflow.json").write_text(json.dumps(metadata, indent=2, default=str))
    return target


def export(trained, staging: Path, at: datetime, metadata: dict[str, Any]) -> dict[str, Path]:
    """Write both models under `staging/<model>` (not yet published)."""
    return {
        "retrieval": save(retrieval_module(trained.retrieval, at), staging / "retrieval", metadata),
        "ranking": save(ranking_module(trained.ranker), staging / "ranking", metadata),
    }
