"""The stream worker: events from the stream into online features and the lake, impressions
into the lake.

Each micro-batch: decode (a record that is neither an event nor an impression goes to the dead
letters with the reason), update online features from the events through Feast's push sources
and drop the users' precomputed lists (`online.OnlineUpdater`), merge the events into
`bronze/events` and the impressions into `bronze/impressions` (`sink.EventSink`), then ack. The
lake write of one batch runs while the next is read and put online, so freshness does not wait
for the merge. A batch is acked only after the lake has it, so a worker killed at any moment loses nothing: its
un-acked records go to the next worker, and the merge on `event_id` lands each once. Online
updates are not transactional with the lake: a batch delivered twice counts its events twice in
today's online counters (the recent-items list is unaffected); the next daily run recomputes them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.stream_worker.online import OnlineUpdater
from serving.stream_worker.sink import EventSink
from streams.base import EventStream, StreamRecord
from streams.events import Event, EventFormatError, Impression, ItemUpdate, decode

if TYPE_CHECKING:
    from towerflow.settings import Settings

log = logging.getLogger(__name__)
GROUP = "stream-worker"
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class WorkerMetrics:
    """Prometheus metrics of one worker process (its own registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.events = Counter(
            "towerflow_stream_events",
            "Events handled: landed in the lake, already there (a redelivery or a repeated id), dead-lettered.",
            ["result"],
            registry=r,
        )
        self.stage = Histogram("towerflow_stream_stage_seconds", "Time per micro-batch stage.", ["stage"], registry=r)
        self.freshness = Histogram(
            "towerflow_stream_event_to_online_seconds",
            "From the gateway accepting an event to its online features being written.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.failures = Counter("towerflow_stream_failures", "Micro-batch stages that failed.", ["stage"], registry=r)
        self.impressions = Counter(
            "towerflow_stream_impressions", "Impression rows (items shown) landed in the lake.", registry=r
        )
        self.lag = Gauge("towerflow_stream_lag", "Records the worker's group has not acked.", registry=r)


@dataclass(frozen=True)
class Landing:
    """One micro-batch on its way to the lake, and the records to ack once it landed."""

    events: list[Event]
    impressions: list[Impression]
    items: list[ItemUpdate]
    done: list[StreamRecord]


@dataclass
class StreamWorker:
    """Consumes the event stream in micro-batches.

    Attributes:
        stream: the event stream.
        sink: where events land in the lake.
        online: the online-feature updater; None skips online updates (lake only).
        group / consumer: the consumer group and this worker's name in it.
        batch_size: most records per micro-batch.
        poll_s: how long a read waits for the first record.
    """

    stream: EventStream
    sink: EventSink
    online: OnlineUpdater | None
    group: str = GROUP
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    batch_size: int = 500
    poll_s: float = 0.2
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)

    _landing: Future[list[StreamRecord]] | None = field(default=None, init=False, repr=False)
    _lander: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="lake"), init=False, repr=False
    )

    def step(self) -> int:
        """Read and handle one micro-batch; returns how many records it held. An empty read
        first lets the batch in flight land (so a caller that steps until 0 finds it in the lake)."""
        records = self.stream.read(self.group, self.consumer, self.batch_size, self.poll_s)
        if records:
            self.handle(records)
        else:
            self.settle()
        return len(records)

    def handle(self, records: Sequence[StreamRecord]) -> None:
        """Online features now; the lake write in the background while the next batch is read and
        its online update made (the merge grows with the day's table: freshness must not wait for
        it). One lake write is in flight at a time; a batch is acked once it has landed."""
        events: list[Event] = []
        impressions: list[Impression] = []
        items: list[ItemUpdate] = []
        done: list[StreamRecord] = []
        for record in records:
            try:
                decoded = decode(record.value)
            except EventFormatError as err:
                self.stream.dead_letter(self.group, record, str(err))
                self.metrics.events.labels("dead_letter").inc()
                log.warning("record %s dead-lettered: %s", record.id, err)
                continue
            if isinstance(decoded, Event):
                events.append(decoded)
            elif isinstance(decoded, Impression):
                impressions.append(decoded)
            else:
                items.append(decoded)
            done.append(record)
        if events:
            self._online(events)
        self.settle()  # the previous batch's write: its failure stops this one from being submitted
        batch_id = f"{self.stream.name}:{self.group}:{records[0].id}"
        self._landing = self._lander.submit(self._land, Landing(events, impressions, items, done), batch_id)

    def settle(self) -> None:
        """Wait for the lake write in flight and ack its batch (in this thread: a stream client
        need not be thread-safe). Raises the write's error; its batch stays un-acked."""
        if self._landing is None:
            return
        landing, self._landing = self._landing, None
        self.stream.ack(self.group, landing.result())

    def _land(self, landing: Landing, batch_id: str) -> list[StreamRecord]:
        events, impressions, items = landing.events, landing.impressions, landing.items
        if events:
            with self.metrics.stage.labels("lake").time():
                landed = self.sink.write(events, batch_id)
            self.metrics.events.labels("landed").inc(landed)
            self.metrics.events.labels("duplicate").inc(len(events) - landed)
        if impressions:
            with self.metrics.stage.labels("impressions").time():
                shown = self.sink.write_impressions(impressions, f"{batch_id}:impressions")
            self.metrics.impressions.inc(shown)
        if items:
            with self.metrics.stage.labels("items").time():
                self.sink.write_items(items, f"{batch_id}:items")
        return landing.done

    def _online(self, events: Sequence[Event]) -> None:
        """Online features first (freshness); a failure there delays no event's way to the lake."""
        if self.online is None:
            return
        try:
            with self.metrics.stage.labels("online").time():
                self.online.apply(events)
        except Exception as err:  # noqa: BLE001 - the lake is the record; online catches up tomorrow
            self.metrics.failures.labels("online").inc()
            log.warning("online update of %d events failed: %s", len(events), err)
            return
        now = datetime.now(UTC)
        for event in events:
            self.metrics.freshness.observe(max((now - event.received_at).total_seconds(), 0.0))

    def run(self, stop: threading.Event) -> None:
        """Handle micro-batches until `stop` is set; a failing batch is retried after a pause."""
        pause = 0.5
        while not stop.is_set():
            try:
                self.step()
                pause = 0.5
            except Exception as err:  # noqa: BLE001 - keep consuming; the records are redelivered
                self.metrics.failures.labels("batch").inc()
                log.warning("micro-batch failed (retried after %.1f s): %s", pause, err)
                stop.wait(pause)
                pause = min(pause * 2, 10.0)
            try:
                self.metrics.lag.set(self.stream.lag(self.group))
            except Exception:  # noqa: BLE001, S110 - a gauge must not stop the worker
                pass

    def close(self) -> None:
        """Land the batch in flight (if it can), then release the stream."""
        try:
            self.settle()
        except Exception as err:  # noqa: BLE001 - un-acked: the next worker redelivers it
            log.warning("the last micro-batch did not land (%s); it will be redelivered", err)
        finally:
            self._lander.shutdown(wait=True)
            self.stream.close()


def open_worker(settings: Settings, *, online: bool = True) -> StreamWorker:
    """The worker for `settings`: its stream, the lake sink and the online store."""
    from streams import open_stream
    from towerflow.lake import Lake

    lake = Lake(settings.lake, settings.storage_options or None)
    sink = EventSink(
        lake,
        settings.table_uri("bronze", "events"),
        settings.table_uri("bronze", "impressions"),
        settings.table_uri("bronze", "items"),
    )
    return StreamWorker(stream=open_stream(settings), sink=sink, online=open_online(settings) if online else None)


def open_online(settings: Settings) -> OnlineUpdater:
    """The Feast store the gateway reads (the same choice of environment) and its Redis."""
    import redis

    from features.store import feature_store

    env = settings.feature_env
    if env == "auto":  # the gateway's rule: Redis when configured, never a silent SQLite fallback
        env = "redis" if settings.redis_url else "embedded"
    store = feature_store(settings, env)
    client = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
    return OnlineUpdater(store, client, redis_prefix=settings.redis_prefix)
