"""Opening the feature store: one set of Feast definitions (feature_repo/), two environments.

- `embedded`: SQLite online store under TOWERFLOW_HOME, for a laptop without Redis.
- `redis`: Redis online store at `settings.redis_url` (features/redis_store.py).

Both read the gold Delta tables through Feast's DuckDB offline store, which scans a table's
current Delta snapshot (`delta_scan`); Feast's default file store lists Parquet files and, after an
overwrite, serves old and new rows together (PLATFORM-NOTES.md). DuckDB's delta extension comes
from the `duckdb-ext-delta` wheel, so nothing is downloaded at run time.

The jobs (apply, materialize, training sets: jobs/feature_store.py) and the gateway (online reads:
features/reader.py) open the store the same way, through `feature_store(settings, env)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

from towerflow.settings import Settings

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


def resolve_env(settings: Settings) -> str:
    """The environment to use: `settings.feature_env`, or for `auto` Redis when it answers."""
    if settings.feature_env != "auto":
        if settings.feature_env == "redis" and not settings.redis_url:
            raise FeatureStoreError("feature_env=redis needs TOWERFLOW_REDIS_URL (or REDIS_URL)")
        return settings.feature_env
    if settings.redis_url and redis_reachable(settings.redis_url):
        return "redis"
    return "embedded"


def repo_config_dict(settings: Settings, env: str, project: str | None = None) -> dict[str, Any]:
    """The `feature_store.yaml` content for one environment, as a dict.

    Args:
        settings: where the registry, SQLite file and Redis are.
        env: `embedded` or `redis`.
        project: Feast project name; defaults to `settings.feast_project`. It suffixes every
            online key, so a unique name isolates a test run on a shared Redis.
    """
    if env not in ENVIRONMENTS:
        raise FeatureStoreError(f"unknown feature environment {env!r}; choose from {ENVIRONMENTS}")
    from features.redis_store import STORE_TYPE

    folder = settings.feature_registry_dir / env
    if env == "redis":
        if not settings.redis_url:
            raise FeatureStoreError("the redis environment needs TOWERFLOW_REDIS_URL (or REDIS_URL)")
        online = {"type": STORE_TYPE, "connection_string": redis_connection_string(settings.redis_url)}
    else:
        online = {"type": "sqlite", "path": str(folder / "online.db")}
    return {
        "project": project or settings.feast_project,
        "provider": "local",
        "registry": {"path": str(folder / "registry.db"), "cache_ttl_seconds": 60},
        "offline_store": {"type": "duckdb"},
        "online_store": online,
        "entity_key_serialization_version": 3,
    }


def repo_config(settings: Settings, env: str | None = None, project: str | None = None) -> RepoConfig:
    """A Feast `RepoConfig` for `env` (default: `resolve_env(settings)`)."""
    from feast import RepoConfig

    env = env or resolve_env(settings)
    return RepoConfig(repo_path=REPO_DIR, **repo_config_dict(settings, env, project))


def use_bundled_duckdb_extensions() -> None:
    """Point DuckDB (Feast's offline store runs on ibis' default DuckDB backend) at the delta
    extension shipped in the `duckdb-ext-delta` wheel, and forbid downloads."""
    import ibis

    current = ibis.options.default_backend
    if current is not None and getattr(current, "_towerflow_ext", False):
        return
    import duckdb_ext

    ext_dir = Path(next(iter(duckdb_ext.__path__))) / "extensions"
    backend = ibis.duckdb.connect(
        extension_directory=str(ext_dir),
        autoinstall_known_extensions=False,
        autoload_known_extensions=False,
    )
    # Feast compares timestamps after casting to naive; the session zone must be UTC for that.
    backend.raw_sql("SET TimeZone = 'UTC'")
    backend._towerflow_ext = True
    ibis.set_backend(backend)


def feature_store(settings: Settings, env: str | None = None, project: str | None = None) -> FeatureStore:
    """A `FeatureStore` over feature_repo/ for `env` (default: Redis if reachable, else embedded)."""
    from feast import FeatureStore

    use_bundled_duckdb_extensions()
    config = repo_config(settings, env, project)
    Path(config.registry.path).parent.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=config)


def env_of(store: FeatureStore) -> str:
    """`embedded` or `redis`: which online store `store` uses."""
    return "embedded" if store.config.online_store.type == "sqlite" else "redis"


def redis_client(store: FeatureStore, *, asynchronous: bool = False) -> Any:
    """A redis-py client (`redis.asyncio` when `asynchronous`) for the store's Redis online store
    (same connection string)."""
    import redis
    import redis.asyncio as aioredis
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, kwargs = RedisOnlineStore._parse_connection_string(store.config.online_store.connection_string)
    cls = aioredis.Redis if asynchronous else redis.Redis
    return cls(host=nodes[0]["host"], port=int(nodes[0]["port"]), **kwargs)
