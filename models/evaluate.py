"""Evaluation on the time-based holdout, for exported models and baselines in the same run.

Models are evaluated through their exported SavedModel signatures, exactly as they serve, so the
candidate and the production model go through the same code. Two variants:
- `all`: every holdout item counts, re-purchases included;
- `new`: only items the user had not interacted with before the cutoff count, and
  recommendations leave those out.

Usable as `python -m models.evaluate` and from Airflow tasks; `towerflow evaluate` prints it.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models import baselines
from models.data import Catalog, history_inputs, numeric_columns, query_inputs
from models.features import FAVOURITE_CATEGORY, ITEM_CATEGORY, ITEM_ID, ITEM_NUMERIC, RETRIEVAL_SCORE
from models.metrics import DEFAULT_KS, recall_curve, topk_metrics

log = logging.getLogger(__name__)
VARIANTS = ("all", "new")
CURVE_K = 100


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
    features: Callable[[pd.DataFrame, str], pd.DataFrame],
) -> EvalData:
    """Build the evaluation set.

    Args:
        examples: positives before the cutoff (what the models trained on).
        holdout: positives in the holdout window.
        interactions: every interaction before the cutoff (for `seen`).
        features: point-in-time feature lookup (entity frame, service) -> frame.
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
    )


# ------------------------------------------------------------------------------- model scoring


def load_signature(path: Path):
    from models.tf_env import tensorflow

    tf = tensorflow()
    return tf.saved_model.load(str(path)).signatures["serving_default"]


def _tensors(inputs: dict[str, np.ndarray], signature) -> dict[str, Any]:
    from models.tf_env import tensorflow

    tf = tensorflow()
    specs = signature.structured_input_signature[1]
    return {name: tf.constant(inputs[name], dtype=spec.dtype) for name, spec in specs.items()}


def two_stage(
    retrieval, ranking, data: EvalData, k: int = CURVE_K, batch: int = 64
) -> dict[str, dict[str, np.ndarray]]:
    """Recommendations per variant from a retrieval and a ranking signature.

    Returns:
        {variant: {"retrieval": [U, k] rows, "two_stage": [U, k] rows}} (catalog rows, -1 pads).
    """
    index = data.catalog.index()
    n_users = len(data.users)
    out = {v: {"retrieval": np.full((n_users, k), -1), "two_stage": np.full((n_users, k), -1)} for v in VARIANTS}
    query = query_inputs(data.user_features, pd.Timestamp(data.cutoff))
    user_cols = {
        **query,
        **history_inputs(data.user_features, pd.Timestamp(data.cutoff)),
        FAVOURITE_CATEGORY: data.user_features.get(FAVOURITE_CATEGORY, pd.Series("", index=data.user_features.index))
        .fillna("")
        .astype(str)
        .to_numpy(),
    }
    item_cols = numeric_columns(data.item_features, ITEM_NUMERIC)
    category = data.item_features.get(ITEM_CATEGORY, pd.Series(data.catalog.category)).fillna("").astype(str).to_numpy()
    category = np.where(category == "", data.catalog.category, category)
    seen = data.seen.tocsr()
    for start in range(0, n_users, batch):
        stop = min(start + batch, n_users)
        chunk = {name: values[start:stop] for name, values in user_cols.items()}
        result = retrieval(**_tensors(chunk, retrieval))
        ids = result["item_ids"].numpy().astype(str)
        scores = result["scores"].numpy()
        rows = np.vectorize(lambda i: index.get(i, -1), otypes=[np.int64])(ids)
        ranking_inputs = {
            **chunk,
            ITEM_ID: ids,
            RETRIEVAL_SCORE: scores,
            ITEM_CATEGORY: category[np.maximum(rows, 0)],
            **{name: values[np.maximum(rows, 0)] for name, values in item_cols.items()},
        }
        ranked = ranking(**_tensors(ranking_inputs, ranking))["scores"].numpy()
        for offset in range(stop - start):
            user = start + offset
            seen_rows = set(seen.indices[seen.indptr[user] : seen.indptr[user + 1]])
            cand = rows[offset]
            for variant in VARIANTS:
                keep = cand >= 0
                if variant == "new":
                    keep &= ~np.isin(cand, list(seen_rows))
                kept = cand[keep]
                out[variant]["retrieval"][user, : min(k, len(kept))] = kept[:k]
                order = np.argsort(-ranked[offset][keep], kind="stable")[:k]
                out[variant]["two_stage"][user, : len(order)] = kept[order]
    return out


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


def score(recs: dict[str, dict[str, np.ndarray]], data: EvalData, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, Any]:
    """Metrics and recall@k curves for every recommender, per variant."""
    metrics: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for variant, by_name in recs.items():
        truth = data.truth_for(variant)
        metrics[variant] = {name: topk_metrics(r, truth, len(data.catalog), ks) for name, r in by_name.items()}
        curves[variant] = {name: recall_curve(r, truth).tolist() for name, r in by_name.items()}
    return {"metrics": metrics, "curves": curves}


def evaluate(
    data: EvalData,
    candidate: dict[str, Path],
    production: dict[str, Path] | None = None,
    with_baselines: bool = True,
    progress: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Score the candidate (and production, and the baselines) on the same holdout.

    Args:
        candidate: {"retrieval": dir, "ranking": dir} of SavedModels.
        production: the same for the production model, when there is one.
    """
    started = time.perf_counter()
    recs: dict[str, dict[str, np.ndarray]] = {v: {} for v in VARIANTS}
    for label, dirs in (("candidate", candidate), ("production", production)):
        if not dirs:
            continue
        progress(f"scoring the {label} model on {len(data.users):,} users")
        stages = two_stage(load_signature(dirs["retrieval"]), load_signature(dirs["ranking"]), data)
        for variant in VARIANTS:
            prefix = "" if label == "candidate" else "production_"
            recs[variant][f"{prefix}two_stage"] = stages[variant]["two_stage"]
            recs[variant][f"{prefix}retrieval"] = stages[variant]["retrieval"]
    if with_baselines:
        progress("scoring baselines: popular, repeat-purchase, item-kNN, ALS")
        for variant, by_name in baseline_recs(data).items():
            recs[variant].update(by_name)
    report = score(recs, data)
    report.update(
        {
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
