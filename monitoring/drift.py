"""Drift: the population stability index (PSI) of key features and of the ranking scores, a
reference window against one day.

    PSI = sum over bins of (a - e) * ln(a / e)

with `e` the reference's share of a bin and `a` the day's. Numeric bins are the reference's
deciles (fewer when values repeat, as counters of mostly-zero do; one per value when it has at
most ten); values outside them fall in the first or last bin; missing values have a bin of their
own, so a column that starts arriving empty drifts too. A category is a bin. An empty bin's
share counts as `EPSILON`, so a bin that only one side fills adds a large but finite term. Rules
of thumb (Siddiqi, "Credit Risk Scorecards", 2006): below 0.1 no change, 0.1 to 0.25 a moderate
one (`warn`), above 0.25 a significant one (`alert`).

What is compared (`day_drift`):
- gold features: the rows of the day (`feature_date`) against the rows of the reference window:
  the last days the model serving that day was trained on (`resolve_reference`), else the days
  just before it;
- scores: `bronze/impressions.score` of the model path, per ranking version, against the same
  version's scores of the days before (a model has no served scores on its training days).

The functions above the lake readers are pure (arrays and pyarrow tables in, numbers out).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from towerflow.lake import Lake

#: A share of 0 counts as this much (an empty bin would make ln(a / e) infinite).
EPSILON = 1e-4
#: Quantile bins of a numeric feature (deciles).
BINS = 10
#: PSI levels: below `warn` "ok".
Level = Literal["ok", "warn", "alert", "unknown"]
MISSING = "missing"
#: The features watched per gold table: the models' main inputs, numeric and categorical.
#: `age_days` is left out: every item ages a day a day, so it drifts by design.
KEY_FEATURES: dict[str, tuple[str, ...]] = {
    "user_features": (
        "views_30d",
        "clicks_30d",
        "purchases_30d",
        "days_since_last_event",
        "days_since_last_purchase",
        "avg_price_30d",
        "distinct_categories_30d",
        "favourite_category",
    ),
    "item_features": ("views_7d", "purchases_30d", "popularity", "ctr", "conversion", "price", "category"),
}
SCORES = "impressions"  # the table name scores are reported under


@dataclass(frozen=True)
class Thresholds:
    """PSI from `warn` up is a moderate shift, from `alert` up a significant one."""

    warn: float = 0.1
    alert: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.warn <= self.alert:
            raise ValueError(f"drift thresholds need 0 < warn <= alert; got warn={self.warn}, alert={self.alert}")

    def level(self, psi: float | None) -> Level:
        if psi is None:
            return "unknown"
        return "alert" if psi >= self.alert else "warn" if psi >= self.warn else "ok"


# ------------------------------------------------------------------------------------------------
# PSI: pure functions.


def psi_of_shares(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, epsilon: float = EPSILON
) -> float:
    """PSI of two share vectors over the same bins (each summing to 1); shares below `epsilon`
    count as `epsilon`.

    Raises:
        ValueError: the vectors differ in length.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"shares over different bins: {e.shape} vs {a.shape}")
    e, a = np.maximum(e, epsilon), np.maximum(a, epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def quantile_edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Where the bins of the reference's non-missing values start: each distinct value when
    there are at most `bins` of them (a small counter), else the `bins` quantiles' values
    (repeats merged, so a mostly-constant feature gets fewer bins); empty when it has none."""
    present = reference[~np.isnan(reference)]
    distinct = np.unique(present)
    if len(distinct) <= bins:
        return distinct
    return np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf"))


def numeric_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of `values` (NaN = missing) in the bins `edges` delimit, plus the missing share
    last: `len(edges) + 2` numbers summing to 1 (all 0 when there are no values). A value equal
    to an edge falls in the bin the edge opens."""
    out = np.zeros(len(edges) + 2)
    if not len(values):
        return out
    missing = np.isnan(values)
    out[:-1] = np.bincount(np.searchsorted(edges, values[~missing], side="right"), minlength=len(edges) + 1)
    out[-1] = missing.sum()
    return out / len(values)


def numeric_bins(edges: np.ndarray) -> tuple[str, ...]:
    """Labels of `numeric_shares`' bins."""
    if not len(edges):
        return ("all", MISSING)
    fmt = [f"{e:.4g}" for e in edges]
    inner = [f"[{lo}, {hi})" for lo, hi in zip(fmt, fmt[1:], strict=False)]
    return (f"< {fmt[0]}", *inner, f">= {fmt[-1]}", MISSING)


@dataclass(frozen=True)
class Comparison:
    """A feature's bins, the reference's and the day's shares of them, and their PSI (None when
    either side has no rows)."""

    bins: tuple[str, ...]
    reference_shares: tuple[float, ...]
    shares: tuple[float, ...]
    psi: float | None


def compare_numeric(
    reference: np.ndarray, current: np.ndarray, *, bins: int = BINS, epsilon: float = EPSILON
) -> Comparison:
    """Compare two samples of a numeric feature (float arrays, NaN = missing) over the
    reference's quantile bins."""
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    edges = quantile_edges(reference, bins)
    ref, cur = numeric_shares(reference, edges), numeric_shares(current, edges)
    value = psi_of_shares(ref, cur, epsilon) if len(reference) and len(current) else None
    return Comparison(numeric_bins(edges), tuple(ref.tolist()), tuple(cur.tolist()), value)


def compare_categories(
    reference: Sequence[object], current: Sequence[object], *, epsilon: float = EPSILON
) -> Comparison:
    """Compare two samples of a categorical feature; each category is a bin (None = missing),
    ordered by the reference's frequency."""
    ref = Counter(MISSING if v is None else str(v) for v in reference)
    cur = Counter(MISSING if v is None else str(v) for v in current)
    labels = tuple(sorted(ref.keys() | cur.keys(), key=lambda k: (-ref[k], -cur[k], k)))
    ref_shares = np.array([ref[k] for k in labels], dtype=np.float64) / max(len(reference), 1)
    cur_shares = np.array([cur[k] for k in labels], dtype=np.float64) / max(len(current), 1)
    value = psi_of_shares(ref_shares, cur_shares, epsilon) if len(reference) and len(current) else None
    return Comparison(labels, tuple(ref_shares.tolist()), tuple(cur_shares.tolist()), value)


def psi(reference: np.ndarray, current: np.ndarray, *, bins: int = BINS, epsilon: float = EPSILON) -> float:
    """PSI of a numeric feature's day sample against its reference sample (see the module doc).

    Raises:
        ValueError: either sample is empty.
    """
    value = compare_numeric(reference, current, bins=bins, epsilon=epsilon).psi
    if value is None:
        raise ValueError("PSI needs values on both sides; got an empty sample")
    return value


def _is_numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def compare_columns(
    reference: pa.ChunkedArray | pa.Array, current: pa.ChunkedArray | pa.Array, *, bins: int = BINS
) -> Comparison:
    """`compare_numeric` for number columns, `compare_categories` for the others."""
    if _is_numeric(reference.type):
        as_float = [pc.cast(c, pa.float64()).to_numpy(zero_copy_only=False) for c in (reference, current)]
        return compare_numeric(as_float[0], as_float[1], bins=bins)
    return compare_categories(reference.to_pylist(), current.to_pylist())


@dataclass(frozen=True)
class Drift:
    """One feature's (or one ranking version's scores') drift on a day.

    Attributes:
        table: the gold table (`user_features`, `item_features`), or `impressions` for scores.
        feature: the column.
        psi: None when the reference or the day has no rows.
        level: `ok`, `warn`, `alert` (Thresholds) or `unknown` (no PSI).
        reference_rows / rows: the sample sizes.
        bins / reference_shares / shares: the distributions compared (for plots).
        model_version: the ranking version, for scores; "" for features.
        reference: what the reference is, in words.
    """

    table: str
    feature: str
    psi: float | None
    level: Level
    reference_rows: int
    rows: int
    bins: tuple[str, ...]
    reference_shares: tuple[float, ...]
    shares: tuple[float, ...]
    model_version: str = ""
    reference: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Drift:
        fields = {**data}
        for name in ("bins", "reference_shares", "shares"):
            fields[name] = tuple(fields.get(name, ()))
        return cls(**fields)


def feature_drift(
    reference: pa.Table,
    current: pa.Table,
    table: str,
    features: Sequence[str],
    thresholds: Thresholds,
    *,
    bins: int = BINS,
    described: str = "",
) -> list[Drift]:
    """Drift of each of `features` (columns of both tables) between the reference rows and the
    day's rows."""
    out = []
    for feature in features:
        c = compare_columns(reference.column(feature), current.column(feature), bins=bins)
        out.append(
            Drift(
                table=table,
                feature=feature,
                psi=c.psi,
                level=thresholds.level(c.psi),
                reference_rows=reference.num_rows,
                rows=current.num_rows,
                bins=c.bins,
                reference_shares=c.reference_shares,
                shares=c.shares,
                reference=described,
            )
        )
    return out


def score_drift(
    reference: pa.Table, current: pa.Table, thresholds: Thresholds, *, bins: int = BINS, described: str = ""
) -> list[Drift]:
    """Drift of the scores of each ranking version that served on the day (`ranking_version`,
    `score` columns) against the same version's reference scores; a version new that day has
    none (`unknown`)."""
    out = []
    for version in sorted(set(current.column("ranking_version").to_pylist()) - {None}, key=_version_key):
        ref = reference.filter(pc.equal(reference.column("ranking_version"), version))
        cur = current.filter(pc.equal(current.column("ranking_version"), version))
        c = compare_columns(ref.column("score"), cur.column("score"), bins=bins)
        out.append(
            Drift(
                table=SCORES,
                feature="score",
                psi=c.psi,
                level=thresholds.level(c.psi),
                reference_rows=ref.num_rows,
                rows=cur.num_rows,
                bins=c.bins,
                reference_shares=c.reference_shares,
                shares=c.shares,
                model_version=str(version),
                reference=described,
            )
        )
    return out


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


# ------------------------------------------------------------------------------------------------
# The reference window.


@dataclass(frozen=True)
class Window:
    """Days `first` through `last` (both included) and why they are the reference."""

    first: date
    last: date
    source: str

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def training_end(metadata: Mapping[str, Any]) -> date | None:
    """The first day a published version was not trained on, from its metadata: a refit's
    `trained_before`, else the training `cutoff`; None when it says neither."""
    refit = metadata.get("refit") or {}
    when = refit.get("trained_before") or metadata.get("cutoff")
    if not when:
        return None
    return datetime.fromisoformat(str(when)).date()


def reference_window(day: date, days: int, trained_before: date | None = None, version: str | None = None) -> Window:
    """The `days` days up to the last day the model was trained on (`trained_before` - 1, and
    never `day` itself or later), or, without one, the `days` days before `day`."""
    if days < 1:
        raise ValueError(f"a reference window needs at least one day; got {days}")
    if trained_before is None:
        last = day - timedelta(days=1)
        source = f"the {days} days before {day} (no served model says what it was trained on)"
    else:
        last = min(trained_before, day) - timedelta(days=1)
        source = f"the last {days} training days of ranking version {version} (trained before {trained_before})"
    return Window(last - timedelta(days=days - 1), last, source)


# ------------------------------------------------------------------------------------------------
# Lake readers.


def _between(column: str, first: date, last: date):
    import pyarrow.dataset as ds

    return (ds.field(column) >= pa.scalar(first, pa.date32())) & (ds.field(column) <= pa.scalar(last, pa.date32()))


def read_features(lake: Lake, table: str, first: date, last: date, features: Sequence[str]) -> pa.Table:
    """The `features` of gold `table`'s rows of days `first`..`last` (`feature_date`); no rows
    when the table does not exist."""
    rows = lake.read(lake.uri("gold", table), columns=list(features), filter=_between("feature_date", first, last))
    if rows is None:
        return pa.table({f: pa.array([], pa.float64()) for f in features})
    return rows


def read_scores(lake: Lake, first: date, last: date) -> pa.Table:
    """`ranking_version` and `score` of the model path's impressions of days `first`..`last`."""
    import pyarrow.dataset as ds

    where = _between("event_date", first, last) & (ds.field("served_path") == "model") & ds.field("score").is_valid()
    rows = lake.read(lake.uri("bronze", "impressions"), columns=["ranking_version", "score"], filter=where)
    if rows is None:
        return pa.table({"ranking_version": pa.array([], pa.string()), "score": pa.array([], pa.float64())})
    return rows


def serving_version(lake: Lake, day: date) -> str | None:
    """The ranking version that served most of the day's model-path impressions, if any."""
    versions = read_scores(lake, day, day).column("ranking_version").to_pylist()
    counts = Counter(v for v in versions if v)
    return counts.most_common(1)[0][0] if counts else None


def resolve_reference(lake: Lake, models_dir: Path | None, day: date, days: int) -> Window:
    """The reference window of `day`: the last `days` training days of the ranking version that
    served the day (else the `stable` one), from its metadata in the model registry; else the
    `days` days before `day`."""
    version = serving_version(lake, day)
    trained_before = None
    if models_dir is not None:
        if version is None:
            version = _stable_version(models_dir)
        if version is not None and version.isdigit():
            path = models_dir / "ranking" / version / "assets.extra" / "towerflow.json"  # models.registry.METADATA
            meta = json.loads(path.read_text()) if path.exists() else {}
            trained_before = training_end(meta)
    return reference_window(day, days, trained_before, version)


def _stable_version(models_dir: Path) -> str | None:
    from towerflow.model_config import read_models_config

    path = models_dir / "models.config"
    if not path.exists():
        return None
    for entry in read_models_config(path):
        if entry.name == "ranking" and "stable" in dict(entry.labels):
            return str(dict(entry.labels)["stable"])
    return None


def day_drift(
    lake: Lake,
    day: date,
    reference: Window,
    thresholds: Thresholds,
    *,
    features: Mapping[str, Sequence[str]] = KEY_FEATURES,
    score_days: int = 7,
    bins: int = BINS,
) -> list[Drift]:
    """Every key feature's drift on `day` against `reference`, then the scores' of each ranking
    version against its own `score_days` days before."""
    out: list[Drift] = []
    for table, columns in features.items():
        ref = read_features(lake, table, reference.first, reference.last, columns)
        cur = read_features(lake, table, day, day, columns)
        out += feature_drift(ref, cur, table, columns, thresholds, bins=bins, described=reference.source)
    before = day - timedelta(days=score_days)
    described = f"the same ranking version's scores of {before} .. {day - timedelta(days=1)}"
    out += score_drift(
        read_scores(lake, before, day - timedelta(days=1)),
        read_scores(lake, day, day),
        thresholds,
        bins=bins,
        described=described,
    )
    return out
