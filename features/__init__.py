"""The features runtime, shared by the jobs and the gateway.

- `store`: opening the Feast store over feature_repo/ (embedded SQLite or Redis online store).
- `redis_store`: Feast's Redis online store with same-instant rows replacing.
- `marker`: the materialization marker readers reload on.
- `reader`: online feature reads (`FastFeatureReader`, Feast's reference, an in-memory fake).

It imports nothing from jobs/, models/ or serving/.
"""
