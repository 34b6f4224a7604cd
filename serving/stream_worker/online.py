"""Online features from events: the users' recent actions and today's counters, the items'
trending counters, written through Feast's push sources (`user_recent_push`, `item_trending_push`)
so Feast stays the one writer of online values.

Merging is pure (`merge_recent`, `merge_trending`); `OnlineUpdater` reads the stored rows, merges
and pushes. Today's counters continue a stored row only when it was pushed live earlier the same
UTC day; the daily batch writes its rows at midnight (the end of the day they count), so the first
live event of a day starts from zero.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING, Any

from streams.events import Event
from towerflow.schemas import COUNTED

if TYPE_CHECKING:
    from feast import FeatureStore
    from redis import Redis

log = logging.getLogger(__name__)
RECENT_ITEMS = 10
USER_VIEW, USER_PUSH = "user_recent", "user_recent_push"
ITEM_VIEW, ITEM_PUSH = "item_trending", "item_trending_push"
COUNTERS = tuple(f"{counter}_1d" for counter in COUNTED)
#: The `user_recent` features `merge_recent` reads and pushes.
RECENT_FEATURES = ("last_10_items", "last_10_actions", *COUNTERS)
#: What each action adds to, by counter column.
ACTION_COUNTER = {action: f"{counter}_1d" for counter, action in COUNTED.items()}


@dataclass(frozen=True)
class Stored:
    """An entity's online row as read back: its values and the instant they are valid at."""

    values: Mapping[str, Any]
    timestamp: datetime | None


def _day_start(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), time(), tzinfo=UTC)


def _counters(stored: Stored, newest: datetime) -> dict[str, int]:
    """Today's counters to continue from: the stored ones if pushed live earlier today, else zero."""
    live_today = stored.timestamp is not None and stored.timestamp > _day_start(newest)
    return {c: int(stored.values.get(c) or 0) if live_today else 0 for c in COUNTERS}


def _count(row: dict[str, Any], events: Iterable[Event], newest: datetime) -> None:
    for event in events:
        column = ACTION_COUNTER.get(event.action)
        if column is not None and event.timestamp >= _day_start(newest):
            row[column] += 1


def _valid_at(stored: Stored, events: Sequence[Event]) -> datetime:
    """The pushed row's instant: its newest event, never before the stored row (an online store
    keeps the newer of two rows, so a late event must not make the merged row look older)."""
    newest = max(e.timestamp for e in events)
    return max(newest, stored.timestamp) if stored.timestamp is not None else newest


def merge_recent(stored: Stored, events: Sequence[Event]) -> dict[str, Any]:
    """A user's `user_recent` row after `events`: the last 10 distinct items acted on (newest
    first; cancellations are not actions on an item, as in the batch features), the latest action
    on each (`last_10_actions`, index by index) and today's counters."""
    valid_at = _valid_at(stored, events)
    # Newest first, ties by item id then action descending: the order the batch features use
    # (jobs/gold.py).
    acted = sorted(
        (e for e in events if e.action != "cancellation"),
        key=lambda e: (e.timestamp, e.item_id, e.action),
        reverse=True,
    )
    old_items = stored.values.get("last_10_items") or []
    old_actions = stored.values.get("last_10_actions") or []
    # A stored row from before last_10_actions existed has none: its items' actions are unknown ("").
    old_actions = [*old_actions, *[""] * (len(old_items) - len(old_actions))]
    latest: dict[str, str] = {}
    for item, action in [*((e.item_id, e.action) for e in acted), *zip(old_items, old_actions, strict=False)]:
        latest.setdefault(item, action)
    recent = list(latest.items())[:RECENT_ITEMS]
    row: dict[str, Any] = {
        "event_timestamp": valid_at,
        "last_10_items": [item for item, _ in recent],
        "last_10_actions": [action for _, action in recent],
    }
    row.update(_counters(stored, valid_at))
    _count(row, events, valid_at)
    return row


def merge_trending(stored: Stored, events: Sequence[Event]) -> dict[str, Any]:
    """An item's `item_trending` row after `events`: today's counters."""
    valid_at = _valid_at(stored, events)
    row: dict[str, Any] = {"event_timestamp": valid_at, **_counters(stored, valid_at)}
    _count(row, events, valid_at)
    return row


class OnlineUpdater:
    """Applies events to the online store through Feast, and drops the users' precomputed lists.

    Args:
        store: the Feast store (its online store is what the gateway reads).
        redis: the gateway's Redis (precomputed lists); None when there is none.
        redis_prefix: the precomputed lists' key prefix (`settings.redis_prefix`).
    """

    def __init__(self, store: FeatureStore, redis: Redis | None = None, *, redis_prefix: str = "towerflow:") -> None:
        self.store = store
        self.redis = redis
        self.redis_prefix = redis_prefix

    def apply(self, events: Sequence[Event]) -> None:
        by_user: dict[str, list[Event]] = defaultdict(list)
        by_item: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_user[event.user_id].append(event)
            by_item[event.item_id].append(event)
        self._push(USER_VIEW, USER_PUSH, "user_id", by_user, list(RECENT_FEATURES), merge_recent)
        self._push(ITEM_VIEW, ITEM_PUSH, "item_id", by_item, list(COUNTERS), merge_trending)
        if self.redis is not None:
            from features.precomputed import drop_precomputed

            drop_precomputed(self.redis, list(by_user), prefix=self.redis_prefix)

    def stored(self, view: str, key: str, ids: Sequence[str], features: Sequence[str]) -> list[Stored]:
        """The online rows of `ids` in `view`, as Feast reads them."""
        response = self.store.get_online_features(
            features=[f"{view}:{f}" for f in features], entity_rows=[{key: i} for i in ids]
        ).to_dict(include_event_timestamps=True)
        out = []
        for n in range(len(ids)):
            values = {f: response[f][n] for f in features}
            seconds = max((response.get(f"{f}__ts", [0])[n] or 0) for f in features)
            present = any(v is not None for v in values.values())
            when = datetime.fromtimestamp(seconds, UTC) if present and seconds else None
            out.append(Stored(values, when))
        return out

    def _push(
        self,
        view: str,
        push_source: str,
        key: str,
        groups: Mapping[str, list[Event]],
        features: list[str],
        merge: Any,
    ) -> None:
        import pandas as pd

        ids = list(groups)
        rows = [
            {key: entity, **merge(stored, groups[entity])}
            for entity, stored in zip(ids, self.stored(view, key, ids, features), strict=True)
        ]
        frame = pd.DataFrame(rows)
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        self.store.push(push_source, frame)
