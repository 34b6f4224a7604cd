"""Redis-specific: keys stay under the prefix given, so tests and deployments share a server."""

from __future__ import annotations

import pytest

from streams.redis_streams import RedisEventStream

pytestmark = pytest.mark.integration


def test_every_key_sits_under_the_prefix(redis_url: str, redis_prefix: str) -> None:
    import redis

    stream = RedisEventStream(redis_url, "events", prefix=redis_prefix, reclaim_after_s=1)
    client = redis.Redis.from_url(redis_url)
    try:
        stream.append([("user-1", b"a"), ("user-2", b"b")])
        [record, _] = stream.read("workers", "c1", 2, 1.0)
        stream.dead_letter("workers", record, "bad")
        keys = {k.decode() for k in client.scan_iter(match=f"{redis_prefix}*")}
        assert keys == {f"{redis_prefix}events", f"{redis_prefix}events:dead"}
    finally:
        stream.close()
        for key in client.scan_iter(match=f"{redis_prefix}*"):
            client.delete(key)
        client.close()
