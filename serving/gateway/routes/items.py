"""`POST /v1/items`: catalog upserts, served at once and carried into the lake by the stream."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from serving.gateway.auth import CATALOG_WRITE, Principal
from serving.gateway.deps import ResourcesDep, require_scope
from serving.gateway.routes.events import RETRY_AFTER_S, parse_batch, read_body
from serving.gateway.schemas import MAX_EVENTS, MAX_EVENTS_BODY_BYTES, ItemBatch, ItemIn, ItemsAccepted, Problem
from streams.events import ItemUpdate

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["catalog"])
CatalogWriter = Annotated[Principal, Depends(require_scope(CATALOG_WRITE))]

_BODY_SCHEMA = {"oneOf": [{"$ref": "#/components/schemas/ItemIn"}, {"$ref": "#/components/schemas/ItemBatch"}]}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid bearer token."},
    403: {"model": Problem, "description": "The token lacks the `catalog:write` scope."},
    413: {"model": Problem, "description": f"Body larger than {MAX_EVENTS_BODY_BYTES} bytes."},
    422: {
        "model": Problem,
        "description": f"Not JSON, or an item is invalid (`message` names its index and field), or the batch is "
        f"empty or holds more than {MAX_EVENTS} items. Nothing of the batch was accepted.",
    },
    503: {"model": Problem, "description": "The event stream or Redis did not take the upserts; retry."},
}


def to_updates(items: list[ItemIn], received_at: datetime) -> list[ItemUpdate]:
    return [
        ItemUpdate(
            item_id=i.item_id,
            updated_at=received_at,
            description=i.description,
            category=i.category,
            price=i.price,
            available=i.available,
            created_at=i.created_at,
        )
        for i in items
    ]


@router.post(
    "/items",
    status_code=202,
    response_model=ItemsAccepted,
    responses=ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _BODY_SCHEMA}}}},
)
async def post_items(request: Request, writer: CatalogWriter, resources: ResourcesDep) -> JSONResponse:
    """Upsert catalog items: one item, or `{"items": [...]}` with up to 1,000, accepted or
    rejected whole. The fields given change, the others keep their value. Served at once (every
    gateway within a second): `available: false` stops the item being recommended, a new item
    joins the popular lists (after the known items) and its category; the stream worker lands
    the upserts in bronze/items, and the next daily run makes them item features (retrieval
    learns a new item at the next training)."""
    updates = to_updates(parse_batch(await read_body(request), ItemIn, ItemBatch, "items"), datetime.now(UTC))
    try:
        await asyncio.to_thread(resources.events.append, [(u.item_id, u.encode()) for u in updates])
        await resources.overrides.publish(updates)
    except Exception as err:  # noqa: BLE001 - the stream's or Redis's error: the client retries
        log.warning("catalog upserts of %d items not taken: %s", len(updates), err)
        raise HTTPException(
            503, f"the catalog upserts were not taken ({err}); retry", headers={"Retry-After": str(RETRY_AFTER_S)}
        ) from None
    if resources.overrides.redis is None:  # this process only: serve them now
        resources.apply_overrides()
    accepted = ItemsAccepted(accepted=len(updates), item_ids=[u.item_id for u in updates])
    return JSONResponse(accepted.model_dump(), status_code=202)
