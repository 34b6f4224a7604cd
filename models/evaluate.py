"""Evaluation on the time-based holdout, for exported models and baselines in the same run.

Models are scored as they serve: their exported signatures, fed point-in-time features as of the
cutoff through the gateway's own binding, two-stage path and business rules (`scoring`), one
user per call. A model's metric@K is measured on the list the gateway would return for
`count=K`. Three variants, one per setting of the gateway's exclusions:
- `all`: every holdout item counts, re-purchases included; lists as served with
  `exclude_purchased=false`;
- `new`: only items the user had not interacted with before the cutoff count; lists as served by
  default (`exclude_purchased=true`: everything the user bought is left out);
- `unseen`: the same items count; lists as served with `exclude_seen=true` (everything the user
  acted on is left out, views included: media-like surfaces).

Usable as `python -m models.evaluate` and from Airflow tasks; `towerflow evaluate` prints it.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models import baselines
from models.baselines import BASELINES
from models.data import Catalog
from models.metrics import DEFAULT_KS, LEVEL, interval, per_user, recall_curve, topk_metrics
from scoring.catalog import Catalog as ServedCatalog
from scoring.context import DEFAULT_VARIANT, VARIANTS
from scoring.rules import RuleConfig
from scoring.twostage import ModelCaller, Scored, is_cold, popular_items, score, topped_up, varies_by_variant

log = logging.getLogger(__name__)


MODEL_LISTS = ("two_stage", "retrieval")
PRODUCTION = "production"
#: Metrics reported with bootstrap intervals (and compared pairwise).
INTERVAL_METRICS = ("recall@10", "recall@50", "recall@100", "ndcg@10")


@dataclass
class EvalData:
    """The holdout and everything known at the cutoff.

    Attributes:
        cutoff: first moment of the holdout.
        catalog: recommendable items (defines item indices).
        users: evaluated user ids: acted before the cutoff and have holdout positives.
        truth: [users, items] holdout positives.
        seen: [users, items] anything the user did before the cutoff (no truth in `new`, `unseen`).
        train: positives before the cutoff for the baselines, over all users.
        train_user_ids: user ids indexing `train`; eval_rows: rows of `users` in it.
        user_features: one row per evaluated user, features as of the cutoff.
        item_features: one row per catalog item, features as of the cutoff.
        user_columns / item_columns: the feature columns the gateway's reader serves for a user
            and for an item (the `ranking` feature service).
    """

    cutoff: datetime
    catalog: Catalog
    users: np.ndarray
    truth: sp.csr_matrix
    seen: sp.csr_matrix
    train: baselines.TrainInteractions
    eval_rows: np.ndarray
    user_features: pd.DataFrame
    item_features: pd.DataFrame
    user_columns: list[str] = field(default_factory=list)
    item_columns: list[str] = field(default_factory=list)
    train_user_ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    _items: Callable[[Sequence[str]], dict[str, Any]] | None = field(default=None, repr=False)

    def user(self, row: int) -> dict[str, Any]:
        """User `row`'s features as the online store gives them (missing = None)."""
        frame = self.user_features
        return {c: _python(frame[c].iat[row]) if c in frame else None for c in self.user_columns}

    def item_lookup(self) -> Callable[[Sequence[str]], dict[str, Any]]:
        """Item features for ids, as the gateway's item snapshot gives them: numbers as float64
        with NaN where missing, anything else as objects with None."""
        if self._items is None:
            self._items = item_lookup(self.catalog.item_ids, self.item_features, self.item_columns)
        return self._items

    def popular_catalog(self, top: int) -> ServedCatalog:
        """The gateway's in-memory catalog (popular items, rule attributes) as of the cutoff."""
        found = self.item_lookup()([str(i) for i in self.catalog.item_ids])
        columns = {name: [_python(v) for v in values] for name, values in found.items()}
        return ServedCatalog.from_columns(columns, top=top)

    def scored(self, models: ModelCaller, row: int, variant: str = DEFAULT_VARIANT) -> Scored:
        """User `row`'s candidates, item features and ranking scores at the cutoff for a list of
        `variant`, computed as the gateway computes them (`scoring.twostage.score`)."""
        return score(
            models,
            user_id=str(self.users[row]),
            user=self.user(row),
            item_features=self.item_lookup(),
            moment=self.cutoff,
            variant=variant,
        )

    def scored_variants(self, models: ModelCaller, row: int, per_variant: bool | None = None) -> dict[str, Scored]:
        """User `row`'s `scored` for every list variant (`VARIANTS`): one scoring shared by all,
        or one per variant for a pair published per variant (`varies_by_variant`, computed when
        `per_variant` is None)."""
        if varies_by_variant(models) if per_variant is None else per_variant:
            return {variant: self.scored(models, row, variant) for variant in VARIANTS}
        return dict.fromkeys(VARIANTS, self.scored(models, row))

    def truth_for(self, variant: str) -> sp.csr_matrix:
        """What counts as a hit in `variant`: every holdout positive (`all`), or only those on
        items the user never touched before the cutoff."""
        if variant == "all":
            return self.truth
        new = (self.truth - self.truth.multiply(self.seen)).tocsr()
        new.eliminate_zeros()
        return new


