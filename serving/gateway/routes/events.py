"""`POST /v1/events`: user actions into the event stream (streams/), for the stream worker."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from serving.gateway.auth import EVENTS_WRITE, Principal
from serving.gateway.deps import ResourcesDep, require_scope
from serving.gateway.schemas import (
    MAX_EVENTS,
    MAX_EVENTS_BODY_BYTES,
    EventBatch,
    EventIn,
    EventsAccepted,
    Problem,
)
from streams.base import StreamError
from streams.events import Event, new_event_id

log = logging.getLogger(__name__)
_One = TypeVar("_One", bound=BaseModel)
router = APIRouter(prefix="/v1", tags=["events"])
EventsWriter = Annotated[Principal, Depends(require_scope(EVENTS_WRITE))]
#: Seconds a client should wait before retrying while the stream is unavailable.
RETRY_AFTER_S = 1

_BODY_SCHEMA = {
    "oneOf": [
        {"$ref": "#/components/schemas/EventIn"},
        {"$ref": "#/components/schemas/EventBatch"},
    ]
}


def add_body_schemas(openapi: dict[str, Any]) -> None:
    """Put the event and item bodies among the OpenAPI components the request bodies refer to
    (the routes read their bodies themselves, so FastAPI does not collect them)."""
    from pydantic.json_schema import models_json_schema

    from serving.gateway.schemas import ItemBatch, ItemIn

    models: list[type[BaseModel]] = [EventIn, EventBatch, ItemIn, ItemBatch]
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid bearer token."},
    403: {"model": Problem, "description": "The token lacks the `events:write` scope."},
    413: {"model": Problem, "description": f"Body larger than {MAX_EVENTS_BODY_BYTES} bytes."},
    422: {
        "model": Problem,
        "description": f"Not JSON, or an event is invalid (`message` names its index and field), or the batch "
        f"is empty or holds more than {MAX_EVENTS} events. Nothing of the batch was accepted.",
    },
    503: {"model": Problem, "description": "The event stream did not confirm the events; retry (same event ids)."},
}


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) past `MAX_EVENTS_BODY_BYTES` before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_EVENTS_BODY_BYTES:
        raise HTTPException(413, f"body of {declared} bytes; at most {MAX_EVENTS_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_EVENTS_BODY_BYTES:
            raise HTTPException(413, f"body larger than {MAX_EVENTS_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_batch(body: bytes, one: type[_One], batch: type[BaseModel], field: str) -> list[_One]:
    """One object (`one`) or a batch (`{field: [...]}`, `batch`) from a request body.

    Raises:
        RequestValidationError: bad JSON or an invalid object; locations name the index and field.
    """
    try:
        shape = from_json(body)
    except ValueError as err:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": f"not JSON: {err}"}]) from None
    try:
        if isinstance(shape, dict) and field in shape:
            return list(getattr(batch.model_validate_json(body), field))
        return [one.model_validate_json(body)]
    except ValidationError as err:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]
        ) from None


def parse_events(body: bytes) -> list[EventIn]:
    """One event (an object) or a batch (`{"events": [...]}`) from a request body."""
    return parse_batch(body, EventIn, EventBatch, "events")


def to_stream(events: list[EventIn], received_at: datetime) -> list[Event]:
    """The events as the stream carries them: ids and timestamps filled in."""
    return [
        Event(
            event_id=e.event_id or new_event_id(),
            user_id=e.user_id,
            item_id=e.item_id,
            action=e.action,
            timestamp=e.timestamp or received_at,
            received_at=received_at,
            quantity=e.quantity,
            price=e.price,
            request_id=e.request_id,
        )
        for e in events
    ]


@router.post(
    "/events",
    status_code=202,
    response_model=EventsAccepted,
    responses=ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}},
)
async def post_events(request: Request, writer: EventsWriter, resources: ResourcesDep) -> JSONResponse:
    """Record what users did: one event, or `{"events": [...]}` with up to 1,000. The batch is
    accepted (202, once the event stream holds every event) or rejected whole. The stream worker
    then updates the users' recent actions online (within a second) and appends the events to
    the lake; an `event_id` sent again lands once."""
    events = to_stream(parse_events(await read_body(request)), datetime.now(UTC))
    metrics = resources.metrics
    try:
        records = [(e.user_id, e.encode()) for e in events]
        with metrics.time("events_append"):
            await asyncio.to_thread(resources.events.append, records)
    except StreamError as err:
        metrics.events.labels("unavailable").inc(len(events))
        log.warning("event stream did not take %d events: %s", len(events), err)
        raise HTTPException(
            503, f"the event stream is unavailable ({err}); retry", headers={"Retry-After": str(RETRY_AFTER_S)}
        ) from None
    metrics.events.labels("accepted").inc(len(events))
    accepted = EventsAccepted(accepted=len(events), event_ids=[e.event_id for e in events])
    return JSONResponse(accepted.model_dump(), status_code=202)
