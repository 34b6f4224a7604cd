"""Opening the feature store: one set of Feast definitions (feature_repo/), two environments.

Each environment is a feature_store.yaml in feature_repo/, the files the `feast` CLI reads:

- `embedded` (feature_repo/feature_store.yaml): SQLite online store under TOWERFLOW_HOME, for a
  laptop without Redis.
- `redis` (feature_repo/redis/feature_store.yaml): Redis online store (features/redis_store.py).

Both read the gold Delta tables through DuckDB (features/offline_store.py). The towerflow side
reads the same files, with `${TOWERFLOW_HOME}` and `${TOWERFLOW_REDIS_URL}` taken from its settings,
the lake from `settings.lake` and the project from `settings.feast_project`: the jobs (apply,
materialize, training sets: jobs/feature_store.py) and the gateway (online reads:
features/reader.py) open the store through `feature_store(settings, env)`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

from towerflow.settings import FeatureSettings

if TYPE_CHECKING:  # heavy imports stay inside functions
    from feast import FeatureStore, RepoConfig

ENVIRONMENTS = ("embedded", "redis")
REPO_DIR = Path(__file__).resolve().parents[1] / "feature_repo"


class FeatureStoreError(RuntimeError):
    """A feature-store operation cannot go ahead; the message says what to do."""


def redis_connection_string(url: str) -> str:
    """Feast's Redis connection string (`host:port,db=N,...`) for a `redis://` URL.

    Args:
        url: `redis://[[user]:password@]host[:port][/db][?ssl=true]` or `rediss://...`; a bare
            `host:port[,opts]` is returned unchanged.

    Returns:
        e.g. `"127.0.0.1:6379,db=5"` for `redis://127.0.0.1:6379/5`.
    """
    if "://" not in url:
        return url
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise FeatureStoreError(f"redis URL must start with redis:// or rediss://, got {url!r}")
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
    query = parse_qs(parsed.query)
    db = parsed.path.strip("/") or (query.get("db") or [""])[0]
    if db and db != "0":
        parts.append(f"db={int(db)}")
    if parsed.username:
        parts.append(f"username={unquote(parsed.username)}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.scheme == "rediss" or (query.get("ssl") or [""])[0].lower() == "true":
        parts.append("ssl=true")
    return ",".join(parts)


def redis_reachable(url: str, timeout: float = 0.5) -> bool:
    """True when Redis at `url` answers PING within `timeout` seconds."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def resolve_env(settings: FeatureSettings) -> str:
    """The environment to use: `settings.feature_env`, or for `auto` Redis when it answers."""
    if settings.feature_env != "auto":
        if settings.feature_env == "redis" and not settings.redis_url:
            raise FeatureStoreError("feature_env=redis needs TOWERFLOW_REDIS_URL (or REDIS_URL)")
        return settings.feature_env
    if settings.redis_url and redis_reachable(settings.redis_url):
        return "redis"
    return "embedded"


def yaml_path(env: str) -> Path:
    """The environment's feature_store.yaml (what `feast -f <it>` reads)."""
    if env not in ENVIRONMENTS:
        raise FeatureStoreError(f"unknown feature environment {env!r}; choose from {ENVIRONMENTS}")
    return REPO_DIR / "feature_store.yaml" if env == "embedded" else REPO_DIR / env / "feature_store.yaml"


def repo_config_dict(settings: FeatureSettings, env: str, project: str | None = None) -> dict[str, Any]:
    """The environment's feature_store.yaml as a dict, with its variables taken from `settings`.

    `${TOWERFLOW_HOME}` becomes `settings.home_dir` and `${TOWERFLOW_REDIS_URL}` `settings.redis_url`;
    other `${VAR}`s are expanded from the environment, as the `feast` CLI does. The lake is
    `settings.lake`, so TOWERFLOW_LAKE_URI applies here too.

    Args:
        settings: where the home, the lake and Redis are.
        env: `embedded` or `redis`.
        project: Feast project name; defaults to `settings.feast_project`. It suffixes every
            online key, so a unique name isolates a test run on a shared Redis.
    """
    import yaml

    path = yaml_path(env)
    if env == "redis" and not settings.redis_url:
        raise FeatureStoreError("the redis environment needs TOWERFLOW_REDIS_URL (or REDIS_URL)")
    text = path.read_text()
    for name, value in (("TOWERFLOW_HOME", str(settings.home_dir)), ("TOWERFLOW_REDIS_URL", settings.redis_url)):
        text = text.replace("${" + name + "}", value or "")
    config: dict[str, Any] = yaml.safe_load(os.path.expandvars(text))
    config["project"] = project or settings.feast_project
    config["offline_store"]["lake"] = settings.lake
    return config


def repo_config(settings: FeatureSettings, env: str | None = None, project: str | None = None) -> RepoConfig:
    """A Feast `RepoConfig` for `env` (default: `resolve_env(settings)`)."""
    from feast import RepoConfig

    env = env or resolve_env(settings)
    return RepoConfig(repo_path=REPO_DIR, **repo_config_dict(settings, env, project))


def feature_store(settings: FeatureSettings, env: str | None = None, project: str | None = None) -> FeatureStore:
    """A `FeatureStore` over feature_repo/ for `env` (default: Redis if reachable, else embedded)."""
    from feast import FeatureStore

    return FeatureStore(config=repo_config(settings, env, project))  # the yaml's registry store makes its folder


def env_of(store: FeatureStore) -> str:
    """`embedded` or `redis`: which online store `store` uses."""
    return "embedded" if store.config.online_store.type == "sqlite" else "redis"


def redis_client(store: FeatureStore, *, asynchronous: bool = False) -> Any:
    """A redis-py client (`redis.asyncio` when `asynchronous`) for the store's Redis online store
    (same connection string)."""
    import redis
    import redis.asyncio as aioredis

    from features.feast_compat import parse_redis_connection_string

    nodes, kwargs = parse_redis_connection_string(store.config.online_store.connection_string)
    cls = aioredis.Redis if asynchronous else redis.Redis
    return cls(host=nodes[0]["host"], port=int(nodes[0]["port"]), **kwargs)
