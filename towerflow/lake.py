"""Delta lake I/O through delta-rs (`deltalake`), for the jobs and the gateway (impressions) alike.

Spark computes elsewhere; every commit to the lake goes through here, because the delta-spark jars
are fetched from Maven at run time and a fresh or offline machine may not have them
(PLATFORM-NOTES.md). Writes are idempotent by *batch*: each write may carry a batch id, recorded
in the Delta log as an application transaction (`txn` action) in the same atomic commit as the
data. A batch id already in the log means the batch landed in full, so the write is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import TableNotFoundError

#: How `Lake.write` commits: add rows, or replace the table (or, with a predicate, the rows it matches).
WriteMode = Literal["append", "overwrite"]


@dataclass(frozen=True)
class Lake:
    """Access to Delta tables under one root (local folder or object-store URI).

    Args:
        root: the lake root, e.g. `/data/var/lake` or `s3://bucket/lake`.
        storage_options: delta-rs storage options for object stores (keys, endpoint, region).
    """

    root: str
    storage_options: Mapping[str, str] | None = None

    def uri(self, layer: str, table: str) -> str:
        return f"{self.root.rstrip('/')}/{layer}/{table}"

    def _opts(self) -> dict[str, str] | None:
        return dict(self.storage_options) if self.storage_options else None

    def table(self, uri: str, version: int | None = None) -> DeltaTable | None:
        """The Delta table at `uri`, or None when there is none yet."""
        try:
            return DeltaTable(uri, version=version, storage_options=self._opts())
        except TableNotFoundError:
            return None

    def version(self, uri: str) -> int | None:
        table = self.table(uri)
        return None if table is None else table.version()

    def has_batch(self, uri: str, batch_id: str) -> bool:
        """True when a write with this batch id has committed to the table."""
        table = self.table(uri)
        return table is not None and table.transaction_version(batch_id) is not None

    def write(
        self,
        uri: str,
        data: pa.Table | pa.RecordBatchReader,
        *,
        mode: WriteMode = "append",
        partition_by: list[str] | None = None,
        predicate: str | None = None,
        batch_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int | None:
        """Commit `data` to the table in one atomic Delta commit.

        Args:
            uri: table URI.
            data: rows to write; a reader streams them without holding them in memory.
            mode: `append` or `overwrite`; with `predicate`, `overwrite` replaces only the
                matching rows (Delta's replaceWhere), e.g. one day's partition.
            partition_by: partition columns (used when the table is created).
            predicate: SQL predicate for a selective overwrite.
            batch_id: idempotency key; when already committed the write is skipped.
            metadata: extra commit metadata (row counts, input table versions, ...).

        Returns:
            The new table version, or None when the batch had already landed.
        """
        if batch_id is not None and self.has_batch(uri, batch_id):
            return None
        txns = [Transaction(batch_id, 1, int(time.time() * 1000))] if batch_id else None
        custom = {k: str(v) for k, v in (metadata or {}).items()}
        if batch_id:
            custom["towerflow.batch"] = batch_id
        commit = CommitProperties(custom_metadata=custom, app_transactions=txns)
        if mode == "overwrite":
            write_deltalake(
                uri,
                data,
                mode="overwrite",
                partition_by=partition_by,
                predicate=predicate,
                schema_mode="merge",  # a table from before a nullable column was added gains it
                storage_options=self._opts(),
                commit_properties=commit,
            )
        else:
            # deltalake's overloads take `predicate` with mode="overwrite" only; its implementation
            # takes it with "append" too (and rejects rows that do not match).
            write_deltalake(  # type: ignore[call-overload]
                uri,
                data,
                mode="append",
                partition_by=partition_by,
                predicate=predicate,
                schema_mode="merge",
                storage_options=self._opts(),
                commit_properties=commit,
            )
        return self.version(uri)

    def dataset(self, uri: str, version: int | None = None) -> ds.Dataset | None:
        """The table's current snapshot (or `version`) as a pyarrow dataset; None if absent."""
        table = self.table(uri, version)
        return None if table is None else table.to_pyarrow_dataset()

    def read(
        self,
        uri: str,
        columns: Iterable[str] | None = None,
        filter: ds.Expression | None = None,  # noqa: A002 - pyarrow's own name
        version: int | None = None,
    ) -> pa.Table | None:
        dataset = self.dataset(uri, version)
        if dataset is None:
            return None
        return dataset.to_table(columns=list(columns) if columns else None, filter=filter)

    def count(self, uri: str, filter: ds.Expression | None = None) -> int:  # noqa: A002
        dataset = self.dataset(uri)
        return 0 if dataset is None else dataset.count_rows(filter=filter)

    def history(self, uri: str, limit: int | None = None) -> list[dict[str, Any]]:
        table = self.table(uri)
        return [] if table is None else table.history(limit)
