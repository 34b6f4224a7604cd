"""Training: the two-tower retrieval model and the ranker, from Feast's point-in-time training sets.

The ranker learns what the two-stage path will face: at a moment `t`, the retrieval model's top
candidates for a user, labelled by whether the user acted on them in the following window. So a
first retrieval model is trained on data before `t = cutoff - window`, the ranker on its candidates
at `t` with features as of `t` (labels from [t, cutoff)), and the retrieval model that ships is
trained again on everything before the cutoff. Nothing the ranker sees comes from after `t`.

Three steps, one Airflow task each (`models.lifecycle` keeps what the next step needs in the run's
folder): `training_set` looks up the point-in-time frames (Feast, no TensorFlow); `retrieval_stage`
fits the shifted model, labels its candidates for the ranker and fits the model that ships;
`ranking_stage` fits the ranker. `train` runs them back to back in memory. Every fit seeds itself,
so a seed gives the same models whether the steps share a process or not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from models.data import (
    Catalog,
    Coded,
    arrow_lists,
    history_inputs,
    numeric_columns,
    query_codes,
    query_inputs,
)
from models.features import (
    FAVOURITE_CATEGORY,
    HISTORY_COUNTS,
    HISTORY_ITEMS,
    ITEM_CATEGORY,
    ITEM_ID,
    ITEM_NUMERIC,
    QUERY_HISTORY_LEN,
    RECENT_ITEMS,
    RETRIEVAL_RANK,
    USER_NUMERIC,
)
from models.tf_env import seed_everything, tensorflow

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainParams:
    """Hyperparameters; recorded with every run.

    Attributes:
        retrieval_epochs: passes over the (deduplicated) positives.
        ranking_epochs: passes over the ranker's candidate rows.
        dim: embedding size of both towers.
        batch_size: in-batch softmax batch size (more = more negatives per positive).
        learning_rate: Adam rate of the retrieval model.
        ranking_learning_rate: Adam rate of the ranker.
        temperature: retrieval softmax temperature.
        rank_candidates: retrieval depth for the ranker's rows (as deep as serving retrieves).
        rank_rows: rows per user: all of the retrieval list by default, so the ranker learns to
            order every depth it will rank (on Online Retail, the 300-row sample of the top third
            plus a random tail was level with ALS on `new` recall@10; all 1,000 beat it). Below
            `rank_candidates`: the top `rank_rows // 3` and a random sample of the rest.
        ranking_window_days: label window of the ranker; by default `ranker_window_days` of the
            data (four weeks where the history is long enough: a week's labels gave the ranker
            a quarter of the users on Online Retail).
        ranking_max_rows: the ranker learns from at most this many rows: a seeded sample of the
            users who act both before and inside its window, as many as fit at `rank_rows` rows
            each (1,500 users at 1,000), so its time and memory stay bounded as users grow.
        history_candidates: the user's history items (the query's `HISTORY_ITEMS`) always
            enter the retrieval list, above the two-tower's picks (see `boost_history`): in
            retail many purchases are re-purchases, and a two-tower query does not reliably
            retrieve the exact items a user already buys. The ranker then decides their order.
            None (the default): only where re-consumption exists, i.e. `reconsumption_share`
            of the training rows is at least `RECONSUMPTION_MIN` (`history_first`); on data
            without repeats (ratings-like media) the history would only crowd the list.
        ranking_als: give the ranker each candidate's implicit-ALS score for the user (folded in
            from the purchase history; `models.ranking.ItemFactors`), fitted before the ranker's
            moment for training and before the cutoff for serving, inside the ranking graph.
        ranking_categories: give the ranker the user's affinity for each candidate's category
            (the share of the purchase history in it; `models.ranking.Ranker.category_affinity`):
            tastes run by category or genre, and the share reaches items no one co-bought yet.
        ranking_item_ids: feed the ranker's item id embedding to its MLP directly. Off: the ranker
            is trained on one window and serves the next, and on Online Retail a direct id
            embedding memorized the window's items (more epochs, worse holdout); the embedding
            still serves the candidate-to-history similarity.
        history_len: how much of the purchase history (most bought first) the query tower and
            the ranker's candidate-to-history similarity read.
        ranking_layers: widths of the ranker's MLP layers (its depth).
        seed: one seed for everything.
    """

    retrieval_epochs: int = 2
    ranking_epochs: int = 3
    dim: int = 64
    batch_size: int = 1024
    learning_rate: float = 0.01
    ranking_learning_rate: float = 0.002
    temperature: float = 1.0
    rank_candidates: int = 1000
    rank_rows: int = 1000
    ranking_window_days: int | None = None
    ranking_max_rows: int = 1_500_000
    history_candidates: bool | None = None
    ranking_item_ids: bool = False
    ranking_als: bool = True
    ranking_categories: bool = True
    history_len: int = QUERY_HISTORY_LEN
    ranking_layers: tuple[int, ...] = (128, 64)
    seed: int = 42


@dataclass
class RetrievalModel:
    """A trained two-tower model with the catalog it indexes."""

    model: Any  # models.retrieval.TwoTower
    catalog: Catalog
    users: list[str]
    items: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    history_candidates: bool = True  # TrainParams.history_candidates, applied by top-k and export

    def query_embeddings(self, inputs: dict[str, np.ndarray], batch: int = 4096) -> np.ndarray:
        tf = tensorflow()
        n = len(inputs["user_id"])
        out = [
            self.model.query({k: tf.constant(v[i : i + batch]) for k, v in inputs.items()}).numpy()
            for i in range(0, n, batch)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.model.query.out.layers[-1].units), np.float32)

    def candidate_embeddings(self, at: datetime) -> np.ndarray:
        tf = tensorflow()
        inputs = self.catalog.candidate_inputs(at)
        return self.model.candidate({k: tf.constant(v) for k, v in inputs.items()}).numpy()


@dataclass
class TrainedModels:
    retrieval: RetrievalModel
    ranker: Any  # models.ranking.Ranker
    cutoff: datetime
    record: dict[str, Any]


# --------------------------------------------------------------------------------- retrieval


def retrieval_inputs(frame: pd.DataFrame, catalog: Catalog, history_len: int) -> dict[str, np.ndarray | Coded]:
    """Query and candidate inputs for training rows (features as of each row's timestamp); the
    item lists as `Coded` pairs, the history cut at `history_len` (what the query tower reads)."""
    moments = pd.to_datetime(frame["event_timestamp"], utc=True)
    index = catalog.index()
    rows = frame["item_id"].map(index).to_numpy()
    created = catalog.created_at.to_numpy()[rows]
    age = (moments.to_numpy() - created) / np.timedelta64(1, "D")
    return {
        **query_codes(frame, moments, history_len),
        "item_id": frame["item_id"].astype(str).to_numpy(),
        "category": catalog.category[rows],
        "description": catalog.description[rows],
        "price": catalog.price[rows].astype(np.float32),
        "age_days": np.clip(np.nan_to_num(age.astype(np.float64), nan=0.0), 0, None).astype(np.float32),
    }


def retrieval_rows(frame: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """The rows naming catalog items, ordered by time (stable), each (user, item) pair's last
    one (repeats would otherwise swamp the in-batch softmax). Chosen on the id and time columns,
    then taken once: filtering, sorting and deduplicating the wide frame copied its history
    lists three times."""
    keys = frame[["user_id", "item_id", "event_timestamp"]]
    kept = np.flatnonzero(keys["item_id"].isin(set(catalog.item_ids)).to_numpy())
    kept = kept[np.argsort(keys["event_timestamp"].to_numpy()[kept], kind="stable")]
    kept = kept[~keys.iloc[kept].duplicated(["user_id", "item_id"], keep="last").to_numpy()]
    return frame.iloc[kept].reset_index(drop=True)


def fit_retrieval(
    frame: pd.DataFrame, catalog: Catalog, params: TrainParams, progress: Progress = log.info
) -> RetrievalModel:
    """Train the two-tower model on positives (with their point-in-time user features).

    Args:
        frame: Feast training set rows: user_id, item_id, event_timestamp, `user_*` features.
        catalog: items (rows naming items outside it are dropped).
    """
    from models.optimizers import lazy_adam
    from models.retrieval import TwoTower, probability_table
    from models.towers import CandidateTower, QueryTower, lookup_indices

    if params.history_candidates is None:
        raise ValueError("history_candidates is undecided: pass the params through history_first")
    seed_everything(params.seed)
    frame = retrieval_rows(frame, catalog)
    if frame.empty:
        raise ValueError("no training examples for retrieval: is gold/training_examples empty before the cutoff?")
    users = sorted(frame["user_id"].astype(str).unique())
    items = sorted(frame["item_id"].astype(str).unique())
    counts = frame["item_id"].value_counts()
    inputs = retrieval_inputs(frame, catalog, params.history_len)
    query = QueryTower(users, items, USER_NUMERIC, params.dim, params.history_len)
    query.numeric.adapt({k: v for k, v in inputs.items() if k in USER_NUMERIC and isinstance(v, np.ndarray)})
    # The query tower's ids as their embedding rows, looked up once instead of every batch.
    inputs["user_id"] = lookup_indices(query.user_embedding, inputs["user_id"])
    for name in (RECENT_ITEMS, HISTORY_ITEMS):
        inputs[name] = lookup_indices(query.recent_embedding, inputs[name])
    candidate = CandidateTower(
        catalog.item_ids, sorted(set(catalog.category)), catalog.description, catalog.price, params.dim
    )
    model = TwoTower(query, candidate, probability_table(list(counts.index), list(counts.values)), params.temperature)
    model.compile(optimizer=lazy_adam(params.learning_rate))
    data = retrieval_dataset(inputs, len(frame), params.batch_size, params.seed)
    del inputs  # the dataset holds its own copy of the columns
    history = _fit(model, data, params.retrieval_epochs, len(frame), "retrieval", progress)
    return RetrievalModel(model, catalog, users, items, history, params.history_candidates)


def row_batches(rows: int, batch_size: int, seed: int) -> Any:
    """Batches of row numbers: every row once a pass, in a new order each pass (each time the
    dataset is iterated), the same orders for a seed; the last batch is the remainder.

    One permutation op a pass, then slices of it: `Dataset.shuffle` moves the row numbers one
    element at a time, which cost more CPU than the ranker's training steps on 1.5M rows.
    """
    tf = tensorflow()

    def batches(key: Any) -> Any:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(rows, dtype=tf.int64), seed=tf.stack([key, tf.constant(seed, tf.int64)])
        )
        return tf.data.Dataset.range(0, rows, batch_size).map(lambda start: order[start : start + batch_size])

    # One key a pass: Dataset.random draws a new one each iteration, the same ones for a seed.
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1).flat_map(batches)


def retrieval_dataset(inputs: Mapping[str, np.ndarray | Coded], rows: int, batch_size: int, seed: int) -> Any:
    """Shuffled batches of the rows (`row_batches`); each batch gathers its columns.

    Shuffling row numbers instead of the rows themselves keeps one copy of the columns: a
    shuffle buffer of whole rows held a second one, element by element (each row's 50-item
    history a tensor of its own). String columns are held as int32 codes into their distinct
    values, decoded per batch: a TensorFlow string takes about 32 bytes, and the histories
    repeat the same few thousand ids millions of times (columns that come `Coded` already are
    taken as they are).
    """
    tf = tensorflow()
    columns: dict[str, Any] = {}
    for name, values in inputs.items():
        if isinstance(values, tuple):
            columns[name] = (tf.constant(values[0]), tf.constant(values[1]))
        elif values.dtype == object:
            codes, distinct = pd.factorize(values.ravel(), use_na_sentinel=False)
            columns[name] = (
                tf.constant(np.asarray(distinct)),
                tf.constant(codes.astype(np.int32).reshape(values.shape)),
            )
        else:
            columns[name] = tf.constant(values)

    def gather(at: Any) -> dict[str, Any]:
        out = {}
        for name, column in columns.items():
            if isinstance(column, tuple):
                distinct, codes = column
                out[name] = tf.gather(distinct, tf.gather(codes, at))
            else:
                out[name] = tf.gather(column, at)
        return out

    return row_batches(rows, batch_size, seed).map(gather).prefetch(2)


def _fit(model, data, epochs: int, n: int, name: str, progress: Progress) -> list[dict[str, float]]:
    """Keras fit, one line of progress per epoch: loss and examples/s."""
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        result = model.fit(data, epochs=1, verbose=0).history
        seconds = time.perf_counter() - start
        metrics = {k: float(v[-1]) for k, v in result.items()}
        history.append({"epoch": epoch, "seconds": seconds, "examples_per_s": n / seconds, **metrics})
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if "regularization" not in k)
        progress(f"{name} epoch {epoch}/{epochs}: {shown}, {n / seconds:,.0f} examples/s")
    return history


def top_candidates(
    retrieval: RetrievalModel,
    query: dict[str, np.ndarray],
    at: datetime,
    k: int,
    exclude: dict[str, set[str]] | None = None,
    batch: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k catalog rows per query, best first: (item rows [Q, k], scores [Q, k]).

    As the exported retrieval signature answers: with `history_candidates`, the query's history
    items first (`boost_history`).
    """
    tf = tensorflow()
    items = retrieval.candidate_embeddings(at)
    queries = retrieval.query_embeddings(query)
    k = min(k, len(items))
    index = retrieval.catalog.index()
    rows, scores = [], []
    for start in range(0, len(queries), batch):
        block = queries[start : start + batch] @ items.T
        if retrieval.history_candidates and HISTORY_ITEMS in query:
            history = [[index[i] for i in row if i in index] for row in query[HISTORY_ITEMS][start : start + batch]]
            boost_history(block, history)
        if exclude:
            for offset, user in enumerate(query["user_id"][start : start + batch]):
                seen = [index[i] for i in exclude.get(user, ()) if i in index]
                block[offset, seen] = -np.inf
        top = tf.math.top_k(block, k=k)
        rows.append(top.indices.numpy())
        scores.append(top.values.numpy())
    return np.concatenate(rows), np.concatenate(scores)


def boost_history(scores: np.ndarray, history_rows: list[list[int]]) -> None:
    """Lift each query's history items above all its other items, in place, keeping their order:
    add the row's score span + 1 to them (the exported signature does the same in TensorFlow)."""
    span = scores.max(axis=1) - scores.min(axis=1) + 1.0
    for offset, rows in enumerate(history_rows):
        if rows:
            scores[offset, rows] += span[offset]


# ----------------------------------------------------------------------------------- ranking


def sample_depths(rows: np.ndarray, per_user: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the head of each retrieval list and a random sample of its tail.

    Returns:
        (catalog rows [U, n], their 0-based positions in the full list [U, n]).
    """
    n = rows.shape[1]
    if per_user >= n:
        return rows, np.tile(np.arange(n), (len(rows), 1))
    head = per_user // 3
    rng = np.random.default_rng(seed)
    tail = np.sort(np.stack([rng.choice(np.arange(head, n), per_user - head, replace=False) for _ in rows]), axis=1)
    positions = np.concatenate([np.tile(np.arange(head), (len(rows), 1)), tail], axis=1)
    return np.take_along_axis(rows, positions, axis=1), positions


@dataclass
class RankerRows:
    """The ranker's (user, candidate) rows, kept as indices into per-user and per-item columns.

    Materializing the flat rows repeated every user's 100-item history lists once per candidate
    (300 rows a user): 11 GB for Online Retail's 1,203 users. Batches gather them instead.

    Attributes:
        users: per query user, aligned with the candidates' users ([U] or [U, M] arrays).
        items: per catalog row ([I] arrays): item id, category, numeric item features.
        user_of: [R] each row's user index; item_of: [R] its catalog row.
        ranks: [R] the candidate's 0-based position in the user's retrieval list.
        extra: [R] per-row features computed for the (user, candidate) pair (`als_score`...).
    """

    users: dict[str, np.ndarray]
    items: dict[str, np.ndarray]
    user_of: np.ndarray
    item_of: np.ndarray
    ranks: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user_of)

    def take(self, rows: np.ndarray | slice, names: Collection[str] | None = None) -> dict[str, np.ndarray]:
        """Flat feature columns (all, or `names`) of some rows, as numpy arrays."""
        user_of, item_of = self.user_of[rows], self.item_of[rows]
        out = {n: v[user_of] for n, v in self.users.items() if names is None or n in names}
        out.update({n: v[item_of] for n, v in self.items.items() if names is None or n in names})
        if names is None or RETRIEVAL_RANK in names:
            out[RETRIEVAL_RANK] = self.ranks[rows]
        out.update({n: v[rows] for n, v in self.extra.items() if names is None or n in names})
        return out


def ranking_rows(
    users: pd.DataFrame,
    items: pd.DataFrame,
    candidate_rows: np.ndarray,
    candidate_ranks: np.ndarray,
    catalog: Catalog,
    at: datetime | pd.Series,
    extra: dict[str, np.ndarray] | None = None,
) -> RankerRows:
    """The ranker's (user, candidate) rows, row-major by user.

    Args:
        users: one row per query user (user features as of `at`), aligned with the candidates.
        items: one row per catalog item (item features as of `at`), aligned with `catalog`.
        candidate_rows: [U, N] catalog rows; candidate_ranks: [U, N] their 0-based positions in
            the user's retrieval list.
        extra: [U, N] per-candidate features, flattened row-major with the rows.
    """
    n_users, n_cand = candidate_rows.shape
    query = query_inputs(users, at)
    user_cols = {
        **numeric_columns(users, USER_NUMERIC),
        **history_inputs(users, at),
        HISTORY_ITEMS: query[HISTORY_ITEMS],
        HISTORY_COUNTS: query[HISTORY_COUNTS],
        RECENT_ITEMS: query[RECENT_ITEMS],
        FAVOURITE_CATEGORY: users.get(FAVOURITE_CATEGORY, pd.Series("", index=users.index))
        .fillna("")
        .astype(str)
        .to_numpy(),
    }
    item_cols = numeric_columns(items, ITEM_NUMERIC)
    item_category = items.get(ITEM_CATEGORY, pd.Series(catalog.category)).fillna("").astype(str).to_numpy()
    item_cols[ITEM_CATEGORY] = np.where(item_category == "", catalog.category, item_category)
    item_cols[ITEM_ID] = np.asarray(catalog.item_ids)
    return RankerRows(
        user_cols,
        item_cols,
        np.repeat(np.arange(n_users, dtype=np.int64), n_cand),
        candidate_rows.ravel().astype(np.int64),
        candidate_ranks.ravel().astype(np.float32),
        {name: np.asarray(values, np.float32).ravel() for name, values in (extra or {}).items()},
    )


def ranking_batch_size(rows: int) -> int:
    """About 100 steps an epoch, within [256, 4096]: small data still gets enough updates."""
    return int(min(4096, max(256, rows // 100)))


#: Rows the numeric normalization is adapted on (a seeded sample beyond that: memory stays flat).
ADAPT_ROWS = 1_000_000


def ranking_dataset(
    rows: RankerRows,
    labels: np.ndarray,
    seed: int,
    id_codes: Callable[..., list[np.ndarray]] | None = None,
) -> Any:
    """Shuffled batches of the rows with their labels (`row_batches`); each batch gathers its
    features.

    Args:
        id_codes: `Ranker.id_codes`: the batches carry the history items and the candidate's
            item id as those integer codes instead of strings.
    """
    tf = tensorflow()
    user_values, item_values = dict(rows.users), dict(rows.items)
    if id_codes is not None:
        user_values[HISTORY_ITEMS], user_values[RECENT_ITEMS], item_values[ITEM_ID] = id_codes(
            user_values[HISTORY_ITEMS], user_values[RECENT_ITEMS], item_values[ITEM_ID]
        )
    users = {name: tf.constant(values) for name, values in user_values.items()}
    items = {name: tf.constant(values) for name, values in item_values.items()}
    user_of, item_of = tf.constant(rows.user_of), tf.constant(rows.item_of)
    flat = {RETRIEVAL_RANK: rows.ranks, "label": labels.astype(np.float32), **rows.extra}
    per_row = {name: tf.constant(values) for name, values in flat.items()}

    def gather(at: Any) -> dict[str, Any]:
        user, item = tf.gather(user_of, at), tf.gather(item_of, at)
        out = {name: tf.gather(values, user) for name, values in users.items()}
        out.update({name: tf.gather(values, item) for name, values in items.items()})
        out.update({name: tf.gather(values, at) for name, values in per_row.items()})
        return out

    return row_batches(len(labels), ranking_batch_size(len(labels)), seed).map(gather).prefetch(2)


def fit_ranking(
    rows: RankerRows,
    labels: np.ndarray,
    items: list[str],
    params: TrainParams,
    progress: Progress = log.info,
    categories: dict[str, str] | None = None,
) -> tuple[Any, list[dict[str, float]]]:
    """Train the ranker on candidate rows with 0/1 labels (`categories`: item -> category, for
    `params.ranking_categories`)."""
    tf = tensorflow()
    from models.ranking import Ranker, RankingModel

    seed_everything(params.seed + 1)
    ranker = Ranker(
        items,
        [*USER_NUMERIC, *ITEM_NUMERIC],
        layers=params.ranking_layers,
        id_features=params.ranking_item_ids,
        collaborative=bool(rows.extra),
        history_len=params.history_len,
        item_categories=categories if params.ranking_categories else None,
    )
    sample: slice | np.ndarray = slice(None)
    if len(rows) > ADAPT_ROWS:
        sample = np.sort(np.random.default_rng(params.seed).choice(len(rows), ADAPT_ROWS, replace=False))
    ranker.numeric.adapt(rows.take(sample, {*USER_NUMERIC, *ITEM_NUMERIC}))
    model = RankingModel(ranker)
    model.compile(optimizer=tf.keras.optimizers.Adam(params.ranking_learning_rate))
    data = ranking_dataset(rows, labels, params.seed, ranker.id_codes)
    history = _fit(model, data, params.ranking_epochs, len(labels), "ranking", progress)
    return ranker, history


# ----------------------------------------------------------------------------- orchestration


@dataclass
class TrainingData:
    """Everything `training_set` reads, so tests and the DAG can hand it in directly.

    Attributes:
        examples: positives before the cutoff (gold/training_examples): user_id, item_id,
            action, event_timestamp.
        catalog: silver/items.
        features: callable (entity frame with user_id, item_id, event_timestamp; service name)
            -> the frame with `<view>__<feature>` columns as of each row's timestamp (Feast's
            point-in-time join in production).
        data_versions: input table versions, for the run record.
    """

    examples: pd.DataFrame
    catalog: Catalog
    features: Callable[[pd.DataFrame, str], pd.DataFrame]
    data_versions: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingSet:
    """What the three fits read: the point-in-time frames, looked up once (step 1 of 3).

    Attributes:
        full: retrieval rows (positives with `retrieval` features as of each row) before
            `cutoff`: the shipped model's training data; those before `shift` (`early`) are the
            shifted model's.
        users: the ranker's label users (sorted; they act both before `shift` and in the window)
            with `ranking` user features as of `shift`, one row each.
        items: the catalog's items (catalog order) with `ranking` item features as of `shift`.
        window: the label users' positives in [shift, cutoff) (user_id, item_id): the labels.
        catalog: the items the retrieval models index.
        cutoff: training data ends here; shift: `cutoff - window`, the ranker's moment.
        examples: positives before the cutoff.
        data_versions: input table versions, for the run record.
    """

    full: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    window: pd.DataFrame
    catalog: Catalog
    cutoff: datetime
    shift: datetime
    examples: int
    data_versions: dict[str, Any] = field(default_factory=dict)

    @property
    def early(self) -> pd.DataFrame:
        """The rows before `shift`: a row's features are as of its own moment, so they are the
        same whichever later cutoff the row was looked up for."""
        return self.before_shift()

    def before_shift(self, columns: list[str] | None = None) -> pd.DataFrame:
        """`early`, all columns or only `columns` (a copy of the feature lists costs gigabytes)."""
        moments = pd.to_datetime(self.full["event_timestamp"], utc=True)
        frame = self.full if columns is None else self.full[columns]
        return frame[(moments < pd.Timestamp(self.shift)).to_numpy()].reset_index(drop=True)


@dataclass
class RankerCandidates:
    """The shifted model's candidates for the label users, labelled: what the ranker trains on.

    Attributes:
        rows: [U, N] catalog rows, users in `TrainingSet.users` order.
        ranks: [U, N] their 0-based positions in the user's full retrieval list.
        labels: [U, N] whether the user bought the item in the window.
        items: the shifted model's item vocabulary (the ranker's item id lookup).
    """

    rows: np.ndarray
    ranks: np.ndarray
    labels: np.ndarray
    items: list[str]


@dataclass
class RetrievalStage:
    """Step 2 of 3: the retrieval model that ships and the ranker's candidates."""

    model: RetrievalModel
    candidates: RankerCandidates
    shifted_history: list[dict[str, float]] = field(default_factory=list)


