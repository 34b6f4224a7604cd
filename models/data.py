"""What training and evaluation read: the lake (interactions, catalog, examples, holdout) and
Feast's point-in-time training sets, turned into the arrays the Keras models take.

Model inputs are named after features (`<view>__<feature>`), the same names the gateway reads
from the online store, so a SavedModel's signature says exactly which features it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from jobs.lake import Lake
from models.features import (
    DAY_OF_WEEK,
    HISTORY_COUNTS,
    HISTORY_ITEMS,
    HISTORY_LAST_DAY,
    HISTORY_LEN,
    HOUR_OF_DAY,
    RECENT_ITEMS,
    RECENT_LEN,
    REQUEST_DAY,
    USER_NUMERIC,
)
from scoring.context import context_columns

SECONDS_PER_DAY = 86_400.0


@dataclass
class Catalog:
    """The recommendable items with their content attributes, in a fixed order."""

    item_ids: np.ndarray
    category: np.ndarray
    description: np.ndarray
    price: np.ndarray
    created_at: pd.Series  # UTC timestamps (NaT when unknown)
    available: np.ndarray

    def __len__(self) -> int:
        return len(self.item_ids)

    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    def age_days(self, at: datetime | pd.Series) -> np.ndarray:
        """Days since each item was created, as of `at` (0 when unknown or in the future)."""
        age = (pd.Timestamp(at) - self.created_at).dt.total_seconds().to_numpy() / SECONDS_PER_DAY
        return np.clip(np.nan_to_num(age, nan=0.0), 0.0, None)

    def frame(self) -> pd.DataFrame:
        """The catalog as rows (silver/items columns), e.g. to keep it with a training set."""
        return pd.DataFrame(
            {
                "item_id": self.item_ids,
                "category": self.category,
                "description": self.description,
                "price": self.price,
                "created_at": self.created_at.array,
                "available": self.available,
            }
        )

    def candidate_inputs(self, at: datetime) -> dict[str, np.ndarray]:
        """The candidate tower's inputs for the whole catalog as of `at`."""
        return {
            "item_id": self.item_ids,
            "category": self.category,
            "description": self.description,
            "price": self.price.astype(np.float32),
            "age_days": self.age_days(at).astype(np.float32),
        }


def load_catalog(lake: Lake) -> Catalog:
    """silver/items, sorted by item id."""
    table = lake.read(lake.uri("silver", "items"))
    if table is None:
        raise FileNotFoundError("silver/items does not exist yet: run the ETL first")
    return catalog_from_frame(table.to_pandas().sort_values("item_id"))


def catalog_from_frame(frame: pd.DataFrame) -> Catalog:
    """A catalog from silver/items-shaped rows, in their order (see `Catalog.frame`)."""
    frame = frame.reset_index(drop=True)
    return Catalog(
        item_ids=frame["item_id"].astype(str).to_numpy(),
        category=frame["category"].fillna("").astype(str).to_numpy(),
        description=frame["description"].fillna("").astype(str).to_numpy(),
        price=frame["price"].astype("float64").fillna(0.0).to_numpy(),
        created_at=pd.to_datetime(frame["created_at"], utc=True),
        available=frame["available"].fillna(True).astype(bool).to_numpy(),
    )


def load_interactions(lake: Lake, before: datetime | None = None, after: datetime | None = None) -> pd.DataFrame:
    """silver/interactions (user_id, item_id, action, timestamp, quantity) in [after, before)."""
    data = lake.dataset(lake.uri("silver", "interactions"))
    if data is None:
        raise FileNotFoundError("silver/interactions does not exist yet: run the ETL first")
    condition = None
    for bound, op in ((before, "lt"), (after, "ge")):
        if bound is None:
            continue
        expr = getattr(pads.field("timestamp"), f"__{op}__")(pd.Timestamp(bound).to_pydatetime())
        condition = expr if condition is None else condition & expr
    frame = data.to_table(
        columns=["user_id", "item_id", "action", "timestamp", "quantity"], filter=condition
    ).to_pandas()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def at_utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# ------------------------------------------------------------------------------- feature columns


def arrow_lists(values: pd.Series) -> pa.ListArray | None:
    """The column as one Arrow list array when it is Arrow-backed (`read_frame`), else None."""
    if not isinstance(values.dtype, pd.ArrowDtype):
        return None
    return pa.chunked_array(values.array.__arrow_array__()).combine_chunks()


