"""The event-stream seam: what the gateway appends to and the stream worker consumes from.

Every implementation passes one contract suite (tests/streams/test_stream_contract.py):

- `RedisEventStream` (streams/redis_streams.py): Redis Streams with a consumer group; the
  default when Redis is configured.
- `KafkaEventStream` (streams/kafka.py): a Kafka topic and consumer group (confluent-kafka);
  production's stream.
- `LocalEventStream` (streams/local.py): a durable queue in one SQLite file, for the embedded
  default without Redis.

Semantics, the same everywhere: at-least-once delivery. `append` returns only once the stream
holds every record (durable where the stream is). A record read but not acked is delivered again,
to this or another consumer of the group, after `reclaim_after_s`; the consumer that writes it
somewhere makes that write idempotent (the lake sink keys on `event_id`). A record that keeps
failing is moved to the dead-letter stream with its reason and acked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class StreamError(RuntimeError):
    """The stream could not do what was asked (unreachable, timed out, rejected); retry later."""


@dataclass(frozen=True)
class StreamRecord:
    """One record as a consumer sees it.

    Attributes:
        id: the stream's own position of the record (Redis entry id, Kafka `partition:offset`,
            local row id); what `ack` and `dead_letter` take.
        key: the partition key given at append (the user id for events), so one user's records
            keep their order where the stream partitions.
        value: the payload as appended.
        deliveries: how many times the record has been handed out, this time included (1 = first).
    """

    id: str
    key: str
    value: bytes
    deliveries: int = 1


@dataclass(frozen=True)
class DeadLetter:
    """A record the consumer gave up on, and why."""

    record: StreamRecord
    reason: str


@runtime_checkable
class EventStream(Protocol):
    """An append-only stream of keyed records with one consumer group per reader role."""

    name: str  # the stream (Redis key / Kafka topic / table) records go to

    def append(self, records: Sequence[tuple[str, bytes]]) -> None:
        """Append `(key, value)` records; returns once the stream holds all of them.

        Raises:
            StreamError: the stream did not confirm every record; the caller answers 503 and the
                client retries (with the same event ids, so nothing lands twice).
        """
        ...

    def read(self, group: str, consumer: str, max_records: int, timeout_s: float) -> list[StreamRecord]:
        """Up to `max_records` records for `consumer` of `group`, waiting up to `timeout_s` for one.

        Records another consumer of the group read and did not ack within `reclaim_after_s`
        (it crashed) come back here too, with `deliveries` > 1. The group is created on first use
        and starts at the beginning of the stream.
        """
        ...

    def ack(self, group: str, records: Sequence[StreamRecord]) -> None:
        """Mark records done for `group`: they are not delivered to it again."""
        ...

    def dead_letter(self, group: str, record: StreamRecord, reason: str) -> None:
        """Move a record to the dead-letter stream with `reason`, and ack it."""
        ...

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest `limit` dead letters, for inspection."""
        ...

    def lag(self, group: str) -> int:
        """Records appended that `group` has not acked yet (pending included)."""
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...
