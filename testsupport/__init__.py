"""Support code for tests and benchmarks: never shipped (setup.cfg's package list leaves it out).

- `toy_models`: tiny SavedModels with the exported models' signatures, for the model server and
  the gateway.
- `feature_samples`: small seeded gold tables in the contract schemas, standing in for the ETL's
  output, for the feature store and the gateway.
- `baselines`: numpy references of the served baselines, which the exported graphs must match.
- `feature_reader`: `InMemoryFeatureReader`, a fake behind the `FeatureReader` seam, and
  `as_lists` to compare the fast reader's arrays with Feast's lists.

Importable from a source checkout: pytest puts the repository on `sys.path` (setup.cfg
`pythonpath`), and `towerflow bench` does the same for `bench/`.
"""
