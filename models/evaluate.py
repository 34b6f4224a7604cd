"""Evaluation on the time-based holdout, for exported models and baselines in the same run.

Models are scored as they serve: their exported signatures, fed point-in-time features as of the
cutoff through the gateway's own binding, two-stage path and business rules (`scoring`), one
user per call. A model's metric@K is measured on the list the gateway would return for
`count=K`. Two variants, one per value of the gateway's `exclude_purchased`:
- `all`: every holdout item counts, re-purchases included; lists as served with
  `exclude_purchased=false`;
- `new`: only items the user had not interacted with before the cutoff count; lists as served by
  default (`exclude_purchased=true`). Baselines leave every seen item out here.

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
from models.data import Catalog
from models.metrics import DEFAULT_KS, recall_curve, topk_metrics
from scoring.catalog import Catalog as ServedCatalog
from scoring.rules import RuleConfig
from scoring.twostage import ModelCaller, Scored, is_cold, popular_items, score, topped_up

log = logging.getLogger(__name__)
#: Variant -> the gateway's `exclude_purchased` for it.
VARIANTS = {"all": False, "new": True}
CURVE_K = 100
MODEL_LISTS = ("two_stage", "retrieval")


@dataclass
class EvalData:
    """The holdout and everything known at the cutoff.

    Attributes:
        cutoff: first moment of the holdout.
        catalog: recommendable items (defines item indices).
        users: evaluated user ids: acted before the cutoff and have holdout positives.
        truth: [users, items] holdout positives.
        seen: [users, items] anything the user did before the cutoff (excluded in `new`).
        train: positives before the cutoff for the baselines, over all users.
        train_users: user ids indexing `train`; eval_rows: rows of `users` in it.
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

    def scored(self, models: ModelCaller, row: int) -> Scored:
        """User `row`'s candidates, item features and ranking scores at the cutoff, computed as
        the gateway computes them (`scoring.twostage.score`)."""
        return score(
            models,
            user_id=str(self.users[row]),
            user=self.user(row),
            item_features=self.item_lookup(),
            moment=self.cutoff,
        )

    def truth_for(self, variant: str) -> sp.csr_matrix:
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
    examples = examples[examples["item_id"].isin(index)]
    holdout = holdout[holdout["item_id"].isin(index)]
    train_users = np.array(sorted(examples["user_id"].unique()))
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

    age = (stamp - pd.to_datetime(examples["event_timestamp"], utc=True)).dt.total_seconds().to_numpy() / 86_400
    train = baselines.TrainInteractions(
        users=examples["user_id"].map(user_index).to_numpy(),
        items=examples["item_id"].map(index).to_numpy(),
        age_days=np.clip(age, 0, None),
        weights=np.ones(len(examples)),
        n_users=len(train_users),
        n_items=len(catalog),
    )
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
        user_features=features(user_rows, "ranking").reset_index(drop=True),
        item_features=features(item_rows, "ranking").reset_index(drop=True),
        user_columns=columns.get("user_id", []),
        item_columns=columns.get("item_id", []),
    )