def prepare(
    examples: pd.DataFrame,
    holdout: pd.DataFrame,
    interactions: pd.DataFrame,
    catalog: Catalog,
    cutoff: datetime,
    features: Any,
) -> EvalData:
    """Build the evaluation set.

    Args:
        examples: positives before the cutoff (what the models trained on).
        holdout: positives in the holdout window.
        interactions: every interaction before the cutoff (for `seen`).
        features: point-in-time feature lookup (`models.lookup.FeatureLookup`).
    """
    index = catalog.index()
    stamp = pd.Timestamp(cutoff)
    training = train_interactions(examples, catalog, cutoff)
    holdout = holdout[holdout["item_id"].isin(index)]
    train_users = training.train_user_ids
    user_index = {u: i for i, u in enumerate(train_users)}
    users = np.array(sorted(set(holdout["user_id"]) & set(user_index)))
    if len(users) == 0:
        raise ValueError("no user with history before the cutoff has holdout positives")
    row_of = {u: i for i, u in enumerate(users)}

    def matrix(frame: pd.DataFrame) -> sp.csr_matrix:
        frame = frame[frame["user_id"].isin(row_of) & frame["item_id"].isin(index)]
        m = sp.csr_matrix(
            (np.ones(len(frame)), (frame["user_id"].map(row_of), frame["item_id"].map(index))),
            shape=(len(users), len(catalog)),
        )
        m.data[:] = 1.0
        return m

    train = training.train
    user_rows = pd.DataFrame({"user_id": users, "item_id": "", "event_timestamp": stamp})
    item_rows = pd.DataFrame({"user_id": "", "item_id": catalog.item_ids, "event_timestamp": stamp})
    columns = features.columns("ranking")
    return EvalData(
        cutoff=cutoff,
        catalog=catalog,
        users=users,
        truth=matrix(holdout),
        seen=matrix(interactions),
        train=train,
        eval_rows=np.array([user_index[u] for u in users]),
        train_user_ids=train_users,
        user_features=features(user_rows, "ranking").reset_index(drop=True),
        item_features=features(item_rows, "ranking").reset_index(drop=True),
        user_columns=columns.get("user_id", []),
        item_columns=columns.get("item_id", []),
    )


@dataclass(frozen=True)
class Training:
    """Positives before a cutoff as the baselines take them, with the user ids indexing them."""

    train: baselines.TrainInteractions
    train_user_ids: np.ndarray
    cutoff: datetime
    catalog: Catalog


