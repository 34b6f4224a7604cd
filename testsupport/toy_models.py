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


# ------------------------------------------------------------------------------------------------
# Toys that follow the gateway's model contract: inputs named after features (see scoring/binding.py).

CONTRACT_RETRIEVAL_INPUTS = {
    "user_id": ("string", [None]),
    "user_recent__last_10_items": ("string", [None, 10]),
    "user_features__views_7d": ("float32", [None]),
    "hour_of_day": ("int64", [None]),
}
CONTRACT_RANKING_INPUTS = {
    "user_id": ("string", [None]),
    "item_id": ("string", [None, None]),
    "retrieval_score": ("float32", [None, None]),
    "user_features__purchases_30d": ("int64", [None]),
    "item_features__popularity": ("float32", [None, None]),
    "item_features__age_days": ("float64", [None, None]),
    "item_features__category": ("string", [None, None]),
    "day_of_week": ("int64", [None]),
}


def _specs(inputs: dict) -> list:
    import tensorflow as tf

    return [tf.TensorSpec(shape, getattr(tf, dtype), name=name) for name, (dtype, shape) in inputs.items()]


def save_contract_retrieval(
    base_path: str | Path,
    version: int,
    catalog: list[str],
    *,
    dim: int = 16,
    k: int = 1000,
    num_users: int = 1000,
    seed: int = 0,
    item_embeddings=None,
) -> Path:
    """Publish a retrieval toy with the contract's signature as `<base_path>/<version>`.

    Inputs: `user_id` [B], `user_recent__last_10_items` [B, 10] (""-padded),
    `user_features__views_7d` float32 [B], `hour_of_day` int64 [B]. Outputs: `item_ids` string
    [B, K], `scores` float32 [B, K] and `item_rows` int32 [B, K] (positions in `catalog`),
    K = min(k, len(catalog)). The query is the user's
    embedding nudged towards the items they acted on (so recent items change the answer).

    Args:
        base_path: the model's folder (`.../models/retrieval`).
        version: numeric version folder.
        catalog: the item ids it retrieves from.
        dim: embedding width.
        k: items per answer.
        num_users: user ids are hashed into this many rows.
        seed: makes versions answer differently.
        item_embeddings: float32 [len(catalog), dim] to use instead of random ones (benchmarks
            compare against a numpy top-k over the same matrix).
    """
    import tensorflow as tf

    from models.topk import top_k

    rng = tf.random.Generator.from_seed(seed)
    top = min(k, len(catalog))
    n_items = len(catalog)

    class Retrieval(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.users = tf.Variable(rng.normal([num_users, dim]), trainable=False)
            items = rng.normal([n_items, dim]) if item_embeddings is None else tf.constant(item_embeddings)
            self.items_t = tf.Variable(tf.transpose(items), trainable=False)  # [dim, items], as the exporter
            self.ids = tf.constant(catalog)
            self.lookup = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(self.ids, tf.range(n_items, dtype=tf.int64)), -1
            )

        @tf.function(input_signature=_specs(CONTRACT_RETRIEVAL_INPUTS))
        def serve(self, user_id, user_recent__last_10_items, user_features__views_7d, hour_of_day):
            query = tf.gather(self.users, tf.strings.to_hash_bucket_fast(user_id, num_users))
            # One dense read for both uses: a gather straight from the variable would switch it to
            # copy-on-read, and every call would then copy the whole item matrix for the matmul.
            items_t = tf.convert_to_tensor(self.items_t)
            rows = self.lookup.lookup(user_recent__last_10_items)
            known = tf.cast(rows >= 0, tf.float32)[..., None]
            acted = tf.transpose(tf.gather(items_t, tf.maximum(rows, 0), axis=1), [1, 2, 0])  # [B, 10, dim]
            recent = tf.reduce_sum(acted * known, axis=1)
            scale = 1.0 + 0.0 * (user_features__views_7d[:, None] + tf.cast(hour_of_day, tf.float32)[:, None])
            query = (query + 0.3 * recent) * scale
            # The exporter's exact top-k (models/topk.py), so benchmarks time what ships.
            scores, idx = top_k(tf, tf.matmul(query, items_t), top)
            return {"item_ids": tf.gather(self.ids, idx), "scores": scores, "item_rows": idx}

    module = Retrieval()
    return _publish(module, {"serving_default": module.serve}, Path(base_path), version)


def save_contract_ranking(
    base_path: str | Path,
    version: int,
    *,
    dim: int = 16,
    buckets: int = 10_000,
    num_users: int = 1000,
    seed: int = 0,
) -> Path:
    """Publish a ranking toy with the contract's signature as `<base_path>/<version>`.

    Inputs: `user_id` [B], `item_id` [B, N], `retrieval_score` float32 [B, N],
    `user_features__purchases_30d` int64 [B], `item_features__popularity` float32 [B, N],
    `item_features__age_days` float64 [B, N], `item_features__category` string [B, N],
    `day_of_week` int64 [B]. Output: `scores` float32 [B, N] (a user x item dot product plus
    small feature terms).
    """
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)

    class Ranking(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.users = tf.Variable(rng.normal([num_users, dim]), trainable=False)
            self.items = tf.Variable(rng.normal([buckets, dim]), trainable=False)
            self.categories = tf.Variable(rng.normal([64]), trainable=False)

        @tf.function(input_signature=_specs(CONTRACT_RANKING_INPUTS))
        def serve(
            self,
            user_id,
            item_id,
            retrieval_score,
            user_features__purchases_30d,
            item_features__popularity,
            item_features__age_days,
            item_features__category,
            day_of_week,
        ):
            user = tf.gather(self.users, tf.strings.to_hash_bucket_fast(user_id, num_users))
            items = tf.gather(self.items, tf.strings.to_hash_bucket_fast(item_id, buckets))
            dot = tf.reduce_sum(user[:, None, :] * items, axis=-1)
            category = tf.gather(self.categories, tf.strings.to_hash_bucket_fast(item_features__category, 64))
            extra = (
                0.1 * retrieval_score
                + 0.001 * item_features__popularity
                - 0.0001 * tf.cast(item_features__age_days, tf.float32)
                + 0.1 * category
                + 0.0 * tf.cast(user_features__purchases_30d + day_of_week, tf.float32)[:, None]
            )
            return {"scores": dot + extra}

    module = Ranking()
    return _publish(module, {"serving_default": module.serve}, Path(base_path), version)


def publish_contract_pair(
    model_base: str | Path,
    catalog: list[str],
    *,
    version: int = 1,
    dim: int = 16,
    k: int = 1000,
    seed: int = 0,
) -> None:
    """Publish `retrieval` and `ranking` toys under `model_base` with a models.config labelling
    `version` as `stable` (the layout `towerflow model-server` and the gateway expect)."""
    from towerflow import model_config as mc

    base = Path(model_base)
    save_contract_retrieval(base / "retrieval", version, catalog, dim=dim, k=k, seed=seed)
    save_contract_ranking(base / "ranking", version, dim=dim, seed=seed)
    entries = [mc.ModelEntry.under(base, name, labels={"stable": version}) for name in ("retrieval", "ranking")]
    mc.write_models_config(base / "models.config", entries)
