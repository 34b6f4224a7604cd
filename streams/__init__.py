"""The event stream, shared by the gateway (producer) and the stream worker (consumer).

`streams.base` is the seam (`EventStream`); `open_stream(settings)` picks the implementation.
It imports nothing from jobs/, models/ or serving/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streams.base import DeadLetter, EventStream, StreamError, StreamRecord

if TYPE_CHECKING:
    from towerflow.settings import StreamSettings

__all__ = ["DeadLetter", "EventStream", "StreamError", "StreamRecord", "open_stream"]


def open_stream(settings: StreamSettings, *, name: str | None = None) -> EventStream:
    """The event stream `settings` name (`stream_backend`), not connected yet.

    `auto` takes Kafka when `kafka_bootstrap_servers` is set, else Redis Streams when `redis_url`
    is set, else the local durable queue under `streams_dir`.

    Args:
        settings: where the stream lives and how long a record may stay un-acked.
        name: the stream (Kafka topic, Redis key suffix, queue file); default `stream_name`.

    Raises:
        ValueError: `stream_backend` is `kafka` or `redis` but its address is not set.
    """
    name = name or settings.stream_name
    backend = settings.stream_backend
    if backend == "auto":
        backend = "kafka" if settings.kafka_bootstrap_servers else "redis" if settings.redis_url else "local"
    if backend == "kafka":
        if not settings.kafka_bootstrap_servers:
            raise ValueError(
                "stream_backend is kafka but no brokers are set: set TOWERFLOW_KAFKA_BOOTSTRAP_SERVERS "
                "(or KAFKA_BOOTSTRAP_SERVERS), or choose another TOWERFLOW_STREAM_BACKEND"
            )
        from streams.kafka import KafkaEventStream

        return KafkaEventStream(settings.kafka_bootstrap_servers, name, reclaim_after_s=settings.stream_reclaim_after_s)
    if backend == "redis":
        if not settings.redis_url:
            raise ValueError(
                "stream_backend is redis but no Redis is set: set TOWERFLOW_REDIS_URL (or REDIS_URL), "
                "or choose another TOWERFLOW_STREAM_BACKEND"
            )
        from streams.redis_streams import RedisEventStream

        return RedisEventStream(
            settings.redis_url, name, prefix=settings.redis_prefix, reclaim_after_s=settings.stream_reclaim_after_s
        )
    from streams.local import LocalEventStream

    return LocalEventStream(settings.streams_dir, name, reclaim_after_s=settings.stream_reclaim_after_s)