def features_at(features: Any, catalog: Catalog, users: Sequence[str], moment: datetime) -> EvalData:
    """The users' and the catalog's point-in-time features at `moment`, to score users as the
    gateway would at that moment (no holdout: the truth and history are empty)."""
    stamp = pd.Timestamp(moment)
    users = np.array(list(users))
    empty = sp.csr_matrix((len(users), len(catalog)))
    columns = features.columns("ranking")
    user_rows = pd.DataFrame({"user_id": users, "item_id": "", "event_timestamp": stamp})
    item_rows = pd.DataFrame({"user_id": "", "item_id": catalog.item_ids, "event_timestamp": stamp})
    return EvalData(
        cutoff=moment,
        catalog=catalog,
        users=users,
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
    """A feature column as the gateway's snapshot holds it (`serving.feature_reader.as_array`)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    out = np.empty(len(values), dtype=object)
    out[:] = [_python(v) for v in values.tolist()]
    present = [v for v in out if v is not None]
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return np.array([np.nan if v is None else v for v in out], dtype=np.float64)
    return out


def item_lookup(
    item_ids: Sequence[str], frame: pd.DataFrame, columns: Sequence[str]
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
) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """The lists the gateway would serve each evaluated user at the cutoff, for every count in
    `ks` and both `exclude_purchased` settings; and the same lists from retrieval alone. As in
    the gateway, a user without features gets popular items, and a short list is topped up
    with popular items.

    Returns:
        {variant: {"two_stage" | "retrieval": {k: [U, k] catalog rows, -1 pads}}}.
    """
    index = data.catalog.index()
    n_users = len(data.users)
    out = {v: {name: {k: np.full((n_users, k), -1) for k in ks} for name in MODEL_LISTS} for v in VARIANTS}
    popular = data.popular_catalog(rules.popular_size)
    step = max(1, n_users // 10)
    for row in range(n_users):
        user = data.user(row)
        scored = None if is_cold(user) else data.scored(models, row)
        for variant, exclude_purchased in VARIANTS.items():
            for k in ks:
                wanted = replace(rules, count=k, exclude_purchased=exclude_purchased)
                for name in MODEL_LISTS:
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


def gateway_lists(
    url: str,
    token: str,
    data: EvalData,
    ks: tuple[int, ...] = DEFAULT_KS,
    concurrency: int = 4,
    progress: Callable[[str], None] = log.info,
) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, int]]:
    """The running gateway's answers for every evaluated user at the cutoff (`X-Request-Time`,
    which needs a `recommend:admin` token), for every count in `ks` and both variants.

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
                params = {"user_id": str(data.users[row]), "count": k}
                params["exclude_purchased"] = "true" if VARIANTS[variant] else "false"
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


def baseline_recs(data: EvalData, k: int = CURVE_K) -> dict[str, dict[str, np.ndarray]]:
    """Baseline recommendations per variant (repeat-purchase only in `all`)."""
    rows = data.eval_rows
    coo = data.seen.tocoo()  # re-index the evaluated users' rows into the training user index
    seen = sp.csr_matrix((coo.data, (rows[coo.row], coo.col)), shape=(data.train.n_users, data.train.n_items))
    out: dict[str, dict[str, np.ndarray]] = {v: {} for v in VARIANTS}
    for variant, exclude in (("all", None), ("new", seen)):
        out[variant]["popular"] = baselines.most_popular(data.train, rows, k, exclude)
        out[variant]["item_knn"] = baselines.item_knn(data.train, rows, k, exclude)
        out[variant]["als"] = baselines.implicit_als(data.train, rows, k, exclude)
    out["all"]["repeat_purchase"] = baselines.repeat_purchase(data.train, rows, k)
    return out


def score_lists(
    recs: dict[str, dict[str, np.ndarray]],
    data: EvalData,
    ks: tuple[int, ...] = DEFAULT_KS,
    by_count: dict[str, dict[str, dict[int, np.ndarray]]] | None = None,
) -> dict[str, Any]:
    """Metrics and recall@k curves for every recommender, per variant.

    Args:
        recs: {variant: {name: [U, K] rows}}, the longest list of each recommender.
        by_count: {variant: {name: {k: rows}}} for recommenders whose list depends on the count
            asked for (the served models: the rules cap categories per count).
    """
    metrics: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for variant, by_name in recs.items():
        truth = data.truth_for(variant)
        counted = (by_count or {}).get(variant, {})
        metrics[variant] = {
            name: metrics_by_count(counted[name], truth, len(data.catalog), ks)
            if name in counted
            else topk_metrics(r, truth, len(data.catalog), ks)
            for name, r in by_name.items()
        }
        curves[variant] = {name: recall_curve(r, truth).tolist() for name, r in by_name.items()}
    return {"metrics": metrics, "curves": curves}


