"""`open_stream` picks the backend the settings name, without connecting to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import open_stream
from streams.kafka import KafkaEventStream
from streams.local import LocalEventStream
from streams.redis_streams import RedisEventStream
from towerflow.settings import Settings

KAFKA = "127.0.0.1:1"  # nothing listens: open_stream must not connect
REDIS = "redis://127.0.0.1:1/0"


def settings(tmp_path: Path, **kwargs: object) -> Settings:
    base: dict[str, object] = {"home": tmp_path, "kafka_bootstrap_servers": None, "redis_url": None}
    return Settings(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [
        ({}, LocalEventStream),
        ({"redis_url": REDIS}, RedisEventStream),
        ({"kafka_bootstrap_servers": KAFKA}, KafkaEventStream),
        ({"kafka_bootstrap_servers": KAFKA, "redis_url": REDIS}, KafkaEventStream),
        ({"stream_backend": "redis", "kafka_bootstrap_servers": KAFKA, "redis_url": REDIS}, RedisEventStream),
        ({"stream_backend": "local", "redis_url": REDIS}, LocalEventStream),
    ],
)
def test_auto_prefers_kafka_then_redis_then_the_local_queue(
    tmp_path: Path, kwargs: dict[str, object], kind: type
) -> None:
    stream = open_stream(settings(tmp_path, **kwargs))
    assert isinstance(stream, kind)
    assert stream.name == "events"
    stream.close()


def test_names_and_reclaim_time_come_from_settings(tmp_path: Path) -> None:
    s = settings(tmp_path, stream_name="clicks", stream_reclaim_after_s=7, redis_url=REDIS, redis_prefix="tf:")
    stream = open_stream(s, name="impressions")
    assert isinstance(stream, RedisEventStream)
    assert (stream.name, stream.key, stream.reclaim_after_s) == ("impressions", "tf:impressions", 7)
    local = open_stream(settings(tmp_path, stream_name="clicks"))
    assert isinstance(local, LocalEventStream)
    assert local.path == tmp_path.resolve() / "streams" / "clicks.sqlite3"


@pytest.mark.parametrize(("backend", "variable"), [("kafka", "KAFKA_BOOTSTRAP_SERVERS"), ("redis", "REDIS_URL")])
def test_a_backend_without_its_address_is_a_clear_error(tmp_path: Path, backend: str, variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        open_stream(settings(tmp_path, stream_backend=backend))
