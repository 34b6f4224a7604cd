"""Catalog upserts applied to serving at once, before the daily run carries them into the item
features: an item marked unavailable stops being recommended, a new item enters the catalog.

`POST /v1/items` publishes each upsert: with Redis, into a hash every gateway instance polls
(`<prefix>catalog:overrides`, item id -> the latest upsert; `<prefix>catalog:version`, bumped on
every write), so all of them apply it within `POLL_S`; without Redis (one embedded gateway), in
this process only. The upserts also go onto the event stream, and the stream worker lands them in
`bronze/items`, from where the next daily run makes them item features.

Applied as: every item whose latest upsert says `available: false` is excluded like a request's
`exclude` (on every path); an item the catalog does not know joins it (popularity 0: after every
known item, in its category's list). An upsert marking an item available again lifts only its own
exclusion: an item the item features say is unavailable stays so until the next daily run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from streams.events import ItemUpdate, decode

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

log = logging.getLogger(__name__)
#: How often a gateway checks for upserts other instances published.
POLL_S = 0.25


def overrides_key(prefix: str) -> str:
    return f"{prefix}catalog:overrides"


def version_key(prefix: str) -> str:
    return f"{prefix}catalog:version"


class CatalogOverrides:
    """The latest upsert per item since the process started (or in Redis since first written).

    Args:
        redis: the gateway's Redis (shared by every instance); None = this process only.
        prefix: key prefix (`settings.redis_prefix`).
    """

    def __init__(self, redis: AsyncRedis | None, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.items: dict[str, ItemUpdate] = {}
        self._version: bytes | None = None

    async def publish(self, updates: Iterable[ItemUpdate]) -> None:
        """Make the upserts serving state (raises the Redis error when Redis does not take them)."""
        updates = list(updates)
        if self.redis is None:
            self.merge(updates)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for update in updates:
                pipe.hset(overrides_key(self.prefix), update.item_id, update.encode().decode())
            pipe.incr(version_key(self.prefix))
            await pipe.execute()

    async def refresh(self) -> bool:
        """Re-read Redis when another write happened since the last read; True when changed."""
        if self.redis is None:
            return False
        version = await self.redis.get(version_key(self.prefix))
        if version == self._version:
            return False
        raw = await self.redis.hgetall(overrides_key(self.prefix))  # type: ignore[misc]
        self.items = {}
        self.merge(decode(value) for value in raw.values())  # type: ignore[misc]
        self._version = version
        return True

    def merge(self, updates: Iterable[object]) -> None:
        """Keep each item's latest upsert (by `updated_at`); anything else is skipped."""
        for update in updates:
            if not isinstance(update, ItemUpdate):
                continue
            held = self.items.get(update.item_id)
            if held is None or held.updated_at <= update.updated_at:
                self.items[update.item_id] = merged(held, update)

    @property
    def withdrawn(self) -> frozenset[str]:
        """Items whose latest upsert says unavailable."""
        return frozenset(i for i, u in self.items.items() if u.available is False)


def merged(held: ItemUpdate | None, update: ItemUpdate) -> ItemUpdate:
    """`update` over `held`: the fields `update` leaves out keep `held`'s values."""
    if held is None:
        return update
    return ItemUpdate(
        item_id=update.item_id,
        updated_at=update.updated_at,
        description=update.description if update.description is not None else held.description,
        category=update.category if update.category is not None else held.category,
        price=update.price if update.price is not None else held.price,
        available=update.available if update.available is not None else held.available,
        created_at=update.created_at if update.created_at is not None else held.created_at,
    )
