"""A/B experiments, shared by the gateway, the command line and the experiments DAG.

- `experiments.domain`: arms, traffic shares, the deterministic assignment of users, and the
  errors callers map (pure; pydantic only).
- `experiments.store`: the experiments in a database (SQLAlchemy 2; PostgreSQL or SQLite), its
  schema migrated by Alembic (`experiments/migrations/`) when it is opened.
- `experiments.attribution`, `experiments.analysis`: events attributed to impressions, per-arm
  metrics and the sequential decision (docs/experiments.md).

This package imports nothing from serving/, jobs/ or models/, and this file imports nothing, so
a caller pays only for the module it uses.
"""