def train_interactions(examples: pd.DataFrame, catalog: Catalog, cutoff: datetime) -> Training:
    """The positives before `cutoff` among `examples` (user_id, item_id, event_timestamp), on the
    catalog's items, indexed for the baselines."""
    index = catalog.index()
    stamp = pd.Timestamp(cutoff)
    moments = pd.to_datetime(examples["event_timestamp"], utc=True)
    examples = examples[examples["item_id"].isin(index) & (moments < stamp)]
    users = np.array(sorted(examples["user_id"].unique()))
    age = (stamp - pd.to_datetime(examples["event_timestamp"], utc=True)).dt.total_seconds().to_numpy() / 86_400
    train = baselines.TrainInteractions(
        users=examples["user_id"].map({u: i for i, u in enumerate(users)}).to_numpy(),
        items=examples["item_id"].map(index).to_numpy(),
        age_days=np.clip(age, 0, None),
        weights=np.ones(len(examples)),
        n_users=len(users),
        n_items=len(catalog),
    )
    return Training(train, users, cutoff, catalog)


def features_at(features: Any, catalog: Catalog, users: Sequence[str], moment: datetime) -> EvalData:
    """The users' and the catalog's point-in-time features at `moment`, to score users as the
    gateway would at that moment (no holdout: the truth and history are empty)."""
    stamp = pd.Timestamp(moment)
    user_ids = np.array(list(users))
    empty = sp.csr_matrix((len(user_ids), len(catalog)))
    columns = features.columns("ranking")
    user_rows = pd.DataFrame({"user_id": user_ids, "item_id": "", "event_timestamp": stamp})
    item_rows = pd.DataFrame({"user_id": "", "item_id": catalog.item_ids, "event_timestamp": stamp})
    return EvalData(
        cutoff=moment,
        catalog=catalog,
        users=user_ids,
        truth=empty,
        seen=empty,
        train=baselines.TrainInteractions(
            users=np.zeros(0, np.int64),
            items=np.zeros(0, np.int64),
            age_days=np.zeros(0),
            weights=np.zeros(0),
            n_users=0,
            n_items=len(catalog),
        ),
        eval_rows=np.zeros(0, np.int64),
        user_features=features(user_rows, "ranking").reset_index(drop=True),
        item_features=features(item_rows, "ranking").reset_index(drop=True),
        user_columns=columns.get("user_id", []),
        item_columns=columns.get("item_id", []),
    )


# ------------------------------------------------------------------------------- model scoring


def _python(value: Any) -> Any:
    """A frame cell as the online store gives it: None for missing, plain Python scalars."""
    if isinstance(value, np.ndarray | list | tuple):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    return value.item() if isinstance(value, np.generic) else value


def _column(values: pd.Series) -> np.ndarray:
    """A feature column as the gateway's snapshot holds it (`features.reader.as_array`)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    out = np.empty(len(values), dtype=object)
    out[:] = [_python(v) for v in values.tolist()]
    present = [v for v in out if v is not None]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if v is None else v for v in out], dtype=np.float64)
    return out


def item_lookup(
    item_ids: Sequence[str] | np.ndarray, frame: pd.DataFrame, columns: Sequence[str]
) -> Callable[[Sequence[str]], dict[str, Any]]:
    """Item features for candidate ids from a frame with one row per `item_ids` entry; an id
    the frame lacks gets missing values (NaN / None), as the gateway's snapshot gives."""
    index = {str(item): n for n, item in enumerate(item_ids)}
    missing_at = len(index)
    arrays = {}
    for name in columns:
        values = _column(frame[name]) if name in frame else np.full(len(index), None, dtype=object)
        pad = np.array([np.nan if values.dtype.kind == "f" else None], dtype=values.dtype)
        arrays[name] = np.concatenate([values, pad])

    def lookup(ids: Sequence[str]) -> dict[str, Any]:
        at = np.fromiter((index.get(i, missing_at) for i in ids), dtype=np.int64, count=len(ids))
        return {"item_id": list(ids), **{name: values[at] for name, values in arrays.items()}}

    return lookup