def evaluate(
    data: EvalData,
    candidate: dict[str, Path],
    production: dict[str, Path] | None = None,
    with_baselines: bool = True,
    progress: Callable[[str], None] = log.info,
    rules: RuleConfig | None = None,
) -> dict[str, Any]:
    """Score the candidate (and production, and the baselines) on the same holdout.

    Args:
        candidate: {"retrieval": dir, "ranking": dir} of SavedModels.
        production: the same for the production model, when there is one.
        rules: the gateway's rule settings (`RuleConfig.from_settings`); count and
            exclude_purchased are set per list.
    """
    from scoring.local import SavedModelPair

    rules = rules or RuleConfig(count=10)
    started = time.perf_counter()
    recs: dict[str, dict[str, np.ndarray]] = {v: {} for v in VARIANTS}
    by_count: dict[str, dict[str, dict[int, np.ndarray]]] = {v: {} for v in VARIANTS}
    for label, dirs in (("candidate", candidate), ("production", production)):
        if not dirs:
            continue
        progress(f"scoring the {label} model on {len(data.users):,} users as the gateway serves it")
        lists = served_lists(SavedModelPair(dirs), data, rules, progress=progress)
        prefix = "" if label == "candidate" else "production_"
        for variant in VARIANTS:
            for name in MODEL_LISTS:
                recs[variant][prefix + name] = lists[variant][name][max(DEFAULT_KS)]
                by_count[variant][prefix + name] = lists[variant][name]
    if with_baselines:
        progress("scoring baselines: popular, repeat-purchase, item-kNN, ALS")
        for variant, by_name in baseline_recs(data).items():
            recs[variant].update(by_name)
    report = score_lists(recs, data, by_count=by_count)
    report.update(
        {
            "rules": {k: v for k, v in asdict(rules).items() if k not in ("count", "exclude", "exclude_purchased")},
            "cutoff": data.cutoff.isoformat(),
            "users": int(len(data.users)),
            "users_with_new_items": int((np.asarray(data.truth_for("new").sum(axis=1)).ravel() > 0).sum()),
            "items": int(len(data.catalog)),
            "seconds": time.perf_counter() - started,
        }
    )
    return report


def best_baseline(report: dict[str, Any], variant: str, metric: str) -> tuple[str, float]:
    names = [n for n in report["metrics"][variant] if n in ("popular", "repeat_purchase", "item_knn", "als")]
    best = max(names, key=lambda n: report["metrics"][variant][n][metric])
    return best, report["metrics"][variant][best][metric]


# -------------------------------------------------------------------------------------- report


def table(report: dict[str, Any], ks: tuple[int, ...] = DEFAULT_KS) -> list[dict[str, Any]]:
    """Rows (variant, recommender, metrics...) for printing and the HTML report."""
    rows = []
    for variant, by_name in report["metrics"].items():
        for name, m in by_name.items():
            rows.append({"variant": variant, "recommender": name, **{key: m[key] for key in m if key != "users"}})
    return rows


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
    frame = pd.DataFrame(table(report))
    numeric = frame.select_dtypes("number").columns
    html_table = frame.to_html(
        index=False, float_format=lambda v: f"{v:.4f}", columns=["variant", "recommender", *numeric]
    )
    decision = report.get("gate")
    gate_html = f"<h2>Gate</h2><pre>{json.dumps(decision, indent=2)}</pre>" if decision else ""
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{padding:4px 8px;border:1px solid #ccc;text-align:right}}</style>
</head><body><h1>{title}</h1>
<p>Holdout from {report["cutoff"]}: {report["users"]:,} users with history and holdout positives
({report["users_with_new_items"]:,} with items new to them); {report["items"]:,} items.</p>
{gate_html}<h2>Metrics</h2>{html_table}
<h2>Recall@K</h2><img src="data:image/png;base64,{_plot(report)}" alt="recall at K curves">
</body></html>"""
    html_path = out_dir / "evaluation.html"
    html_path.write_text(html)
    return json_path, html_path
