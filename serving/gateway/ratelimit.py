"""Rate limits per user and per token in Redis: fixed windows, one round trip per request.

Keys `<prefix>rl:<window>:u:<user>` and `<prefix>rl:<window>:t:<token id>` are INCRemented in one
pipeline and expire with their window. Past a limit the request is refused with 429 and
`Retry-After` = seconds to the window's end. When Redis is unreachable or slow the limiter lets
requests through (counted in metrics): availability of recommendations beats strict limits.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.gateway.breaker import Breaker
from serving.gateway.metrics import GatewayMetrics

if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass(frozen=True)
class Decision:
    """`allowed`, and when not, which limit (`user`/`token`) and seconds until it resets."""

    allowed: bool
    scope: str | None = None
    retry_after: int = 0


ALLOW = Decision(True)


class RateLimiter:
    """Fixed-window limits per user id and per token.

    Args:
        client: `redis.asyncio.Redis`.
        prefix: key prefix.
        user_limit / token_limit: requests per window (0 = no limit).
        window_s: window length in seconds.
        timeout_s: give up on Redis after this long (and allow).
        breaker: shared breaker for the gateway's Redis.
        metrics: where refusals and errors are counted.
    """

    def __init__(
        self,
        client: Redis | None,
        *,
        prefix: str,
        user_limit: int,
        token_limit: int,
        window_s: int,
        timeout_s: float,
        breaker: Breaker,
        metrics: GatewayMetrics,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.user_limit = user_limit
        self.token_limit = token_limit
        self.window_s = window_s
        self.timeout_s = timeout_s
        self.breaker = breaker
        self.metrics = metrics

    async def check(self, user_id: str, token_id: str) -> Decision:
        """Count this request and say whether it may proceed."""
        limits = [
            (s, k, n)
            for s, k, n in (("user", user_id, self.user_limit), ("token", token_id, self.token_limit))
            if n > 0
        ]
        if not limits or self.client is None or not self.breaker.allow():
            return ALLOW  # no Redis configured: no limits (readyz says so), and no error either
        now = time.time()
        window = int(now // self.window_s)
        try:
            with self.metrics.time("rate_limit"):
                async with asyncio.timeout(self.timeout_s):  # no extra task, unlike wait_for
                    counts = await self._count(window, limits)
        except Exception:  # noqa: BLE001 - any Redis trouble: fail open, counted
            self.breaker.failure()
            self.metrics.dependency_errors.labels("redis").inc()
            return ALLOW
        self.breaker.success()
        for (scope, _, limit), count in zip(limits, counts, strict=True):
            if count > limit:
                self.metrics.rate_limited.labels(scope).inc()
                retry = max(1, math.ceil((window + 1) * self.window_s - now))
                return Decision(False, scope, retry)
        return ALLOW

    async def _count(self, window: int, limits: list[tuple[str, str, int]]) -> list[int]:
        if self.client is None:
            raise ConnectionError("no Redis configured for rate limits")
        async with self.client.pipeline(transaction=False) as pipe:
            for scope, key, _ in limits:
                name = f"{self.prefix}rl:{window}:{scope[0]}:{key}"
                pipe.incr(name)
                pipe.expire(name, self.window_s + 1)
            replies = await pipe.execute()
        return [int(c) for c in replies[0::2]]
