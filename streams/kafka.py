"""`KafkaEventStream`: the event stream as a Kafka topic read through consumer groups.

Mapping onto the seam:
- `append`: an idempotent producer (`enable.idempotence`, `acks=all`) produces every record keyed by
  its key (one key, one partition, so one user's records keep their order) and flushes; any failed
  delivery report or a flush that outlives `timeout_s` raises `StreamError`. The topic is created
  (`partitions`, broker's replication factor) on first use if it is missing.
- `read`: one librdkafka consumer per (group, consumer), auto-commit off. Records this consumer
  handed out and nobody acked within `reclaim_after_s` are handed out again by it; a crashed
  consumer's partitions go to the others through the group rebalance (session timeout =
  `reclaim_after_s`, within the broker's `group.min/max.session.timeout.ms`), and they resume from the
  committed offset.
- `ack`: commits, per partition, the lowest offset not yet acked: an ack out of order never commits
  past a record still outstanding.
- `deliveries`: counted in this process, and written into the committed offset's metadata (runs of
  `offset -> deliveries`, and acked offsets above the commit point) on every read and ack, so the
  next owner of a partition after a crash continues the count and skips what was acked out of order.
  The metadata is capped at ~3.5 KB (Kafka's default limit is 4 KB); past that the newest runs are
  dropped (those records count from 1 again / may come back once more).
- `dead_letter`: produces to `<name>.dead` with the reason (and the record's id, group and
  deliveries) in headers, then acks.
- `lag`: per partition, high watermark - committed offset (minus acked offsets above it), summed.
  The high watermark comes from a fetch response, not from ListOffsets (see docs/streams.md: the
  Tansu test broker answers ListOffsets with the last batch's base offset).
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from streams.base import DeadLetter, StreamError, StreamRecord

log = logging.getLogger(__name__)

_Headers = list[tuple[str, str | bytes | None]]

#: Marks commit metadata written by this module (version 1 of the format).
_META_PREFIX = "tf1:"
#: Kafka's default `offset.metadata.max.bytes` is 4096; stay below it.
_META_MAX_CHARS = 3500
#: Kafka's defaults for `group.min/max.session.timeout.ms`, used when the broker does not say.
_KAFKA_SESSION_BOUNDS_MS = (6_000, 1_800_000)
#: Commit errors that mean "this consumer no longer owns the partition": not a failure of the
#: stream; the records come back to the partition's new owner.
_LOST_OWNERSHIP = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._NO_OFFSET,
}


class KafkaEventStream:
    """A Kafka topic read through consumer groups (confluent-kafka).

    Args:
        bootstrap_servers: `host:port,...` (`Settings.kafka_bootstrap_servers`).
        name: the topic; dead letters go to `<name>.dead`.
        reclaim_after_s: a record handed out and not acked this long is handed out again; also the
            group session timeout (bounded by what the broker allows).
        partitions: partitions of the topic when this creates it.
        replication_factor: of topics this creates; -1 = the broker's default.
        timeout_s: how long `append` (and the metadata and admin calls) may take before
            `StreamError`.
        config: extra librdkafka settings for every client (security, SASL, ...).

    Clients connect on first use, so constructing one never fails. Consumers are not thread-safe:
    call `read`/`ack` for one consumer from one thread.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        name: str,
        *,
        reclaim_after_s: float = 30.0,
        partitions: int = 3,
        replication_factor: int = -1,
        timeout_s: float = 10.0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.dead_topic = f"{name}.dead"
        self.reclaim_after_s = reclaim_after_s
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.timeout_s = timeout_s
        self._base: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "logger": log, **(config or {})}
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._topics_ready = False
        self._session_ms: int | None = None
        self._members: dict[tuple[str, str], _Member] = {}
        self._lock = threading.RLock()

    # -- the seam -------------------------------------------------------------------------------

    def append(self, records: Sequence[tuple[str, bytes]]) -> None:
        if not records:
            return
        self._produce(self.name, [(key, value, None) for key, value in records])

    def read(self, group: str, consumer: str, max_records: int, timeout_s: float) -> list[StreamRecord]:
        with self._lock, self._errors("read"):
            member = self._member(group, consumer)
            got = member.reclaim(max_records, self.reclaim_after_s)
            if got and len(got) < max_records:  # poll anyway: it keeps the consumer in its group
                got += member.take(member.consumer.consume(max_records - len(got), 0))
            deadline = time.monotonic() + timeout_s
            while not got:
                left = deadline - time.monotonic()
                first = member.consumer.poll(max(0.0, min(left, 0.5)))
                messages = [first] if first is not None else []
                if first is not None and max_records > 1:
                    messages += member.consumer.consume(max_records - 1, 0)
                got = member.take(messages)
                if left <= 0:
                    break
            member.commit({int(r.id.split(":")[0]) for r in got})
            return got

    def ack(self, group: str, records: Sequence[StreamRecord]) -> None:
        if not records:
            return
        with self._lock, self._errors("ack"):
            touched: dict[tuple[str, str], set[int]] = {}
            for record in records:
                partition, offset = (int(part) for part in record.id.split(":"))
                for key, member in self._members.items():
                    if key[0] == group and member.owns(partition):
                        member.acked(partition, offset)
                        touched.setdefault(key, set()).add(partition)
                        break
                else:  # the partition moved to another consumer: its new owner delivers it again
                    log.info(
                        "ack of %s/%s for %s after its partition moved; it comes back", self.name, record.id, group
                    )
            for key, partitions in touched.items():
                self._members[key].commit(partitions)

    def dead_letter(self, group: str, record: StreamRecord, reason: str) -> None:
        headers: _Headers = [
            ("reason", reason.encode()),
            ("id", record.id.encode()),
            ("group", group.encode()),
            ("deliveries", str(record.deliveries).encode()),
        ]
        self._produce(self.dead_topic, [(record.key, record.value, headers)])
        self.ack(group, [record])

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._errors("dead_letters"):
            partitions = self._partitions(self.dead_topic)
            if not partitions:
                return []
            probe = Consumer(self._consumer_config(f"{self.name}.dead-reader", probe=True))
            try:
                probe.assign([TopicPartition(self.dead_topic, p, OFFSET_BEGINNING) for p in partitions])
                per_partition: dict[int, list[Message]] = {p: [] for p in partitions}

                def finished(p: int) -> bool:
                    low, high = probe.get_watermark_offsets(TopicPartition(self.dead_topic, p), cached=True)
                    got = per_partition[p]
                    at = got[-1].offset() + 1 if got else low  # type: ignore[operator]
                    return high >= 0 and (len(got) >= limit or at >= high)

                deadline = time.monotonic() + self.timeout_s
                while not all(finished(p) for p in partitions) and time.monotonic() < deadline:
                    for message in probe.consume(1000, 0.05):
                        if message.error() is None:
                            per_partition[message.partition()].append(message)  # type: ignore[index]
            finally:
                probe.close()
        messages = sorted(
            (m for got in per_partition.values() for m in got[:limit]),
            key=lambda m: (m.timestamp()[1], m.partition(), m.offset()),
        )
        return [_dead_letter(m) for m in messages[:limit]]

    def lag(self, group: str) -> int:
        with self._errors("lag"):
            partitions = self._partitions(self.name)
            if not partitions:
                return 0
            probe = Consumer(self._consumer_config(group, probe=True))
            try:
                asked = [TopicPartition(self.name, p) for p in partitions]
                committed = {tp.partition: tp for tp in probe.committed(asked, timeout=self.timeout_s)}
                probe.assign(
                    [TopicPartition(self.name, p, max(committed[p].offset, OFFSET_BEGINNING)) for p in partitions]
                )
                marks: dict[int, tuple[int, int]] = {}
                deadline = time.monotonic() + self.timeout_s
                while len(marks) < len(partitions):
                    if time.monotonic() > deadline:
                        raise StreamError(f"Kafka topic {self.name}: no fetch answer for lag within {self.timeout_s}s")
                    probe.consume(100, 0.02)
                    for p in partitions:
                        low, high = probe.get_watermark_offsets(TopicPartition(self.name, p), cached=True)
                        if high >= 0:
                            marks[p] = (low, high)
            finally:
                probe.close()
        total = 0
        for p, (low, high) in marks.items():
            tp = committed[p]
            start = tp.offset if tp.offset >= 0 else low
            acked_ahead = sum(1 for o in _Runs.decode(tp.metadata).acked() if start <= o < high)
            total += max(0, high - start - acked_ahead)
        return total

    def close(self) -> None:
        with self._lock:
            members, self._members = list(self._members.values()), {}
            for member in members:
                member.close()
            if self._producer is not None:
                self._producer.flush(self.timeout_s)
                self._producer = None
            self._admin = None

    # -- producing ------------------------------------------------------------------------------

    def _produce(self, topic: str, records: Sequence[tuple[str, bytes, _Headers | None]]) -> None:
        with self._errors("append"):
            self._ensure_topics()
            producer = self._producer_client()
            failures: list[str] = []

            def report(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    failures.append(str(err))

            for key, value, headers in records:
                while True:
                    try:
                        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        producer.poll(0.1)
            left = producer.flush(self.timeout_s)
            if left:
                producer.purge(in_queue=True, in_flight=False)  # not sent yet: do not send later
                producer.poll(0)
                raise StreamError(f"Kafka topic {topic}: {left} record(s) unconfirmed after {self.timeout_s}s")
            if failures:
                raise StreamError(f"Kafka topic {topic}: {len(failures)} record(s) failed: {failures[0]}")

    def _producer_client(self) -> Producer:
        if self._producer is None:
            timeout_ms = int(self.timeout_s * 1000)
            self._producer = Producer(
                {
                    **self._base,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "message.timeout.ms": timeout_ms,
                    "socket.connection.setup.timeout.ms": timeout_ms,
                }
            )
        return self._producer

    # -- admin ----------------------------------------------------------------------------------

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self._base)
        return self._admin

    def _partitions(self, topic: str) -> list[int]:
        """The topic's partitions; [] when it does not exist."""
        metadata = self._admin_client().list_topics(topic, timeout=self.timeout_s)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return []
        return sorted(found.partitions)

    def _ensure_topics(self) -> None:
        """Create the topic and its dead-letter topic if missing (once per object)."""
        if self._topics_ready:
            return
        admin = self._admin_client()
        existing = admin.list_topics(timeout=self.timeout_s).topics
        wanted = {self.name: self.partitions, self.dead_topic: 1}
        missing = [
            NewTopic(topic, num_partitions=n, replication_factor=self.replication_factor)
            for topic, n in wanted.items()
            if topic not in existing or existing[topic].error is not None
        ]
        if missing:
            for topic, future in admin.create_topics(missing, request_timeout=self.timeout_s).items():
                try:
                    future.result(self.timeout_s)
                except KafkaException as err:
                    if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                    log.debug("topic %s was created meanwhile", topic)
        self._topics_ready = True

    def _session_timeout_ms(self) -> int:
        """`reclaim_after_s` within the broker's `group.min/max.session.timeout.ms`."""
        if self._session_ms is None:
            low, high = _KAFKA_SESSION_BOUNDS_MS
            try:
                admin = self._admin_client()
                broker = next(iter(admin.list_topics(timeout=self.timeout_s).brokers))
                resource = ConfigResource(ResourceType.BROKER, str(broker))
                config = admin.describe_configs([resource])[resource].result(self.timeout_s)
                # A broker that does not publish its bounds (Tansu) does not enforce them either.
                bounds = {name: int(entry.value) for name, entry in config.items() if entry.value is not None}
                low = bounds.get("group.min.session.timeout.ms", 1)
                high = bounds.get("group.max.session.timeout.ms", high)
            except (KafkaException, StopIteration, ValueError) as err:
                log.warning("Kafka broker's session timeout bounds unknown (%s); assuming Kafka's defaults", err)
            self._session_ms = min(max(int(self.reclaim_after_s * 1000), low), high)
        return self._session_ms

    # -- consuming ------------------------------------------------------------------------------

    def _consumer_config(self, group: str, *, probe: bool = False) -> dict[str, Any]:
        config = {
            **self._base,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # Snappy reads: the broker answers an empty fetch after 50 ms, not librdkafka's 500.
            "fetch.wait.max.ms": 50,
            "fetch.min.bytes": 1,
            "socket.timeout.ms": max(int(self.timeout_s * 1000), 10),
        }
        if probe:  # lag and dead-letter reads: one small fetch per partition, no group membership
            config.update({"fetch.wait.max.ms": 10, "max.partition.fetch.bytes": 65_536})
        return config

    def _member(self, group: str, consumer: str) -> _Member:
        member = self._members.get((group, consumer))
        if member is None:
            self._ensure_topics()
            session_ms = self._session_timeout_ms()
            config = self._consumer_config(group)
            config.update(
                {
                    "client.id": consumer,
                    "session.timeout.ms": session_ms,
                    "heartbeat.interval.ms": max(100, session_ms // 4),
                    # A consumer that stops calling `read` this long leaves the group, so its
                    # partitions move on even while its process (and librdkafka's heartbeat) lives.
                    "max.poll.interval.ms": max(session_ms, int(self.reclaim_after_s * 1000)),
                }
            )
            member = _Member(Consumer(config), self.name, self.timeout_s)
            self._members[(group, consumer)] = member
        return member

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except KafkaException as err:
            raise StreamError(f"Kafka topic {self.name}: {what} failed: {err}") from err


@dataclass
class _Outstanding:
    """A record handed out and not acked yet."""

    record: StreamRecord
    handed_at: float


@dataclass
class _Partition:
    """What one consumer knows about one partition it owns.

    Offsets below `low` are acked; at or above it, an offset handed out is in `outstanding` until
    acked, then in `acked` until `low` passes it. `prior` holds the delivery counts the previous
    owner wrote into the commit metadata.
    """

    low: int | None  # the committed offset (None: the group never committed this partition)
    prior: _Runs
    next: int | None = None  # the offset after the last one fetched
    outstanding: dict[int, _Outstanding] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.next = self.low
        self.acked = set(self.prior.acked())

    def ack(self, offset: int) -> None:
        """Mark `offset` done; one below the commit point is done already."""
        self.outstanding.pop(offset, None)
        point = self.commit_point()
        if point is None or offset >= point:
            self.acked.add(offset)

    def commit_point(self) -> int | None:
        """The lowest offset not acked yet (what the group may commit)."""
        point = min(self.outstanding) if self.outstanding else self.next
        if point is not None:
            while point in self.acked:  # acked ahead of the fetch position
                point += 1
        return point

    def metadata(self) -> str:
        point = self.commit_point()
        self.acked = {o for o in self.acked if point is None or o >= point}
        counts = dict.fromkeys(self.acked, 0)
        counts.update({o: out.record.deliveries for o, out in self.outstanding.items()})
        return _Runs.encode(counts)


class _Member:
    """One (group, consumer): its librdkafka consumer and the partitions it owns."""

    def __init__(self, consumer: Consumer, topic: str, timeout_s: float) -> None:
        self.consumer = consumer
        self.topic = topic
        self.timeout_s = timeout_s
        # Partition -> state; None = assigned, state not loaded yet. The rebalance callbacks close
        # over this dict only (not over self), so a dropped stream frees its consumer at once.
        self.partitions: dict[int, _Partition | None] = {}
        partitions = self.partitions

        def assigned(_consumer: Consumer, tps: list[TopicPartition]) -> None:
            for tp in tps:
                partitions[tp.partition] = None  # type: ignore[index]

        def revoked(_consumer: Consumer, tps: list[TopicPartition]) -> None:
            for tp in tps:
                partitions.pop(tp.partition, None)  # type: ignore[arg-type]

        consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)

    def owns(self, partition: int) -> bool:
        return partition in self.partitions

    def state(self, partition: int) -> _Partition:
        state = self.partitions[partition]
        if state is None:
            [tp] = self.consumer.committed([TopicPartition(self.topic, partition)], timeout=self.timeout_s)
            low = tp.offset if tp.offset >= 0 else None
            state = self.partitions[partition] = _Partition(low, _Runs.decode(tp.metadata))
        return state

    def reclaim(self, max_records: int, reclaim_after_s: float) -> list[StreamRecord]:
        """This consumer's own records handed out over `reclaim_after_s` ago, handed out again."""
        now = time.monotonic()
        got: list[StreamRecord] = []
        for partition, state in self.partitions.items():
            if state is None:
                continue
            for offset, out in sorted(state.outstanding.items()):
                if len(got) >= max_records:
                    return got
                if now - out.handed_at >= reclaim_after_s:
                    record = StreamRecord(out.record.id, out.record.key, out.record.value, out.record.deliveries + 1)
                    state.outstanding[offset] = _Outstanding(record, now)
                    got.append(record)
                    log.debug("redelivering %s:%s of %s", partition, offset, self.topic)
        return got

    def take(self, messages: Sequence[Message]) -> list[StreamRecord]:
        """Records of fetched messages, skipping what was acked already (out of order, or by the
        previous owner) and messages of partitions this consumer no longer owns."""
        now = time.monotonic()
        got: list[StreamRecord] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("Kafka consumer of %s: %s", self.topic, error)
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            if partition not in self.partitions:
                continue
            state = self.state(partition)
            state.next = max(state.next if state.next is not None else offset, offset + 1)
            if offset in state.outstanding or offset in state.acked:
                continue
            deliveries = state.prior.get(offset) + 1
            key = message.key()
            record = StreamRecord(
                f"{partition}:{offset}",
                key.decode() if isinstance(key, bytes) else str(key or ""),
                message.value() or b"",
                deliveries,
            )
            state.outstanding[offset] = _Outstanding(record, now)
            got.append(record)
        return got

    def acked(self, partition: int, offset: int) -> None:
        self.state(partition).ack(offset)

    def commit(self, partitions: set[int]) -> None:
        """Commit each partition's lowest un-acked offset, with the delivery counts as metadata."""
        offsets = []
        for p in sorted(partitions):
            state = self.partitions.get(p)
            point = state.commit_point() if state is not None else None
            if state is not None and point is not None:
                offsets.append(TopicPartition(self.topic, p, point, metadata=state.metadata()))
        if not offsets:
            return
        try:
            results = self.consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as err:
            if err.args[0].code() in _LOST_OWNERSHIP:
                log.info("commit on %s skipped: %s (the partitions' new owner delivers again)", self.topic, err)
                return
            raise
        for tp in results:
            if tp.error is not None and tp.error.code() not in _LOST_OWNERSHIP:
                raise KafkaException(tp.error)

    def close(self) -> None:
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as err:  # already closed, or the broker is gone
            log.debug("closing a Kafka consumer of %s: %s", self.topic, err)


