"""Export in TF Serving's layout: what ships is only what serves.

- `retrieval`: the query tower plus the candidate tower's embeddings of the whole catalog (the
  brute-force index) inside the SavedModel; signature `serving_default`:
  user inputs -> `item_ids` [B, K], `scores` [B, K], `item_rows` int32 [B, K] (the items'
  positions in this version's catalog: the gateway remembers where each row's features are, so
  it need not look 1,000 ids up per request).
- `ranking`: the ranker; signature `serving_default`: user inputs [B] (and history lists
  [B, M]) + candidates `item_id` [B, N], `retrieval_score` [B, N] and item features [B, N] ->
  `scores` [B, N], `recommender` [B] (what the pair is: `two_stage`).
- a baseline (`baseline_module`, see `models.baselines`) is a retrieval model with the same
  outputs, paired with a pass-through ranker (`passthrough_module`: `scores` = `retrieval_score`,
  `recommender` = the baseline's name); so is the two-tower alone (`retrieval`) when its ranker
  does not beat it.

Input names are feature names (`models.features`), so the gateway binds them from the online
store by name. Loading needs neither TFRS nor `TF_USE_LEGACY_KERAS`.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.features import (
    ALS_RANK,
    ALS_SCORE,
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
#: The ranking signature's output naming what the pair serves.
RECOMMENDER = "recommender"
TWO_STAGE = "two_stage"


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

    class Retrieval(tf.Module):  # type: ignore[name-defined]  # tf is imported lazily (untyped)
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
    """A `tf.Module` scoring [B, N] candidates for B users with the ranker (and, for a
    collaborative ranker, the ALS signal it reads, computed here from its `als` factors)."""
    tf = tensorflow()
    from models.ranking import als_signal, rank_in_row

    specs = {
        **_user_specs(tf),
        FAVOURITE_CATEGORY: tf.TensorSpec([None], tf.string, name=FAVOURITE_CATEGORY),
        HISTORY_ITEMS: tf.TensorSpec([None, HISTORY_LEN], tf.string, name=HISTORY_ITEMS),
        HISTORY_COUNTS: tf.TensorSpec([None, HISTORY_LEN], tf.float32, name=HISTORY_COUNTS),
        HISTORY_LAST_DAY: tf.TensorSpec([None, HISTORY_LEN], tf.float32, name=HISTORY_LAST_DAY),
        RECENT_ITEMS: tf.TensorSpec([None, RECENT_LEN], tf.string, name=RECENT_ITEMS),
        REQUEST_DAY: tf.TensorSpec([None], tf.float32, name=REQUEST_DAY),
        ITEM_ID: tf.TensorSpec([None, None], tf.string, name=ITEM_ID),
        RETRIEVAL_SCORE: tf.TensorSpec([None, None], tf.float32, name=RETRIEVAL_SCORE),
        ITEM_CATEGORY: tf.TensorSpec([None, None], tf.string, name=ITEM_CATEGORY),
        **{name: tf.TensorSpec([None, None], tf.float32, name=name) for name in ITEM_NUMERIC},
    }
    per_candidate = {ITEM_ID, RETRIEVAL_SCORE, ITEM_CATEGORY, *ITEM_NUMERIC}
    als = ranker.als if ranker.collaborative else None
    if ranker.collaborative and als is None:
        raise ValueError("a collaborative ranker needs its ALS factors (Ranker.als) to be exported")

    class Ranking(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ranker = ranker
            if als is not None:
                self.als = _fold_in(tf, als.item_ids, als.factors, als.regularization, als.alpha)

        @tf.function(input_signature=[specs])
        def serve(self, inputs):
            shape = tf.shape(inputs[ITEM_ID])
            flat = {RETRIEVAL_RANK: tf.reshape(rank_in_row(inputs[RETRIEVAL_SCORE]), [-1])}
            if als is not None:
                users = self.als.users(inputs[HISTORY_ITEMS], inputs[HISTORY_COUNTS])
                score, rank = als_signal(self.als.scores(users, inputs[ITEM_ID]))
                flat[ALS_SCORE], flat[ALS_RANK] = tf.reshape(score, [-1]), tf.reshape(rank, [-1])
            for name, value in inputs.items():
                if name in per_candidate:
                    flat[name] = tf.reshape(value, [-1])
                else:  # one value (or list) per user: repeat it for each of its candidates
                    flat[name] = tf.repeat(value, shape[1], axis=0)
            scores = tf.reshape(self.ranker(flat), shape)
            return {"scores": scores, RECOMMENDER: tf.fill([shape[0]], TWO_STAGE)}

    return Ranking()


def _fold_in(tf, item_ids, factors, regularization: float, alpha: float):
    """A `tf.Module` computing ALS in a graph: users folded in from their history
    (`models.baselines.fold_in_rows`) and their scores for any items; unknown items get a zero
    factor (score 0)."""
    ids = np.asarray(item_ids).astype(str)
    factors = np.asarray(factors, np.float32)
    gram = factors.T.astype(np.float64) @ factors.astype(np.float64)
    gram = (gram + regularization * np.eye(gram.shape[0])).astype(np.float32)
    unknown = len(ids)

    class FoldIn(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="als")
            self.rows = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.range(unknown, dtype=tf.int64)), unknown
            )
            self.factors = tf.constant(np.concatenate([factors, np.zeros((1, factors.shape[1]), np.float32)]))
            self.gram = tf.constant(gram)

        def users(self, history, counts):
            """[B, F] from history ids [B, M] ("" padded) and counts [B, M]."""
            rows = self.rows.lookup(history)
            mask = tf.cast(tf.logical_and(rows < unknown, counts > 0), tf.float32)
            y = tf.gather(self.factors, rows) * mask[..., None]
            confidence = alpha * tf.math.log1p(tf.maximum(counts, 0.0)) * mask
            a = self.gram[None] + tf.einsum("bm,bmf,bmg->bfg", (confidence - 1.0) * mask, y, y)
            b = tf.einsum("bm,bmf->bf", confidence, y)
            return tf.linalg.solve(a, b[..., None])[..., 0]

        def scores(self, users, items):
            """[B, N] scores of item ids [B, N] for users [B, F]."""
            return tf.einsum("bf,bnf->bn", users, tf.gather(self.factors, self.rows.lookup(items)))

    return FoldIn()


def passthrough_module(recommender: str):
    """A ranking `tf.Module` that keeps retrieval's order: `scores` = `retrieval_score`.

    It completes a pair whose retrieval list is served as it is (a baseline, or the two-tower
    when its ranker does not beat it); `recommender` names what serves.
    """
    tf = tensorflow()
    specs = {
        ITEM_ID: tf.TensorSpec([None, None], tf.string, name=ITEM_ID),
        RETRIEVAL_SCORE: tf.TensorSpec([None, None], tf.float32, name=RETRIEVAL_SCORE),
    }

    class PassThrough(tf.Module):  # type: ignore[name-defined]  # tf is imported lazily (untyped)
        @tf.function(input_signature=[specs])
        def serve(self, inputs):
            scores = inputs[RETRIEVAL_SCORE]
            return {"scores": tf.identity(scores), RECOMMENDER: tf.fill([tf.shape(scores)[0]], recommender)}

    return PassThrough()


def baseline_module(name: str, fitted, item_ids, user_ids, k: int = RETRIEVAL_K):
    """A retrieval `tf.Module` serving baseline `name` (`models.baselines.BASELINES`).

    Inputs: `user_id` [B], the purchase history `user_history__items` / `__counts` /
    `__last_day` [B, M] and `request_day` [B]. Outputs as the two-tower's: `item_ids`, `scores`,
    `item_rows` [B, K].

    Args:
        fitted: `models.baselines.FittedBaselines` over `item_ids` (and `user_ids` for ALS).
        item_ids: the catalog, in the fitted arrays' item order.
        user_ids: the training users, in the ALS user factors' row order.
    """
    tf = tensorflow()
    from models.baselines import BASELINES, HISTORY_FIRST

    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    base = HISTORY_FIRST.get(name, name)
    ids = np.asarray(item_ids).astype(str)
    k = min(k, len(ids))
    specs = {
        USER_ID: tf.TensorSpec([None], tf.string, name=USER_ID),
        HISTORY_ITEMS: tf.TensorSpec([None, HISTORY_LEN], tf.string, name=HISTORY_ITEMS),
        HISTORY_COUNTS: tf.TensorSpec([None, HISTORY_LEN], tf.float32, name=HISTORY_COUNTS),
        HISTORY_LAST_DAY: tf.TensorSpec([None, HISTORY_LEN], tf.float32, name=HISTORY_LAST_DAY),
        REQUEST_DAY: tf.TensorSpec([None], tf.float32, name=REQUEST_DAY),
    }
    popularity = np.asarray(fitted.popularity, np.float64)
    # Ties (and users with nothing to go on) fall back to popularity, below any real signal.
    prior = (popularity / (popularity.max() + 1.0) * 1e-6).astype(np.float32)

    class Baseline(tf.Module):  # type: ignore[name-defined]  # tf is imported lazily (untyped)
        def __init__(self) -> None:
            super().__init__()
            self.item_ids = tf.Variable(ids, trainable=False, name="item_ids")
            self.rows = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.range(len(ids), dtype=tf.int64)), -1
            )
            self.prior = tf.constant(prior)
            self.popularity = tf.constant((popularity / (popularity.max() + 1.0)).astype(np.float32))
            if base == "als":
                users = np.asarray(user_ids).astype(str)
                self.item_factors = tf.constant(fitted.item_factors)
                self.user_factors = tf.constant(fitted.user_factors)
                self.users = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(tf.constant(users), tf.range(len(users), dtype=tf.int64)), -1
                )
                yty = fitted.item_factors.T.astype(np.float64) @ fitted.item_factors.astype(np.float64)
                eye = np.eye(yty.shape[0]) * fitted.als.regularization
                self.gram = tf.constant((yty + eye).astype(np.float32))
            if base == "item_knn":
                self.neighbour_rows = tf.constant(fitted.neighbour_rows.astype(np.int64))
                self.neighbour_weights = tf.constant(fitted.neighbour_weights.astype(np.float32))

        def base_scores(self, inputs, rows, valid, counts):
            batch = tf.shape(rows)[0]
            if base == "popular":
                return tf.tile(self.popularity[None, :], [batch, 1])
            safe = tf.maximum(rows, 0)
            if base == "als":
                mask = tf.cast(tf.logical_and(valid, counts > 0), tf.float32)
                y = tf.gather(self.item_factors, safe) * mask[..., None]  # [B, M, F]
                confidence = fitted.als.alpha * tf.math.log1p(counts) * mask
                a = self.gram[None] + tf.einsum("bm,bmf,bmg->bfg", (confidence - 1.0) * mask, y, y)
                b = tf.einsum("bm,bmf->bf", confidence, y)
                folded = tf.linalg.solve(a, b[..., None])[..., 0]
                user_rows = self.users.lookup(inputs[USER_ID])
                known = tf.gather(self.user_factors, tf.maximum(user_rows, 0))
                query = tf.where((user_rows >= 0)[:, None], known, folded)
                return tf.matmul(query, self.item_factors, transpose_b=True)
            # item_knn: each distinct history item adds its neighbours' similarities
            first = _first_occurrence(tf, rows) & valid
            neighbours = tf.gather(self.neighbour_rows, safe)  # [B, M, N]
            weights = tf.gather(self.neighbour_weights, safe) * tf.cast(first, tf.float32)[..., None]
            hit = tf.where(tf.logical_and(neighbours >= 0, weights > 0))
            at = tf.stack([hit[:, 0], tf.gather_nd(neighbours, hit)], axis=1)
            return tf.scatter_nd(at, tf.gather_nd(weights, hit), tf.cast([batch, len(ids)], tf.int64))

        @tf.function(input_signature=[specs])
        def serve(self, inputs):
            rows = self.rows.lookup(inputs[HISTORY_ITEMS])
            valid = rows >= 0
            counts = tf.where(valid, tf.maximum(inputs[HISTORY_COUNTS], 0.0), 0.0)
            scores = self.base_scores(inputs, rows, valid, counts) + self.prior[None, :]
            if name in HISTORY_FIRST:  # as models.baselines.history_first
                low = tf.reduce_min(scores, axis=1, keepdims=True)
                span = tf.reduce_max(scores, axis=1, keepdims=True) - low
                scores = tf.where(span > 0, (scores - low) / (span + 1e-9) * 0.999, tf.zeros_like(scores))
                days = tf.maximum(inputs[REQUEST_DAY][:, None] - inputs[HISTORY_LAST_DAY], 0.0)
                own = 1e3 + counts + 1.0 / (1.0 + days)
                hit = tf.where(valid)
                at = tf.stack([hit[:, 0], tf.gather_nd(rows, hit)], axis=1)
                boost = tf.scatter_nd(at, tf.gather_nd(own, hit), tf.shape(scores, out_type=tf.int64))
                scores = tf.where(boost > 0, boost, scores)
            values, indices = top_k(tf, scores, k)
            return {"item_ids": tf.gather(self.item_ids, indices), "scores": values, "item_rows": indices}

    return Baseline()


def _signature_specs(module) -> dict[str, Any]:
    """A loaded SavedModel's `serving_default` inputs, by name."""
    return dict(module.signatures["serving_default"].structured_input_signature[1])