def served_lists(
    models: ModelCaller,
    data: EvalData,
    rules: RuleConfig,
    ks: tuple[int, ...] = DEFAULT_KS,
    progress: Callable[[str], None] = log.info,
    stages: tuple[str, ...] = MODEL_LISTS,
) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """The lists the gateway would serve each evaluated user at the cutoff, for every count in
    `ks` and every variant's exclusions (`VARIANTS`); and (`stages` with `retrieval`) the same lists
    from retrieval alone. As in the gateway, a user without features gets popular items, and a
    short list is topped up with popular items.

    Returns:
        {variant: {stage: {k: [U, k] catalog rows, -1 pads}}}.
    """
    index = data.catalog.index()
    n_users = len(data.users)
    out = {v: {name: {k: np.full((n_users, k), -1) for k in ks} for name in stages} for v in VARIANTS}
    popular = data.popular_catalog(rules.popular_size)
    step = max(1, n_users // 10)
    per_variant = varies_by_variant(models)  # a pair published per variant answers each its own way
    for row in range(n_users):
        user = data.user(row)
        by_variant = {} if is_cold(user) else data.scored_variants(models, row, per_variant)
        for variant, exclusions in VARIANTS.items():
            scored = by_variant.get(variant)
            for k in ks:
                wanted = replace(rules, count=k, **exclusions)
                for name in stages:
                    if scored is None:
                        chosen = popular_items(popular, user, wanted)
                    else:
                        own = scored.ranked(wanted) if name == "two_stage" else scored.retrieved(wanted)
                        chosen = topped_up(own, popular, user, wanted)
                    picked = [index.get(item, -1) for item, _ in chosen]
                    out[variant][name][k][row, : len(picked)] = picked
        if (row + 1) % step == 0 or row + 1 == n_users:
            progress(f"scored {row + 1:,} of {n_users:,} users")
    return out


def metrics_by_count(
    lists: Mapping[int, np.ndarray], truth: sp.csr_matrix, n_catalog: int, ks: tuple[int, ...] = DEFAULT_KS
) -> dict[str, float]:
    """`topk_metrics`, each @K measured on the list served for `count=K` (`lists[K]`); MRR and
    coverage@max on the longest."""
    longest = max(lists)
    out = topk_metrics(lists[longest], truth, n_catalog, ks)
    for k in ks:
        if k in lists and k != longest:
            at_k = topk_metrics(lists[k], truth, n_catalog, (k,))
            out[f"recall@{k}"] = at_k[f"recall@{k}"]
            if k == 10:
                out["ndcg@10"], out["coverage@10"] = at_k["ndcg@10"], at_k["coverage@10"]
    return out


def values_by_count(
    lists: Mapping[int, np.ndarray], truth: sp.csr_matrix, ks: tuple[int, ...] = DEFAULT_KS
) -> dict[str, np.ndarray]:
    """Per-user values of the interval metrics, each @K from the list served for `count=K`."""
    out = {}
    for k in ks:
        if k in lists:
            out[f"recall@{k}"] = per_user(lists[k], truth, (k,))[f"recall@{k}"]
    ten = lists.get(10, lists[max(lists)])
    out["ndcg@10"] = per_user(ten, truth, (min(10, ten.shape[1]),))["ndcg@10"]
    return {name: v for name, v in out.items() if name in INTERVAL_METRICS}


def gateway_lists(
    url: str,
    token: str,
    data: EvalData,
    ks: tuple[int, ...] = DEFAULT_KS,
    concurrency: int = 4,
    progress: Callable[[str], None] = log.info,
) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, int]]:
    """The running gateway's answers for every evaluated user at the cutoff (`X-Request-Time`,
    which needs a `recommend:admin` token), for every count in `ks` and every variant.

    Returns:
        ({variant: {k: [U, k] catalog rows}}, how many answers each path served).
    """
    import asyncio

    import httpx

    index = data.catalog.index()
    n_users = len(data.users)
    out = {v: {k: np.full((n_users, k), -1) for k in ks} for v in VARIANTS}
    paths: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}", "X-Request-Time": data.cutoff.isoformat()}
    jobs = [(row, v, k) for row in range(n_users) for v in VARIANTS for k in ks]

    async def run() -> None:
        done = 0
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=60) as client:

            async def ask(row: int, variant: str, k: int) -> None:
                nonlocal done
                params: dict[str, Any] = {"user_id": str(data.users[row]), "count": k}
                params |= {name: "true" if on else "false" for name, on in VARIANTS[variant].items()}
                async with gate:
                    answer = await client.get("/v1/recommendations", params=params)
                if answer.status_code != 200:
                    raise RuntimeError(f"the gateway answered {answer.status_code} for {params}: {answer.text[:300]}")
                body = answer.json()
                paths[body["path"]] = paths.get(body["path"], 0) + 1
                picked = [index.get(item["item_id"], -1) for item in body["items"]][:k]
                out[variant][k][row, : len(picked)] = picked
                done += 1
                if done % max(1, len(jobs) // 10) == 0:
                    progress(f"asked the gateway {done:,} of {len(jobs):,} times")

            await asyncio.gather(*(ask(*job) for job in jobs))

    try:
        asyncio.run(run())
    except httpx.HTTPError as err:
        raise RuntimeError(f"the gateway at {url} did not answer ({err!r}): is `towerflow serve` running?") from err
    return out, paths


def scored_report(
    lists: dict[str, dict[str, dict[int, np.ndarray]]],
    data: EvalData,
    ks: tuple[int, ...] = DEFAULT_KS,
    keep_values: bool = False,
) -> dict[str, Any]:
    """Metrics, intervals, comparisons and recall@k curves of every recommender's served lists.

    Args:
        lists: {variant: {recommender: {k: [U, k] rows}}} (`served_lists`, one entry per name).

    Returns:
        `metrics` {variant: {name: {metric: mean}}}; `intervals` {variant: {name: {metric:
        [low, high]}}} (bootstrap over users, `models.metrics.interval`); `versus` {variant:
        {name: {"best_baseline" | "production": {metric: {"name", "difference", "interval"}}}}}
        (paired differences); `curves` {variant: {name: recall@1..K}}; with `keep_values`,
        `values` {variant: {name: {metric: [users] array}}} (the users with a holdout item in the
        variant, in `data.users` order, so two names' values pair up), e.g. to pool holdouts.
    """
    report: dict[str, Any] = {"metrics": {}, "intervals": {}, "versus": {}, "curves": {}}
    for variant, by_name in lists.items():
        truth = data.truth_for(variant)
        values = {name: values_by_count(counted, truth, ks) for name, counted in by_name.items()}
        report["metrics"][variant] = {
            name: metrics_by_count(counted, truth, len(data.catalog), ks) for name, counted in by_name.items()
        }
        report["intervals"][variant] = {
            name: {metric: interval(v) for metric, v in per.items()} for name, per in values.items()
        }
        report["curves"][variant] = {
            name: recall_curve(counted[max(counted)], truth).tolist() for name, counted in by_name.items()
        }
        baselines_here = [n for n in BASELINES if n in by_name]
        versus: dict[str, Any] = {}
        for name, per in values.items():
            versus[name] = {}
            for metric, mine in per.items():
                rivals = {}
                if baselines_here:
                    best = max(baselines_here, key=lambda n: report["metrics"][variant][n][metric])
                    rivals["best_baseline"] = best
                if PRODUCTION in values and name != PRODUCTION:
                    rivals["production"] = PRODUCTION
                for role, rival in rivals.items():
                    diff = mine - values[rival][metric]
                    versus[name].setdefault(role, {})[metric] = {
                        "name": rival,
                        "difference": float(diff.mean()),
                        "interval": interval(diff),
                    }
        report["versus"][variant] = versus
        if keep_values:
            report.setdefault("values", {})[variant] = values
    return report


def evaluate(
    data: EvalData,
    candidate: dict[str, Path] | None,
    production: dict[str, Path] | None = None,
    baselines: Mapping[str, dict[str, Path]] | None = None,
    progress: Callable[[str], None] = log.info,
    rules: RuleConfig | None = None,
    more_lists: Mapping[str, Mapping[str, dict[int, np.ndarray]]] | None = None,
    keep_values: bool = False,
) -> dict[str, Any]:
    """Score the candidate (and production, and the baselines) on the same holdout, each through
    the gateway's own path.

    Args:
        candidate: {"retrieval": dir, "ranking": dir} of SavedModels: scored as `two_stage` and
            as `retrieval` (its ranker skipped); None to score only production and baselines.
        production: the same for the production pair, when there is one (`production`).
        baselines: {name: pair dirs} of exported baselines (`models.export.export_baselines`);
            None fits and exports every baseline on `data.train` in a temporary folder.
        rules: the gateway's rule settings (`RuleConfig.from_settings`); the count and the
            exclusions are set per list.
        more_lists: {variant: {name: {k: rows}}} scored beside the others (e.g. `served`: the
            running gateway's answers, `gateway_lists`).
        keep_values: also return each user's values (`scored_report`; not for JSON).
    """
    import tempfile

    from scoring.local import SavedModelPair

    rules = rules or RuleConfig(count=10)
    started = time.perf_counter()
    lists: dict[str, dict[str, dict[int, np.ndarray]]] = {v: {} for v in VARIANTS}

    def add(name_of: dict[str, str], dirs: Mapping[str, Path], what: str) -> None:
        progress(f"scoring {what} on {len(data.users):,} users as the gateway serves it")
        scored = served_lists(SavedModelPair(dirs), data, rules, progress=progress, stages=tuple(name_of))
        for variant in VARIANTS:
            for stage, name in name_of.items():
                lists[variant][name] = scored[variant][stage]

    if candidate:
        add({"two_stage": "two_stage", "retrieval": "retrieval"}, candidate, "the candidate")
    if production:
        add({"two_stage": PRODUCTION}, production, "the production model")
    with tempfile.TemporaryDirectory(prefix="towerflow-baselines-") as scratch:
        if baselines is None:
            progress("fitting baselines: " + ", ".join(BASELINES))
            baselines = stage_baselines(data, Path(scratch))
        for name, dirs in baselines.items():
            add({"two_stage": name}, dirs, f"baseline {name}")
    for variant, by_name in (more_lists or {}).items():
        lists[variant].update(by_name)
    report = scored_report(lists, data, keep_values=keep_values)
    report.update(
        {
            "rules": {k: v for k, v in asdict(rules).items() if k not in ("count", "exclude", *VARIANTS["unseen"])},
            "cutoff": data.cutoff.isoformat(),
            "users": int(len(data.users)),
            "users_with_new_items": int((np.asarray(data.truth_for("new").sum(axis=1)).ravel() > 0).sum()),
            "items": int(len(data.catalog)),
            "seconds": time.perf_counter() - started,
        }
    )
    return report


def stage_baselines(data: EvalData | Training, out_dir: Path) -> dict[str, dict[str, Path]]:
    """Fit every baseline on `data.train` and export each as a servable pair under
    `out_dir/<name>/{retrieval,ranking}`."""
    from models.export import export_baselines

    fitted = baselines.fit_baselines(data.train)
    meta = {"cutoff": data.cutoff.isoformat(), "training_users": int(data.train.n_users)}
    return export_baselines(fitted, data.catalog.item_ids, data.train_user_ids, out_dir, meta)


def best_baseline(report: dict[str, Any], variant: str, metric: str) -> tuple[str, float]:
    """The baseline with the highest `metric` in `variant`, and its value."""
    names = [n for n in report["metrics"][variant] if n in BASELINES]
    best = max(names, key=lambda n: report["metrics"][variant][n][metric])
    return best, report["metrics"][variant][best][metric]


# -------------------------------------------------------------------------------------- report


def table(report: dict[str, Any], ks: tuple[int, ...] = DEFAULT_KS) -> list[dict[str, Any]]:
    """Rows (variant, recommender, metrics...) for printing and the HTML report; a metric with a
    bootstrap interval also has `<metric> interval`: [low, high]."""
    rows = []
    for variant, by_name in report["metrics"].items():
        for name, m in by_name.items():
            row = {"variant": variant, "recommender": name, **{key: m[key] for key in m if key != "users"}}
            for metric, bounds in report.get("intervals", {}).get(variant, {}).get(name, {}).items():
                row[f"{metric} interval"] = bounds
            rows.append(row)
    return rows


def with_interval(row: dict[str, Any], metric: str) -> str:
    """`0.1567 [0.1451, 0.1689]`, or the value alone when it has no interval."""
    bounds = row.get(f"{metric} interval")
    if not bounds:
        return f"{row[metric]:.4f}"
    return f"{row[metric]:.4f} [{bounds[0]:.4f}, {bounds[1]:.4f}]"


def _versus_html(report: dict[str, Any]) -> str:
    """Each recommender against the best baseline and production: paired differences with their
    intervals, for the interval metrics."""
    lines = []
    for variant, by_name in report.get("versus", {}).items():
        for name, roles in by_name.items():
            for role, by_metric in roles.items():
                for metric, cell in by_metric.items():
                    low, high = cell["interval"]
                    lines.append(
                        f"<tr><td>{variant}</td><td>{name}</td><td>{role} ({cell['name']})</td><td>{metric}</td>"
                        f"<td>{cell['difference']:+.4f}</td><td>[{low:+.4f}, {high:+.4f}]</td></tr>"
                    )
    if not lines:
        return ""
    head = "<tr><th>variant</th><th>recommender</th><th>against</th><th>metric</th><th>difference</th>"
    return (
        "<h2>Against the best baseline and production</h2><p>Paired differences over the same users, "
        f"with {int(LEVEL * 100)}% bootstrap intervals.</p><table>{head}<th>interval</th></tr>{''.join(lines)}</table>"
    )


def _plot(report: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report["curves"]), figsize=(12, 4.5), squeeze=False)
    for ax, (variant, curves) in zip(axes[0], report["curves"].items(), strict=True):
        for name, curve in curves.items():
            style = "-" if "two_stage" in name else ("--" if "retrieval" in name else ":")
            ax.plot(range(1, len(curve) + 1), curve, style, label=name)
        ax.set_title(f"recall@K ({variant})")
        ax.set_xlabel("K")
        ax.set_ylabel("recall")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def write_report(report: dict[str, Any], out_dir: Path, title: str) -> tuple[Path, Path]:
    """`evaluation.json` and `evaluation.html` (metrics table and recall@K curves)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "evaluation.json"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    rows = table(report)
    for row in rows:
        for metric in INTERVAL_METRICS:
            if f"{metric} interval" in row:
                row[metric] = with_interval(row, metric)
    frame = pd.DataFrame(rows)
    shown = [c for c in frame.columns if not c.endswith(" interval") and c not in ("variant", "recommender")]
    html_table = frame.to_html(
        index=False, float_format=lambda v: f"{v:.4f}", columns=["variant", "recommender", *shown]
    )
    decision = report.get("gate")
    gate_html = f"<h2>Gate</h2><pre>{json.dumps(decision, indent=2)}</pre>" if decision else ""
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{padding:4px 8px;border:1px solid #ccc;text-align:right}}</style>
</head><body><h1>{title}</h1>
<p>Holdout from {report["cutoff"]}: {report["users"]:,} users with history and holdout positives
({report["users_with_new_items"]:,} with items new to them); {report["items"]:,} items.</p>
{gate_html}<h2>Metrics</h2><p>Means over users, with {int(LEVEL * 100)}% bootstrap intervals over users.</p>
{html_table}{_versus_html(report)}
<h2>Recall@K</h2><img src="data:image/png;base64,{_plot(report)}" alt="recall at K curves">
</body></html>"""
    html_path = out_dir / "evaluation.html"
    html_path.write_text(html)
    return json_path, html_path
