"""The HTTP floor of `towerflow bench serve`: an empty FastAPI route with the gateway's query
parameters, served by the same uvicorn settings. What it costs under the benchmark's load is what
this machine, the framework and the load generator cost before the gateway does any work.

Run it with `uvicorn bench.http_floor:create_app --factory`.
"""

from __future__ import annotations

from fastapi import FastAPI, Query, Response

BODY = b'{"items":[],"path":"none"}'


def create_app() -> FastAPI:
    app = FastAPI(title="towerflow bench: HTTP floor")

    @app.get("/v1/recommendations")
    async def recommendations(user_id: str = Query(min_length=1), count: int = Query(10, ge=1, le=100)) -> Response:
        return Response(BODY, media_type="application/json")

    return app
