"""Impression log: what each response showed, appended in batches to Delta `bronze/impressions`.

Rows (towerflow.schemas.BRONZE_IMPRESSIONS) accumulate in memory; a flush (when `batch_rows` are
waiting, every `flush_s` seconds, and on shutdown) seals them into a batch with an id of its own
and commits each waiting batch by one Delta write (`towerflow.lake.Lake.write`, in a worker thread).
The id is a Delta application transaction in the same commit, so a batch whose write failed is
retried under the same id and lands once, even when the failure came after the commit. Failed
batches wait for the next flush, up to `max_rows` rows; beyond that the oldest rows are dropped
and counted (`towerflow_gateway_impressions_total{result="dropped"}`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from serving.gateway.metrics import GatewayMetrics

if TYPE_CHECKING:  # opened by the app (deltalake)
    from towerflow.lake import Lake

log = logging.getLogger(__name__)


class ImpressionLogger:
    """Batches impression rows into Delta.

    Args:
        lake: a `towerflow.lake.Lake`.
        uri: the table (`settings.table_uri("bronze", "impressions")`).
        batch_rows: flush when this many rows wait.
        flush_s: flush at least this often.
        max_rows: rows kept while writes fail.
        metrics: counts written and dropped rows.
    """

    def __init__(
        self,
        lake: Lake,
        uri: str,
        *,
        batch_rows: int = 5_000,
        flush_s: float = 5.0,
        max_rows: int = 200_000,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        from towerflow.schemas import BRONZE_IMPRESSIONS

        self.lake = lake
        self.uri = uri
        self.batch_rows = batch_rows
        self.flush_s = flush_s
        self.max_rows = max_rows
        self.metrics = metrics
        self._schema = BRONZE_IMPRESSIONS
        self._rows: dict[str, list[Any]] = {name: [] for name in BRONZE_IMPRESSIONS.names}
        #: Sealed batches not written yet, oldest first: (batch id, rows).
        self._batches: list[tuple[str, dict[str, list[Any]]]] = []
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        """Rows not written yet (queued, or in batches waiting for a retry)."""
        return len(self._rows["request_id"]) + sum(len(rows["request_id"]) for _, rows in self._batches)

    def log(
        self,
        *,
        request_id: str,
        user_id: str,
        items: Sequence[tuple[str, float | None]],
        path: str,
        experiment_id: str,
        arm: str,
        model_versions: Mapping[str, str],
        at: datetime | None = None,
    ) -> None:
        """Queue one response's impressions (cheap; never blocks on I/O)."""
        if not items:
            return
        when = (at or datetime.now(UTC)).astimezone(UTC)
        rows = self._rows
        for position, (item_id, score) in enumerate(items, start=1):
            rows["request_id"].append(request_id)
            rows["user_id"].append(user_id)
            rows["item_id"].append(item_id)
            rows["position"].append(position)
            rows["score"].append(score)
            rows["served_path"].append(path)
            rows["experiment_id"].append(experiment_id)
            rows["arm"].append(arm)
            rows["retrieval_version"].append(model_versions.get("retrieval"))
            rows["ranking_version"].append(model_versions.get("ranking"))
            rows["timestamp"].append(when)
            rows["event_date"].append(when.date())
        if len(rows["request_id"]) >= self.batch_rows:  # new rows only: failed batches wait for the timer
            self._wake.set()

    def start(self) -> None:
        """Start the background flusher (inside the running loop)."""
        self._task = asyncio.create_task(self._run(), name="impressions-flusher")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Seal what is queued into a batch and write the waiting batches, oldest first; returns
        rows written (a failed batch and those after it wait for the next flush)."""
        async with self._lock:
            if self._rows["request_id"]:
                self._batches.append((f"impressions-{uuid.uuid4().hex}", self._rows))
                self._rows = {name: [] for name in self._schema.names}
            written = 0
            while self._batches:
                batch_id, rows = self._batches[0]
                count = len(rows["request_id"])
                try:
                    await asyncio.to_thread(self._write, batch_id, rows)
                except Exception:  # noqa: BLE001 - keep serving; retry with the next flush
                    log.exception("impression write to %s failed; %d rows kept for retry", self.uri, self.pending)
                    self._trim()
                    return written
                self._batches.pop(0)
                written += count
                if self.metrics:
                    self.metrics.impressions.labels("written").inc(count)
            return written

    def _write(self, batch_id: str, rows: dict[str, list[Any]]) -> None:
        import pyarrow as pa

        from towerflow.schemas import IMPRESSIONS_PARTITION

        table = pa.Table.from_pydict(rows, schema=self._schema)
        self.lake.write(
            self.uri,
            table,
            mode="append",
            partition_by=IMPRESSIONS_PARTITION,
            batch_id=batch_id,
        )

    def _trim(self) -> None:
        """Drop the oldest waiting rows beyond `max_rows`. A trimmed batch keeps its id: had it
        landed already, its retry is skipped whole."""
        excess = self.pending - self.max_rows
        dropped = 0
        while excess > dropped and self._batches:
            rows = self._batches[0][1]
            drop = min(len(rows["request_id"]), excess - dropped)
            for values in rows.values():
                del values[:drop]
            if not rows["request_id"]:
                self._batches.pop(0)
            dropped += drop
        if dropped and self.metrics:
            self.metrics.impressions.labels("dropped").inc(dropped)

    async def close(self) -> None:
        """Stop the flusher and write what is left."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
