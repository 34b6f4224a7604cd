"""Kafka-specific behaviour: what the commit point may be, and what the commit metadata holds.

The unit tests need no broker; the others use the session's broker (tests/streams/conftest.py).
"""

from __future__ import annotations

import time
import uuid

import pytest

from streams.base import StreamError, StreamRecord
from streams.kafka import _META_MAX_CHARS, _META_PREFIX, KafkaEventStream, _Outstanding, _Partition, _Runs
from tests.streams.conftest import RECLAIM_S


def handed_out(state: _Partition, offsets: range, deliveries: int = 1) -> None:
    for o in offsets:
        state.outstanding[o] = _Outstanding(StreamRecord(f"0:{o}", "k", b"v", deliveries), time.monotonic())
    state.next = offsets[-1] + 1


def test_out_of_order_acks_commit_only_up_to_the_lowest_unacked_offset() -> None:
    state = _Partition(10, _Runs([]))
    handed_out(state, range(10, 15))
    for o in (12, 14):
        state.ack(o)
    assert state.commit_point() == 10  # 10, 11 and 13 are still out
    state.ack(10)
    assert state.commit_point() == 11
    state.ack(11)
    assert state.commit_point() == 13  # 12 was acked before
    state.ack(13)
    assert state.commit_point() == 15
    assert state.metadata() == ""  # nothing above the commit point to remember


def test_metadata_carries_deliveries_and_acks_above_the_commit_point() -> None:
    state = _Partition(0, _Runs([]))
    handed_out(state, range(0, 6))
    state.outstanding[1] = _Outstanding(StreamRecord("0:1", "k", b"v", 3), 0.0)
    state.ack(4)
    runs = _Runs.decode(state.metadata())
    assert [runs.get(o) for o in range(7)] == [1, 3, 1, 1, 0, 1, 0]
    assert list(runs.acked()) == [4]
    # The next owner of the partition continues from there.
    successor = _Partition(0, runs)
    assert successor.acked == {4}
    assert successor.prior.get(1) + 1 == 4


def test_an_offset_acked_before_it_is_fetched_again_is_skipped_and_committed_past() -> None:
    state = _Partition(5, _Runs([]))
    state.ack(6)  # after a rebalance, an ack can arrive before the refetch
    assert state.commit_point() == 5
    handed_out(state, range(5, 6))
    state.ack(5)
    assert state.commit_point() == 7


def test_runs_encode_compactly_and_stay_under_kafkas_metadata_limit() -> None:
    assert _Runs.encode(dict.fromkeys(range(100, 10100), 1)) == f"{_META_PREFIX}[[100,10099,1]]"
    scattered = _Runs.encode({o: o % 3 for o in range(20_000)})
    assert len(scattered) <= len(_META_PREFIX) + _META_MAX_CHARS
    assert _Runs.decode(scattered).get(2) == 2  # the oldest runs are the ones kept
    assert _Runs.decode("written by another tool").runs == []


@pytest.mark.integration
def test_the_group_commits_the_lowest_unacked_offset(kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    topic, group = f"tft-{uuid.uuid4().hex[:10]}", f"tft-{uuid.uuid4().hex[:8]}"
    stream = KafkaEventStream(kafka_bootstrap, topic, partitions=1, reclaim_after_s=RECLAIM_S)
    try:
        stream.append([("user-1", f"e{i}".encode()) for i in range(6)])
        got: list[StreamRecord] = []
        deadline = time.monotonic() + 15
        while len(got) < 6 and time.monotonic() < deadline:
            got += stream.read(group, "c1", 6 - len(got), 1.0)
        assert [r.id for r in got] == [f"0:{o}" for o in range(6)]
        stream.ack(group, [got[0], got[1], got[3], got[4], got[5]])
        probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
        [tp] = probe.committed([TopicPartition(topic, 0)], timeout=10)
        probe.close()
        assert tp.offset == 2  # not 6: record 2 is still out
        stream.ack(group, [got[2]])
        assert stream.lag(group) == 0
    finally:
        stream.close()


@pytest.mark.integration
def test_a_record_the_broker_refuses_raises_stream_error(kafka_bootstrap: str) -> None:
    stream = KafkaEventStream(kafka_bootstrap, f"tft-{uuid.uuid4().hex[:10]}", timeout_s=5)
    try:
        with pytest.raises(StreamError):
            stream.append([("user-1", b"x" * 2_000_000)])  # over message.max.bytes
    finally:
        stream.close()
