"""One contract for every EventStream: the local queue, Redis Streams and Kafka.

Each test gets a fresh stream (`kit`, tests/streams/conftest.py). A "crash" drops a stream object
without acking or closing it, as a killed process would: its connections go, nothing is said to
the backend.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

import pytest

from streams.base import DeadLetter, EventStream, StreamError, StreamRecord
from tests.streams.conftest import RECLAIM_S, StreamKit

#: A read that should find records waits this long for them (Kafka: the group join comes first).
READ_S = 10.0


def appended(n: int, users: int = 4) -> list[tuple[str, bytes]]:
    return [(f"user-{i % users}", f"event-{i:03d}".encode()) for i in range(n)]


def collect(
    stream: EventStream, group: str, consumer: str, want: int, within_s: float = READ_S, *, ack: bool = False
) -> list[StreamRecord]:
    """Read until `want` records came (or `within_s` passed); ack each batch when `ack`."""
    got: list[StreamRecord] = []
    deadline = time.monotonic() + within_s
    while len(got) < want and time.monotonic() < deadline:
        batch = stream.read(group, consumer, want - len(got), min(1.0, max(0.05, deadline - time.monotonic())))
        if ack:
            stream.ack(group, batch)
        got += batch
    return got


def quiet(stream: EventStream, group: str, consumer: str, for_s: float) -> list[StreamRecord]:
    """Everything a consumer gets during `for_s` (expected: nothing)."""
    got: list[StreamRecord] = []
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        got += stream.read(group, consumer, 100, min(0.5, max(0.05, deadline - time.monotonic())))
    return got


def values(records: Sequence[StreamRecord]) -> list[bytes]:
    return [r.value for r in records]


def test_is_an_event_stream(kit: StreamKit) -> None:
    stream = kit.open()
    assert isinstance(stream, EventStream)
    assert stream.name


def test_append_then_read_keeps_keys_values_and_order_per_key(kit: StreamKit) -> None:
    stream = kit.open()
    records = [*appended(30), ("user-odd", bytes(range(256))), ("", b"")]
    stream.append(records[:10])
    stream.append(records[10:])
    got = collect(stream, kit.group("g"), "c1", len(records))
    assert sorted((r.key, r.value) for r in got) == sorted(records)
    assert len({r.id for r in got}) == len(got)
    assert all(r.deliveries == 1 for r in got)
    for user in {k for k, _ in records}:
        assert [r.value for r in got if r.key == user] == [v for k, v in records if k == user]


def test_acked_records_never_come_back_even_after_reopening(kit: StreamKit) -> None:
    stream = kit.open()
    group = kit.group("g")
    stream.append(appended(10))
    got = collect(stream, group, "c1", 10, ack=True)
    assert len(got) == 10
    assert quiet(stream, group, "c1", RECLAIM_S + 0.5) == []
    stream.close()
    reopened = kit.open()
    assert quiet(reopened, group, "c1", RECLAIM_S + kit.settle_s + 0.5) == []
    assert reopened.lag(group) == 0


def test_unacked_records_come_back_after_the_reclaim_time(kit: StreamKit) -> None:
    stream = kit.open()
    group = kit.group("g")
    stream.append(appended(5))
    first = collect(stream, group, "c1", 5)
    assert stream.read(group, "c1", 10, 0.2) == []  # not before the reclaim time
    time.sleep(RECLAIM_S)
    again = collect(stream, group, "c1", 5)
    assert sorted(r.id for r in again) == sorted(r.id for r in first)
    assert {r.deliveries for r in again} == {2}
    stream.ack(group, again)
    assert quiet(stream, group, "c1", RECLAIM_S + 0.5) == []


def test_out_of_order_acks_keep_the_unacked_record(kit: StreamKit) -> None:
    stream = kit.open()
    group = kit.group("g")
    stream.append(appended(12))
    got = collect(stream, group, "c1", 12)
    held = got[0]  # the first of its key (and partition): everything after it is acked
    stream.ack(group, got[1:])
    lag = stream.lag(group)  # without durable acks, Kafka counts from the commit point: held on
    assert lag == 1 or (not kit.durable_deliveries and 1 < lag < 12)
    time.sleep(RECLAIM_S)
    again = collect(stream, group, "c1", 1)
    assert [(r.id, r.deliveries) for r in again] == [(held.id, 2)]
    stream.ack(group, again)
    assert stream.lag(group) == 0


def test_a_restarted_consumer_gets_only_what_was_not_acked(kit: StreamKit) -> None:
    stream = kit.open()
    group = kit.group("g")
    stream.append(appended(12))
    got = collect(stream, group, "c1", 12)
    held = got[0]
    stream.ack(group, got[1:])
    del stream  # crashed: no ack, no close
    gc.collect()
    restarted = kit.open()
    again = collect(restarted, group, "c1", 1, kit.patience_s)
    restarted.ack(group, again)
    more = quiet(restarted, group, "c1", 1.0)
    restarted.ack(group, more)
    if kit.durable_deliveries:
        assert [(r.id, r.deliveries) for r in again] == [(held.id, 2)]
        assert more == []
    else:  # the broker forgot the out-of-order acks and counts: at least once, no loss
        assert held.id in {r.id for r in again + more}
    assert restarted.lag(group) == 0


def test_a_crashed_consumers_records_go_to_another_consumer(kit: StreamKit) -> None:
    records = appended(20)
    kit.open().append(records)
    group = kit.group("workers")
    crashed = kit.open()
    taken = collect(crashed, group, "c1", 5)
    assert taken
    del crashed  # crashed: no ack, no close
    gc.collect()
    survivor = kit.open()
    got = collect(survivor, group, "c2", 20, kit.patience_s, ack=True)
    assert sorted(values(got)) == sorted(v for _, v in records)  # every record, once
    again = {r.id: r.deliveries for r in got}
    assert all(again[r.id] >= (2 if kit.durable_deliveries else 1) for r in taken)
    assert quiet(survivor, group, "c2", RECLAIM_S + 0.5) == []
    assert survivor.lag(group) == 0


def test_two_groups_each_see_every_record(kit: StreamKit) -> None:
    stream = kit.open()
    records = appended(10)
    stream.append(records)
    for group in (kit.group("lake"), kit.group("features")):
        got = collect(stream, group, "c1", 10, ack=True)
        assert sorted(values(got)) == sorted(v for _, v in records)


def test_dead_letters_keep_the_record_and_reason_and_are_not_redelivered(kit: StreamKit) -> None:
    stream = kit.open()
    group = kit.group("g")
    stream.append(appended(3))
    got = collect(stream, group, "c1", 3)
    bad, good = got[1], [got[0], got[2]]
    stream.dead_letter(group, bad, "cannot parse: missing event_id")
    stream.ack(group, good)
    assert stream.dead_letters() == [DeadLetter(bad, "cannot parse: missing event_id")]
    assert quiet(stream, group, "c1", RECLAIM_S + 0.5) == []
    assert stream.lag(group) == 0


def test_lag_counts_unacked_records_until_all_are_acked(kit: StreamKit) -> None:
    stream = kit.open()
    group = kit.group("g")
    assert stream.lag(group) == 0
    stream.append(appended(10))
    assert stream.lag(group) == 10  # a group that has not read yet starts at the beginning
    got = collect(stream, group, "c1", 10)
    assert stream.lag(group) == 10  # read but not acked still counts
    stream.ack(group, got[:4])  # a prefix of the read order: a prefix of every partition
    assert stream.lag(group) == 6
    stream.ack(group, got[4:])
    assert stream.lag(group) == 0


def test_an_empty_append_is_a_no_op(kit: StreamKit) -> None:
    stream = kit.open()
    stream.append([])
    assert stream.lag(kit.group("g")) == 0
    assert stream.read(kit.group("g"), "c1", 10, 0.3) == []


def test_reading_an_empty_stream_returns_nothing_within_about_the_timeout(kit: StreamKit) -> None:
    stream = kit.open()
    started = time.monotonic()
    assert stream.read(kit.group("g"), "c1", 10, 0.5) == []
    assert 0.4 <= time.monotonic() - started < 3.0


def test_an_unreachable_backend_raises_stream_error_quickly(kit: StreamKit) -> None:
    stream = kit.unreachable()
    started = time.monotonic()
    with pytest.raises(StreamError):
        stream.append(appended(3))
    assert time.monotonic() - started < 8.0
    stream.close()
