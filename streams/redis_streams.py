"""`RedisEventStream`: the event stream as a Redis stream with consumer groups.

Keys: `<prefix><name>` holds the records (fields `k` = key, `v` = value), `<prefix><name>:dead` the
dead letters (fields `id`, `k`, `v`, `reason`, `group`, `deliveries`). The stream is not trimmed:
every group reads from the beginning, so retention (`XTRIM ... MINID`) is an operator's decision.

Mapping onto the seam:
- `append`: every `XADD` in one MULTI/EXEC, so a batch lands whole or not at all.
- `read`: `XAUTOCLAIM` entries of the group idle longer than `reclaim_after_s` (another consumer's
  that crashed, or this consumer's own it did not ack), with their delivery counts from `XPENDING`;
  then new entries with `XREADGROUP ... >`.
- `ack`: `XACK`. `dead_letter`: `XADD` to the dead stream and `XACK` in one MULTI/EXEC.
- `lag`: `lag + pending` of the group from `XINFO GROUPS`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streams.base import DeadLetter, StreamError, StreamRecord


class RedisEventStream:
    """A Redis stream read through consumer groups.

    Args:
        url: the Redis server, e.g. `redis://127.0.0.1:6379/0`.
        name: the stream; its key is `<prefix><name>`.
        prefix: key prefix (`Settings.redis_prefix`); tests pass one of their own.
        reclaim_after_s: an entry read and not acked this long goes to the next reader of its group.
        timeout_s: connect and per-command socket timeout (a command is tried at most twice); a
            blocking `read` waits in slices shorter than it.

    The connection opens on first use, so constructing one never fails.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        prefix: str = "towerflow:",
        reclaim_after_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self.key = f"{prefix}{name}"
        self.dead_key = f"{self.key}:dead"
        self.reclaim_after_s = reclaim_after_s
        self.timeout_s = timeout_s
        self._url = url
        self._client: redis.Redis | None = None
        self._groups: set[str] = set()  # groups this object has made sure exist
        self._claim_from: dict[str, str] = {}  # per group, where the next XAUTOCLAIM scan starts

    def append(self, records: Sequence[tuple[str, bytes]]) -> None:
        if not records:
            return
        with self._errors():
            pipe = self._redis().pipeline(transaction=True)
            for key, value in records:
                pipe.xadd(self.key, {"k": key, "v": value})
            pipe.execute()

    def read(self, group: str, consumer: str, max_records: int, timeout_s: float) -> list[StreamRecord]:
        deadline = time.monotonic() + timeout_s
        with self._errors():
            self._ensure_group(group)
            got = self._reclaim(group, consumer, max_records)
            if got:
                return got
            while True:
                # Block in slices shorter than the socket timeout; 0 would mean "forever" to Redis.
                left = deadline - time.monotonic()
                block_ms = max(1, int(min(left, self.timeout_s * 0.8) * 1000)) if left > 0 else None
                reply = self._retry_nogroup(
                    group,
                    lambda block_ms=block_ms: self._redis().xreadgroup(
                        group, consumer, {self.key: ">"}, count=max_records, block=block_ms
                    ),
                )
                entries = reply[0][1] if reply else []
                if entries or left <= 0 or time.monotonic() >= deadline:
                    return [_record(entry_id, fields, 1) for entry_id, fields in entries]

    def ack(self, group: str, records: Sequence[StreamRecord]) -> None:
        if not records:
            return
        with self._errors():
            self._redis().xack(self.key, group, *[r.id for r in records])

    def dead_letter(self, group: str, record: StreamRecord, reason: str) -> None:
        fields = {
            "id": record.id,
            "k": record.key,
            "v": record.value,
            "reason": reason,
            "group": group,
            "deliveries": record.deliveries,
        }
        with self._errors():
            pipe = self._redis().pipeline(transaction=True)
            pipe.xadd(self.dead_key, fields)  # type: ignore[arg-type]  # redis-py's stub lacks int values
            pipe.xack(self.key, group, record.id)
            pipe.execute()

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._errors():
            entries: Any = self._redis().xrange(self.dead_key, count=limit)
        return [
            DeadLetter(
                StreamRecord(f[b"id"].decode(), f[b"k"].decode(), f[b"v"], int(f[b"deliveries"])),
                f[b"reason"].decode(),
            )
            for _, f in entries
        ]

    def lag(self, group: str) -> int:
        with self._errors():
            # The sync client's replies, typed `Awaitable | value` by redis-py (shared with asyncio).
            client: Any = self._redis()
            if not client.exists(self.key):
                return 0
            info = next((g for g in client.xinfo_groups(self.key) if g["name"].decode() == group), None)
            if info is None:  # the group has not read yet: it will start at the beginning
                return int(client.xlen(self.key))
            lag = info.get("lag")
            if lag is None:  # Redis cannot tell after deletions inside the range: count
                after = info["last-delivered-id"].decode()
                lag = len(client.xrange(self.key, min=f"({after}", max="+"))
            return int(lag) + int(info["pending"])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- internals ------------------------------------------------------------------------------

    def _reclaim(self, group: str, consumer: str, max_records: int) -> list[StreamRecord]:
        """Entries of the group idle past `reclaim_after_s`, claimed for `consumer` (delivery
        count +1), scanning the pending list from where the last scan stopped."""
        client = self._redis()
        start = self._claim_from.get(group, "0-0")
        reply = self._retry_nogroup(
            group,
            lambda: client.xautoclaim(
                self.key, group, consumer, int(self.reclaim_after_s * 1000), start, count=max_records
            ),
        )
        following, entries = reply[0], reply[1]
        self._claim_from[group] = following.decode() if isinstance(following, bytes) else str(following)
        entries = [(i, f) for i, f in entries if f]  # deleted entries come back without fields
        if not entries:
            return []
        pipe = client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(self.key, group, entry_id, entry_id, 1)
        counts = [rows[0]["times_delivered"] if rows else 1 for rows in pipe.execute()]
        return [_record(i, f, n) for (i, f), n in zip(entries, counts, strict=True)]

    def _ensure_group(self, group: str) -> None:
        if group in self._groups:
            return
        try:
            self._redis().xgroup_create(self.key, group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._groups.add(group)

    def _retry_nogroup(self, group: str, call: Any) -> Any:
        """Run `call`; if the stream key was deleted under us (NOGROUP), recreate the group once."""
        try:
            return call()
        except redis.ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            self._groups.discard(group)
            self._ensure_group(group)
            return call()

    def _redis(self) -> redis.Redis:
        if self._client is None:
            # One immediate retry (a pooled connection the server closed), not redis-py's default
            # three with backoff: a Redis that is down shows as StreamError within 2 * timeout_s.
            self._client = redis.Redis.from_url(
                self._url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 1),
            )
        return self._client

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as err:
            raise StreamError(f"Redis stream {self.key}: {err}") from err


def _record(entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> StreamRecord:
    return StreamRecord(entry_id.decode(), fields[b"k"].decode(), fields[b"v"], deliveries)
