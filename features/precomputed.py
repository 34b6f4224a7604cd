"""Precomputed recommendations in Redis: written by the daily pipeline, read by the gateway when
the model path is down or too slow.

Online format (all keys under one prefix, `settings.redis_prefix`, default `towerflow:`):

- `<prefix>recs:<user_id>`: a hash with `items` (JSON list of item ids, best first),
  `model_version` (free text naming the models that produced them, e.g. `retrieval=3,ranking=2`)
  and `generated_at` (ISO 8601 UTC); and, when the models answer each list variant their own
  way (a pair published per variant), `items:<variant>` for the other variants (`new`,
  `unseen`: `scoring.context.VARIANTS`), their exclusions already applied. One key per active
  user, each with a TTL, so users who stop being active age out without a cleanup job.
- `<prefix>popular`: the same hash layout for the popular-items list (no user).

The pipeline writes with the blocking client:

    write_precomputed(store_or_redis, {"u1": ["i3", "i9", ...]}, "retrieval=3,ranking=2",
                      prefix=settings.redis_prefix, ttl_s=settings.precomputed_ttl_s,
                      popular=["i1", "i2", ...])

`store_or_redis` is a `redis.Redis`, a `redis://` URL, or a Feast `FeatureStore` whose online
store is Redis (the same server then holds features and recommendations). The gateway reads one
user with a single HGETALL through `redis.asyncio` (`read_precomputed`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:  # imported where used: the gateway reads through redis.asyncio only
    import redis
    from feast import FeatureStore
    from redis.asyncio import Redis as AsyncRedis

#: Where `write_precomputed` writes: a redis-py client, a `redis://` URL, or a Feast store whose
#: online store is Redis.
RedisTarget: TypeAlias = "redis.Redis | str | FeatureStore"

DEFAULT_PREFIX = "towerflow:"
#: Hash fields of other list variants' lists: `items:new`, `items:unseen`.
VARIANT_FIELD = "items:"
DEFAULT_TTL_S = 3 * 86_400


@dataclass(frozen=True)
class Precomputed:
    """One stored list: item ids (best first), the models that made it, and when; and, when the
    models answer each list variant their own way, those variants' lists (`variants`)."""

    items: list[str]
    model_version: str
    generated_at: str
    variants: dict[str, list[str]] = field(default_factory=dict)

    def for_variant(self, variant: str) -> list[str]:
        """The list stored for `variant` (`scoring.context.variant_of`), else the whole one."""
        return self.variants.get(variant, self.items)


def recs_key(prefix: str, user_id: str) -> str:
    """Redis key of a user's precomputed recommendations."""
    return f"{prefix}recs:{user_id}"


def popular_key(prefix: str) -> str:
    """Redis key of the popular-items list."""
    return f"{prefix}popular"


def _sync_client(target: RedisTarget) -> redis.Redis:
    """A blocking redis-py client for a client, URL or Feast store with a Redis online store."""
    import redis

    if isinstance(target, str):
        return redis.Redis.from_url(target)
    if isinstance(target, redis.Redis):
        return target
    from features.store import env_of, redis_client

    if env_of(target) != "redis":
        raise ValueError("precomputed recommendations need Redis; this feature store is embedded")
    client: redis.Redis = redis_client(target)
    return client


def drop_precomputed(client: redis.Redis, user_ids: Sequence[str], *, prefix: str = DEFAULT_PREFIX) -> int:
    """Delete the users' precomputed lists (they acted since: the next request goes to the model
    path, which sees the new actions). Returns how many lists there were."""
    if not user_ids:
        return 0
    deleted: int = client.delete(*(recs_key(prefix, u) for u in user_ids))  # type: ignore[assignment]
    return deleted


def _fields(items: Sequence[str], model_version: str, generated_at: str) -> dict[str, str]:
    return {"items": json.dumps(list(items)), "model_version": model_version, "generated_at": generated_at}


def write_precomputed(
    redis_or_store: RedisTarget,
    recs: Mapping[str, Sequence[str]],
    model_version: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    ttl_s: int = DEFAULT_TTL_S,
    generated_at: datetime | None = None,
    popular: Sequence[str] | None = None,
    variants: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    chunk: int = 1000,
) -> int:
    """Store each user's recommendations (replacing earlier ones) and, optionally, the popular list.

    Args:
        redis_or_store: `redis.Redis`, `redis://` URL, or a Feast store with a Redis online store.
        recs: user id -> item ids, best first (the gateway applies business rules on read).
        model_version: what produced them; returned in responses served from them.
        prefix: key prefix (`settings.redis_prefix`).
        ttl_s: seconds each key lives; a daily job should use more than a day.
        generated_at: when they were computed (default now, UTC).
        popular: item ids by popularity, best first (written to `<prefix>popular`).
        variants: {variant: {user id: item ids}}: other list variants' lists, for models that
            answer each variant their own way (stored beside the user's `items`).
        chunk: users per pipelined round trip.

    Returns:
        How many users were written.
    """
    client = _sync_client(redis_or_store)
    stamp = (generated_at or datetime.now(UTC)).astimezone(UTC).isoformat()
    users = list(recs.items())
    for start in range(0, len(users), chunk):
        with client.pipeline(transaction=False) as pipe:
            for user_id, items in users[start : start + chunk]:
                key = recs_key(prefix, user_id)
                pipe.delete(key)  # HSET alone would keep fields of an older layout
                mapping = _fields(items, model_version, stamp)
                for variant, lists in (variants or {}).items():
                    if user_id in lists:
                        mapping[f"{VARIANT_FIELD}{variant}"] = json.dumps(list(lists[user_id]))
                pipe.hset(key, mapping=mapping)
                pipe.expire(key, ttl_s)
            pipe.execute()
    if popular is not None:
        write_popular(client, popular, model_version, prefix=prefix, ttl_s=ttl_s, generated_at=stamp)
    return len(users)


def write_popular(
    redis_or_store: RedisTarget,
    items: Sequence[str],
    source: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    ttl_s: int = DEFAULT_TTL_S,
    generated_at: str | None = None,
) -> None:
    """Store the popular-items list (best first) under `<prefix>popular`."""
    client = _sync_client(redis_or_store)
    key = popular_key(prefix)
    stamp = generated_at or datetime.now(UTC).isoformat()
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=_fields(items, source, stamp))
        pipe.expire(key, ttl_s)
        pipe.execute()


def decode(raw: Mapping[Any, Any]) -> Precomputed | None:
    """A `Precomputed` from HGETALL's reply (bytes or str keys); None when empty or malformed."""
    if not raw:
        return None
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()
    }
    try:
        items = json.loads(fields["items"])
    except (KeyError, ValueError):
        return None
    if not isinstance(items, list):
        return None
    variants = {}
    for name, value in fields.items():
        if name.startswith(VARIANT_FIELD):
            try:
                listed = json.loads(value)
            except ValueError:
                continue  # a malformed variant list: the whole one still serves
            if isinstance(listed, list):
                variants[name.removeprefix(VARIANT_FIELD)] = [str(i) for i in listed]
    return Precomputed(
        [str(i) for i in items], fields.get("model_version", ""), fields.get("generated_at", ""), variants
    )


async def read_precomputed(client: AsyncRedis, user_id: str, *, prefix: str = DEFAULT_PREFIX) -> Precomputed | None:
    """A user's stored recommendations through `redis.asyncio` (one HGETALL), or None."""
    # redis-py types a command's result as `Awaitable | value`, shared by its sync and asyncio clients
    return decode(await client.hgetall(recs_key(prefix, user_id)))  # type: ignore[misc]
