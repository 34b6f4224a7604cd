"""FastAPI dependencies and their `Annotated` aliases: routes get resources through these, and
tests may swap them with `app.dependency_overrides`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, NoReturn

from fastapi import Depends, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from experiments.domain import DEFAULT_SURFACE
from serving.gateway.auth import (
    ADMIN,
    ANY_USER,
    EXPERIMENTS_ADMIN,
    READ,
    AuthError,
    Principal,
    check_user,
    forbidden,
    unauthorized,
)
from serving.gateway.recommender import Assignment
from serving.gateway.schemas import RecommendationQuery

if TYPE_CHECKING:  # main imports the routes, which import this module; features/ imports Feast
    from features.reader import FastFeatureReader
    from serving.gateway.main import Resources

#: Categories a 422 for an unknown one lists.
MAX_LISTED = 20

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="OAuth2 access token (JWT) with scopes: recommend:read (the recommendations of the token's "
    "own user, its `sub`), recommend:any (any user's: services), recommend:admin (`X-Request-Time`), events:write, "
    "experiments:read, experiments:admin (`X-Experiment-Arm`). "
    "`towerflow token --user U` mints a development token for user U, `towerflow token --service NAME` "
    "one for a service.",
)


# Async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on
# every request for what is an attribute read.
async def get_resources(request: Request) -> Resources:
    return request.app.state.resources


async def get_reader(request: Request) -> FastFeatureReader | None:
    """The online feature reader (None while the feature store cannot be opened)."""
    resources: Resources = request.app.state.resources
    return resources.reader


# Forward references: FastAPI only needs the `Depends`, and leaves a name it cannot resolve as is.
ResourcesDep = Annotated["Resources", Depends(get_resources)]
ReaderDep = Annotated["FastFeatureReader | None", Depends(get_reader)]


async def recommendation_params(params: Annotated[RecommendationQuery, Query()]) -> RecommendationQuery:
    """The query parameters, validated once per request: a query model declared on both the route
    and `rate_limited` was validated by each, and every error was reported twice."""
    return params


RecommendationParams = Annotated[RecommendationQuery, Depends(recommendation_params)]


def _raise(err: AuthError) -> NoReturn:
    raise HTTPException(err.status, err.message, headers=err.headers)


async def authenticated(
    resources: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The bearer token's principal (401 when it is missing or invalid)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        _raise(unauthorized("missing bearer token: send 'Authorization: Bearer <token>'", error=None))
    verifier = resources.verifier
    try:
        if verifier.uses_jwks:  # may fetch keys over HTTP: off the event loop
            return await asyncio.to_thread(verifier.verify, credentials.credentials)
        return verifier.verify(credentials.credentials)
    except AuthError as err:
        _raise(err)


def require_scope(scope: str, *alternatives: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency verifying the bearer token and that it grants `scope` or one of
    `alternatives` (401 / 403; the 403 names `scope`)."""

    async def verify(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if scope not in principal.scopes and principal.scopes.isdisjoint(alternatives):
            _raise(forbidden(scope))
        return principal

    verify.__name__ = f"require_{scope.replace(':', '_')}"
    return verify


RecommendReader = Annotated[Principal, Depends(require_scope(READ, ANY_USER))]


async def recommend_caller(principal: RecommendReader, params: RecommendationParams) -> Principal:
    """The caller, once its token may read `user_id`'s recommendations (403 otherwise): a user
    token its own, a service token (`recommend:any`) anyone's."""
    try:
        check_user(principal, params.user_id)
    except AuthError as err:
        _raise(err)
    return principal


RecommendCaller = Annotated[Principal, Depends(recommend_caller)]


async def request_moment(
    caller: RecommendCaller,
    x_request_time: Annotated[
        str | None,
        Header(
            description="The moment the recommendations are for (ISO 8601; naive = UTC), instead of now: "
            "replays of a past day with that day's time features. Needs the `recommend:admin` scope.",
        ),
    ] = None,
) -> datetime | None:
    """The request's moment from `X-Request-Time` (admin tokens only), or None for now."""
    if x_request_time is None:
        return None
    if ADMIN not in caller.scopes:
        _raise(forbidden(ADMIN))
    try:
        moment = datetime.fromisoformat(x_request_time)
    except ValueError:
        error = {
            "type": "datetime_parsing",
            "loc": ("header", "x-request-time"),
            "msg": f"{x_request_time!r} is not an ISO 8601 moment (e.g. 2011-11-01T00:00:00Z)",
            "input": x_request_time,
        }
        raise RequestValidationError([error]) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


RequestMoment = Annotated[datetime | None, Depends(request_moment)]


async def experiment_arm(
    caller: RecommendCaller,
    params: RecommendationParams,
    resources: ResourcesDep,
    x_experiment_arm: Annotated[
        str | None,
        Header(
            description="Serve this arm of the running experiment instead of the user's own (checking what an "
            "arm serves); the response is not logged as an impression. Needs the `experiments:admin` scope.",
        ),
    ] = None,
) -> Assignment:
    """The request's experiment and arm: the user's (sticky hash), or the one `X-Experiment-Arm`
    names (admin tokens only: 403; an arm the experiment lacks: 422 listing its arms)."""
    recommender = resources.recommender
    if x_experiment_arm is None:
        return recommender.assignment(params.user_id)
    if EXPERIMENTS_ADMIN not in caller.scopes:
        _raise(forbidden(EXPERIMENTS_ADMIN))
    experiment = recommender.experiment(DEFAULT_SURFACE)
    arm = experiment.arm(x_experiment_arm)
    if arm is None:
        arms = ", ".join(a.name for a in experiment.arms)
        error = {
            "type": "unknown_arm",
            "loc": ("header", "x-experiment-arm"),
            "msg": f"experiment {experiment.id!r} on {experiment.surface} has no arm {x_experiment_arm!r}; "
            f"its arms: {arms}",
            "input": x_experiment_arm,
        }
        raise RequestValidationError([error])
    return Assignment(experiment, arm, forced=True)


ExperimentArm = Annotated[Assignment, Depends(experiment_arm)]


async def checked_params(
    params: RecommendationParams, caller: RecommendCaller, resources: ResourcesDep
) -> RecommendationQuery:
    """The query once the caller may make it, with a category the catalog knows (422 naming it
    otherwise). After the caller on purpose: only a caller with a token learns the categories.
    A catalog that knows no categories yet (not loaded) rejects none."""
    category = params.category
    catalog = resources.recommender.catalog
    if category is not None and catalog.categories and not catalog.has_category(category):
        known = ", ".join(catalog.categories[:MAX_LISTED])
        more = len(catalog.categories) - MAX_LISTED
        known += f" and {more} more" if more > 0 else ""
        error = {
            "type": "unknown_category",
            "loc": ("query", "category"),
            "msg": f"unknown category {category!r}; the catalog has {known}",
            "input": category,
        }
        raise RequestValidationError([error])
    return params


CheckedParams = Annotated[RecommendationQuery, Depends(checked_params)]


async def rate_limited(
    resources: ResourcesDep, params: CheckedParams, caller: RecommendCaller, reader: ReaderDep
) -> asyncio.Future:
    """429 with Retry-After once the user or the token is over its limit. Returns the read of the
    user's features, started before the limit check so the two Redis round trips overlap (a
    refused request cancels it)."""
    user_read = asyncio.ensure_future(resources.recommender.read_user(reader, params.user_id))
    try:
        decision = await resources.limiter.check(params.user_id, caller.token_id)
    except BaseException:
        user_read.cancel()
        raise
    if not decision.allowed:
        user_read.cancel()
        raise HTTPException(
            429,
            f"rate limit for this {decision.scope} reached; retry in {decision.retry_after} s",
            headers={"Retry-After": str(decision.retry_after)},
        )
    return user_read


RateLimited = Annotated[asyncio.Future, Depends(rate_limited)]