def _padded(lists: pa.ListArray, n: int, width: int, fill: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[n, width] of `values` (one per list element, in order), each row's list cut at `width`."""
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
    row = np.repeat(np.arange(n), lengths)
    position = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    keep = position < width
    fill[row[keep], position[keep]] = values[keep]
    return fill


def _string_lists(values: pd.Series | None, n: int, width: int) -> np.ndarray:
    out = np.full((n, width), "", dtype=object)
    if values is None:
        return out
    lists = arrow_lists(values)
    if lists is not None:  # each distinct id one Python string, however often it repeats
        encoded = pc.dictionary_encode(pc.list_flatten(lists))
        words = encoded.dictionary.to_numpy(zero_copy_only=False)
        return _padded(lists, n, width, out, words[encoded.indices.to_numpy()])
    for row, items in enumerate(values):
        if items is None or (isinstance(items, float) and np.isnan(items)):
            continue
        items = list(items)[:width]
        out[row, : len(items)] = items
    return out


def string_codes(values: pd.Series | None, n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A string-list column as its distinct values and [n, width] int32 codes into them, as
    `_string_lists` pads it ("" is a distinct value): from Arrow's dictionary encoding when the
    column is Arrow-backed, without the [n, width] object array in between."""
    lists = arrow_lists(values) if values is not None else None
    if lists is None:
        codes, distinct = pd.factorize(_string_lists(values, n, width).ravel(), use_na_sentinel=False)
        return np.asarray(distinct, dtype=object), codes.astype(np.int32).reshape(n, width)
    encoded = pc.dictionary_encode(pc.list_flatten(lists))
    words = encoded.dictionary.to_numpy(zero_copy_only=False)
    # Code 0 is the padding; words keep their dictionary order after it.
    codes = _padded(lists, n, width, np.zeros((n, width), np.int32), encoded.indices.to_numpy().astype(np.int32) + 1)
    return np.concatenate([np.array([""], dtype=object), words.astype(object)]), codes


def _number_lists(values: pd.Series | None, n: int, width: int) -> np.ndarray:
    out = np.zeros((n, width), dtype=np.float32)
    if values is None:
        return out
    lists = arrow_lists(values)
    if lists is not None:
        numbers = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.float32)
        return _padded(lists, n, width, out, numbers)
    for row, numbers in enumerate(values):
        if numbers is None or (isinstance(numbers, float) and np.isnan(numbers)):
            continue
        numbers = list(numbers)[:width]
        out[row, : len(numbers)] = numbers
    return out


def read_frame(path: Path) -> pd.DataFrame:
    """A Parquet frame whose list columns stay Arrow arrays (`pd.ArrowDtype`) instead of one
    Python list of new Python strings per row: a training set's histories repeat a few thousand
    ids millions of times. The feature-column readers here take either form."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t) else None)


def numeric_columns(frame: pd.DataFrame, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Each named feature as float32 (missing column or value -> 0)."""
    n = len(frame)
    return {
        name: pd.to_numeric(frame[name], errors="coerce").fillna(0.0).to_numpy(np.float32)
        if name in frame
        else np.zeros(n, np.float32)
        for name in names
    }


def query_inputs(frame: pd.DataFrame, at: pd.Series | datetime) -> dict[str, np.ndarray]:
    """Query tower inputs from a training-set frame (one row per query)."""
    n = len(frame)
    moments = pd.to_datetime(pd.Series(at, index=frame.index) if not isinstance(at, pd.Series) else at, utc=True)
    return {
        "user_id": frame["user_id"].astype(str).to_numpy(),
        RECENT_ITEMS: _string_lists(frame.get(RECENT_ITEMS), n, RECENT_LEN),
        HISTORY_ITEMS: _string_lists(frame.get(HISTORY_ITEMS), n, HISTORY_LEN),
        HISTORY_COUNTS: _number_lists(frame.get(HISTORY_COUNTS), n, HISTORY_LEN),
        **{name: context_columns(moments)[name] for name in (HOUR_OF_DAY, DAY_OF_WEEK)},
        **numeric_columns(frame, USER_NUMERIC),
    }


#: A string column as (distinct values [V] object, int32 codes into them [n, ...]).
Coded = tuple[np.ndarray, np.ndarray]


def query_codes(frame: pd.DataFrame, at: pd.Series | datetime, history_len: int) -> dict[str, np.ndarray | Coded]:
    """`query_inputs` with the recent and history item lists as `Coded` pairs (`string_codes`):
    what training batches gather from, at half an object array's memory."""
    n = len(frame)
    moments = pd.to_datetime(pd.Series(at, index=frame.index) if not isinstance(at, pd.Series) else at, utc=True)
    context = context_columns(moments)
    return {
        "user_id": frame["user_id"].astype(str).to_numpy(),
        RECENT_ITEMS: string_codes(frame.get(RECENT_ITEMS), n, RECENT_LEN),
        HISTORY_ITEMS: string_codes(frame.get(HISTORY_ITEMS), n, history_len),
        HISTORY_COUNTS: _number_lists(frame.get(HISTORY_COUNTS), n, history_len),
        HOUR_OF_DAY: context[HOUR_OF_DAY],
        DAY_OF_WEEK: context[DAY_OF_WEEK],
        **numeric_columns(frame, USER_NUMERIC),
    }


def history_inputs(frame: pd.DataFrame, at: pd.Series | datetime) -> dict[str, np.ndarray]:
    """The last time each history item was bought and the moment the ranking is for (the items
    and counts themselves are query inputs)."""
    n = len(frame)
    moments = pd.to_datetime(pd.Series(at, index=frame.index) if not isinstance(at, pd.Series) else at, utc=True)
    return {
        HISTORY_LAST_DAY: _number_lists(frame.get(HISTORY_LAST_DAY), n, HISTORY_LEN),
        REQUEST_DAY: context_columns(moments)[REQUEST_DAY],
    }
