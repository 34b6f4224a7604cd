"""Impression log: what each response showed, onto the event stream for the stream worker,
which lands it in Delta `bronze/impressions` (serving/stream_worker/sink.py).

One record per response (`streams.events.Impression`) accumulates in memory; a flush (when
`batch_records` are waiting, every `flush_s` seconds, and on shutdown) seals them into a batch
and appends each waiting batch to the stream (in a worker thread). A batch the stream did not
confirm waits for the next flush, up to `max_records` records; beyond that the oldest are
dropped and counted (`towerflow_gateway_impressions_total{result="dropped"}`). A batch appended
twice (the confirmation was lost) lands once: the worker merges on request id and position.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from serving.gateway.metrics import GatewayMetrics
from streams.events import Impression

if TYPE_CHECKING:
    from streams.base import EventStream

log = logging.getLogger(__name__)
Record = tuple[str, bytes]


class ImpressionLogger:
    """Batches impression records onto the event stream.

    Args:
        stream: the event stream (`streams.open_stream`).
        batch_records: flush when this many responses wait.
        flush_s: flush at least this often.
        max_records: responses kept while the stream does not answer.
        metrics: counts written and dropped impressions (items shown).
    """

    def __init__(
        self,
        stream: EventStream,
        *,
        batch_records: int = 500,
        flush_s: float = 5.0,
        max_records: int = 20_000,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.stream = stream
        self.batch_records = batch_records
        self.flush_s = flush_s
        self.max_records = max_records
        self.metrics = metrics
        self._records: list[Record] = []
        self._shown: list[int] = []  # items per queued record, for the metrics
        #: Sealed batches not appended yet, oldest first: (records, items shown per record).
        self._batches: list[tuple[list[Record], list[int]]] = []
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        """Responses not on the stream yet (queued, or in batches waiting for a retry)."""
        return len(self._records) + sum(len(records) for records, _ in self._batches)

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
        reason: str | None = None,
        latency_ms: float | None = None,
    ) -> None:
        """Queue one response's impressions (cheap; never blocks on I/O)."""
        if not items:
            return
        impression = Impression(
            request_id=request_id,
            user_id=user_id,
            items=tuple(item for item, _ in items),
            scores=tuple(score for _, score in items),
            path=path,
            experiment_id=experiment_id,
            arm=arm,
            retrieval_version=model_versions.get("retrieval"),
            ranking_version=model_versions.get("ranking"),
            timestamp=(at or datetime.now(UTC)).astimezone(UTC),
            reason=reason,
            latency_ms=latency_ms,
        )
        self._records.append((user_id, impression.encode()))
        self._shown.append(len(items))
        if len(self._records) >= self.batch_records:  # new records only: failed batches wait for the timer
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
        """Seal what is queued into a batch and append the waiting batches, oldest first; returns
        responses appended (a failed batch and those after it wait for the next flush)."""
        async with self._lock:
            if self._records:
                self._batches.append((self._records, self._shown))
                self._records, self._shown = [], []
            written = 0
            while self._batches:
                records, shown = self._batches[0]
                try:
                    await asyncio.to_thread(self.stream.append, records)
                except Exception:  # noqa: BLE001 - keep serving; retry with the next flush
                    log.exception("impressions not appended to the stream; %d responses kept for retry", self.pending)
                    self._trim()
                    return written
                self._batches.pop(0)
                written += len(records)
                if self.metrics:
                    self.metrics.impressions.labels("written").inc(sum(shown))
            return written

    def _trim(self) -> None:
        """Drop the oldest waiting records beyond `max_records`."""
        excess = self.pending - self.max_records
        dropped = 0
        while excess > 0 and self._batches:
            records, shown = self._batches[0]
            drop = min(len(records), excess)
            dropped += sum(shown[:drop])
            del records[:drop], shown[:drop]
            if not records:
                self._batches.pop(0)
            excess -= drop
        if dropped and self.metrics:
            self.metrics.impressions.labels("dropped").inc(dropped)

    async def close(self) -> None:
        """Stop the flusher and append what is left."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
