"""Feast's Redis online store with one rule changed: a row at the *same* event time replaces.

Feast's Redis store drops a write whose event time is not newer than the stored one. Gold feature
rows of day D always carry D + 1 00:00, so when the ETL reruns day D and we materialize again,
Feast would keep the old values. Here a row at the same instant replaces the stored one, an older
row is still dropped, so values pushed live by the stream worker (later event times) are never
overwritten by the nightly batch.

Selected in feature_repo/redis/feature_store.yaml as
`online_store: {type: features.redis_store.TowerflowRedisOnlineStore, ...}`; keys, fields and
values are exactly Feast's, so Feast's readers (and ours: features/reader.py) read them unchanged.
The connection string may also be a `redis://` URL (what TOWERFLOW_REDIS_URL holds).
"""

from __future__ import annotations

from typing import Any, Literal

from feast import FeatureView, RepoConfig, utils
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import field_validator

from features.feast_compat import redis_key, redis_store_client, redis_ts_field

STORE_TYPE = "features.redis_store.TowerflowRedisOnlineStore"


class TowerflowRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Same options as Feast's `type: redis`; `connection_string` may be a `redis://` URL."""

    type: Literal["features.redis_store.TowerflowRedisOnlineStore"] = STORE_TYPE  # type: ignore[assignment]

    @field_validator("connection_string")
    @classmethod
    def _from_url(cls, value: str) -> str:
        from features.store import redis_connection_string

        if "${" in value:
            raise ValueError(f"connection_string: {value!r} names an unset environment variable; set it")
        return redis_connection_string(value)


def _ts_bytes(when: Any) -> bytes:
    ts = Timestamp()
    ts.FromDatetime(utils.make_tzaware(when))
    return ts.SerializeToString()


class TowerflowRedisOnlineStore(RedisOnlineStore):
    """Redis online store where an equal event time replaces the stored row (see module doc)."""

    def online_write_batch(self, config: RepoConfig, table: FeatureView, data, progress) -> None:
        if data and not config.online_store.skip_dedup:
            client = redis_store_client(self, config.online_store)
            ts_field = redis_ts_field(table, config)
            keys = [redis_key(config.project, key, config.entity_key_serialization_version) for key, *_ in data]
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, ts_field)
                stored = pipe.execute()
            # Clearing the stored instant makes Feast's own newer-than check pass for these rows.
            same = [k for k, prev, row in zip(keys, stored, data, strict=True) if prev == _ts_bytes(row[2])]
            if same:
                with client.pipeline(transaction=False) as pipe:
                    for key in same:
                        pipe.hdel(key, ts_field)
                    pipe.execute()
        super().online_write_batch(config, table, data, progress)
