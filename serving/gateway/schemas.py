"""Request and response models of the gateway (what `/docs` shows)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_COUNT = 100
MAX_EXCLUDE = 1000
#: Longest user id, item id or category name a request may carry.
MAX_ID_LENGTH = 128
#: Most events one `POST /v1/events` may carry, and the largest body it reads.
MAX_EVENTS = 1000
MAX_EVENTS_BODY_BYTES = 1024 * 1024
#: How far ahead of the gateway's clock an event's timestamp may be (clock skew).
MAX_FUTURE = timedelta(minutes=5)
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


class RecommendationQuery(BaseModel):
    """Query parameters of `GET /v1/recommendations`."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="The user to recommend for.")
    count: int = Field(10, ge=1, le=MAX_COUNT, description=f"How many items (1..{MAX_COUNT}).")
    # A plain default, not default_factory: FastAPI inspects a factory's signature on every request.
    exclude: list[str] = Field(
        default=[],
        max_length=MAX_EXCLUDE,
        description=f"Item ids never to return (at most {MAX_EXCLUDE}, each at most {MAX_ID_LENGTH} characters); "
        "repeat the parameter or separate ids with commas.",
    )
    category: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="Only items of this category (case-insensitive; 422 when the catalog has no such category).",
    )
    exclude_purchased: bool = Field(
        True, description="Drop items the user already bought; false for 'buy it again' surfaces."
    )
    exclude_seen: bool = Field(
        False,
        description="Also drop every item the user acted on in the last year, views included "
        "(media-like surfaces); implies exclude_purchased.",
    )

    @field_validator("exclude")
    @classmethod
    def _split_commas(cls, value: list[str]) -> list[str]:
        out = [part.strip() for item in value for part in item.split(",") if part.strip()]
        if len(out) > MAX_EXCLUDE:
            raise ValueError(f"at most {MAX_EXCLUDE} excluded ids")
        longest = max(map(len, out), default=0)
        if longest > MAX_ID_LENGTH:
            raise ValueError(f"ids are at most {MAX_ID_LENGTH} characters (one has {longest})")
        return out


class RecommendedItem(BaseModel):
    item_id: str
    position: int = Field(description="1 = first.")
    score: float | None = Field(description="Model or popularity score; null when served precomputed.")


class ExperimentArm(BaseModel):
    id: str = Field(description="Experiment id (`default` when none runs: every user on `stable`).")
    arm: str = Field(
        description="The user's arm: a stable hash of the user id and the experiment's salt, or the arm an "
        "`experiments:admin` token forced with `X-Experiment-Arm`. Also in the `X-Experiment-Arm` response header."
    )


class RecommendationResponse(BaseModel):
    request_id: str = Field(description="Quote it when reporting clicks, so they can be attributed.")
    user_id: str
    items: list[RecommendedItem]
    path: Literal["model", "cached", "fallback_popular"] = Field(
        description="model: retrieval + ranking; cached: precomputed (model path down or slow); "
        "fallback_popular: popular items (cold start, online store down, nothing precomputed)."
    )
    reason: str | None = Field(None, description="Why the model path did not serve, if it did not.")
    sources: dict[str, int] = Field(
        description="How many items each source gave, in list order: the path's own list, then "
        '`fallback_popular` items that topped up a short one, e.g. `{"cached": 3, "fallback_popular": 2}`.'
    )
    model_versions: dict[str, str] = Field(
        description="`retrieval`/`ranking` versions on the model path, and `recommender`: what that pair "
        "serves (`two_stage`, `retrieval` alone, or a baseline the gate chose: `popular`, `repeat_purchase`, "
        "`item_knn`, `als`, `repeat_als`); `precomputed` on the cached path."
    )
    experiment: ExperimentArm


class Problem(BaseModel):
    """An error: `message` says what is wrong and what to do."""

    message: str
    detail: object | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class EventIn(BaseModel):
    """One user action, as an app posts it to `POST /v1/events`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    action: Literal["view", "click", "add_to_cart", "purchase", "cancellation"]
    timestamp: datetime | None = Field(
        None, description="When it happened (ISO 8601; naive = UTC); default: when the gateway accepts it."
    )
    quantity: int | None = Field(None, ge=-1_000_000, le=1_000_000)
    price: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    request_id: str | None = Field(
        None,
        max_length=64,
        description="The `request_id` of the recommendation response the action came from (attribution).",
    )
    event_id: str | None = Field(
        None,
        pattern=EVENT_ID_PATTERN,
        description="Idempotency key (1-64 of A-Z a-z 0-9 . _ : -): an event sent twice lands once. "
        "Assigned when missing; the response returns it.",
    )

    @field_validator("timestamp")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        if value > datetime.now(UTC) + MAX_FUTURE:
            raise ValueError(f"{value.isoformat()} is in the future")
        return value


class EventBatch(BaseModel):
    """Up to `MAX_EVENTS` events, accepted or rejected whole."""

    model_config = ConfigDict(extra="forbid", strict=True)

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsAccepted(BaseModel):
    accepted: int = Field(description="How many events the stream now holds.")
    event_ids: list[str] = Field(description="Each event's id, in the order posted (assigned where missing).")


class ItemIn(BaseModel):
    """A catalog upsert, as an app posts it to `POST /v1/items`: the fields given change, the
    others keep their value (a new item gets nulls)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    description: str | None = Field(None, max_length=2000)
    category: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH)
    price: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    available: bool | None = Field(None, description="false: no longer recommended, within a second.")
    created_at: datetime | None = Field(None, description="When the item was listed (ISO 8601; naive = UTC).")

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class ItemBatch(BaseModel):
    """Up to `MAX_EVENTS` catalog upserts, accepted or rejected whole."""

    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[ItemIn] = Field(min_length=1, max_length=MAX_EVENTS)


class ItemsAccepted(BaseModel):
    accepted: int = Field(description="How many upserts the stream and the serving catalog now hold.")
    item_ids: list[str]
