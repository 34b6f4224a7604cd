"""The features runtime, shared by the jobs and the gateway.

- `store`: opening the Feast store over feature_repo/ (embedded SQLite or Redis online store),
  from the environment's feature_store.yaml.
- `offline_store`: Feast's DuckDB offline store, reading sources under the yaml's lake root.
- `redis_store`: Feast's Redis online store with same-instant rows replacing.
- `registry_store`: Feast's file registry, creating its folder on a new home.
- `feast_compat`: every private Feast name the package uses.
- `marker`: the materialization marker readers reload on.
- `precomputed`: precomputed recommendation lists in Redis (the pipeline writes, the gateway
  reads, the stream worker drops a user's list when they act).
- `reader`: online feature reads (`FastFeatureReader`, Feast's reference, an in-memory fake).

It imports nothing from jobs/, models/ or serving/.
"""
