"""Feast's DuckDB offline store over the lake whose root the feature_store.yaml names.

feature_repo/ declares its sources by table, relative to the lake (`gold/user_features`), so the
definitions read no settings and the registry holds no path of one machine. The environment's
feature_store.yaml says where the lake is:

    offline_store:
      type: features.offline_store.LakeOfflineStore
      lake: ${TOWERFLOW_HOME}/lake

Reads go through Feast's DuckDB store unchanged, with each relative source path joined to `lake`.
DuckDB scans a table's current Delta snapshot (`delta_scan`); Feast's default file store lists
Parquet files and, after an overwrite, serves old and new rows together. DuckDB's
delta extension comes from the `duckdb-ext-delta` wheel, so nothing is downloaded at run time.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from feast import FileSource, RepoConfig
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from pydantic import StrictStr, field_validator

if TYPE_CHECKING:
    from feast import FeatureView
    from feast.data_source import DataSource
    from feast.infra.offline_stores.offline_store import RetrievalJob

STORE_TYPE = "features.offline_store.LakeOfflineStore"


class LakeOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """DuckDB's options, plus `lake`: the folder or URI relative source paths are under."""

    type: Literal["features.offline_store.LakeOfflineStore"] = STORE_TYPE  # type: ignore[assignment]
    lake: StrictStr

    @field_validator("lake")
    @classmethod
    def _substituted(cls, lake: str) -> str:
        if "${" in lake:
            raise ValueError(
                f"lake: {lake!r} names an unset environment variable; set it, e.g. "
                "`export TOWERFLOW_HOME=$PWD/var` in the project folder for the demo's home"
            )
        return lake


def lake_root(config: RepoConfig) -> str | None:
    """The lake root of `config`'s offline store (relative roots resolve against the repo), or None."""
    lake = getattr(config.offline_store, "lake", None)
    if lake is None or urlparse(lake).scheme or Path(lake).is_absolute():
        return lake
    return str(Path(config.repo_path or ".") / lake)


def source_uri(config: RepoConfig, source: DataSource) -> str:
    """Where a file source's table is: its path under the lake, or the path itself when absolute.

    Raises:
        TypeError: `source` is not a file source.
    """
    if not isinstance(source, FileSource):
        raise TypeError(f"source {source.name} is a {type(source).__name__}, not a FileSource")
    path, root = source.path, lake_root(config)
    if root is None or urlparse(path).scheme or Path(path).is_absolute():
        return path
    return f"{root.rstrip('/')}/{path}"


def in_lake(config: RepoConfig, source: DataSource) -> DataSource:
    """`source` with its path under the lake (a copy; the registered object is left as it is)."""
    if not isinstance(source, FileSource) or source_uri(config, source) == source.path:
        return source
    moved = copy.deepcopy(source)
    moved.file_options.uri = source_uri(config, source)
    return moved


def _view_in_lake(config: RepoConfig, view: FeatureView) -> FeatureView:
    if view.batch_source is None:
        return view
    moved = copy.copy(view)
    moved.batch_source = in_lake(config, view.batch_source)
    return moved


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


class LakeOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB offline store, reading each source at its place in the lake."""

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig, data_source: DataSource, *args: Any, **kwargs: Any
    ) -> RetrievalJob:
        use_bundled_duckdb_extensions()
        return DuckDBOfflineStore.pull_latest_from_table_or_query(config, in_lake(config, data_source), *args, **kwargs)

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig, data_source: DataSource, *args: Any, **kwargs: Any
    ) -> RetrievalJob:
        use_bundled_duckdb_extensions()
        return DuckDBOfflineStore.pull_all_from_table_or_query(config, in_lake(config, data_source), *args, **kwargs)

    @staticmethod
    def get_historical_features(
        config: RepoConfig, feature_views: list[FeatureView], *args: Any, **kwargs: Any
    ) -> RetrievalJob:
        use_bundled_duckdb_extensions()
        views = [_view_in_lake(config, fv) for fv in feature_views]
        return DuckDBOfflineStore.get_historical_features(config, views, *args, **kwargs)

    @staticmethod
    def offline_write_batch(config: RepoConfig, feature_view: FeatureView, *args: Any, **kwargs: Any) -> None:
        use_bundled_duckdb_extensions()
        DuckDBOfflineStore.offline_write_batch(config, _view_in_lake(config, feature_view), *args, **kwargs)

    def validate_data_source(self, config: RepoConfig, data_source: DataSource) -> None:
        super().validate_data_source(config, in_lake(config, data_source))
