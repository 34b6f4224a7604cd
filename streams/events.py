"""Records on the stream: what the gateway appends and the stream worker reads.

Three kinds, told apart by the JSON value's `kind`: `event` (one user action, `Event`),
`impression` (what one recommendation response showed, `Impression`), both keyed by user id so
one user's records keep their order where the stream partitions, and `item` (a catalog upsert,
`ItemUpdate`, keyed by item id). `decode` reads any of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from towerflow.schemas import ACTIONS

KIND = "event"
IMPRESSION_KIND = "impression"
ITEM_KIND = "item"


class EventFormatError(ValueError):
    """A record on the stream is not an event this code can read; the message says why."""


def new_event_id() -> str:
    """A fresh event id for an event that came without one."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Event:
    """One user action.

    Attributes:
        event_id: idempotency key: an event posted twice lands in the lake once.
        user_id / item_id: who did what to which item.
        action: one of `ACTIONS`.
        timestamp: when it happened (UTC).
        received_at: when the gateway accepted it (UTC).
        quantity / price: for carts and purchases; None when not given.
        request_id: the recommendation response it came from, for attribution.
    """

    event_id: str
    user_id: str
    item_id: str
    action: str
    timestamp: datetime
    received_at: datetime
    quantity: int | None = None
    price: float | None = None
    request_id: str | None = None

    def encode(self) -> bytes:
        body = {
            "kind": KIND,
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "action": self.action,
            "timestamp": self.timestamp.isoformat(),
            "received_at": self.received_at.isoformat(),
            "quantity": self.quantity,
            "price": self.price,
            "request_id": self.request_id,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Event:
        """The event in a stream record's value.

        Raises:
            EventFormatError: not JSON, not an event, or a field missing or of the wrong type.
        """
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise EventFormatError(f"not JSON: {err}") from None
        if not isinstance(body, dict) or body.get("kind") != KIND:
            raise EventFormatError("not an event record (kind != 'event')")
        try:
            action = _text(body, "action")
            if action not in ACTIONS:
                raise EventFormatError(f"unknown action {action!r}")
            quantity, price = body.get("quantity"), body.get("price")
            return cls(
                event_id=_text(body, "event_id"),
                user_id=_text(body, "user_id"),
                item_id=_text(body, "item_id"),
                action=action,
                timestamp=_moment(body, "timestamp"),
                received_at=_moment(body, "received_at"),
                quantity=None if quantity is None else int(quantity),
                price=None if price is None else float(price),
                request_id=body.get("request_id") or None,
            )
        except (TypeError, ValueError) as err:
            if isinstance(err, EventFormatError):
                raise
            raise EventFormatError(str(err)) from None


@dataclass(frozen=True, slots=True)
class Impression:
    """The items one recommendation response showed, best first.

    Attributes:
        request_id: the response's id (clicks quote it).
        user_id: who was shown them.
        items / scores: item ids and their scores (None on the precomputed path), in list order.
        path: the serving path (`model`, `cached`, `fallback_popular`).
        experiment_id / arm: the A/B assignment.
        retrieval_version / ranking_version: the models on the model path; None off it.
        timestamp: when the response was made (UTC).
        reason: why the model path did not serve (None when it did).
        latency_ms: the response's time in the gateway.
    """

    request_id: str
    user_id: str
    items: tuple[str, ...]
    scores: tuple[float | None, ...]
    path: str
    experiment_id: str
    arm: str
    retrieval_version: str | None
    ranking_version: str | None
    timestamp: datetime
    reason: str | None = None
    latency_ms: float | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {"kind": IMPRESSION_KIND, **{f.name: getattr(self, f.name) for f in fields(self)}}
        body["items"], body["scores"] = list(self.items), list(self.scores)
        body["timestamp"] = self.timestamp.isoformat()
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Impression:
        items, scores = body.get("items"), body.get("scores")
        if not isinstance(items, list) or not isinstance(scores, list) or len(items) != len(scores):
            raise EventFormatError("items and scores: expected two lists of the same length")
        return cls(
            request_id=_text(body, "request_id"),
            user_id=_text(body, "user_id"),
            items=tuple(str(i) for i in items),
            scores=tuple(None if s is None else float(s) for s in scores),
            path=_text(body, "path"),
            experiment_id=_text(body, "experiment_id"),
            arm=_text(body, "arm"),
            retrieval_version=body.get("retrieval_version"),
            ranking_version=body.get("ranking_version"),
            timestamp=_moment(body, "timestamp"),
        )


@dataclass(frozen=True, slots=True)
class ItemUpdate:
    """A catalog upsert (`POST /v1/items`): the fields given change, the others keep their value.

    Attributes:
        item_id: the item.
        updated_at: when the gateway accepted it (UTC); the latest update of an item wins.
        description / category / price / available / created_at: None = not given.
    """

    item_id: str
    updated_at: datetime
    description: str | None = None
    category: str | None = None
    price: float | None = None
    available: bool | None = None
    created_at: datetime | None = None

    def encode(self) -> bytes:
        body: dict[str, Any] = {"kind": ITEM_KIND, **{f.name: getattr(self, f.name) for f in fields(self)}}
        body["updated_at"] = self.updated_at.isoformat()
        body["created_at"] = None if self.created_at is None else self.created_at.isoformat()
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ItemUpdate:
        price, available = body.get("price"), body.get("available")
        if available is not None and not isinstance(available, bool):
            raise EventFormatError(f"available: expected true, false or null, got {available!r}")
        return cls(
            item_id=_text(body, "item_id"),
            updated_at=_moment(body, "updated_at"),
            description=body.get("description"),
            category=body.get("category"),
            price=None if price is None else float(price),
            available=available,
            created_at=_moment(body, "created_at") if body.get("created_at") else None,
        )


def decode(raw: bytes) -> Event | Impression | ItemUpdate:
    """The event or impression in a stream record's value.

    Raises:
        EventFormatError: not JSON, of no known kind, or a field missing or of the wrong type.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EventFormatError(f"not JSON: {err}") from None
    kinds: dict[str, Callable[[dict[str, Any]], Impression | ItemUpdate]] = {
        IMPRESSION_KIND: Impression.from_body,
        ITEM_KIND: ItemUpdate.from_body,
    }
    if isinstance(body, dict) and body.get("kind") in kinds:
        try:
            return kinds[body["kind"]](body)
        except (TypeError, ValueError) as err:
            if isinstance(err, EventFormatError):
                raise
            raise EventFormatError(str(err)) from None
    return Event.decode(raw)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise EventFormatError(f"{name}: expected a non-empty string, got {value!r}")
    return value


def _moment(body: dict[str, Any], name: str) -> datetime:
    value = datetime.fromisoformat(_text(body, name))
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
