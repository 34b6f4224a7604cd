"""Every private Feast name the project uses, in one place.

Feast has no public API for how its Redis online store lays out keys and hash fields, for the
provider's online store object, or for its Redis client; the fast reader (features/reader.py) and
the same-instant Redis store (features/redis_store.py) need all of them. They are reached only
through this module, and tests/features/test_feast_compat.py fails when a Feast upgrade moves or
reshapes one of them: fix it here, nowhere else.

Imports stay inside the functions so that importing this module does not import Feast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView, RepoConfig
    from feast.infra.online_stores.online_store import OnlineStore
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

#: (module, qualified name, parameters) of each private name used here; the compat test checks
#: that each still exists with these parameters.
PRIVATE_NAMES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("feast.infra.online_stores.helpers", "_redis_key", ("project", "entity_key", "entity_key_serialization_version")),
    ("feast.infra.online_stores.helpers", "_mmh3", ("key",)),
    ("feast.infra.online_stores.redis", "_versioned_fv_name", ("table", "config")),
    ("feast.infra.online_stores.redis", "RedisOnlineStore._parse_connection_string", ("connection_string",)),
    ("feast.infra.online_stores.redis", "RedisOnlineStore._get_client", ("self", "online_store_config")),
    ("feast.feature_store", "FeatureStore._get_provider", ("self",)),
)

#: Prefix of the hash field where Feast's Redis store keeps a view's event time (`_ts:<view>`).
REDIS_TS_PREFIX = "_ts:"


def redis_key(project: str, entity_key: EntityKey, entity_key_serialization_version: int) -> bytes:
    """The Redis key Feast stores an entity's values under (`<serialized entity key><project>`)."""
    from feast.infra.online_stores.helpers import _redis_key

    return _redis_key(project, entity_key, entity_key_serialization_version)


def redis_field(view: str, feature: str) -> bytes:
    """The hash field Feast stores `view:feature` under (a murmur3 hash of the name)."""
    from feast.infra.online_stores.helpers import _mmh3

    return _mmh3(f"{view}:{feature}")


def redis_ts_field(table: FeatureView, config: RepoConfig) -> str:
    """The hash field holding the event time of `table`'s row, as Feast's Redis store writes it."""
    from feast.infra.online_stores.redis import _versioned_fv_name

    return f"{REDIS_TS_PREFIX}{_versioned_fv_name(table, config)}"


def parse_redis_connection_string(connection_string: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Feast's reading of `host:port,db=N,password=...`: (nodes, client keyword arguments)."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, kwargs = RedisOnlineStore._parse_connection_string(connection_string)
    return nodes, kwargs


def redis_store_client(store: RedisOnlineStore, online_config: RedisOnlineStoreConfig) -> Any:
    """The (cached) redis-py client a Feast Redis online store writes with."""
    return store._get_client(online_config)


def online_store(store: FeatureStore) -> OnlineStore:
    """The provider's online store object: Feast's own reads, below `get_online_features`."""
    return store._get_provider().online_store
