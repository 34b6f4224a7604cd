"""OAuth2 bearer tokens (JWT) with scopes.

Tokens carry `sub` (who), `scope` (space-separated, as RFC 8693/9068), `iss`, `aud`, `exp`, `iat`
and `jti` (the per-token rate-limit key). The gateway verifies them against, in order:
`settings.jwt_jwks_url` (keys by `kid`, e.g. an identity provider), `settings.jwt_key` (an HS*
secret or a PEM public key), or the development secret `towerflow token` generates under
`$TOWERFLOW_HOME/secrets/` on first run.

Whose recommendations a token reads: with `recommend:read`, only its own subject's (a user
token, `sub` = the user id); with `recommend:any`, any user's (a service token).

Errors follow RFC 6750: 401 with `WWW-Authenticate: Bearer ...` when the token is missing or
invalid, 403 with `error="insufficient_scope"` when it lacks the scope a route needs.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import jwt

from towerflow.settings import GatewaySettings

READ = "recommend:read"
ANY_USER = "recommend:any"
ADMIN = "recommend:admin"
EVENTS_WRITE = "events:write"
CATALOG_WRITE = "catalog:write"
EXPERIMENTS_READ = "experiments:read"
EXPERIMENTS_ADMIN = "experiments:admin"
SCOPES = {
    READ: "Read the recommendations of the token's own user (its `sub`).",
    ANY_USER: "Read any user's recommendations (service tokens).",
    ADMIN: "Set the moment a request is for (`X-Request-Time`): replays and parity checks.",
    EVENTS_WRITE: "Send events (clicks, views, purchases).",
    CATALOG_WRITE: "Upsert catalog items (`POST /v1/items`): new items, availability, prices.",
    EXPERIMENTS_READ: "Read experiment results (`GET /v1/experiments/{id}/metrics`).",
    EXPERIMENTS_ADMIN: "Create and stop experiments (`POST /v1/experiments`), force a request's arm "
    "(`X-Experiment-Arm`).",
}
DEV_SECRET_FILE = "jwt-hs256.key"
#: Verified tokens remembered (cleared when full) and for how long at most (a revoked signing
#: key stops being honoured within this time).
CACHE_TOKENS = 10_000
CACHE_SECONDS = 60.0
REALM = "towerflow"


@dataclass(frozen=True)
class Principal:
    """A verified caller: subject, granted scopes, and a stable id of the token."""

    subject: str
    scopes: frozenset[str]
    token_id: str


class AuthError(Exception):
    """A request that cannot be let through; `status` is 401 or 403."""

    def __init__(self, status: int, message: str, challenge: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = {"WWW-Authenticate": challenge}


def _quote(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")


def unauthorized(message: str, error: str | None = "invalid_token") -> AuthError:
    challenge = f'Bearer realm="{REALM}"'
    if error:
        challenge += f', error="{error}", error_description="{_quote(message)}"'
    return AuthError(401, message, challenge)


def forbidden(scope: str) -> AuthError:
    message = f"this token lacks the scope {scope!r}; ask for a token with it"
    challenge = f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scope}"'
    return AuthError(403, message, challenge)


def check_user(principal: Principal, user_id: str) -> None:
    """Let `principal` read `user_id`'s recommendations: its own subject's, or anyone's with
    `recommend:any`.

    Raises:
        AuthError: 403 naming both users and the scope that would allow it.
    """
    if principal.subject == user_id or ANY_USER in principal.scopes:
        return
    message = (
        f"this token reads only the recommendations of user {principal.subject!r}, not {user_id!r}; "
        f"reading any user needs a service token with the scope {ANY_USER!r}"
    )
    challenge = f'Bearer realm="{REALM}", error="insufficient_scope", scope="{ANY_USER}"'
    raise AuthError(403, message, challenge)


@overload
def dev_secret(settings: GatewaySettings, *, create: Literal[True] = True) -> str: ...
@overload
def dev_secret(settings: GatewaySettings, *, create: bool) -> str | None: ...
def dev_secret(settings: GatewaySettings, *, create: bool = True) -> str | None:
    """The development signing secret under `<home>/secrets/`, created (mode 600) when absent."""
    path: Path = settings.secrets_dir / DEV_SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:6]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    try:
        os.link(tmp, path)  # first writer wins when two processes start together
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def mint_token(
    key: str,
    *,
    subject: str,
    scopes: Iterable[str],
    issuer: str = "towerflow",
    audience: str = "towerflow-gateway",
    ttl_s: int = 86_400,
    algorithm: str = "HS256",
) -> str:
    """A signed JWT for `subject` with `scopes`.

    Raises:
        ValueError: an unknown scope (the message lists the known ones).
    """
    scopes = list(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; known: {', '.join(SCOPES)}")
    now = int(time.time())
    claims = {
        "sub": subject,
        "scope": " ".join(scopes),
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=algorithm)


class TokenVerifier:
    """Verifies bearer tokens per the settings (see module doc).

    Args:
        settings: JWT settings; with neither a key nor a JWKS URL the development secret is
            used (created if absent, so `towerflow token` and the gateway agree).
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.algorithms = list(settings.jwt_algorithms)
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True) if settings.jwt_jwks_url else None
        self._key: str | None = settings.jwt_key or (None if self._jwks else dev_secret(settings))
        self._verified: dict[str, tuple[Principal, float]] = {}

    @property
    def uses_jwks(self) -> bool:
        return self._jwks is not None

    def verify(self, token: str) -> Principal:
        """The token's principal.

        A verified token is remembered until its expiry (at most `CACHE_SECONDS`): apps send the
        same token on every request, and decoding it each time was a tenth of the gateway's CPU.

        Raises:
            AuthError: 401 with the reason (expired, bad signature, wrong audience, ...).
        """
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and now < cached[1]:
            return cached[0]
        principal, expires = self._verify(token)
        if len(self._verified) >= CACHE_TOKENS:
            self._verified.clear()
        self._verified[token] = (principal, min(expires, now + CACHE_SECONDS))
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            key = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else self._key
            if key is None:  # __init__ sets a secret whenever there is no JWKS URL
                raise RuntimeError("no key to verify tokens with: neither a JWKS URL nor a secret")
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired; get a new one") from None
        except jwt.InvalidAudienceError:
            raise unauthorized(f"the token is not for this service (audience must be {self.audience!r})") from None
        except jwt.InvalidIssuerError:
            raise unauthorized(f"the token's issuer is not {self.issuer!r}") from None
        except jwt.PyJWKClientError as err:
            raise unauthorized(f"no key to verify the token: {err}") from None
        except jwt.InvalidTokenError as err:
            raise unauthorized(f"invalid token: {err}") from None
        scope = claims.get("scope", "")
        scopes = frozenset(scope.split() if isinstance(scope, str) else scope)
        token_id = str(claims.get("jti") or uuid.uuid5(uuid.NAMESPACE_OID, token).hex)
        return Principal(str(claims["sub"]), scopes, token_id), float(claims["exp"])