def _union_specs(tf, parts: list[Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Every input any part asks for, plus `extra`: one name must mean one dtype and rank
    everywhere; where widths differ (fixed in one part, open in another) the fixed one wins."""
    out = dict(extra)
    for part in parts:
        for name, spec in _signature_specs(part).items():
            known = out.get(name)
            if known is not None and not spec.is_compatible_with(known):
                raise ValueError(f"input {name!r} is {known} in one part and {spec} in another")
            if known is None or sum(d is not None for d in spec.shape) > sum(d is not None for d in known.shape):
                out[name] = tf.TensorSpec(spec.shape, spec.dtype, name=name)
    return out


def per_variant_modules(pairs: dict[str, dict[str, Path]], recommenders: dict[str, str]):
    """A retrieval and a ranking `tf.Module` that serve each list variant with its own pair.

    The gate may choose a different recommender per variant (`models.gate`): e.g. the two-stage
    model for `all` and a baseline for `new`. Published as one pair (one version, one label),
    both signatures read `list_variant` (`scoring.context`) and route each row to the parts its
    variant chose: retrieval to that variant's retrieval model, ranking to the trained ranker
    where the variant chose `two_stage` and to retrieval's order (pass-through) elsewhere.
    `item_rows` index the union of the parts' catalogs (the first part's order first), so the
    gateway's per-version row cache stays valid; `recommender` names each row's choice.

    Args:
        pairs: per variant (every one of `scoring.context.VARIANTS`), the staged folders of its
            chosen pair (`{"retrieval": dir, "ranking": dir}`).
        recommenders: per variant, what its pair serves (`two_stage`, `retrieval`, a baseline).
    """
    tf = tensorflow()
    from models.features import LIST_VARIANT
    from scoring.context import VARIANTS

    variants = list(VARIANTS)
    if set(pairs) != set(variants) or set(recommenders) != set(variants):
        raise ValueError(f"a per-variant pair needs a choice for each of {', '.join(variants)}")
    retrieval_dirs = list(dict.fromkeys(str(pairs[v]["retrieval"]) for v in variants))
    part_of = np.array([retrieval_dirs.index(str(pairs[v]["retrieval"])) for v in variants], np.int32)
    ranker_dirs = list(dict.fromkeys(str(pairs[v]["ranking"]) for v in variants if recommenders[v] == TWO_STAGE))
    if len(ranker_dirs) > 1:
        raise ValueError("a per-variant pair holds at most one trained ranker")
    uses_ranker = np.array([recommenders[v] == TWO_STAGE for v in variants])
    names = np.array([recommenders[v] for v in variants])
    variant_spec = {LIST_VARIANT: tf.TensorSpec([None], tf.int64, name=LIST_VARIANT)}

    retrievals = [tf.saved_model.load(d) for d in retrieval_dirs]
    catalog = list(dict.fromkeys(i for part in retrievals for i in part.item_ids.numpy().astype(str)))
    retrieval_specs = _union_specs(tf, retrievals, variant_spec)
    wanted = [list(_signature_specs(part)) for part in retrievals]
    k = max(int(part.signatures["serving_default"].structured_outputs["item_ids"].shape[1] or 0) for part in retrievals)
    if k <= 0:
        raise ValueError("a retrieval part does not say how many items it returns")

    def row_variant(inputs):
        return tf.clip_by_value(inputs[LIST_VARIANT], 0, len(variants) - 1)

    class PerVariantRetrieval(tf.Module):  # type: ignore[name-defined]  # tf is imported lazily (untyped)
        def __init__(self) -> None:
            super().__init__()
            self.parts = retrievals
            self.part_of = tf.constant(part_of)
            self.item_ids = tf.Variable(np.array(catalog), trainable=False, name="item_ids")
            self.rows = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(catalog), tf.range(len(catalog), dtype=tf.int32)), -1
            )

        @tf.function(input_signature=[retrieval_specs])
        def serve(self, inputs):
            part = tf.gather(self.part_of, row_variant(inputs))
            at, item_ids, scores = [], [], []
            for n, module in enumerate(self.parts):
                rows = tf.cast(tf.where(tf.equal(part, n))[:, 0], tf.int32)

                def run(module=module, rows=rows, n=n):
                    out = module.serve({name: tf.gather(inputs[name], rows) for name in wanted[n]})
                    pad = k - tf.shape(out["item_ids"])[1]
                    return (
                        tf.pad(out["item_ids"], [[0, 0], [0, pad]], constant_values=""),
                        tf.pad(out["scores"], [[0, 0], [0, pad]], constant_values=float("-inf")),
                    )

                def none():
                    return tf.zeros([0, k], tf.string), tf.zeros([0, k], tf.float32)

                ids_n, scores_n = tf.cond(tf.size(rows) > 0, run, none)
                at.append(rows)
                item_ids.append(tf.ensure_shape(ids_n, [None, k]))
                scores.append(tf.ensure_shape(scores_n, [None, k]))
            item_ids = tf.dynamic_stitch(at, item_ids)
            return {
                "item_ids": item_ids,
                "scores": tf.dynamic_stitch(at, scores),
                "item_rows": self.rows.lookup(item_ids),
            }

    rankers = [tf.saved_model.load(d) for d in ranker_dirs]
    ranking_specs = _union_specs(
        tf,
        rankers,
        {
            **variant_spec,
            ITEM_ID: tf.TensorSpec([None, None], tf.string, name=ITEM_ID),
            RETRIEVAL_SCORE: tf.TensorSpec([None, None], tf.float32, name=RETRIEVAL_SCORE),
        },
    )
    ranker_inputs = list(_signature_specs(rankers[0])) if rankers else []

    class PerVariantRanking(tf.Module):  # type: ignore[name-defined]  # tf is imported lazily (untyped)
        def __init__(self) -> None:
            super().__init__()
            self.rankers = rankers
            self.uses_ranker = tf.constant(uses_ranker)
            self.names = tf.constant(names)

        @tf.function(input_signature=[ranking_specs])
        def serve(self, inputs):
            variant = row_variant(inputs)
            scores = inputs[RETRIEVAL_SCORE]  # pass-through: retrieval's order
            if self.rankers:
                rows = tf.cast(tf.where(tf.gather(self.uses_ranker, variant))[:, 0], tf.int32)

                def run():
                    return self.rankers[0].serve({name: tf.gather(inputs[name], rows) for name in ranker_inputs})[
                        "scores"
                    ]

                ranked = tf.cond(tf.size(rows) > 0, run, lambda: tf.zeros([0, tf.shape(scores)[1]], scores.dtype))
                scores = tf.tensor_scatter_nd_update(scores, rows[:, None], ranked)
            return {"scores": tf.identity(scores), RECOMMENDER: tf.gather(self.names, variant)}

    return PerVariantRetrieval(), PerVariantRanking()


def save_per_variant(
    pairs: dict[str, dict[str, Path]], recommenders: dict[str, str], out_dir: Path, metadata: dict[str, Any]
) -> dict[str, Path]:
    """`per_variant_modules` saved as `out_dir/retrieval` and `out_dir/ranking`."""
    retrieval, ranking = per_variant_modules(pairs, recommenders)
    meta = {**metadata, RECOMMENDER: "per_variant", "recommenders": dict(recommenders)}
    return {
        "retrieval": save(retrieval, out_dir / "retrieval", meta),
        "ranking": save(ranking, out_dir / "ranking", meta),
    }


def _first_occurrence(tf, rows):
    """[B, M] True where a row's value has not appeared earlier in that row."""
    m = tf.shape(rows)[1]
    earlier = tf.linalg.band_part(tf.ones([m, m], tf.int32), -1, 0) - tf.eye(m, dtype=tf.int32)  # [i, j]: j < i
    same = tf.cast(tf.equal(rows[:, :, None], rows[:, None, :]), tf.int32)
    return tf.reduce_sum(same * earlier[None], axis=2) == 0


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


def export_baselines(fitted, item_ids, user_ids, out_dir: Path, metadata: dict[str, Any]) -> dict[str, dict[str, Path]]:
    """Every baseline as a servable pair: `out_dir/<name>/retrieval` (`baseline_module`) and
    `out_dir/<name>/ranking` (`passthrough_module`).

    Returns:
        {name: {"retrieval": dir, "ranking": dir}}.
    """
    from models.baselines import BASELINES

    out = {}
    for name in BASELINES:
        meta = {**metadata, RECOMMENDER: name}
        out[name] = {
            "retrieval": save(baseline_module(name, fitted, item_ids, user_ids), out_dir / name / "retrieval", meta),
            "ranking": save(passthrough_module(name), out_dir / name / "ranking", meta),
        }
    return out


def export(trained, staging: Path, at: datetime, metadata: dict[str, Any]) -> dict[str, Path]:
    """Write both models under `staging/<model>` (not yet published)."""
    return {
        "retrieval": save(retrieval_module(trained.retrieval, at), staging / "retrieval", metadata),
        "ranking": save(ranking_module(trained.ranker), staging / "ranking", metadata),
    }
