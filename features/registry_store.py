"""Feast's file registry, creating its whole folder: `feast plan` / `feast apply` on a new home.

Feast's own `FileRegistryStore` (and its SQLite online store) create one folder level only, so on
a fresh TOWERFLOW_HOME the yaml's `${TOWERFLOW_HOME}/feast/<env>/registry.db` failed until
someone made `feast/<env>`. feature_repo's yaml files name this store
(`registry_store_type: features.registry_store.FolderRegistryStore`), so whatever reads them (the
`feast` CLI, `FeatureStore(repo_path=...)`, towerflow's features.store) makes the folder before
Feast touches it. The embedded environment's SQLite online store sits in the same folder.
"""

from __future__ import annotations

from pathlib import Path

from feast.infra.registry.file import FileRegistryStore
from feast.repo_config import RegistryConfig


class FolderRegistryStore(FileRegistryStore):
    """`FileRegistryStore` whose folder, with its parents, exists once it is opened."""

    def __init__(self, registry_config: RegistryConfig, repo_path: Path) -> None:
        path = Path(registry_config.path)
        (path if path.is_absolute() else Path(repo_path) / path).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(registry_config, repo_path)
