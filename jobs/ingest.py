"""Importers: files as people have them -> `bronze/events` and `bronze/items`.

Each importer is extract (read the file, check its columns) -> pure transform (typed rows plus
rejected rows with a reason) -> load (one atomic Delta commit per table, keyed by an import batch
derived from the file's bytes, so importing the same file again lands nothing).

Usable from the command line (`towerflow data import ...`) and from Airflow tasks.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Required, TypedDict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from jobs.lake import Lake
from towerflow.schemas import ACTIONS, BRONZE_EVENTS, BRONZE_ITEMS, EVENTS_PARTITION, as_schema

ONLINE_RETAIL_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
# "Online Retail II" (UCI 502) names the same columns differently.
ONLINE_RETAIL_ALIASES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}
EVENT_COLUMNS = ("user_id", "item_id", "action", "timestamp")
EVENT_OPTIONAL = ("quantity", "price", "event_id", "invoice_no", "country")
ITEM_OPTIONAL = ("description", "category", "price", "created_at", "available", "updated_at")
#: Accepted spellings of `available` (lower-cased); blank means "not stated".
AVAILABLE_VALUES = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
TIMESTAMP_FORMATS = ("ISO8601", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M:%S")


class InputError(ValueError):
    """Input that cannot be imported as it is; the message says what and where."""


@dataclass
class Rejects:
    """Rows rejected by a transform: reason -> source row numbers (1-based data rows)."""

    rows: dict[str, list[int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, rows: np.ndarray, values: pd.Series | None = None) -> None:
        if len(rows) == 0:
            return
        self.rows.setdefault(reason, []).extend(int(r) for r in rows)
        if values is not None:
            self.examples.setdefault(reason, []).extend(repr(v) for v in values.head(3))

    @property
    def total(self) -> int:
        return len(self.all_rows())

    def all_rows(self) -> set[int]:
        return {r for rows in self.rows.values() for r in rows}

    def counts(self) -> dict[str, int]:
        return {reason: len(rows) for reason, rows in sorted(self.rows.items())}

    def describe(self, source: str) -> str:
        lines = [f"{source}: {self.total} row(s) cannot be imported:"]
        for reason, rows in sorted(self.rows.items()):
            shown = ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
            example = self.examples.get(reason, [])
            values = f" (values: {', '.join(example[:3])})" if example else ""
            lines.append(f"  - {reason}: {len(rows)} row(s), data rows {shown}{values}")
        return "\n".join(lines)


@dataclass
class ImportReport:
    """What an import read, landed and rejected; printed by the CLI, logged by Airflow."""

    source: str
    batch: str
    rows_read: int
    events_landed: int
    items_landed: int
    rejected: dict[str, int]
    already_imported: bool
    events_version: int | None = None
    items_version: int | None = None
    quarantine: str | None = None


# ---------------------------------------------------------------------------------------- extract


def file_batch(path: Path, source: str) -> str:
    """Import batch id: the source kind plus a digest of the file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"{source}-{digest.hexdigest()[:16]}"