def features_at(
    data: TrainingData, users: np.ndarray, items: np.ndarray, at: datetime, service: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """User features for `users` and item features for `items`, all as of `at`."""
    stamp = pd.Timestamp(at)
    user_rows = pd.DataFrame({"user_id": users, "item_id": "", "event_timestamp": stamp})
    item_rows = pd.DataFrame({"user_id": "", "item_id": items, "event_timestamp": stamp})
    return data.features(user_rows, service), data.features(item_rows, service)


#: The ranker's label window when the history allows it.
RANKER_WINDOW_DAYS = 28


def ranker_window_days(history_days: int, holdout_days: int) -> int:
    """The ranker's label window: `RANKER_WINDOW_DAYS`, but at most a third of the history before
    the cutoff (the shifted retrieval model needs the rest) and at least the holdout."""
    return max(holdout_days, min(RANKER_WINDOW_DAYS, history_days // 3), 1)


def training_set(
    data: TrainingData,
    cutoff: datetime,
    holdout_days: int,
    params: TrainParams,
    progress: Progress = log.info,
) -> TrainingSet:
    """Step 1: the point-in-time frames of all three fits (no TensorFlow).

    Raises:
        ValueError: no user acts both before and inside the ranker's window.
    """
    examples = data.examples.copy()
    examples["event_timestamp"] = pd.to_datetime(examples["event_timestamp"], utc=True)
    examples = examples[examples["event_timestamp"] < pd.Timestamp(cutoff)]
    if examples.empty:
        raise ValueError("no training examples before the cutoff: is gold/training_examples empty?")
    span = (pd.Timestamp(cutoff) - examples["event_timestamp"].min()).days
    shift = cutoff - timedelta(days=params.ranking_window_days or ranker_window_days(span, holdout_days))
    early = examples[examples["event_timestamp"] < pd.Timestamp(shift)]
    late = examples[examples["event_timestamp"] >= pd.Timestamp(shift)]
    progress(f"training set: {len(examples):,} positives before {cutoff:%Y-%m-%d}; ranker window from {shift:%Y-%m-%d}")
    label_users = np.array(sorted(set(early["user_id"]) & set(late["user_id"])))
    if len(label_users) == 0:
        raise ValueError(
            "no user acts both before and inside the ranker's window: lengthen the data or shorten the window"
        )
    max_users = max(1, params.ranking_max_rows // min(params.rank_rows, params.rank_candidates, len(data.catalog)))
    if len(label_users) > max_users:
        rng = np.random.default_rng(params.seed)
        label_users = np.sort(rng.choice(label_users, max_users, replace=False))
    columns = ["user_id", "item_id", "event_timestamp"]
    full_frame = data.features(examples[columns], "retrieval")
    users_at, items_at = features_at(data, label_users, data.catalog.item_ids, shift, "ranking")
    window = late.loc[late["user_id"].isin(set(label_users)), ["user_id", "item_id"]].reset_index(drop=True)
    progress(
        f"training set: {len(early):,} retrieval rows before {shift:%Y-%m-%d}, {len(full_frame):,} before "
        f"{cutoff:%Y-%m-%d}; {len(label_users):,} ranker users, {len(window):,} window positives"
    )
    return TrainingSet(
        full_frame,
        users_at,
        items_at,
        window,
        data.catalog,
        cutoff,
        shift,
        len(examples),
        data.data_versions,
    )


#: `history_first`: history-first lists need at least this share of re-consumed training rows.
RECONSUMPTION_MIN = 0.05


def reconsumption_share(frame: pd.DataFrame) -> float:
    """The share of retrieval rows whose item is already in the row's point-in-time purchase
    history (`HISTORY_ITEMS`): how often users come back to what they have."""
    if frame.empty or HISTORY_ITEMS not in frame:
        return 0.0
    lists = arrow_lists(frame[HISTORY_ITEMS])
    if lists is not None:
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = pc.list_parent_indices(lists)
        items = pa.array(frame["item_id"].astype(str).to_numpy()).take(rows)
        matched = pc.equal(pc.list_flatten(lists), items).to_numpy(zero_copy_only=False)
        hits = len(np.unique(rows.to_numpy()[matched]))
    else:
        hits = sum(
            item in history
            for item, history in zip(frame["item_id"], frame[HISTORY_ITEMS], strict=True)
            if history is not None and not isinstance(history, float)
        )
    return hits / len(frame)


def history_first(ts: TrainingSet, params: TrainParams) -> TrainParams:
    """`params` with `history_candidates` decided: as given, or from the training rows'
    `reconsumption_share` when it is None."""
    if params.history_candidates is not None:
        return params
    return replace(params, history_candidates=reconsumption_share(ts.full) >= RECONSUMPTION_MIN)


def retrieval_stage(ts: TrainingSet, params: TrainParams, progress: Progress = log.info) -> RetrievalStage:
    """Step 2: the shifted retrieval model, its labelled candidates for the ranker, then the
    retrieval model that ships (trained on everything before the cutoff)."""
    params = history_first(ts, params)
    progress(
        f"retrieval: {reconsumption_share(ts.full):.1%} of the rows re-consume a history item; "
        f"history-first lists {'on' if params.history_candidates else 'off'}"
    )
    early = ts.early
    progress(f"retrieval (for the ranker's candidates): {len(early):,} rows before {ts.shift:%Y-%m-%d}")
    shifted = fit_retrieval(early, ts.catalog, params, progress)
    del early
    query = query_inputs(ts.users, pd.Timestamp(ts.shift))
    rows, _ = top_candidates(shifted, query, ts.shift, params.rank_candidates)
    rows, ranks = sample_depths(rows, params.rank_rows, params.seed)
    bought = set(zip(ts.window["user_id"], ts.window["item_id"], strict=True))
    user_of = np.repeat(ts.users["user_id"].astype(str).to_numpy(), rows.shape[1])
    items = ts.catalog.item_ids[rows.ravel()]
    labels = np.fromiter((pair in bought for pair in zip(user_of, items, strict=True)), bool, len(user_of))
    candidates = RankerCandidates(rows, ranks, labels.reshape(rows.shape), shifted.items)
    progress(f"ranker rows: {labels.size:,} ({labels.mean():.2%} positive) for {len(rows):,} users")
    progress(f"retrieval (to ship): {len(ts.full):,} rows before {ts.cutoff:%Y-%m-%d}")
    final = fit_retrieval(ts.full, ts.catalog, params, progress)
    return RetrievalStage(final, candidates, shifted.history)


def ranking_stage(
    ts: TrainingSet, candidates: RankerCandidates, params: TrainParams, progress: Progress = log.info
) -> tuple[Any, list[dict[str, float]]]:
    """Step 3: the ranker, on the candidates' rows with features as of the shift. With
    `params.ranking_als` the rows carry ALS scores from factors fitted before the shift, and the
    ranker keeps factors fitted before the cutoff for serving (`Ranker.als`)."""
    extra = None
    if params.ranking_als:
        early = ts.before_shift(["user_id", "item_id"])  # what item_factors reads
        progress(f"ALS for the ranker: {len(early):,} rows before {ts.shift:%Y-%m-%d}")
        before_shift = item_factors(early, ts.catalog, params)
        extra = als_columns(before_shift, ts.users, candidates.rows, ts.catalog, pd.Timestamp(ts.shift))
    rows = ranking_rows(
        ts.users, ts.items, candidates.rows, candidates.ranks, ts.catalog, pd.Timestamp(ts.shift), extra
    )
    categories = dict(zip(ts.catalog.item_ids, ts.catalog.category, strict=True))
    ranker, history = fit_ranking(rows, candidates.labels.ravel(), candidates.items, params, progress, categories)
    if params.ranking_als:
        progress(f"ALS for serving: {len(ts.full):,} rows before {ts.cutoff:%Y-%m-%d}")
        ranker.als = item_factors(ts.full, ts.catalog, params)
    return ranker, history


def item_factors(frame: pd.DataFrame, catalog: Catalog, params: TrainParams) -> Any:
    """ALS item factors (`models.ranking.ItemFactors`) fitted on a frame's (user, item) rows."""
    from models.baselines import ALSParams, TrainInteractions, fit_als
    from models.ranking import ItemFactors

    index = catalog.index()
    frame = frame.loc[frame["item_id"].isin(index), ["user_id", "item_id"]]  # not the feature lists
    users = {u: n for n, u in enumerate(sorted(frame["user_id"].astype(str).unique()))}
    data = TrainInteractions(
        users=frame["user_id"].astype(str).map(users).to_numpy(),
        items=frame["item_id"].map(index).to_numpy(),
        age_days=np.zeros(len(frame)),
        weights=np.ones(len(frame)),
        n_users=len(users),
        n_items=len(catalog),
    )
    als = ALSParams(seed=params.seed)
    _, factors = fit_als(data, als)
    return ItemFactors(catalog.item_ids, factors, als.regularization, als.alpha)


def als_columns(
    factors: Any, users: pd.DataFrame, candidate_rows: np.ndarray, catalog: Catalog, at: datetime | pd.Series
) -> dict[str, np.ndarray]:
    """[U, N] `als_score` and `als_rank` of each user's candidates, the user folded in from the
    purchase history as of `at` (what the exported ranking graph computes)."""
    from models.baselines import ALSParams, fold_in_rows
    from models.features import ALS_RANK, ALS_SCORE

    query = query_inputs(users, at)
    index = {item: n for n, item in enumerate(factors.item_ids)}
    history = np.vectorize(lambda i: index.get(i, -1), otypes=[np.int64])(query[HISTORY_ITEMS])
    params = ALSParams(regularization=factors.regularization, alpha=factors.alpha)
    vectors = fold_in_rows(factors.factors, history, query[HISTORY_COUNTS], params)
    scores = np.einsum("uf,unf->un", vectors, factors.factors[candidate_rows]).astype(np.float32)
    best = np.abs(scores).max(axis=1, keepdims=True)
    ascending = np.sort(scores, axis=1)
    ranks = np.stack(
        [len(row) - np.searchsorted(asc, row, side="right") for asc, row in zip(ascending, scores, strict=True)]
    )
    return {ALS_SCORE: scores / (best + 1e-6), ALS_RANK: ranks.astype(np.float32)}


def training_record(
    ts: TrainingSet,
    params: TrainParams,
    retrieval: dict[str, Any],
    labels: np.ndarray,
    ranking_history: list[dict[str, float]],
    seconds: float,
) -> dict[str, Any]:
    """The run record's `training` part.

    Args:
        retrieval: the shipped retrieval model's `users` (count) and `history`.
        labels: the ranker's labels [U, N].
    """
    return {
        "params": asdict(history_first(ts, params)),
        "reconsumption_share": reconsumption_share(ts.full),
        "cutoff": ts.cutoff.isoformat(),
        "ranker_window_start": ts.shift.isoformat(),
        "examples": int(ts.examples),
        "retrieval_rows": int(len(ts.full)),
        "ranking_rows": int(labels.size),
        "ranking_positive_rate": float(labels.mean()),
        "users": int(retrieval["users"]),
        "items": len(ts.catalog),
        "data_versions": ts.data_versions,
        "history": {"retrieval": retrieval["history"], "ranking": ranking_history},
        "train_seconds": seconds,
    }


def train(
    data: TrainingData,
    cutoff: datetime,
    holdout_days: int,
    params: TrainParams | None = None,
    progress: Progress = log.info,
) -> TrainedModels:
    """Train retrieval and ranking on data before `cutoff` in memory: the three steps back to
    back (see the module docstring; `models.lifecycle` runs them one process each)."""
    params = params or TrainParams()
    return fit(training_set(data, cutoff, holdout_days, params, progress), params, progress)


#: The settings `training_set` reads: training sets built with the same values are the same.
TRAINING_SET_PARAMS = ("ranking_window_days", "ranking_max_rows", "rank_rows", "rank_candidates", "seed")


def fit(ts: TrainingSet, params: TrainParams, progress: Progress = log.info) -> TrainedModels:
    """Steps 2 and 3 in memory on a training set built with `params` (see TRAINING_SET_PARAMS)."""
    started = time.perf_counter()
    stage = retrieval_stage(ts, params, progress)
    ranker, rank_history = ranking_stage(ts, stage.candidates, params, progress)
    retrieval = {"users": len(stage.model.users), "history": stage.model.history}
    record = training_record(
        ts, params, retrieval, stage.candidates.labels, rank_history, time.perf_counter() - started
    )
    return TrainedModels(stage.model, ranker, ts.cutoff, record)
