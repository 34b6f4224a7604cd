"""Events on the stream: what the gateway appends and the stream worker reads.

One record per event, keyed by user id (so one user's events keep their order where the stream
partitions); the value is a JSON object with a `kind` of `event` and the fields of `Event`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from towerflow.schemas import ACTIONS

KIND = "event"


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
        body: dict[str, Any] = {"kind": KIND, **asdict(self)}
        body["timestamp"] = self.timestamp.isoformat()
        body["received_at"] = self.received_at.isoformat()
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


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise EventFormatError(f"{name}: expected a non-empty string, got {value!r}")
    return value


def _moment(body: dict[str, Any], name: str) -> datetime:
    value = datetime.fromisoformat(_text(body, name))
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