def read_table_file(path: Path) -> pd.DataFrame:
    """Read CSV (optionally gzipped), Parquet or XLSX, every column as text.

    Raises:
        InputError: the file is missing, empty or not a format we read.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir() or path.stat().st_size == 0:
        raise InputError(f"{path}: not a data file (empty or a folder)")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
            return frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object})
        if name.endswith((".xlsx", ".xlsm", ".xls")):
            frame = pd.read_excel(path, dtype=str)
            return frame.fillna("").astype(str)
        if name.endswith((".csv", ".csv.gz", ".txt", ".tsv", ".gz")):
            sep = "\t" if ".tsv" in name else ","
            try:
                return _read_csv(path, sep, "utf-8")
            except UnicodeDecodeError:
                return _read_csv(path, sep, "latin-1")
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise InputError(f"{path}: cannot read as a table: {err}") from err
    raise InputError(f"{path}: unknown file type; expected .csv, .csv.gz, .parquet or .xlsx")


def _read_csv(path: Path, sep: str, encoding: str) -> pd.DataFrame:
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding=encoding, compression="infer")


def require_columns(frame: pd.DataFrame, required: tuple[str, ...], path: Path) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns)) or 'none'}"
        )


# -------------------------------------------------------------------------------------- transform


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype("string").str.strip() == "")


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Text -> UTC timestamps; unparseable values become NaT. Naive times are taken as UTC."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        text = values.astype("string").str.strip()
        parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
        for fmt in TIMESTAMP_FORMATS:
            todo = parsed.isna() & text.notna() & (text != "")
            if not todo.any():
                break
            parsed[todo] = pd.to_datetime(text[todo], format=fmt, utc=True, errors="coerce")
    return parsed.dt.floor("us")


def parse_numbers(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    text = values.astype("string").str.strip().replace("", pd.NA)
    return pd.to_numeric(text, errors="coerce")


def _clean_id(values: pd.Series) -> pd.Series:
    """Ids as text: trimmed, empty -> null, spreadsheet floats ("17850.0") -> "17850"."""
    text = values.astype("string").str.strip()
    text = text.str.replace(r"^(\d+)\.0+$", r"\1", regex=True)
    return text.mask(text == "")


def _text(values: pd.Series) -> pd.Series:
    """Trimmed text; blank -> null (no value, so no change to the item's attribute)."""
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def _to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return as_schema(pa.Table.from_pandas(frame[[n for n in schema.names if n in frame]], preserve_index=False), schema)


def transform_online_retail(
    raw: pd.DataFrame, batch: str, source: str = "online-retail"
) -> tuple[pa.Table, pa.Table, Rejects]:
    """UCI Online Retail invoice lines -> (events, items, rejects).

    Every line becomes an event: a `cancellation` when the invoice starts with "C" (or the
    quantity is negative: stock adjustments), otherwise a `purchase`. Guest lines (no CustomerID)
    are kept with a null user. InvoiceDate is taken as UTC. The catalog has one row per
    StockCode: its most frequent description, median positive unit price, first and last sale.
    """
    frame = raw.rename(columns=ONLINE_RETAIL_ALIASES)
    rows = np.arange(1, len(frame) + 1, dtype=np.int64)
    rejects = Rejects()
    invoice = _clean_id(frame["InvoiceNo"])
    item = _clean_id(frame["StockCode"])
    timestamp = parse_timestamps(frame["InvoiceDate"])
    quantity = parse_numbers(frame["Quantity"])
    price = parse_numbers(frame["UnitPrice"])
    checks = {
        "InvoiceNo is empty": invoice.isna(),
        "StockCode is empty": item.isna(),
        "InvoiceDate is not a timestamp": timestamp.isna(),
        "Quantity is not a number": quantity.isna() | (quantity % 1 != 0),
        "UnitPrice is not a number": price.isna() & ~_blank(frame["UnitPrice"]),
    }
    bad = np.zeros(len(frame), dtype=bool)
    for reason, mask in checks.items():
        mask = mask.fillna(False).to_numpy(dtype=bool)
        rejects.add(reason, rows[mask], frame.loc[mask, _column_of(reason)])
        bad |= mask
    keep = ~bad
    cancelled = (invoice.str.upper().str.startswith("C") | (quantity < 0)).fillna(False).to_numpy(bool)
    events = pd.DataFrame(
        {
            "event_id": batch + "-" + pd.Series(rows).astype(str),
            "user_id": _clean_id(frame["CustomerID"]),
            "item_id": item,
            "action": np.where(cancelled, "cancellation", "purchase"),
            "timestamp": timestamp,
            "quantity": quantity,
            "price": price,
            "invoice_no": invoice,
            "country": frame["Country"].astype("string").str.strip(),
            "source": source,
            "import_batch": batch,
            "source_row": rows,
        }
    )[keep]
    events["quantity"] = events["quantity"].astype("int64")
    events["event_date"] = events["timestamp"].dt.date
    description = frame["Description"].astype("string").str.strip().mask(lambda s: s == "")
    items = _online_retail_catalog(events.assign(description=description[keep]), batch, source)
    return _to_arrow(events, BRONZE_EVENTS), _to_arrow(items, BRONZE_ITEMS), rejects


def _column_of(reason: str) -> str:
    return reason.split(" ", 1)[0]


def _online_retail_catalog(events: pd.DataFrame, batch: str, source: str) -> pd.DataFrame:
    by_item = events.groupby("item_id", sort=True)
    first_seen = by_item["timestamp"].min()
    last_seen = by_item["timestamp"].max()
    sold = events[(events["action"] == "purchase") & (events["price"] > 0)]
    price = sold.groupby("item_id")["price"].median()
    counted = (
        events.dropna(subset=["description"])
        .groupby(["item_id", "description"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["item_id", "n", "description"], ascending=[True, False, True])
        .drop_duplicates("item_id")
        .set_index("item_id")["description"]
    )
    items = pd.DataFrame({"created_at": first_seen, "updated_at": last_seen})
    items["description"] = counted.reindex(items.index)
    items["price"] = price.reindex(items.index)
    items = items.reset_index()
    items["category"] = pd.Series(pd.NA, index=items.index, dtype="string")
    items["available"] = pd.Series(pd.NA, index=items.index, dtype="boolean")  # a sales log does not say
    items["source"] = source
    items["import_batch"] = batch
    items["source_row"] = np.arange(1, len(items) + 1, dtype=np.int64)
    return items


def transform_events(raw: pd.DataFrame, batch: str, source: str) -> tuple[pa.Table, Rejects]:
    """Generic `user_id,item_id,action,timestamp[,quantity,price]` rows -> (events, rejects)."""
    rows = np.arange(1, len(raw) + 1, dtype=np.int64)
    rejects = Rejects()
    frame = raw.copy()
    for column in EVENT_OPTIONAL:
        if column not in frame.columns:
            frame[column] = pd.NA
    user = _clean_id(frame["user_id"])
    item = _clean_id(frame["item_id"])
    action = frame["action"].astype("string").str.strip().str.lower()
    timestamp = parse_timestamps(frame["timestamp"])
    quantity = parse_numbers(frame["quantity"])
    price = parse_numbers(frame["price"])
    checks = {
        "user_id is empty": (user.isna(), "user_id"),
        "item_id is empty": (item.isna(), "item_id"),
        f"action is not one of {', '.join(ACTIONS)}": (~action.isin(ACTIONS), "action"),
        "timestamp is not a timestamp": (timestamp.isna(), "timestamp"),
        "quantity is not a whole number": (
            (quantity.isna() & ~_blank(frame["quantity"])) | (quantity % 1 > 0),
            "quantity",
        ),
        "price is not a number": (price.isna() & ~_blank(frame["price"]), "price"),
    }
    bad = np.zeros(len(frame), dtype=bool)
    for reason, (mask, column) in checks.items():
        mask = mask.fillna(False).to_numpy(dtype=bool)
        rejects.add(reason, rows[mask], frame.loc[mask, column])
        bad |= mask
    event_id = _clean_id(frame["event_id"]).fillna(batch + "-" + pd.Series(rows).astype(str))
    events = pd.DataFrame(
        {
            "event_id": event_id,
            "user_id": user,
            "item_id": item,
            "action": action,
            "timestamp": timestamp,
            "quantity": quantity.where(quantity.notna(), np.where(action == "view", 0, 1)),
            "price": price,
            "invoice_no": _clean_id(frame["invoice_no"]),
            "country": frame["country"].astype("string"),
            "source": source,
            "import_batch": batch,
            "source_row": rows,
        }
    )[~bad]
    events["quantity"] = events["quantity"].astype("int64")
    events["event_date"] = events["timestamp"].dt.date
    return _to_arrow(events, BRONZE_EVENTS), rejects


def transform_items(
    raw: pd.DataFrame, batch: str, source: str, *, newest_known: datetime | None = None
) -> tuple[pa.Table, Rejects]:
    """An items file (`item_id` plus any of description, category, price, created_at,
    available, updated_at) -> (items, rejects).

    A column the file leaves out, or a blank value, stays null: silver keeps the item's previous
    value for it (`jobs.clean.transform_items`), so `item_id,available` changes availability
    alone. A row without `updated_at` is dated just after `newest_known` (the newest `updated_at`
    already in bronze/items; see `newest_catalog_update`), or at its `created_at` if later: the
    file is newer than what was imported before it (a sales log's catalog is dated by its last
    sale), and the date depends on the lake's history, not on the clock, so the same imports
    land the same rows."""
    rows = np.arange(1, len(raw) + 1, dtype=np.int64)
    frame = raw.copy()
    if "title" in frame.columns and "description" not in frame.columns:
        frame = frame.rename(columns={"title": "description"})
    for column in ITEM_OPTIONAL:
        if column not in frame.columns:
            frame[column] = pd.NA
    item = _clean_id(frame["item_id"])
    price = parse_numbers(frame["price"])
    created = parse_timestamps(frame["created_at"].astype("string").fillna(""))
    updated = parse_timestamps(frame["updated_at"].astype("string").fillna(""))
    available = frame["available"].astype("string").str.strip().str.lower()
    rejects = Rejects()
    checks = {
        "item_id is empty": (item.isna(), "item_id"),
        "price is not a number": (price.isna() & ~_blank(frame["price"]), "price"),
        "created_at is not a timestamp": (created.isna() & ~_blank(frame["created_at"]), "created_at"),
        "updated_at is not a timestamp": (updated.isna() & ~_blank(frame["updated_at"]), "updated_at"),
        "available is not true/false": (
            ~available.isin(list(AVAILABLE_VALUES)) & ~_blank(frame["available"]),
            "available",
        ),
    }
    bad = np.zeros(len(frame), dtype=bool)
    for reason, (mask, column) in checks.items():
        mask = mask.fillna(False).to_numpy(dtype=bool)
        rejects.add(reason, rows[mask], frame.loc[mask, column])
        bad |= mask
    after = pd.Timestamp(0, tz="UTC")
    if newest_known is not None:
        after = pd.Timestamp(newest_known)
        after = (after.tz_localize("UTC") if after.tzinfo is None else after.tz_convert("UTC")).floor("us")
        after += pd.Timedelta(microseconds=1)
    items = pd.DataFrame(
        {
            "item_id": item,
            "description": _text(frame["description"]),
            "category": _text(frame["category"]).str.lower(),
            "price": price,
            "created_at": created,
            "available": available.map(AVAILABLE_VALUES),
            "updated_at": updated.fillna(created.where(created > after, after)),
            "source": source,
            "import_batch": batch,
            "source_row": rows,
        }
    )[~bad]
    return _to_arrow(items, BRONZE_ITEMS), rejects


def newest_catalog_update(lake: Lake) -> datetime | None:
    """The newest `updated_at` in bronze/items (None: no catalog yet)."""
    rows = lake.read(lake.uri("bronze", "items"), columns=["updated_at"])
    return None if rows is None else pc.max(rows.column("updated_at")).as_py()


def items_seen_in(events: pa.Table, batch: str, source: str) -> pa.Table:
    """A minimal catalog for events imported without an items file: each item with its last
    price and first/last time seen (availability unknown: null)."""
    frame = events.select(["item_id", "timestamp", "price"]).to_pandas()
    frame = frame.sort_values(["item_id", "timestamp"])
    by_item = frame.groupby("item_id", sort=True)
    items = pd.DataFrame(
        {
            "created_at": by_item["timestamp"].min(),
            "updated_at": by_item["timestamp"].max(),
            "price": by_item["price"].last(),
        }
    ).reset_index()
    items["description"] = pd.Series(pd.NA, index=items.index, dtype="string")
    items["category"] = pd.Series(pd.NA, index=items.index, dtype="string")
    items["available"] = pd.Series(pd.NA, index=items.index, dtype="boolean")  # events do not say
    items["source"] = source
    items["import_batch"] = batch
    items["source_row"] = np.arange(1, len(items) + 1, dtype=np.int64)
    return _to_arrow(items, BRONZE_ITEMS)


# ------------------------------------------------------------------------------------------- load


def commit_batch(
    lake: Lake,
    uri: str,
    rows: pa.Table,
    *,
    batch: str,
    partition_by: list[str] | None = None,
    metadata: Mapping[str, object] | None = None,
) -> int | None:
    """Append `rows` to the table at `uri` in one atomic commit, unless batch `batch` is in it.

    The batch is recorded as a Delta application transaction in the same commit, and it is looked
    up in the very snapshot the commit is based on. So when another import commits the same batch
    in between (two processes importing one file), delta-rs's conflict check refuses this commit
    (`ConcurrentTransaction`) instead of landing the rows twice, and this returns None as for a
    batch imported before. A missing table is first created empty (creating it concurrently is
    safe), so that even the first two imports race on a snapshot, not on who creates the table.

    Returns:
        The new table version, or None when the batch had already landed.
    """
    options = dict(lake.storage_options) if lake.storage_options else None
    table = lake.table(uri) or DeltaTable.create(
        uri, rows.schema, mode="ignore", partition_by=partition_by, storage_options=options
    )
    if table.transaction_version(batch) is not None:
        return None
    custom = {k: str(v) for k, v in (metadata or {}).items()} | {"towerflow.batch": batch}
    transaction = Transaction(batch, 1, int(time.time() * 1000))
    try:
        write_deltalake(
            table,
            rows,
            mode="append",
            commit_properties=CommitProperties(custom_metadata=custom, app_transactions=[transaction]),
        )
    except CommitFailedError:
        if lake.has_batch(uri, batch):  # the other import of this batch committed first
            return None
        raise
    return table.version()  # the snapshot moved to this commit


def land(
    lake: Lake,
    *,
    source: str,
    batch: str,
    rows_read: int,
    events: pa.Table | None,
    items: pa.Table | None,
    rejects: Rejects,
    max_rejects: int = 0,
    quarantine_dir: Path | None = None,
    raw: pd.DataFrame | None = None,
) -> ImportReport:
    """Commit a validated import: items first, then events, each one atomic commit keyed by batch
    (`commit_batch`). A retry after a crash between the two commits lands only what is missing;
    two concurrent imports of one file land it once.

    Raises:
        InputError: more rows were rejected than `max_rejects` allows; nothing is written.
    """
    if rejects.total > max_rejects:
        hint = "" if max_rejects else " (pass --max-rejects N to land the rest and quarantine these)"
        raise InputError(rejects.describe(source) + f"\nnothing was imported{hint}")
    events_uri, items_uri = lake.uri("bronze", "events"), lake.uri("bronze", "items")
    already = (events is None or lake.has_batch(events_uri, batch)) and (
        items is None or lake.has_batch(items_uri, batch)
    )
    quarantine = None
    if rejects.total and quarantine_dir is not None and raw is not None and not already:
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = quarantine_dir / f"{batch}.csv"
        bad_rows = sorted(rejects.all_rows())
        reasons = {r: reason for reason, rows in rejects.rows.items() for r in rows}
        (
            raw.iloc[[r - 1 for r in bad_rows]]
            .assign(source_row=bad_rows, reason=[reasons[r] for r in bad_rows])
            .to_csv(target, index=False)
        )
        quarantine = str(target)
    meta = {"source": source, "rows_read": rows_read, "rejected": rejects.total}
    items_version = events_version = None
    items_landed = events_landed = 0
    skipped = []
    if items is not None and len(items):
        items_version = commit_batch(lake, items_uri, items, batch=batch, metadata=meta)
        items_landed = 0 if items_version is None else len(items)
        skipped.append(items_version is None)
    if events is not None and len(events):
        events_version = commit_batch(
            lake, events_uri, events, batch=batch, partition_by=EVENTS_PARTITION, metadata=meta
        )
        events_landed = 0 if events_version is None else len(events)
        skipped.append(events_version is None)
    already = already or (bool(skipped) and all(skipped))  # a concurrent import of the same file won
    return ImportReport(
        source=source,
        batch=batch,
        rows_read=rows_read,
        events_landed=events_landed,
        items_landed=items_landed,
        rejected=rejects.counts(),
        already_imported=already,
        events_version=lake.version(events_uri),
        items_version=lake.version(items_uri),
        quarantine=quarantine,
    )


# -------------------------------------------------------------------------------------- pipelines


def import_online_retail(
    lake: Lake, path: Path, *, max_rejects: int = 0, quarantine_dir: Path | None = None
) -> ImportReport:
    """Import the UCI Online Retail file (CSV, CSV.GZ or XLSX) into bronze."""
    raw = read_table_file(path)
    raw = raw.rename(columns={c: ONLINE_RETAIL_ALIASES.get(str(c).strip(), str(c).strip()) for c in raw.columns})
    require_columns(raw, ONLINE_RETAIL_COLUMNS, path)
    batch = file_batch(path, "online-retail")
    events, items, rejects = transform_online_retail(raw, batch)
    return land(
        lake,
        source="online-retail",
        batch=batch,
        rows_read=len(raw),
        events=events,
        items=items,
        rejects=rejects,
        max_rejects=max_rejects,
        quarantine_dir=quarantine_dir,
        raw=raw,
    )


def import_events(
    lake: Lake,
    path: Path,
    *,
    items_path: Path | None = None,
    source: str | None = None,
    derive_items: bool = True,
    max_rejects: int = 0,
    quarantine_dir: Path | None = None,
) -> ImportReport:
    """Import an events file (CSV or Parquet) and optionally its items file into bronze.

    Without an items file (and with `derive_items`), a minimal catalog is derived from the items
    the events name.
    Both files are validated in full before either table is written.
    """
    raw = read_table_file(path)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    require_columns(raw, EVENT_COLUMNS, path)
    source = source or "events"
    batch = file_batch(path, source)
    events, rejects = transform_events(raw, batch, source)
    if items_path is not None:
        raw_items = read_table_file(items_path)
        raw_items.columns = [str(c).strip().lower() for c in raw_items.columns]
        require_columns(raw_items, ("item_id",), items_path)
        items, item_rejects = transform_items(raw_items, batch, source, newest_known=newest_catalog_update(lake))
        if item_rejects.total:
            raise InputError(item_rejects.describe(str(items_path)) + "\nnothing was imported")
    else:
        items = items_seen_in(events, batch, source) if derive_items else None
    return land(
        lake,
        source=source,
        batch=batch,
        rows_read=len(raw),
        events=events,
        items=items,
        rejects=rejects,
        max_rejects=max_rejects,
        quarantine_dir=quarantine_dir,
        raw=raw,
    )


def import_items(lake: Lake, path: Path, *, source: str = "items") -> ImportReport:
    """Import a catalog file alone: new items, or changes to some columns of known ones
    (`item_id,available` marks items available or not and leaves the rest as it was).
    """
    raw = read_table_file(path)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    require_columns(raw, ("item_id",), path)
    batch = file_batch(path, source)
    items, rejects = transform_items(raw, batch, source, newest_known=newest_catalog_update(lake))
    return land(lake, source=source, batch=batch, rows_read=len(raw), events=None, items=items, rejects=rejects)


class BronzeSummary(TypedDict, total=False):
    """One bronze table in `summarize`: rows and Delta version; for events also the count per
    action and the first and last timestamps."""

    rows: Required[int]
    version: Required[int | None]
    actions: dict[str, int]
    first: str
    last: str


def summarize(lake: Lake) -> dict[str, BronzeSummary]:
    """Row counts, versions and time range of the bronze tables, for printing."""
    summary: dict[str, BronzeSummary] = {}
    for table in ("events", "items"):
        uri = lake.uri("bronze", table)
        data = lake.dataset(uri)
        if data is None:
            continue
        entry: BronzeSummary = {"rows": data.count_rows(), "version": lake.version(uri)}
        if table == "events":
            actions = data.to_table(columns=["action", "timestamp"])
            counts = actions.group_by("action").aggregate([("action", "count")]).to_pylist()
            entry["actions"] = {row["action"]: row["action_count"] for row in counts}
            bounds = pc.min_max(actions.column("timestamp")).as_py()
            entry["first"], entry["last"] = str(bounds["min"]), str(bounds["max"])
        summary[table] = entry
    return summary


def ingest_landing(lake: Lake, landing_dir: Path, first: date, last: date) -> list[ImportReport]:
    """Import every landing file for the days `first`..`last` (inclusive):
    `<landing>/<source>/events/event_date=<day>/*` (Parquet or CSV) and each source's
    `items.parquet`. Files imported before land nothing, so a rerun is a no-op.
    """
    reports: list[ImportReport] = []
    if not landing_dir.exists():
        return reports
    for source_dir in sorted(p for p in landing_dir.iterdir() if p.is_dir()):
        source = source_dir.name
        items = source_dir / "items.parquet"
        if items.exists():
            reports.append(import_items(lake, items, source=source))
        for day_dir in sorted((source_dir / "events").glob("event_date=*")):
            if not first.isoformat() <= day_dir.name.split("=", 1)[1] <= last.isoformat():
                continue
            for path in sorted(day_dir.iterdir()):
                if path.name.endswith((".parquet", ".csv", ".csv.gz")):
                    reports.append(import_events(lake, path, source=source, derive_items=not items.exists()))
    return reports
