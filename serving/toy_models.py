"""Tiny SavedModels with the same signatures as the exported `retrieval` and `ranking` models.

For tests and benchmarks of the model server and the gateway: plain TensorFlow (no TFRS, no
training), deterministic for a seed, and published the way the exporter publishes (written to a
`.tmp-*` folder, then renamed to the numeric version folder).

Signatures (`serving_default`):
    retrieval: `user_id: string[None]` -> `item_ids: string[None, k]`, `scores: float32[None, k]`
        (brute force: user embedding @ item embeddings, then top-k).
    ranking: `user_id: string[None]`, `candidate_ids: string[None, None]` -> `scores: float32[None, C]`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def item_ids(num_items: int) -> list[str]:
    """Catalog ids the toys use: `item-0`, `item-1`, ..."""
    return [f"item-{i}" for i in range(num_items)]


def _publish(module, signatures: dict, base_path: Path, version: int) -> Path:
    import tensorflow as tf

    base_path.mkdir(parents=True, exist_ok=True)
    tmp = base_path / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    final = base_path / str(version)
    tf.saved_model.save(module, str(tmp), signatures=signatures)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def save_retrieval(
    base_path: str | Path,
    version: int,
    *,
    num_items: int = 100,
    dim: int = 8,
    k: int = 10,
    num_users: int = 1000,
    seed: int = 0,
) -> Path:
    """Publish a brute-force retrieval toy as `<base_path>/<version>`.

    Args:
        base_path: the model's folder (`.../models/retrieval`).
        version: numeric version folder to publish.
        num_items: catalog size; ids are `item_ids(num_items)`.
        dim: embedding width.
        k: how many items each call returns.
        num_users: user ids are hashed into this many embedding rows.
        seed: makes the embeddings (and so the answers) differ between versions.

    Returns:
        The published version folder.
    """
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)

    class Retrieval(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.users = tf.Variable(rng.normal([num_users, dim]), trainable=False)
            self.items = tf.Variable(rng.normal([num_items, dim]), trainable=False)
            self.ids = tf.constant(item_ids(num_items))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def serve(self, user_id):
            rows = tf.strings.to_hash_bucket_fast(user_id, num_users)
            query = tf.gather(self.users, rows)
            scores, idx = tf.math.top_k(tf.matmul(query, self.items, transpose_b=True), k=k)
            return {"item_ids": tf.gather(self.ids, idx), "scores": scores}

    module = Retrieval()
    return _publish(module, {"serving_default": module.serve}, Path(base_path), version)


def save_ranking(
    base_path: str | Path,
    version: int,
    *,
    dim: int = 8,
    buckets: int = 10_000,
    num_users: int = 1000,
    seed: int = 0,
) -> Path:
    """Publish a ranking toy (user x candidate dot product through a small MLP) as `<base_path>/<version>`.

    Args:
        base_path: the model's folder (`.../models/ranking`).
        version: numeric version folder to publish.
        dim: embedding width.
        buckets: candidate ids are hashed into this many embedding rows.
        num_users: user ids are hashed into this many embedding rows.
        seed: makes versions answer differently.

    Returns:
        The published version folder.
    """
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)

    class Ranking(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.users = tf.Variable(rng.normal([num_users, dim]), trainable=False)
            self.items = tf.Variable(rng.normal([buckets, dim]), trainable=False)
            self.w = tf.Variable(rng.normal([2 * dim, 1]), trainable=False)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="user_id"),
                tf.TensorSpec([None, None], tf.string, name="candidate_ids"),
            ]
        )
        def serve(self, user_id, candidate_ids):
            user = tf.gather(self.users, tf.strings.to_hash_bucket_fast(user_id, num_users))
            items = tf.gather(self.items, tf.strings.to_hash_bucket_fast(candidate_ids, buckets))
            user = tf.broadcast_to(user[:, None, :], tf.shape(items))
            features = tf.concat([user * items, items], axis=-1)
            return {"scores": tf.squeeze(tf.tensordot(features, self.w, axes=1), -1)}

    module = Ranking()
    return _publish(module, {"serving_default": module.serve}, Path(base_path), version)
