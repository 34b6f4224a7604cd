"""`GET /v1/recommendations`."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from pydantic_core import to_json

from serving.gateway.deps import (
    CheckedParams,
    ExperimentArm,
    RateLimited,
    ReaderDep,
    RecommendCaller,
    RequestMoment,
    ResourcesDep,
)
from serving.gateway.schemas import Problem, RecommendationResponse

router = APIRouter(prefix="/v1", tags=["recommendations"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid bearer token."},
    403: {
        "model": Problem,
        "description": "The token lacks the `recommend:read` scope, or is another user's (reading any "
        "user needs `recommend:any`), or it sets `X-Request-Time` without `recommend:admin` or "
        "`X-Experiment-Arm` without `experiments:admin`.",
    },
    422: {
        "model": Problem,
        "description": "Invalid parameters, an unknown category or an arm the experiment lacks; `message` says which.",
    },
    429: {"model": Problem, "description": "Rate limit reached; see `Retry-After`."},
}


#: The response header naming the request's experiment arm (also the request header forcing one).
ARM_HEADER = "X-Experiment-Arm"


@router.get("/recommendations", response_model=RecommendationResponse, responses=ERRORS)
async def recommendations(
    params: CheckedParams,
    caller: RecommendCaller,
    user_read: RateLimited,
    reader: ReaderDep,
    resources: ResourcesDep,
    moment: RequestMoment,
    assignment: ExperimentArm,
) -> Response:
    """Top `count` items for a user: A/B arm -> user features -> retrieval -> item features ->
    ranking -> business rules. Degrades to precomputed or popular items instead of failing;
    `path` says which served, `sources` how many items each source gave; `experiment` and the
    `X-Experiment-Arm` header the user's arm in the running experiment."""
    started = time.perf_counter()
    served = await resources.recommender.recommend(
        reader,
        user_id=params.user_id,
        count=params.count,
        exclude=params.exclude,
        category=params.category,
        exclude_purchased=params.exclude_purchased,
        exclude_seen=params.exclude_seen,
        user_read=user_read,
        moment=moment,
        assignment=assignment,
    )
    # Not logged: a replay of another moment (X-Request-Time) showed nothing to anyone, and a
    # forced arm (X-Experiment-Arm) is no random assignment: counted, it would bias its arm.
    if moment is None and not assignment.forced:
        resources.impressions.log(
            request_id=served.request_id,
            user_id=served.user_id,
            items=served.items,
            path=served.path,
            experiment_id=served.experiment_id,
            arm=served.arm,
            model_versions=served.model_versions,
            reason=served.reason,
            latency_ms=(time.perf_counter() - started) * 1e3,
        )
    # Serialized here rather than returned as a model: FastAPI would validate the model again
    # against `response_model` on every request. Same fields; tests validate them against it.
    body = {
        "request_id": served.request_id,
        "user_id": served.user_id,
        "items": [
            {"item_id": i, "position": n, "score": None if s is None else float(s)}
            for n, (i, s) in enumerate(served.items, 1)
        ],
        "path": served.path,
        "reason": served.reason,
        "sources": served.sources,
        "model_versions": served.model_versions,
        "experiment": {"id": served.experiment_id, "arm": served.arm},
    }
    return Response(to_json(body), media_type="application/json", headers={ARM_HEADER: served.arm})
