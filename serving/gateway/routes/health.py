"""`/healthz` (the process answers), `/readyz` (model server and online store reachable) and
`/metrics` (Prometheus)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from serving.gateway.deps import ReaderDep, ResourcesDep
from serving.gateway.schemas import Health

if TYPE_CHECKING:  # main imports this module; features/ imports Feast
    from features.reader import FastFeatureReader
    from serving.gateway.main import Resources

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 1.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process serves HTTP."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(resources: ResourcesDep, reader: ReaderDep) -> JSONResponse:
    """Readiness: both models answer on the model server, and the online store and the
    gateway's Redis answer. 503 says in plain words what does not ("unreachable", "timed out",
    "no version AVAILABLE", ...); requests still degrade meanwhile."""
    checks = dict(
        zip(
            ("retrieval", "ranking", "online_store", "redis"),
            await asyncio.gather(
                _model(resources, "retrieval", reader),
                _model(resources, "ranking", reader),
                _online_store(resources, reader),
                _redis(resources),
            ),
            strict=True,
        )
    )
    # Redis is optional on the embedded default: "not configured" is a mode, not an outage.
    ok = all(v == "ok" or v.startswith("not configured") for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


async def _model(resources: Resources, name: str, reader: FastFeatureReader | None) -> str:
    try:
        states = await resources.model_client.status(name, timeout=CHECK_TIMEOUT_S)
        if any(s.state == "AVAILABLE" for s in states):
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                refused = await resources.recommender.refusal(reader, name)
            return refused or "ok"
    except Exception as err:  # noqa: BLE001 - report, never raise
        return _down(f"model {name}", err)
    versions = ", ".join(f"version {s.version} is {s.state}" for s in states)
    return f"no version AVAILABLE ({versions})" if versions else "no version AVAILABLE"


async def _online_store(resources: Resources, reader: FastFeatureReader | None) -> str:
    if reader is None:
        return "not open (feature store not applied, or unreachable at start)"
    try:
        await asyncio.wait_for(asyncio.to_thread(reader.user_features, "__readyz__"), CHECK_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001
        return _down("online store", err)
    return "ok"


async def _redis(resources: Resources) -> str:
    if resources.redis is None:
        return "not configured (no TOWERFLOW_REDIS_URL): no rate limits, no precomputed recommendations"
    try:
        # redis-py types a command's result as `Awaitable | value`, shared by its sync and asyncio clients
        await asyncio.wait_for(resources.redis.ping(), CHECK_TIMEOUT_S)  # type: ignore[arg-type]
    except Exception as err:  # noqa: BLE001
        return _down("redis", err)
    return "ok"


def _down(what: str, err: Exception) -> str:
    """A failed check in plain words; the exception itself goes to the log, not to the caller."""
    code = err.code() if isinstance(err, grpc.RpcError) else None
    if isinstance(err, TimeoutError | RedisTimeoutError) or code == grpc.StatusCode.DEADLINE_EXCEEDED:
        words = "timed out"
    elif isinstance(err, ConnectionError | RedisConnectionError) or code == grpc.StatusCode.UNAVAILABLE:
        words = "unreachable"
    elif code == grpc.StatusCode.NOT_FOUND:
        words = "not found on the model server"
    else:
        words = "error (see the gateway log)"
    log.info("readiness: %s %s: %r", what, words, err)
    return words


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