class _Runs:
    """Delivery counts by offset, stored compactly in commit metadata as `tf1:[[first, last, n], ...]`
    (n = 0: acked)."""

    def __init__(self, runs: list[tuple[int, int, int]]) -> None:
        self.runs = runs
        self._starts = [first for first, _, _ in runs]

    @classmethod
    def decode(cls, metadata: str | None) -> _Runs:
        if not metadata or not metadata.startswith(_META_PREFIX):
            return cls([])
        try:
            return cls(sorted((int(a), int(b), int(n)) for a, b, n in json.loads(metadata[len(_META_PREFIX) :])))
        except (ValueError, TypeError):
            log.warning("ignoring unreadable commit metadata %r", metadata[:80])
            return cls([])

    @staticmethod
    def encode(counts: Mapping[int, int]) -> str:
        runs: list[list[int]] = []
        for offset in sorted(counts):
            n = counts[offset]
            if runs and runs[-1][1] == offset - 1 and runs[-1][2] == n:
                runs[-1][1] = offset
            else:
                runs.append([offset, offset, n])
        text = json.dumps(runs, separators=(",", ":"))
        while len(text) > _META_MAX_CHARS:  # keep the oldest runs: they are the next to come back
            runs = runs[: len(runs) * 3 // 4]
            text = json.dumps(runs, separators=(",", ":"))
        return _META_PREFIX + text if runs else ""

    def get(self, offset: int) -> int:
        at = bisect.bisect_right(self._starts, offset) - 1
        if at >= 0:
            first, last, n = self.runs[at]
            if first <= offset <= last:
                return n
        return 0

    def acked(self) -> Iterator[int]:
        for first, last, n in self.runs:
            if n == 0:
                yield from range(first, last + 1)


def _dead_letter(message: Message) -> DeadLetter:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in pairs}
    key = message.key()
    record = StreamRecord(
        headers.get("id", f"{message.partition()}:{message.offset()}"),
        key.decode() if isinstance(key, bytes) else str(key or ""),
        message.value() or b"",
        int(headers.get("deliveries", "1")),
    )
    return DeadLetter(record, headers.get("reason", ""))
